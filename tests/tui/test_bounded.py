"""The interface on comparisons made in bounded memory: streamed, or with statistics only.

The port of a streamed comparison keeps statistics, not values; a ``--keep stats`` comparison
keeps statistics on both sides. The detail pane must say what it knows and no more.
"""

from __future__ import annotations

from pathlib import Path

import tracetui
from tracetui.tui import TracetuiApp
from tracetui.tui.detail import DetailPane

MODELS = Path(__file__).parent / "models"
SIZE = (120, 40)


def compare_tiny(**options: object) -> tracetui.Comparison:
    return tracetui.compare(MODELS / "original.py", MODELS / "ported.py", rename_map=MODELS / "map.toml", rerun=False, **options)  # type: ignore[arg-type]


async def test_streamed_culprit_detail_has_exact_figures_and_the_ports_statistics(settle) -> None:
    in_memory = compare_tiny()
    streamed = compare_tiny(stream=True)
    assert in_memory.culprit is not None and streamed.culprit is not None
    expected = in_memory.culprit.outputs[0].difference
    assert expected is not None
    app = TracetuiApp(streamed)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await settle(pilot)
        assert app.selected_row == in_memory.culprit.index
        text = app.query_one(DetailPane).plain_text()
        # Measured while the port ran, so as exact as in memory, element count included.
        broken = expected.out_of_tolerance(1e-3, 0.0)
        assert f"max |Δ| {expected.max_abs:.2e}" in text
        assert f"{broken} of {expected.numel} elements" in text
        assert "≥" not in text
        # The port kept statistics: its min and max are shown, its std is not.
        ported_leaf = streamed.culprit.outputs[0].ported
        assert ported_leaf is not None and ported_leaf.tensor is None and ported_leaf.summary is not None
        assert "—" in text

        # Re-classify at an rtol that was never counted: no crash, and no invented count.
        await pilot.press("t", "tab", *"0.5", "enter")
        await settle(pilot)
        assert app.comparison is not None and app.comparison.tolerance.rtol == 0.5
        await pilot.press("f")
        await settle(pilot)
        assert "elements not counted" in app.query_one(DetailPane).plain_text() or app.comparison.culprit is None


async def test_statistics_only_detail_shows_a_lower_bound(settle) -> None:
    in_memory = compare_tiny()
    statistics_only = compare_tiny(keep="stats")
    assert statistics_only.culprit is not None and in_memory.culprit is not None
    bound = statistics_only.culprit.outputs[0].difference
    exact = in_memory.culprit.outputs[0].difference
    assert bound is not None and exact is not None and bound.from_statistics
    assert 0 < bound.max_abs <= exact.max_abs
    app = TracetuiApp(statistics_only)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await settle(pilot)
        text = app.query_one(DetailPane).plain_text()
        assert f"max |Δ| ≥ {bound.max_abs:.2e}" in text
        assert "a difference is certain" in text

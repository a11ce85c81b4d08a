"""The bundled demo (demos/gpt) in the interface: `f` lands on the planted bug."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracetui
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import CallList
from tracetui.tui.detail import DetailPane

DEMO = Path(__file__).parents[2] / "demos" / "gpt"


@pytest.mark.skipif(not (DEMO / "original.py").exists() or not (DEMO / "map.toml").exists(), reason="the demo is not there")
async def test_f_finds_the_planted_activation_bug(monkeypatch: pytest.MonkeyPatch, settle) -> None:
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "activation")
    comparison = tracetui.compare(DEMO / "original.py", DEMO / "ported.py", rename_map=DEMO / "map.toml", rerun=False)
    assert comparison.culprit is not None
    app = TracetuiApp(comparison)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("f")
        await settle(pilot)
        culprit = comparison.rows[app.selected_row]
        assert culprit is comparison.culprit
        assert culprit.ported is not None and culprit.ported.name.endswith("mlp.act_fn")
        assert "CULPRIT" in app.query_one(CallList).line_text(app.selected_row)
        assert "why: its inputs agree" in app.query_one(DetailPane).plain_text()

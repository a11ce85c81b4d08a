"""What the screen shows, pinned as SVG snapshots (``pytest --snapshot-update`` to regenerate).

Every snapshot waits for the detail pane's worker, so the pictures do not depend on timing;
sources are shown as given (relative), and nothing on screen carries a time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual.pilot import Pilot

from tracetui.compare import Comparison
from tracetui.tui import TracetuiApp

Settle = Callable[[Pilot], Awaitable[None]]


def pressing(settle: Settle, *keys: str) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


def test_first_screen_of_a_diverged_comparison(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 36), run_before=pressing(settle))


def test_culprit_selected_with_the_detail_pane(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 44), run_before=pressing(settle, "f"))


def test_filter_applied(snap_compare, comparison: Comparison, settle: Settle) -> None:
    keys = ("slash", *"mlp", "enter")
    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 36), run_before=pressing(settle, *keys))


def test_help_screen(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 40), run_before=pressing(settle, "question_mark"))


def test_narrow_terminal(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison), terminal_size=(80, 24), run_before=pressing(settle, "f"))


def test_several_culprits_each_marked_with_its_own_figure(snap_compare, fed_comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(fed_comparison), terminal_size=(120, 44), run_before=pressing(settle, "n", "n"))


def test_x_shows_the_rows_that_differ_and_counts_the_rest(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 36), run_before=pressing(settle, "x", "d"))


def test_light_theme(snap_compare, comparison: Comparison, settle: Settle) -> None:
    assert snap_compare(TracetuiApp(comparison, theme="textual-light"), terminal_size=(120, 44), run_before=pressing(settle))


def test_a_marked_row_and_the_path_dialog_of_w(snap_compare, comparison: Comparison, settle: Settle) -> None:
    async def run_before(pilot: Pilot) -> None:
        await settle(pilot)
        pilot.app.selected_row = 14  # the port's first unmatched dropout
        await pilot.press("m")
        pilot.app.clear_notifications()  # the toast would hide the row's mark in the picture
        await pilot.press("j", "w")
        await settle(pilot)

    assert snap_compare(TracetuiApp(comparison), terminal_size=(120, 36), run_before=run_before)

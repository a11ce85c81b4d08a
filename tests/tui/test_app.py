"""Drive the interface like a user: keys and clicks through ``app.run_test()``.

The tiny comparison (models/): 42 rows; row 2 is ``h.0 ↔ layers.0``, row 4 the culprit
``h.0.attn ↔ layers.0.self_attn`` (the port scales attention scores by 1/head_dim), rows 14,
27 and 40 the port's unmatched dropouts.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual import events
from textual.events import MouseScrollDown
from textual.pilot import Pilot
from textual.widgets import Input, Label

import tracetui
from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.sides import pick
from tracetui.trace import Trace
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import CallList, Columns
from tracetui.tui.detail import DetailPane
from tracetui.tui.dialogs import HelpScreen, PathDialog, ToleranceDialog
from tracetui.tui.header import ComparisonHeader
from tracetui.tui.status_line import StatusLine

CULPRIT = 4
H0 = 2
SIZE = (120, 40)
MODELS = Path(__file__).parent / "models"


def names(app: TracetuiApp, row: int) -> tuple[str | None, str | None]:
    comparison = app.comparison
    assert comparison is not None
    return comparison.rows[row].original_name, comparison.rows[row].ported_name


def detail_text(app: TracetuiApp) -> str:
    return app.query_one(DetailPane).plain_text()


def line(app: TracetuiApp, row: int) -> str:
    return app.query_one(CallList).line_text(row)


def header_text(app: TracetuiApp) -> str:
    return " ".join(str(label.content) for label in app.query("ComparisonHeader Label").results(Label))


# -- first screen ------------------------------------------------------------------------


async def test_first_screen_lists_every_row_in_call_order(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.visible_rows == list(range(len(comparison.rows)))
        assert app.selected_row == CULPRIT  # it opens on the answer
        header = header_text(app)
        assert "original.py ↔ ported.py" in header  # the folder they share is left out
        assert app.query_one("#original-source", Label).tooltip == "models/original.py"
        assert "atol 0.001" in header and "DIVERGED" in header
        assert "h.0.attn ↔ layers.0.self_attn" in header
        assert "2.26e-01" in header  # the culprit's output Δ
        culprit_line = line(app, CULPRIT)
        assert "attn (OriginalAttention)" in culprit_line
        assert "self_attn (PortedAttention)" in culprit_line
        assert "1×7×16" in culprit_line and "2.26e-01" in culprit_line and "▶ CULPRIT" in culprit_line
        assert "inherited" in line(app, 8)
        assert "unmatched" in line(app, 14) and "dropout (Dropout)" in line(app, 14)
        assert line(app, 3).startswith(" 3     ") and "ln_1" in line(app, 3)  # numbered, then indented by depth
        assert "row #4 · 42 rows" in str(app.query_one(StatusLine).render())


async def test_it_opens_on_the_culprit_on_screen_with_its_detail(fed_comparison: Comparison, settle) -> None:
    first = fed_comparison.culprits[0]
    for size in ((120, 40), (80, 24), (80, 16)):
        app = TracetuiApp(fed_comparison)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            assert app.selected_row == first.index
            call_list = app.query_one(CallList)
            top = round(call_list.scroll_offset.y)
            assert top <= first.index < top + call_list.page_height, size  # on the first screen
            text = " ".join(detail_text(app).split())
            assert first.label in text and "CULPRIT" in text


async def test_a_matching_comparison_opens_at_the_top(make_comparison) -> None:
    matching = make_comparison(atol=1.0)
    assert matching.culprit is None
    app = TracetuiApp(matching)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.selected_row == 0 and app.query_one(CallList).scroll_offset.y == 0


async def test_a_class_mismatch_stands_out(comparison: Comparison, settle) -> None:
    """The culprit's classes differ (OriginalAttention ↔ PortedAttention): the header and the
    detail draw them in the emphasis style, not in the dim grey of a class that agrees."""
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        label = app.query_one("#culprit-class", Label)
        assert str(label.content) == "OriginalAttention ↔ PortedAttention" and label.has_class("-mismatch")
        assert label.rich_style.bold
        detail = app.query_one(DetailPane)
        mismatch = detail.palette().class_mismatch
        assert mismatch.bold and mismatch != detail.palette().dim


# -- the header at every width -----------------------------------------------------------

NUMBER = re.compile(r"[-+]?\d[\d.e+-]*")


def header_lines(app: TracetuiApp) -> list[str]:
    """The header as drawn on the screen, line by line."""
    header = app.query_one(ComparisonHeader)
    strips = app.screen._compositor.render_strips()  # what the terminal shows
    return [strip.text[header.region.x : header.region.right] for strip in strips[header.region.y : header.region.bottom]]


def numeric_tokens(lines: list[str]) -> list[str]:
    tokens = [token.strip("();,:") for line in lines for token in line.split()]
    return [token for token in tokens if NUMBER.fullmatch(token) or re.search(r"\d…", token)]


@pytest.mark.parametrize("width", [60, 80, 120, 160])
async def test_the_header_shows_each_figure_whole_or_not_at_all(fed_comparison: Comparison, width: int) -> None:
    async def shown_at(size: tuple[int, int]) -> list[str]:
        app = TracetuiApp(fed_comparison)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await pilot.pause()
            return header_lines(app)

    whole = set(numeric_tokens(await shown_at((400, 40))))  # wide enough for every part
    assert {"0.001", format_difference(fed_comparison.culprits[0].output_max_abs), "3"} <= whole
    lines = await shown_at((width, 30))
    assert "DIVERGED" in lines[0] and lines[0].index("DIVERGED") < lines[0].index("original.py")
    for token in numeric_tokens(lines):
        assert token in whole, (token, lines)  # never `atol 0.0` for 0.001, nor `|Δ| 1` for 1.93e-01
    text = " ".join(" ".join(lines).split())
    assert "look at its own forward code" in text or "its own forward" in text  # the why-line wraps, whole
    if width < 120:
        assert "…" in lines[0]  # what was left out is marked


# -- moving ------------------------------------------------------------------------------


async def test_up_down_and_j_k_move_the_cursor(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "down")
        assert app.selected_row == 1
        await pilot.press("j", "j")
        assert app.selected_row == 3
        assert names(app, 3) == ("h.0.ln_1", "layers.0.input_layernorm")
        await pilot.press("k")
        assert app.selected_row == 2
        await pilot.press("up", "up", "up")
        assert app.selected_row == 0  # stops at the top


async def test_page_down_and_up_move_a_screenful(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        page = app.query_one(CallList).page_height
        await pilot.press("g", "pagedown")
        assert app.selected_row == page
        assert app.query_one(CallList).scroll_offset.y > 0
        await pilot.press("pageup")
        assert app.selected_row == 0


async def test_g_and_G_go_to_the_top_and_bottom(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("G")
        assert app.selected_row == len(comparison.rows) - 1
        assert names(app, app.selected_row) == ("ln_f", "norm")
        call_list = app.query_one(CallList)
        assert call_list.scroll_offset.y == call_list.max_scroll_y
        await pilot.press("g")
        assert app.selected_row == 0
        assert call_list.scroll_offset.y == 0


async def test_n_and_N_step_through_the_culprits(fed_comparison: Comparison) -> None:
    culprits = [row.index for row in fed_comparison.culprits]
    assert [fed_comparison.rows[row].ported_name for row in culprits] == [f"layers.{layer}.self_attn" for layer in range(3)]
    app = TracetuiApp(fed_comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "n")
        assert app.selected_row == culprits[0]
        await pilot.press("n", "n")
        assert app.selected_row == culprits[2]
        await pilot.press("N")
        assert app.selected_row == culprits[1]
        # From a row between two culprits, n and N go to the nearest on each side.
        app.selected_row = culprits[1] + 1
        await pilot.press("N")
        assert app.selected_row == culprits[1]
        # Folded away, a culprit is passed over, as any hidden row.
        await pilot.press("g")
        app.view = app.view.toggled(fed_comparison.rows[culprits[0]].parent)
        await pilot.press("n")
        assert app.selected_row == culprits[1]
        # Every culprit is marked on its row, and the header counts them.
        call_list = app.query_one(CallList)
        assert all(call_list.listing.cells(row, False).is_culprit for row in culprits)
        assert "1 of 3 culprits" in header_text(app)


async def test_the_detail_pane_gives_each_culprit_its_own_reason_and_figure(fed_comparison: Comparison, settle) -> None:
    second = fed_comparison.culprits[1]
    app = TracetuiApp(fed_comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "n", "n")
        await settle(pilot)
        assert app.selected_row == second.index
        text = " ".join(detail_text(app).split())  # the pane wraps long lines
        # Its own lines between its submodules make the output projection's input wrong.
        assert "CULPRIT" in text and "why: its inputs already differ in this run" in text
        assert "its own forward code (between its submodules) makes the argument 'input' of h.1.attn.c_proj" in text
        assert f"alone on the original's inputs max |Δ| {format_difference(second.isolated_max_abs)}, but it makes a wrong input" in text
        # A row that only inherits: its own figure is 0, and it is no culprit.
        downstream = next(row for row in fed_comparison.rows[second.index :] if row.ported_name == "layers.1.mlp")
        app.selected_row = downstream.index
        await settle(pilot)
        text = detail_text(app)
        assert "alone on the original's inputs max |Δ| 0" in text and "CULPRIT" not in text


async def test_n_past_the_last_culprit_stays_and_rings(fed_comparison: Comparison) -> None:
    app = TracetuiApp(fed_comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("G")
        last = app.selected_row
        await pilot.press("n")
        assert app.selected_row == last


async def test_f_jumps_to_the_culprit_and_the_detail_pane_describes_it(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await settle(pilot)
        assert app.selected_row == CULPRIT
        assert names(app, CULPRIT) == ("h.0.attn", "layers.0.self_attn")
        text = detail_text(app)
        assert "h.0.attn ↔ layers.0.self_attn" in text and "CULPRIT" in text
        assert "why: its inputs agree" in text
        assert "x ↔ hidden_states" in text  # inputs paired by position, named on both sides
        for heading in ("shape", "dtype", "min", "max", "mean", "std"):
            assert heading in text
        assert "max |Δ| 2.26e-01" in text and "max rel" in text and "cosine" in text
        assert "96 of 112 elements (85.7%) break atol 0.001" in text
        assert "worst 5" in text and "[0, 2, 12]" in text and "+2.263e-01" in text
        assert "|Δ| along dim 1 (7; each bar = 1 position; █ = 2.26e-01)" in text and "|Δ| histogram" in text
        assert "original [0, :, :]" in text and "ported [0, :, :]" in text
        assert "[[ 0.5499," in text  # the preview reads like a printed tensor


async def test_detail_pane_follows_the_cursor(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await settle(pilot)
        assert "idx ↔ input_ids" in detail_text(app)  # the root's input
        await pilot.press("j")
        await settle(pilot)
        assert "wte ↔ embed_tokens" in detail_text(app)
        assert "0 of 112 elements (0.0%) break atol 0.001" in detail_text(app)
        app.selected_row = 14
        await settle(pilot)
        assert "only the ported model makes this call" in detail_text(app)


# -- keys typed together ----------------------------------------------------------------


async def send_at_once(pilot: Pilot, *keys: str) -> None:
    """Post the key events in one go, as a paste, key repeat or a slow link delivers them:
    every one is queued before the first is handled."""
    for key in keys:
        pilot.app.post_message(events.Key(key, key if len(key) == 1 else None))
    await pilot.pause()


async def test_keys_pressed_together_each_move_a_row(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await pilot.press("j", "j", "j", "j")
        assert app.selected_row == 4
        await send_at_once(pilot, "j", "j", "j", "j")
        assert app.selected_row == 8
        await send_at_once(pilot, "k", "k", "k")
        assert app.selected_row == 5
        await send_at_once(pilot, "down", "down", "up")
        assert app.selected_row == 6


async def test_culprit_keys_pressed_together_each_count(fed_comparison: Comparison) -> None:
    culprits = [row.index for row in fed_comparison.culprits]
    app = TracetuiApp(fed_comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await send_at_once(pilot, "n", "n")
        assert app.selected_row == culprits[1]
        await send_at_once(pilot, "n", "N", "N")
        assert app.selected_row == culprits[0]
        await send_at_once(pilot, "G", "N", "N", "N")
        assert app.selected_row == culprits[0]


async def test_pages_pressed_together_each_move_a_page(fed_comparison: Comparison) -> None:
    app = TracetuiApp(fed_comparison)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("g")
        await pilot.pause()
        call_list = app.query_one(CallList)
        page = call_list.page_height
        assert 3 * page < len(fed_comparison.rows)
        await send_at_once(pilot, "pagedown", "pagedown")
        assert app.selected_row == 2 * page
        assert call_list.scroll_offset.y == 2 * page  # the view moved with the cursor, a page a key
        await send_at_once(pilot, "pagedown", "pageup", "pageup")
        assert app.selected_row == page


async def test_a_fold_and_moves_pressed_together_apply_in_order(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        await send_at_once(pilot, "j", "j", "enter", "j")
        assert H0 in app.view.collapsed
        assert app.selected_row == 15  # h.1: the row after the folded h.0


# -- the tree, side by side ----------------------------------------------------------------


def name_columns(app: TracetuiApp, row: int) -> tuple[str, str]:
    """The text of the original's and the port's name columns on ``row``'s line."""
    call_list = app.query_one(CallList)
    columns = Columns.for_listing(call_list.line_width, call_list.listing)
    text = line(app, row)[columns.names_start :]
    return text[: columns.original], text[columns.original + 1 : columns.original + 1 + columns.ported]


async def test_each_side_indents_by_its_own_depth_one_sided_rows_too(nesting_comparison: Comparison) -> None:
    """The port nests one level deeper, splits c_attn into q/k/v_proj and adds an mlp wrapper:
    every name, one-sided or paired, sits two cells a level under its own model's parent, by its
    short name, with the fold marker on a side that has a name."""
    comparison = nesting_comparison
    traces = {"original": comparison.original, "ported": comparison.ported}
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        depths_seen = set()
        for row in comparison.rows:
            cells = dict(zip(("original", "ported"), name_columns(app, row.index), strict=True))
            for side, cell in cells.items():
                record = pick(row, side)  # type: ignore[arg-type]
                if record is None:
                    assert cell.strip() == "—", (row.label, side, cell)
                    continue
                parent = None if record.parent is None else traces[side].records[record.parent]
                short_name = record.name.removeprefix(parent.name + ".") if parent is not None and parent.name else record.display_name
                indent = 2 * record.depth
                assert cell[:indent] == " " * indent, (row.label, side, cell)
                marker, rest = cell[indent : indent + 2], cell[indent + 2 :]
                assert rest.startswith(f"{short_name} ({record.class_name})"), (row.label, side, cell)
                has_fold = app.listing.child_counts[row.index] > 0
                marker_side = "original" if row.original is not None else "ported"
                assert marker == ("▾ " if has_fold and side == marker_side else "  "), (row.label, side, cell)
                if not row.is_paired:
                    depths_seen.add((side, record.depth))
        assert {("original", 3), ("ported", 1), ("ported", 3), ("ported", 4)} <= depths_seen
        # The split projections line up with their paired sibling o_proj, not under attn_dropout.
        by_ported = {row.ported_name: row.index for row in comparison.rows if row.ported is not None}
        o_proj = name_columns(app, by_ported["model.layers.0.self_attn.o_proj"])[1]
        for name in ("q_proj", "k_proj", "v_proj"):
            split = name_columns(app, by_ported[f"model.layers.0.self_attn.{name}"])[1]
            assert split.index(name) == o_proj.index("o_proj")
        # The port's mlp, which the original lacks, folds from its own (ported) column.
        mlp = by_ported["model.layers.0.mlp"]
        assert "▾ mlp (MLP)" in name_columns(app, mlp)[1]
        columns = Columns.for_listing(app.query_one(CallList).line_width, app.listing)
        ported_column = columns.names_start + columns.original + 1
        await pilot.click(CallList, offset=(ported_column + 2 * 3, 1 + mlp))  # mlp is 3 deep in the port
        assert mlp in app.view.collapsed and "▸ mlp (MLP)" in name_columns(app, mlp)[1]


# -- folding -----------------------------------------------------------------------------


async def test_enter_and_space_fold_and_unfold_a_subtree(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "j", "j")
        assert app.selected_row == H0
        assert "▾ h.0" in line(app, H0)
        await pilot.press("enter")
        subtree = [row.index for row in comparison.rows if 3 <= row.index <= 14]
        assert not set(subtree) & set(app.visible_rows)
        assert app.visible_rows[:4] == [0, 1, 2, 15]
        assert "▸ h.0" in line(app, H0)
        assert app.selected_row == H0
        await pilot.press("j")
        assert app.selected_row == 15  # the next visible row: h.1
        await pilot.press("k", "space")
        assert app.visible_rows == list(range(len(comparison.rows)))


async def test_enter_on_a_leaf_does_nothing(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("j")  # wte: no submodules
        await pilot.press("enter")
        assert len(app.visible_rows) == len(comparison.rows)


async def test_f_unfolds_to_show_a_hidden_culprit(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g", "enter")  # fold the root: one row left
        assert app.visible_rows == [0]
        await pilot.press("f")
        assert app.selected_row == CULPRIT
        assert CULPRIT in app.visible_rows


# -- mouse -------------------------------------------------------------------------------


async def test_click_selects_a_row_and_clicking_the_marker_folds(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # Line 0 is the column header; row r is on line r + 1.
        await pilot.click(CallList, offset=(30, 1 + 3))
        assert app.selected_row == 3
        indent = len("41 ") + 2 * comparison.rows[H0].depth  # after the # column
        await pilot.click(CallList, offset=(indent, 1 + H0))
        assert app.selected_row == H0
        assert 3 not in app.visible_rows


async def test_the_mouse_wheel_scrolls_the_list(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        call_list = app.query_one(CallList)
        top = call_list.scroll_offset.y
        # The pilot has no wheel helper; its mouse-event helper sends any mouse event.
        await pilot._post_mouse_events([MouseScrollDown, MouseScrollDown], CallList, offset=(10, 3))
        await pilot.pause()
        assert call_list.scroll_offset.y > top
        assert app.selected_row == CULPRIT  # scrolling does not move the cursor


# -- filtering ---------------------------------------------------------------------------


async def test_slash_filters_rows_by_name_and_escape_clears(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash")
        assert app.focused is app.query_one(StatusLine)
        await pilot.press(*"mlp")
        expected = [row.index for row in comparison.rows if any("mlp" in name for name in (row.original_name or "", row.ported_name or ""))]
        assert app.visible_rows == expected
        assert app.selected_row in expected
        await pilot.press("enter")
        assert app.focused is app.query_one(CallList)
        assert app.visible_rows == expected  # enter keeps the filter
        assert "filter /mlp/" in str(app.query_one(StatusLine).render())
        assert "h.0.mlp (OriginalMLP)" in line(app, 10)  # filtered rows show full names
        await pilot.press("escape")
        assert app.visible_rows == list(range(len(comparison.rows)))


async def test_the_filter_matches_either_sides_name_as_a_regex(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"q_p")  # only in ported names: layers.N.self_attn.q_proj
        assert [names(app, row)[1] for row in app.visible_rows] == [f"layers.{n}.self_attn.q_proj" for n in range(3)]
        await pilot.press("escape")
        assert app.visible_rows == list(range(len(comparison.rows)))
        await pilot.press("slash", *"c_[qk]")  # original-only names
        assert [names(app, row)[0] for row in app.visible_rows] == [f"h.{n}.attn.c_{p}" for n in range(3) for p in "qk"]


async def test_an_invalid_regex_keeps_the_last_valid_filter(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"ln_f")
        assert app.visible_rows == [41]
        await pilot.press("(")
        status_line = app.query_one(StatusLine)
        assert status_line.has_class("-invalid")
        # Said in words, in the filter line itself, not only in colour.
        assert "/ln_f(   invalid regex: missing ), unterminated subpattern at position 4 · showing the last valid filter" in str(
            status_line.render()
        )
        assert app.visible_rows == [41]
        await pilot.press(")")  # valid again: the hint comes back and the filter applies
        assert not status_line.has_class("-invalid") and "invalid" not in str(status_line.render())
        assert app.visible_rows == [41]
        await pilot.press("[", "enter")  # kept while invalid: the last valid filter stays
        assert app.view.filter_text == "ln_f()" and "filter /ln_f()/" in str(status_line.render())
        assert not status_line.has_class("-invalid")


async def test_a_filter_with_no_match_says_so(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"zz", "enter")
        assert app.visible_rows == []
        await pilot.press("j", "n", "enter")  # keys on an empty list are harmless
        await pilot.press("escape")
        assert len(app.visible_rows) == len(comparison.rows)


async def test_x_shows_the_rows_that_differ_and_u_the_unmatched_ones(comparison: Comparison) -> None:
    """x keeps culprits, diverged and inherited rows (and shape, dtype, nonfinite and
    nondeterministic ones), without the one-sided calls, which u shows; the status line says
    how many rows each leaves out."""
    app = TracetuiApp(comparison)
    statuses = {row.index: comparison.status(row) for row in comparison.rows}
    unmatched = [row for row, status in statuses.items() if status == "unmatched"]
    assert unmatched == [14, 27, 40]
    async with app.run_test(size=(160, 40)) as pilot:  # the whole status line
        status_line = app.query_one(StatusLine)
        await pilot.press("x")
        assert app.visible_rows == [row for row, status in statuses.items() if status not in ("match", "unmatched")]
        assert 1 not in app.visible_rows and 14 not in app.visible_rows
        assert "only rows that differ · hidden: 3 unmatched (u shows), 5 matching · b debugs" in str(status_line.render())
        await pilot.press("u")  # and the unmatched ones
        assert app.visible_rows == [row for row, status in statuses.items() if status != "match"]
        assert "only rows that differ and unmatched rows · hidden: 5 matching · b debugs" in str(status_line.render())
        await pilot.press("x")  # only the unmatched ones, with their ancestors: the tree still reads
        assert app.visible_rows == [0, 2, 10, 14, 15, 23, 27, 28, 36, 40]
        assert all(comparison.rows[row].index in unmatched or row in (0, 2, 10, 15, 23, 28, 36) for row in app.visible_rows)
        assert "only unmatched rows · hidden: 5 matching, 27 differing (x shows) · b debugs" in str(status_line.render())
        await pilot.press("u")
        assert len(app.visible_rows) == len(comparison.rows)
        assert "hidden" not in str(status_line.render())


async def test_x_keeps_the_ancestors_of_a_row_that_differs(nesting_comparison: Comparison) -> None:
    listing_rows = nesting_comparison.rows
    app = TracetuiApp(nesting_comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x")
        for row in app.visible_rows:
            parent = listing_rows[row].parent
            assert parent is None or parent in app.visible_rows


# -- tolerance ---------------------------------------------------------------------------


async def test_t_changes_the_tolerance_and_rows_reclassify(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t")
        assert isinstance(app.screen, ToleranceDialog)
        await pilot.press(*"1", "enter")  # atol 1 (the field's text is selected: typing replaces it)
        await settle(pilot)
        assert not isinstance(app.screen, ToleranceDialog)
        current = app.comparison
        assert current is not None and current.tolerance.atol == 1.0
        assert current.verdict == "match" and current.culprit is None
        assert {current.status(row) for row in current.rows} <= {"match", "unmatched"}
        assert "MATCH" in header_text(app) and "atol 1" in header_text(app)
        assert "match" in line(app, CULPRIT) and "CULPRIT" not in line(app, CULPRIT)
        await pilot.press("g", "f")  # no culprit now
        assert app.selected_row == 0
        # Back to a tight tolerance: the culprit returns.
        await pilot.press("t", *"1e-3", "enter")
        await settle(pilot)
        assert app.comparison is not None and app.comparison.culprit is not None
        assert app.comparison.culprit.index == CULPRIT
        assert "DIVERGED" in header_text(app)


async def test_t_with_rtol(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t", "tab", *"2", "enter")  # atol unchanged, rtol 2
        await settle(pilot)
        assert app.comparison is not None
        assert (app.comparison.tolerance.atol, app.comparison.tolerance.rtol) == (0.001, 2.0)
        assert "rtol 2" in header_text(app)


async def test_t_rejects_bad_numbers_and_escape_cancels(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("t", *"-1", "enter")
        assert isinstance(app.screen, ToleranceDialog)
        assert "atol must be zero or positive" in str(app.screen.query_one("#tolerance-error", Label).content)
        await pilot.press("escape")
        assert not isinstance(app.screen, ToleranceDialog)
        assert app.comparison is comparison


# -- panes, help, quitting -----------------------------------------------------------------


async def test_d_toggles_the_detail_pane(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        detail = app.query_one(DetailPane)
        list_height = app.query_one(CallList).size.height
        assert detail.display
        await pilot.press("d")
        await pilot.pause()
        assert not detail.display
        assert app.query_one(CallList).size.height > list_height
        await pilot.press("d")
        await settle(pilot)
        assert detail.display and "h.0.attn ↔ layers.0.self_attn" in detail_text(app)


async def test_question_mark_opens_the_help_and_escape_closes_it(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = " ".join(str(label.content) for label in app.screen.query(Label).results(Label))
        assert "jump to the culprit" in help_text and "inherited" in help_text
        await pilot.press("j")  # keys do not reach the list behind
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.selected_row == CULPRIT


async def test_q_quits(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


async def test_m_pairs_two_unmatched_rows_by_hand_unpairs_and_w_writes_the_map(
    tiny_traces: tuple[Trace, Trace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracetui.pairing.rename_map import load_rename_map

    rules = [rule for rule in load_rename_map(MODELS / "map.toml").rules if "ln_f" not in rule[0].pattern]
    rename_map = [[pattern.pattern, replacement] for pattern, replacement in rules]
    partial = tracetui.compare(*tiny_traces, rename_map=rename_map, infer=False, rerun=False)
    original_only = next(row.index for row in partial.rows if row.original_name == "ln_f")
    app = TracetuiApp(partial)
    monkeypatch.chdir(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        app.selected_row = original_only
        await pilot.press("m")
        assert app.marked_row == original_only
        app.selected_row = next(row.index for row in partial.rows if row.ported_name == "norm")
        await pilot.press("m")
        await app.workers.wait_for_complete()
        await pilot.pause()
        paired = app.comparison.rows[app.selected_row]
        assert (paired.original_name, paired.ported_name, paired.pairing.method) == ("ln_f", "norm", "manual")
        assert app.comparison.status(paired) == "inherited"  # the planted bug is upstream, in layer 0

        await pilot.press("w")  # asks where; the port's folder is not under this one: here
        assert isinstance(app.screen, PathDialog)
        assert app.screen.query_one("#path", Input).value == "tracetui.map.toml"
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, PathDialog)
        rename_map = load_rename_map(tmp_path / "tracetui.map.toml")
        assert rename_map.apply("ln_f") == "norm" and rename_map.apply("h.1.attn") == "layers.1.self_attn"

        await pilot.press("m")  # on the paired row: unpair it again
        await app.workers.wait_for_complete()
        await pilot.pause()
        rows = app.comparison.rows
        assert any(row.original_name == "ln_f" and row.ported is None for row in rows)
        assert any(row.ported_name == "norm" and row.original is None for row in rows)



async def test_w_that_cannot_write_the_map_says_so_and_keeps_the_session(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tracetui.map.toml").mkdir()  # where the map goes is a folder: the write fails
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w", "enter")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, PathDialog)  # said in the dialog, which stays
        assert "tracetui.map.toml: that is a folder" in str(app.screen.query_one("#path-message", Label).content)
        path_input = app.screen.query_one("#path", Input)
        path_input.value = "missing/map.toml"
        await pilot.press("enter")
        await pilot.pause()
        message = str(app.screen.query_one("#path-message", Label).content)
        assert "the folder" in message and "does not exist" in message, message
        await pilot.press("escape")
        assert not isinstance(app.screen, PathDialog) and app.is_running
        assert [path.name for path in tmp_path.iterdir()] == ["tracetui.map.toml"]  # nothing written, nothing left behind


async def test_tab_moves_focus_to_the_detail_pane_where_j_scrolls(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("tab")
        assert app.focused is app.query_one(DetailPane)
        await pilot.press("j", "j")
        assert app.selected_row == CULPRIT
        assert app.query_one(DetailPane).scroll_offset.y > 0


# -- marks -------------------------------------------------------------------------------


async def test_shape_dtype_and_nonfinite_mismatches_are_marked(zoo_comparison: Comparison, settle) -> None:
    app = TracetuiApp(zoo_comparison)
    statuses = {row.original_name or row.ported_name: zoo_comparison.status(row) for row in zoo_comparison.rows if row.parent is not None}
    assert statuses == {
        "same": "match",
        "same.linear": "match",
        "shape": "shape_mismatch",
        "dtype": "dtype_mismatch",
        "nan": "nonfinite",
        "extra": "unmatched",
    }
    index = {row.original_name or row.ported_name: row.index for row in zoo_comparison.rows}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # The status words of the header and the JSON report, spelled the same.
        assert "shape mismatch" in line(app, index["shape"]) and "2×6≠2×5" in line(app, index["shape"])
        assert "dtype mismatch" in line(app, index["dtype"])
        assert "nonfinite" in line(app, index["nan"])
        app.selected_row = index["nan"]
        await settle(pilot)
        assert "NaN/Inf mismatches" in detail_text(app)
        app.selected_row = index["shape"]
        await settle(pilot)
        assert "shapes differ: [2, 6] vs [2, 5]" in detail_text(app)
        app.selected_row = index["dtype"]
        await settle(pilot)
        assert "dtypes differ: float32 vs float64" in detail_text(app)


async def test_a_row_has_one_number_in_the_list_the_status_line_and_the_detail(comparison: Comparison, settle) -> None:
    """Row 4 (the culprit) is #4 in the list's # column, the status line and the detail pane's
    title, as in the headless report's # column and the JSON's rows[4] — with rows hidden above it too."""
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.query_one(CallList).render_line(0).text.startswith(" # original (class)")
        assert line(app, 0).startswith(" 0 ") and line(app, CULPRIT).startswith(f" {CULPRIT} ")
        assert line(app, 41).startswith("41 ")
        assert "row #4 · 42 rows" in str(app.query_one(StatusLine).render())
        assert detail_text(app).startswith("#4  h.0.attn ↔ layers.0.self_attn")
        await pilot.press("x")  # rows above it hidden: still #4
        await settle(pilot)
        status = str(app.query_one(StatusLine).render())
        assert f"row #4 · {len(app.visible_rows)} of 42 rows" in status
        assert detail_text(app).startswith("#4  ")


async def test_a_nondeterministic_row_says_nondeterministic(settle) -> None:
    """The word of the header, the README and the JSON report, not an abbreviation of its own."""
    import torch
    from torch import nn
    from torch.nn import functional

    class AlwaysDropout(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return functional.dropout(x, p=0.5, training=True)

    def chain(middle: nn.Module) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 4), middle, nn.Linear(4, 4), nn.ReLU()), torch.randn(4, 4)

    comparison = tracetui.compare(chain(nn.Dropout(0.5)), chain(AlwaysDropout()), rerun=True)
    culprit = comparison.culprit
    assert culprit is not None and comparison.status(culprit) == "nondeterministic"
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "▶ nondeterministic" in line(app, culprit.index)  # the column widens to fit it
        assert "random" not in line(app, culprit.index)
        assert "nondeterministic" in header_text(app)
        assert "nondeterministic" in detail_text(app).splitlines()[0]


# -- the debugger's side ----------------------------------------------------------------


async def test_the_status_line_always_says_which_side_b_debugs(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert str(app.query_one(StatusLine).render()).endswith("b debugs ported (s switches)")
        await pilot.press("s")
        await pilot.pause(3.5)  # long after the toast
        assert not app._notifications  # the toast has gone, the status line still says it
        assert str(app.query_one(StatusLine).render()).endswith("b debugs original (s switches)")
        await pilot.press("x", "s")  # a filter does not push it out
        assert str(app.query_one(StatusLine).render()).endswith("b debugs ported (s switches)")


async def test_on_a_narrow_terminal_the_side_stays_and_the_rest_is_cut(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("x", "s", "slash", *"attn", "enter")
        await settle(pilot)
        status = str(app.query_one(StatusLine).render())
        # Shortened, never cut: every count whole, the side b debugs still said.
        assert status == "row #4 · 12 of 42 rows · /attn/ · x differing · 8 hidden · b: original", status
        assert len(status) <= 80 - 2  # the line's padding


async def test_debugger_messages_name_the_s_key_not_the_command_line_option(
    tiny_traces: tuple[Trace, Trace], settle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the interface, "choose the other side" means the s key: --side is for the command line."""
    import contextlib
    import copy

    original, ported = copy.copy(tiny_traces[0]), copy.copy(tiny_traces[1])
    original.source = "recorded/original.trace"  # a trace file: the debugger cannot re-run it
    comparison = tracetui.compare(original, ported, rename_map=MODELS / "map.toml", rerun=False)
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        monkeypatch.setattr(app, "suspend", contextlib.nullcontext)  # no terminal to hand over here
        await settle(pilot)
        await pilot.press("s", "b")  # the original side, at the culprit
        messages = [notification.message for notification in app._notifications]
        assert any("the original side is a trace file" in message and "with s (switch side)." in message for message in messages)
        assert not any("--side" in message for message in messages)
        app.selected_row = 14  # the port's dropout: no original call
        await pilot.press("b")
        messages = [notification.message for notification in app._notifications]
        assert any("has no original call: press s to switch to the other side" in message for message in messages)


# -- one trace (tracetui show) -----------------------------------------------------------


async def test_a_single_trace_uses_the_same_list_one_side(tiny_traces: tuple[Trace, Trace], settle) -> None:
    trace = tiny_traces[0]
    app = TracetuiApp(trace)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.visible_rows == list(range(len(trace)))
        assert "tracetui show" in header_text(app) and "models/original.py" in header_text(app)
        text = line(app, 4)
        assert "attn (OriginalAttention)" in text and "float32" in text and "Δ" not in text
        await pilot.press("j", "j", "enter")
        assert 3 not in app.visible_rows
        await pilot.press("enter", "slash", *"c_q", "enter")
        assert [trace.records[row].name for row in app.visible_rows] == [f"h.{n}.attn.c_q" for n in range(3)]
        await pilot.press("t", "x", "n")  # no tolerance, no statuses here: nothing happens
        assert not isinstance(app.screen, ToleranceDialog)
        await settle(pilot)
        text = detail_text(app)
        assert "h.0.attn.c_q" in text and "value" in text and "Δ" not in text


def test_an_interface_that_crashes_is_an_error_never_the_verdicts_status(comparison: Comparison, monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual catches an exception in the interface, prints it and returns; the command must
    not then exit with the comparison's 0 ("the port matches")."""
    from textual.app import App

    from tracetui.errors import InternalError
    from tracetui.tui import run_until_quit

    def crash_on_mount(self: TracetuiApp) -> None:
        raise RuntimeError("a widget failed")

    monkeypatch.setattr(TracetuiApp, "on_ready", crash_on_mount)
    monkeypatch.setattr(TracetuiApp, "run", lambda self: App.run(self, headless=True, size=SIZE))
    with pytest.raises(InternalError, match="the interface stopped on an error"):
        run_until_quit(TracetuiApp(comparison))

"""What users of good terminal apps expect, key by key: a pending pairing mark that stays visible,
files written where the user says (w, S, R) and never over a file without asking, the clipboard
(c), the command palette (ctrl+p), a readable light theme, the detail pane leading with the
difference, and a one-line summary when the app quits.

The tiny comparison (models/): 42 rows, row 4 the culprit ``h.0.attn ↔ layers.0.self_attn``,
rows 14, 27 and 40 the port's unmatched dropouts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from rich.style import Style
from textual.color import Color
from textual.command import CommandPalette
from textual.widgets import Input, Label

import tracetui
from tracetui.compare import Comparison
from tracetui.trace import Trace
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import MARKED_LABEL, CallList
from tracetui.tui.detail import DetailPane
from tracetui.tui.dialogs import PathDialog
from tracetui.tui.lines import component_style
from tracetui.tui.status_line import StatusLine
from tracetui.tui.summary import headless_command, quit_summary

CULPRIT = 4
DROPOUT = 14  # the port's first unmatched dropout
SIZE = (120, 40)
MODELS = Path(__file__).parent / "models"


def line(app: TracetuiApp, row: int) -> str:
    return app.query_one(CallList).line_text(row)


def toasts(app: TracetuiApp) -> list[str]:
    return [str(notification.message) for notification in app._notifications]


def dialog_message(app: TracetuiApp) -> str:
    return str(app.screen.query_one("#path-message", Label).content)


# -- m: the pending mark ---------------------------------------------------------------------


async def test_a_pending_mark_stays_on_its_row_until_escape_cancels_it(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        app.selected_row = DROPOUT
        await pilot.press("m")
        assert app.marked_row == DROPOUT
        # The toast names the call in full, with its row: a model has many dropouts.
        expected = f"marked #{DROPOUT} layers.0.mlp.dropout (ported only): press m on its original counterpart"
        assert any(message.startswith(expected) for message in toasts(app)), toasts(app)
        app.clear_notifications()
        await pilot.press("j", "j")  # the cursor moves on; the mark stays on its row
        await pilot.pause()
        assert MARKED_LABEL in line(app, DROPOUT)
        assert MARKED_LABEL not in line(app, DROPOUT + 2)
        await pilot.press("escape")
        assert app.marked_row is None
        assert MARKED_LABEL not in line(app, DROPOUT) and "unmatched" in line(app, DROPOUT)
        assert any("cancelled" in message for message in toasts(app))


async def test_escape_cancels_the_mark_before_it_clears_the_filter(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"drop", "enter")
        app.selected_row = DROPOUT
        await pilot.press("m", "escape")
        assert app.marked_row is None and app.view.filter_text == "drop"
        await pilot.press("escape")
        assert app.view.filter_text == ""


# -- w, S, R: files written where the user says ------------------------------------------------


@pytest.fixture
def port_in_a_folder(tiny_traces: tuple[Trace, Trace], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Comparison:
    """The tiny comparison with its port's script in ``tmp_path/port/``, the working folder ``tmp_path``."""
    (tmp_path / "port").mkdir()
    (tmp_path / "port" / "ported.py").write_text("# the port\n")
    ported = copy.copy(tiny_traces[1])  # the session's trace keeps its source
    ported.source = str(tmp_path / "port" / "ported.py")
    monkeypatch.chdir(tmp_path)
    return tracetui.compare(tiny_traces[0], ported, rename_map=MODELS / "map.toml", rerun=False)


async def test_w_asks_where_next_to_the_port_and_confirms_before_overwriting(port_in_a_folder: Comparison, tmp_path: Path) -> None:
    from tracetui.pairing.rename_map import load_rename_map

    map_path = tmp_path / "port" / "tracetui.map.toml"
    app = TracetuiApp(port_in_a_folder)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        assert isinstance(app.screen, PathDialog)
        assert app.screen.query_one("#path", Input).value == "port/tracetui.map.toml"  # relative to the working folder
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, PathDialog)
        assert load_rename_map(map_path).apply("h.1.attn") == "layers.1.self_attn"
        assert any("wrote port/tracetui.map.toml: pass --map port/tracetui.map.toml next time" in message for message in toasts(app))

        map_path.write_text("# mine\n")
        await pilot.press("w", "enter")  # the file exists: asks first
        await pilot.pause()
        assert isinstance(app.screen, PathDialog)
        assert "tracetui.map.toml already exists: enter again overwrites it" in dialog_message(app)
        assert map_path.read_text() == "# mine\n"
        await pilot.press("escape")  # cancelled: the file stays as it was
        assert map_path.read_text() == "# mine\n"
        await pilot.press("w", "enter", "enter")  # confirmed
        await pilot.pause()
        assert not isinstance(app.screen, PathDialog)
        assert load_rename_map(map_path).apply("h.1.attn") == "layers.1.self_attn"
        assert not [path for path in (tmp_path / "port").iterdir() if path.name.startswith(".")]  # no partial file left


async def test_S_saves_the_screen_as_svg_where_the_user_says(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settle
) -> None:
    monkeypatch.chdir(tmp_path)
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("S")
        assert isinstance(app.screen, PathDialog)
        path_input = app.screen.query_one("#path", Input)
        assert path_input.value == "tracetui-screenshot.svg"
        path_input.value = "shots/first.svg"  # a folder that does not exist: said, not raised
        await pilot.press("enter")
        assert "does not exist" in dialog_message(app)
        path_input.value = "first.svg"
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, PathDialog)
    svg = (tmp_path / "first.svg").read_text()
    assert svg.startswith("<svg") and "CULPRIT" in svg.replace("&#160;", " ")
    assert "first.svg" not in svg  # the screen as it was when S was pressed, not the dialog
    assert any("wrote first.svg" in message for message in toasts(app))


async def test_R_saves_the_report_as_text_and_json(comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        assert isinstance(app.screen, PathDialog)
        assert app.screen.query_one("#path", Input).value == "tracetui-report.txt"
        await pilot.press("enter")
        await pilot.pause()
        assert any("wrote tracetui-report.txt and tracetui-report.json" in message for message in toasts(app)), toasts(app)
    text = (tmp_path / "tracetui-report.txt").read_text()
    assert "DIVERGED  first divergence: h.0.attn ↔ layers.0.self_attn" in text
    assert "\x1b[" not in text  # plain text, no colour codes
    assert text.count("\n") > len(comparison.rows)  # every row, as --full
    document = json.loads((tmp_path / "tracetui-report.json").read_text())
    assert document["verdict"] == "diverged" and document["first_divergence"]["original"] == "h.0.attn"


async def test_R_is_off_for_a_single_trace(tiny_traces: tuple[Trace, Trace]) -> None:
    app = TracetuiApp(tiny_traces[0])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("R")
        assert not isinstance(app.screen, PathDialog)


# -- c: the clipboard --------------------------------------------------------------------------


async def test_c_copies_the_names_and_in_the_detail_pane_the_worst_elements(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("c")
        assert app.clipboard == "h.0.attn ↔ layers.0.self_attn"
        assert "copied h.0.attn ↔ layers.0.self_attn" in toasts(app)
        await pilot.press("tab", "c")  # in the detail pane
        lines = app.clipboard.splitlines()
        assert lines[0] == "# h.0.attn ↔ layers.0.self_attn output: the 5 largest |ported - original|"
        assert lines[2].startswith("[0, 2, 12]\t") and len(lines) == 2 + 5
        index, original, ported, delta = lines[2].split("\t")
        assert float(ported) - float(original) == pytest.approx(float(delta)) and float(delta) == pytest.approx(0.2263, abs=1e-4)
        assert any(message.startswith("copied the worst elements of #4 h.0.attn") for message in toasts(app))


# -- ctrl+p: the command palette ---------------------------------------------------------------


async def test_the_command_palette_lists_the_actions_and_runs_them(comparison: Comparison) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("g")
        assert app.selected_row == 0
        await pilot.press("ctrl+p")
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"jump to the culprit")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert not isinstance(app.screen, CommandPalette)
        assert app.selected_row == CULPRIT

        await pilot.press("ctrl+p", *"only rows that differ")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.view.only_problems


async def test_the_palette_offers_the_theme_and_every_action_with_its_key(comparison: Comparison) -> None:
    from textual.command import DiscoveryHit

    from tracetui.tui.commands import ActionCommands

    app = TracetuiApp(comparison)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        provider = ActionCommands(app.screen_stack[0])
        hits = [hit async for hit in provider.discover()]
        labels = [str(hit.display) for hit in hits if isinstance(hit, DiscoveryHit)]
        expected = ("Jump to the culprit  (f)", "Save the report  (R)", "Copy the selected row's names  (c)", "Write the rename map  (w)")
        assert set(expected) <= set(labels), labels
        system_titles = [command.title for command in app.get_system_commands(app.screen_stack[0])]
        assert "Theme" in system_titles and "Screenshot" not in system_titles  # S replaces Textual's own


# -- the light theme ---------------------------------------------------------------------------


def contrast(style: Style) -> float:
    """WCAG contrast ratio of a style's text on its background."""
    assert style.color is not None and style.bgcolor is not None

    def luminance(color: Color) -> float:
        def channel(value: int) -> float:
            value_01 = value / 255
            return value_01 / 12.92 if value_01 <= 0.03928 else ((value_01 + 0.055) / 1.055) ** 2.4

        red, green, blue = color.rgb
        return 0.2126 * channel(red) + 0.7152 * channel(green) + 0.0722 * channel(blue)

    text, background = Color(*style.color.get_truecolor()), Color(*style.bgcolor.get_truecolor())
    lighter, darker = sorted((luminance(text), luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_every_status_colour_is_readable_in_both_themes(comparison: Comparison, theme: str) -> None:
    app = TracetuiApp(comparison, theme=theme)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == theme
        widgets = [(app.query_one(CallList), "call-list--"), (app.query_one(DetailPane), "detail--")]
        for widget, prefix in widgets:
            for name in widget.COMPONENT_CLASSES:
                style = widget.rich_style + component_style(widget, name)
                if name in (f"{prefix}cursor", f"{prefix}worst"):
                    continue  # a background shade; reverse video
                # Unmatched rows and missing names recede on purpose, but stay legible.
                least = 3.0 if any(part in name for part in ("unmatched", "missing")) else 4.0
                assert contrast(style) >= least, (theme, name, round(contrast(style), 2))


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_the_culprits_name_has_the_strongest_contrast_in_the_header(fed_comparison: Comparison, theme: str) -> None:
    app = TracetuiApp(fed_comparison, theme=theme)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        labels = [label for label in app.query("ComparisonHeader Label").results(Label) if label.display and str(label.content).strip()]
        ratios = {label.id or str(label.content): contrast(label.rich_style) for label in labels}
        assert ratios["culprit"] >= max(ratios.values()) - 1e-9, ratios
        assert ratios["culprit"] >= 7  # WCAG AAA


# -- the status line ---------------------------------------------------------------------------


async def test_at_120_columns_with_x_the_status_line_fits_and_cuts_no_count(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("x")
        await settle(pilot)
        status = str(app.query_one(StatusLine).render())
        assert status == "row #4 · 34 of 42 rows · only rows that differ · 8 hidden · b debugs ported (s switches)", status


# -- the detail pane (item 7) ------------------------------------------------------------------


async def test_a_culprits_detail_shows_its_outputs_first_and_says_what_the_preview_shows(comparison: Comparison, settle) -> None:
    app = TracetuiApp(comparison)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot)
        text = app.query_one(DetailPane).plain_text()
        assert text.index("OUTPUTS") < text.index("INPUTS")  # where the difference is, first
        assert "showing rows 0-6 of 7, columns 0, 12, 15 of 16 of [1, 7, 16] at [0, :, :]" in text
        assert "worst  = the element with the largest |Δ|, [0, 2, 12]" in text
        assert "|Δ| along dim 2 (16; each bar = 1 position; █ = 2.26e-01)" in text
        app.selected_row = next(row.index for row in comparison.rows if comparison.status(row) == "match")
        await settle(pilot)  # a matching row keeps its inputs first
        text = app.query_one(DetailPane).plain_text()
        assert text.index("INPUTS") < text.index("OUTPUTS")


def test_the_worst_element_is_marked_in_the_preview_and_the_bins_are_said() -> None:
    import torch
    from rich.console import Console

    from tracetui.classify import Tolerance
    from tracetui.numeric import measure
    from tracetui.rows import LeafPair
    from tracetui.trace import Leaf
    from tracetui.tui.tensor_detail import Palette, describe_leaf

    original = torch.zeros(4, 256, 768)
    ported = original.clone()
    ported[2, 100, 500] = 0.75
    pair = LeafPair(Leaf("hidden_states", original), Leaf("hidden_states", ported), measure(original, ported))
    console = Console(width=160, record=True, color_system="truecolor", force_terminal=True)
    worst = Style(reverse=True, bold=True)
    console.print(describe_leaf(pair, Tolerance(), 160, Palette(worst=worst)))
    text = console.export_text(styles=False, clear=False)
    assert "of [4, 256, 768] at [2, :, :]" in text and ", 100, " in text.split("showing rows ")[1].split(" of 256")[0]
    assert "each bar = 6 positions; █ = 7.50e-01" in text  # 256 positions in 48 bars at most
    assert "each bar = 16 positions" in text  # 768 of them
    styled = console.export_text(styles=True)
    assert "\x1b[1;7m0.7500\x1b[0m" in styled and "\x1b[1;7m0.0000\x1b[0m" in styled  # the worst value, reversed, on both sides


# -- quitting ----------------------------------------------------------------------------------


def test_the_quit_summary_names_the_verdict_the_culprits_and_the_headless_command(fed_comparison: Comparison) -> None:
    command = headless_command(["compare", "models/original.py", "models/ported.py", "--map", "map.toml", "--theme", "light"])
    assert command == "tracetui compare models/original.py models/ported.py --map map.toml --no-tui"
    summary = quit_summary(fed_comparison, command)
    culprits = fed_comparison.culprits
    assert summary.startswith(f"tracetui: DIVERGED · {len(culprits)} culprits: h.0.attn ↔ layers.0.self_attn, ")
    assert summary.endswith(" · headless: tracetui compare models/original.py models/ported.py --map map.toml --no-tui")
    assert "\n" not in summary
    assert headless_command(["compare", "a b.py", "c.py", "--no-tui"]) == "tracetui compare 'a b.py' c.py --no-tui"


def test_the_quit_summary_escapes_names_from_user_code(comparison: Comparison) -> None:
    culprit = comparison.culprits[0]
    assert culprit.original is not None
    renamed = dataclasses.replace(culprit.original, name="h.0.attn\x1b]0;pwned\x07\n")
    row = dataclasses.replace(culprit, original=renamed)
    faked = dataclasses.replace(comparison, diagnosis=dataclasses.replace(comparison.diagnosis, culprits=[row]))
    summary = quit_summary(faked, "tracetui compare 'x\x1b[2J.py' p.py --no-tui")
    assert "\x1b" not in summary and "\n" not in summary and "\x07" not in summary
    assert "h.0.attn\\x1b]0;pwned\\x07\\n" in summary and "x\\x1b[2J.py" in summary


def test_a_matching_comparison_says_so_when_it_quits(make_comparison) -> None:
    matching = make_comparison(atol=1.0)
    assert quit_summary(matching, None) == "tracetui: MATCH · every paired call agrees within atol 1"


def test_compare_theme_option(tmp_path: Path) -> None:
    from tracetui.cli import build_parser

    arguments = build_parser().parse_args(["compare", "a.py", "b.py", "--theme", "light"])
    assert arguments.theme == "light"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "a.py", "b.py", "--theme", "sepia"])

"""The interface shows names from user code and trace files as text: escape sequences written out
(``\\x1b``), markup shown as its characters. An unbalanced ``[/x]`` in a module name used to stop
the interface with Textual's MarkupError, and its escape sequences went to the terminal raw.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pexpect
import pytest
from textual.widgets import Input, Label
from textual.widgets._toast import Toast
from untrusted_scripts import (
    MODULE_NAME,
    SHOWN_CLASS_NAME,
    SHOWN_FOLDER_NAME,
    SHOWN_MODULE_NAME,
    SHOWN_OUTPUT_KEY,
    assert_no_injected_sequence,
    write_untrusted_pair,
)

import tracetui
from tracetui.tui import TracetuiApp
from tracetui.tui.call_list import CallList
from tracetui.tui.detail import DetailPane

WIDE = (320, 50)  # wide enough for the whole name and class on the row's line
REPOSITORY = Path(__file__).resolve().parents[2]


def header_text(app: TracetuiApp) -> str:
    return " ".join(str(label.render()) for label in app.query("ComparisonHeader Label").results(Label))


async def test_comparison_of_untrusted_names_opens_and_shows_them_escaped(tmp_path: Path, settle) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    comparison = tracetui.compare(original, ported, rerun=False)
    culprit = comparison.culprit
    assert culprit is not None and culprit.ported is not None and culprit.ported.name == MODULE_NAME

    app = TracetuiApp(comparison)
    async with app.run_test(size=WIDE, notifications=True) as pilot:
        await pilot.press("f")
        await settle(pilot)
        header = header_text(app)
        row_line = app.query_one(CallList).line_text(culprit.index)
        detail = app.query_one(DetailPane).plain_text()
        for shown in (header, row_line, detail):
            assert_no_injected_sequence(shown)
        assert SHOWN_MODULE_NAME in header and SHOWN_CLASS_NAME in header
        # The folder both scripts share is left out of the header, and shown in the tooltip.
        tooltip = str(app.query_one("#original-source", Label).tooltip)
        assert SHOWN_FOLDER_NAME in tooltip
        assert_no_injected_sequence(tooltip)
        assert f"{SHOWN_MODULE_NAME} ({SHOWN_CLASS_NAME})" in row_line
        assert SHOWN_MODULE_NAME in detail and SHOWN_CLASS_NAME in detail

        await pilot.press("g")  # the root: its output is a dict, keyed by a weird name
        await settle(pilot)
        root_detail = app.query_one(DetailPane).plain_text()
        assert f"output.{SHOWN_OUTPUT_KEY}" in root_detail
        assert_no_injected_sequence(root_detail)

        await pilot.press("f", "m")  # unpairs the culprit's row, and says so in a toast
        await settle(pilot)
        toasts = " ".join(str(toast.render()) for toast in app.screen.query(Toast))
        assert f"unpaired #1 {SHOWN_MODULE_NAME}" in toasts  # with its row number
        assert_no_injected_sequence(toasts)


async def test_tolerance_dialog_shows_typed_brackets_as_text(tmp_path: Path) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    app = TracetuiApp(tracetui.compare(original, ported, rerun=False))
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("t")
        await pilot.pause()
        app.screen.query_one("#atol", Input).value = "[/x]"
        await pilot.press("enter")
        await pilot.pause()
        assert "(got '[/x]')" in str(app.screen.query_one("#tolerance-error", Label).render())


async def test_trace_of_untrusted_names_opens_and_shows_them_escaped(tmp_path: Path, settle) -> None:
    original, _ = write_untrusted_pair(tmp_path)
    trace = tracetui.record(original, rerun=False)
    row = next(record.index for record in trace.records if record.name == MODULE_NAME)

    app = TracetuiApp(trace)
    async with app.run_test(size=WIDE) as pilot:
        await pilot.press("j")
        await settle(pilot)
        header = " ".join(str(label.render()) for label in app.query("ComparisonHeader Label").results(Label))
        row_line = app.query_one(CallList).line_text(row)
        detail = app.query_one(DetailPane).plain_text()
        for shown in (header, row_line, detail):
            assert_no_injected_sequence(shown)
        assert SHOWN_FOLDER_NAME in header
        assert f"{SHOWN_MODULE_NAME} ({SHOWN_CLASS_NAME})" in row_line
        assert SHOWN_MODULE_NAME in detail and SHOWN_CLASS_NAME in detail


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_the_real_interface_sends_no_injected_sequence_to_the_terminal(tmp_path: Path) -> None:
    """What the terminal receives, all of it: the window is not renamed, the names are readable."""
    original, ported = write_untrusted_pair(tmp_path)
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "200", "LINES": "40"}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    received = io.StringIO()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tracetui", "compare", original.name, ported.name, "--no-rerun"],
        cwd=str(original.parent), env=environment, dimensions=(40, 200), encoding="utf-8", codec_errors="replace", timeout=90,
    )  # fmt: skip
    child.logfile_read = received
    try:
        child.expect("CULPRIT")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1, received.getvalue()[-2000:]
    terminal = received.getvalue()
    assert "\x1b]0;pwned" not in terminal  # the OSC that renames the window
    assert r"weird\x1b]0;pwned\x07" in terminal  # the name, as text

"""Names, paths and messages from user code and trace files reach the terminal escaped.

A module name (``add_module`` takes any string without a dot), a class name (``type(...)``), an
output's key or an exception's message can hold an escape sequence that renames the terminal
window (OSC ``\\x1b]0;…\\x07``) or blanks it (``\\x1b[2J``), a newline that splits a row, or Rich
markup: ``[link=…]`` turned into a link, an unbalanced ``[/x]`` made Rich raise. Each is shown
as text: control characters as Python escapes (``\\x1b``), markup as its own characters.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from untrusted_scripts import (
    MODULE_NAME,
    OUTPUT_KEY,
    RAISING_SCRIPT,
    SHOWN_CLASS_NAME,
    SHOWN_ERROR,
    SHOWN_FOLDER_NAME,
    SHOWN_MODULE_NAME,
    SHOWN_NAME_PIECES,
    SHOWN_OUTPUT_KEY,
    assert_no_injected_sequence,
    write_untrusted_pair,
)

import tracetui
from tracetui.cli import main
from tracetui.debugger.context import DebugContext
from tracetui.pairing.rename_map import load_rename_map
from tracetui.safe_text import for_markup, printable

REPOSITORY = Path(__file__).resolve().parents[1]


def run_tracetui(*arguments: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, output piped (so no styling of rich's own), this checkout first on the path."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *map(str, arguments)],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def assert_shown_escaped(output: str, *shown: str) -> None:
    """Every injected sequence absent, every name present as its escaped text (where rich wrapped
    a line at a space, as a long temporary path makes it, the space is read back)."""
    assert_no_injected_sequence(output)
    assert "Traceback" not in output and "MarkupError" not in output, output
    flowing = " ".join(output.split())
    for text in shown:
        assert " ".join(text.split()) in flowing, f"{text!r} not in:\n{output}"


# -- the helpers ---------------------------------------------------------------------------


def test_printable_writes_control_characters_as_escapes() -> None:
    assert printable(MODULE_NAME) == SHOWN_MODULE_NAME
    assert printable("tab\there\r\x7f\x85\u202e\udcff") == r"tab\there\r\x7f\x85\u202e\udcff"
    assert printable("line one\n\tline two\x1b[2J", multiline=True) == "line one\n\tline two\\x1b[2J"
    assert printable("h.0.attn ↔ layers.0.self_attn  café") == "h.0.attn ↔ layers.0.self_attn  café"
    assert printable(Path("a/b.py")) == "a/b.py"


def test_for_markup_shows_the_markup_as_text() -> None:
    console = Console(file=io.StringIO(), width=300)
    console.print(f"[bold]name:[/] {for_markup(MODULE_NAME)} [bold]end[/]", highlight=False)
    console.print(f"[bold]path:[/] {for_markup('C:' + chr(92))}[bold]!")  # a trailing backslash does not escape the tag
    assert console.file.getvalue() == f"name: {SHOWN_MODULE_NAME} end\npath: C:\\!\n"  # type: ignore[attr-defined]


# -- the real command ----------------------------------------------------------------------


def test_compare_headless_shows_names_escaped(tmp_path: Path) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    report = tmp_path / "report.json"

    result = run_tracetui("compare", original, ported, "--no-tui", "--full", "--json", report, cwd=tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output  # the port's weird module doubles its output: a divergence, not a crash
    assert_shown_escaped(output, SHOWN_MODULE_NAME, SHOWN_CLASS_NAME, SHOWN_FOLDER_NAME)
    assert f"first divergence: {SHOWN_MODULE_NAME}" in result.stdout
    # The JSON report keeps the exact names.
    document = json.loads(report.read_text())
    assert document["first_divergence"]["ported"] == MODULE_NAME


def test_script_error_message_is_shown_escaped(tmp_path: Path, write_script) -> None:
    good, _ = write_untrusted_pair(tmp_path)
    raising = write_script("raising.py", RAISING_SCRIPT)

    result = run_tracetui("compare", good, raising, "--no-tui", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ")
    assert_no_injected_sequence(result.stdout + result.stderr)
    assert f"build() raised RuntimeError: {SHOWN_ERROR}" in result.stderr.replace("\n", "")
    # The script's own traceback below the message, escaped the same way, its lines kept.
    assert f"RuntimeError: {SHOWN_ERROR}\n" in result.stderr
    assert "Traceback (most recent call last):\n" in result.stderr


def test_recorded_trace_of_untrusted_names_compares_and_shows_escaped(tmp_path: Path) -> None:
    original, _ = write_untrusted_pair(tmp_path)
    trace = original.with_name("original.trace")

    recorded = run_tracetui("record", original, "-o", trace, "--no-rerun", cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    assert_shown_escaped(recorded.stdout + recorded.stderr, SHOWN_FOLDER_NAME)

    compared = run_tracetui("compare", trace, trace, "--no-tui", cwd=tmp_path)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert_shown_escaped(compared.stdout + compared.stderr, *SHOWN_NAME_PIECES, SHOWN_CLASS_NAME, "original.trace")

    shown = run_tracetui("show", trace, "--no-tui", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert_shown_escaped(shown.stdout + shown.stderr, *SHOWN_NAME_PIECES, SHOWN_CLASS_NAME, SHOWN_OUTPUT_KEY)


# -- the other sub-commands (in this process: quicker) --------------------------------------


def test_error_naming_untrusted_modules_is_shown_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    status = main(["compare", str(original), str(ported), "--no-rerun", "--break-at", "weird", "--no-tui"])
    captured = capsys.readouterr()
    assert status == 2
    assert "no module named 'weird'" in captured.err
    assert_shown_escaped(captured.out + captured.err, SHOWN_MODULE_NAME)


def test_tracetuis_own_messages_with_brackets_keep_their_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    rename_map = tmp_path / "map.toml"
    rename_map.write_text('rename = [["a", 1]]\n')
    assert main(["compare", str(original), str(ported), "--map", str(rename_map), "--no-tui"]) == 2
    assert "each rule is a pair of strings [regex, replacement]." in capsys.readouterr().err

    assert main(["compare", str(original), str(ported), "--break-at", "x:y", "--no-tui"]) == 2
    assert "expected QUALNAME[:CALL]" in capsys.readouterr().err


def test_weights_report_shows_tensor_names_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    assert main(["weights", str(original), str(ported), "--full"]) == 0
    captured = capsys.readouterr()
    assert_shown_escaped(captured.out + captured.err, *SHOWN_NAME_PIECES)


def test_align_prints_a_map_that_reads_back_exactly_and_shows_nothing_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    ported.write_text(ported.read_text().replace("MODULE_NAME = ", "MODULE_NAME = 'plain' or "))

    assert main(["align", str(original), str(ported)]) == 0

    captured = capsys.readouterr()
    assert_no_injected_sequence(captured.out + captured.err)
    assert SHOWN_FOLDER_NAME in captured.out  # the scripts' folder, in the header comment
    printed_map = tmp_path / "map.toml"
    printed_map.write_text(captured.out)
    assert load_rename_map(printed_map).apply(MODULE_NAME) == "plain"  # valid TOML, the name exact


def test_debugger_banner_shows_names_escaped(tmp_path: Path) -> None:
    original, ported = write_untrusted_pair(tmp_path)
    comparison = tracetui.compare(original, ported, rerun=False)
    culprit = comparison.culprit
    assert culprit is not None and culprit.ported is not None and culprit.ported.name == MODULE_NAME

    context = DebugContext(comparison, culprit, "ported", ported)

    banner = context.banner()
    assert_shown_escaped(banner, SHOWN_MODULE_NAME, SHOWN_CLASS_NAME, SHOWN_FOLDER_NAME)
    assert_shown_escaped(repr(context.this) + repr(context.other), SHOWN_MODULE_NAME, SHOWN_CLASS_NAME)
    output_diff = context.diff_output({OUTPUT_KEY: culprit.ported.outputs[0].tensor})
    assert_no_injected_sequence(repr(output_diff))

"""The real command in a pseudo-terminal: `tracetui compare` opens the interface, keys work,
`q` quits with the comparison's exit status and the terminal is given back as it was — also
when a signal ends it, or when there is no terminal to draw on."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from pathlib import Path

import pexpect
import pytest
from pseudo_terminal import default_signal_handlers, hang_up

MODELS = Path(__file__).parent / "models"
LEAVE_ALTERNATE_SCREEN = "\x1b[?1049l"
SHOW_CURSOR = "\x1b[?25h"
MOUSE_TRACKING_OFF = "\x1b[?1000l"
ENTER_ALTERNATE_SCREEN = "\x1b[?1049h"


def spawn(*arguments: str, program: str = sys.executable, size: tuple[int, int] = (120, 40)) -> pexpect.spawn:
    columns, lines = size
    # PROMPT_TOOLKIT_NO_CPR: ipdb's prompt would wait for a cursor-position answer pexpect never gives.
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines), "PROMPT_TOOLKIT_NO_CPR": "1"}
    environment.pop("NO_COLOR", None)
    return pexpect.spawn(
        program,
        list(arguments) if program != sys.executable else ["-m", "tracetui", *arguments],
        cwd=str(MODELS),
        env=environment,
        dimensions=(lines, columns),
        encoding="utf-8",
        codec_errors="replace",
        timeout=90,
        preexec_fn=default_signal_handlers,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_compare_opens_the_interface_and_q_restores_the_terminal() -> None:
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun")
    try:
        child.expect("DIVERGED")  # the header is on screen
        child.expect("CULPRIT")
        for key in ("f", "j", "d", "d", "x", "x", "?"):
            child.send(key)
        child.expect("tracetui — keys")  # the help screen opened after the other keys
        child.send("?")  # closes it (a lone escape followed at once by q would read as alt+q)
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1  # a diverged pair, as headless
    tail = (child.before or "")[-400:]
    assert LEAVE_ALTERNATE_SCREEN in tail, repr(tail)
    assert SHOW_CURSOR in tail, repr(tail)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_at_80_by_24_it_opens_on_the_culprit_and_every_key_of_a_batch_counts() -> None:
    """The culprit (row #4 of 42) is selected and on the first screen without a key; the header
    leads with the verdict and shows its figures whole; ``jjjj`` written at once moves four rows."""
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun", size=(80, 24))
    try:
        child.expect("DIVERGED")
        child.expect("atol 0.001")  # whole: never `atol 0.0`
        child.expect(r"out \|Δ\|")
        child.expect("2.26e-01")  # the culprit's output Δ, whole
        child.expect("CULPRIT")
        child.expect("row #4 · 42 rows")  # the cursor is on it, no key pressed
        child.send("jjjj")  # one write: the keys arrive together
        child.expect("row #8 · 42 rows")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_quitting_prints_the_verdict_the_culprit_and_the_headless_command() -> None:
    """The alternate screen goes with the app; one line stays in the terminal: the verdict, the
    culprit's name and the command that prints the report without the interface."""
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun", "--theme", "light")
    try:
        child.expect("CULPRIT")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    after_the_app = re.sub(r"\x1b\[[?0-9;]*[a-zA-Z]", "", (child.before or "").rsplit(LEAVE_ALTERNATE_SCREEN, 1)[1])
    summary = [line.rstrip("\r") for line in after_the_app.splitlines() if line.startswith("tracetui: ")]
    expected = (
        "tracetui: DIVERGED · 3 culprits: h.0.attn ↔ layers.0.self_attn, h.1.attn ↔ layers.1.self_attn, h.2.attn ↔ layers.2.self_attn · "
        "headless: tracetui compare original.py ported.py --map map.toml --no-rerun --no-tui"
    )
    assert summary == [expected], repr(after_the_app)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_show_opens_the_interface_for_one_trace() -> None:
    child = spawn("show", "original.py", "--no-rerun")
    try:
        child.expect("tracetui show")
        child.send("G")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert LEAVE_ALTERNATE_SCREEN in (child.before or "")[-400:]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_b_suspends_the_interface_for_ipdb_and_comes_back() -> None:
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun")
    child.delayafterread = None
    try:
        child.expect("CULPRIT")
        child.send("f")  # select the culprit
        child.send("b")  # and break in its forward, ported side
        child.expect("ipdb>", timeout=120)
        child.sendline("p ctx.side, ctx.row.index")
        child.expect(r"\('ported', \d+\)")
        child.sendline("c")  # finish the run: the interface comes back
        child.expect("DIVERGED", timeout=120)
        child.expect("debugger: the run finished")
        child.send("?")  # and answers keys
        child.expect("tracetui — keys")
        child.send("?")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    tail = (child.before or "")[-400:]
    assert LEAVE_ALTERNATE_SCREEN in tail and SHOW_CURSOR in tail, repr(tail)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize(
    ("command", "signal_number"),
    [
        (("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun"), signal.SIGTERM),
        (("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun"), signal.SIGHUP),
        (("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun"), signal.SIGINT),
        (("show", "original.py", "--no-rerun"), signal.SIGTERM),
    ],
    ids=["compare-SIGTERM", "compare-SIGHUP", "compare-SIGINT", "show-SIGTERM"],
)
def test_a_signal_ends_the_interface_with_130_and_restores_the_terminal(command: tuple[str, ...], signal_number: int) -> None:
    child = spawn(*command)
    try:
        child.expect("tracetui show" if command[0] == "show" else "CULPRIT")  # the interface is on screen
        child.kill(signal_number)
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 130 and child.signalstatus is None, (child.exitstatus, child.signalstatus)
    tail = (child.before or "")[-400:]
    for sequence in (LEAVE_ALTERNATE_SCREEN, SHOW_CURSOR, MOUSE_TRACKING_OFF):
        assert sequence in tail, (sequence, tail)
    assert tail.rstrip().endswith("interrupted"), repr(tail)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
@pytest.mark.parametrize(
    ("command", "exit_status", "expected"),
    [
        (("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun"), 1, "DIVERGED"),
        (("show", "original.py", "--no-rerun"), 0, "OriginalGPT"),
    ],
    ids=["compare", "show"],
)
def test_with_stderr_redirected_the_report_is_printed_instead_of_an_invisible_interface(
    tmp_path: Path, command: tuple[str, ...], exit_status: int, expected: str
) -> None:
    """Textual draws on stderr: `2>file` would send the interface into the file and leave the
    terminal looking hung. stdin and stdout are the terminal here, as a user's would be."""
    stderr_file = tmp_path / "stderr.txt"
    command_line = shlex.join([sys.executable, "-m", "tracetui", *command])
    child = spawn("-c", f"exec {command_line} 2>{shlex.quote(str(stderr_file))}", program="/bin/sh")
    try:
        child.expect(pexpect.EOF)
    finally:
        child.close()
    output = child.before or ""
    assert child.exitstatus == exit_status, output
    assert "no terminal to draw the interface on (stderr is redirected)" in output
    assert expected in output
    assert ENTER_ALTERNATE_SCREEN not in output + stderr_file.read_text(errors="replace")



@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_closing_the_terminal_under_the_interface_ends_it_with_130_without_hanging() -> None:
    """Leaving the alternate screen on a closed terminal fails: the command must still end."""
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun")
    child.expect("CULPRIT")
    assert hang_up(child) == (130, None)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_while_the_models_run_a_line_shows_the_stage_and_the_time() -> None:
    """Before the interface can open, the models run (minutes for a large one): the terminal
    shows each stage with its call count and the time so far, as for the headless report."""
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml")
    try:
        child.expect("DIVERGED")
        before = child.before or ""
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    shown = before.split(ENTER_ALTERNATE_SCREEN)[0]
    for stage in ("recording the original", "recording the port, run 1 of 2: 0 calls", "opening the interface"):
        assert stage in shown, shown[-2000:]
    assert "0:00:0" in shown  # the time so far

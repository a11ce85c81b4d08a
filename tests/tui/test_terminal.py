"""The real command in a pseudo-terminal: `tracetui compare` opens the interface, keys work,
`q` quits with the comparison's exit status and the terminal is given back as it was."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest

MODELS = Path(__file__).parent / "models"
LEAVE_ALTERNATE_SCREEN = "\x1b[?1049l"
SHOW_CURSOR = "\x1b[?25h"


def spawn(*arguments: str) -> pexpect.spawn:
    # PROMPT_TOOLKIT_NO_CPR: ipdb's prompt would wait for a cursor-position answer pexpect never gives.
    environment = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40", "PROMPT_TOOLKIT_NO_CPR": "1"}
    environment.pop("NO_COLOR", None)
    return pexpect.spawn(
        sys.executable,
        ["-m", "tracetui", *arguments],
        cwd=str(MODELS),
        env=environment,
        dimensions=(40, 120),
        encoding="utf-8",
        codec_errors="replace",
        timeout=90,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_compare_opens_the_interface_and_q_restores_the_terminal() -> None:
    child = spawn("compare", "original.py", "ported.py", "--map", "map.toml", "--no-rerun")
    try:
        child.expect("DIVERGED")  # the header is on screen
        child.expect("CULPRIT")
        for key in ("f", "j", "d", "d", "x", "x", "?"):
            child.send(key)
        child.expect("status colours")  # the help screen opened after the other keys
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
        child.expect("status colours")
        child.send("?")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 1
    tail = (child.before or "")[-400:]
    assert LEAVE_ALTERNATE_SCREEN in tail and SHOW_CURSOR in tail, repr(tail)

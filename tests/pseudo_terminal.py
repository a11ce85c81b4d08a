"""What the tests that run the real command need from the operating system: the signals a
terminal user's process meets, a terminal that is closed under the command, and a
`tracetui compare` session at the ipdb prompt, typed at like a user."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pexpect
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[=>]")
# Control characters a loaded terminal may leave in the echoed command line (bell, backspace redraws).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
PROMPT = "ipdb> "
EXPECT_TIMEOUT = 30  # seconds for one expect; a debugger run of the toy models takes 3-6 s here


def default_signal_handlers() -> None:
    """In the child (``preexec_fn``): whatever ignores these signals in the test runner's own
    parents (nohup, a shell's background job), the command meets them as a terminal user's would."""
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, signal.SIG_DFL)


def hang_up(child: pexpect.spawn, timeout: float = 60) -> tuple[int | None, int | None]:
    """Close the terminal under the child, as closing its window does (the kernel sends it
    SIGHUP and SIGCONT, and its writes to the terminal fail from then on); its exit status and
    the signal that killed it, if one did."""
    child.ptyproc.fileobj.close()  # the pseudo-terminal's primary side
    child.ptyproc.closed = child.closed = True  # pexpect must not close it again
    deadline = time.monotonic() + timeout
    while child.ptyproc.isalive():
        if time.monotonic() > deadline:
            child.ptyproc.kill(signal.SIGKILL)
            pytest.fail(f"still running {timeout:.0f} s after its terminal was closed")
        time.sleep(0.05)
    return child.ptyproc.exitstatus, child.ptyproc.signalstatus


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


class Session:
    """One `tracetui compare` run in a pseudo-terminal, typed at like a user."""

    def __init__(
        self,
        arguments: list[str],
        tmp_path: Path,
        environment: dict[str, str] | None = None,
        term: str = "dumb",
        timeout: float = EXPECT_TIMEOUT,
    ) -> None:
        env = {key: value for key, value in os.environ.items() if key not in ("IPY_TEST_SIMPLE_PROMPT", "TRACETUI_DEMO_BUG")}
        env.update({"TERM": term, "IPYTHONDIR": str(tmp_path / "ipython"), "PYTHONUNBUFFERED": "1"})
        env.update(environment or {})
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "tracetui", "compare", *arguments],
            cwd=str(REPO_ROOT),
            env=env,
            dimensions=(60, 250),
            encoding="utf-8",
            timeout=timeout,
        )

    def until_prompt(self) -> str:
        self.child.expect_exact(PROMPT)
        return plain(self.child.before)

    def send(self, command: str) -> str:
        """Type a command; return what it printed (without the echoed command line)."""
        self.child.sendline(command)
        output = self.until_prompt()
        # The echo comes first, but a loaded terminal can redraw the prompt before it or split the
        # echoed line with control sequences: skip past the command's characters, in order, to the
        # end of the line that holds its last one.
        echoed = CONTROL.sub("", output)
        position = 0
        for character in command:
            found = echoed.find(character, position)
            if found < 0:
                return echoed
            position = found + 1
        end_of_echo = echoed.find("\n", position)
        answer = "" if end_of_echo < 0 else echoed[end_of_echo + 1 :]
        # IPython 9's plain prompt (TERM=dumb) prints the line it read once more after the echo.
        while answer.split("\n", 1)[0].strip() == command.strip():
            answer = answer.split("\n", 1)[1] if "\n" in answer else ""
        return answer

    def finish(self, command: str) -> tuple[str, int]:
        self.child.sendline(command)
        self.child.expect(pexpect.EOF)
        output = plain(self.child.before)
        self.child.close()
        return output, self.child.exitstatus

    def kill(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

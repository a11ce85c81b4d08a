"""What the tests that run the real command need from the operating system: the signals a
terminal user's process meets, and a terminal that is closed under the command."""

from __future__ import annotations

import signal
import time

import pexpect
import pytest


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

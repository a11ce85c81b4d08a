"""SIGTERM and SIGHUP stop a command the way Ctrl-C does: every cleanup runs, exit status 130.

The real command in a subprocess, caught in the middle of a ``--stream`` comparison (whose
temporary trace must not outlive it); then the handlers themselves, in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest
from pseudo_terminal import default_signal_handlers, hang_up

import tracetui
from tracetui.cli import main
from tracetui.interruption import Terminated, terminating_signals_interrupt

# A model slow enough to be caught mid-run: it leaves a marker when its forward pass starts
# (the original's, recorded into the temporary directory), then sleeps in each of many layers.
SLOW_SCRIPT = """
import os
import time
from pathlib import Path

import torch


class SlowLayer(torch.nn.Module):
    def forward(self, hidden_states):
        time.sleep(0.05)
        return hidden_states + 1


class SlowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList(SlowLayer() for _ in range(2000))

    def forward(self, hidden_states):
        Path(os.environ["TRACETUI_TEST_MARKER"]).touch()
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


def build():
    return SlowModel(), torch.zeros(2, 8)
"""

needs_posix_signals = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def wait_for(path: Path, child: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None:
            stdout, stderr = child.communicate()
            pytest.fail(f"the command ended ({child.returncode}) before the model ran\nstdout:\n{stdout}\nstderr:\n{stderr}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the model's forward pass never started")
        time.sleep(0.05)


@needs_posix_signals
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda number: signal.Signals(number).name)
def test_a_signal_mid_stream_removes_the_temporary_trace_and_exits_130(tmp_path: Path, signal_number: int) -> None:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    temporary = tmp_path / "tmp"  # the command's own temp dir: whatever it leaves there is seen
    temporary.mkdir()
    marker = tmp_path / "forward-started"
    environment = {**os.environ, "TMPDIR": str(temporary), "TRACETUI_TEST_MARKER": str(marker)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tracetui", "compare", str(script), str(script), "--stream", "--no-tui", "--no-rerun"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signal_handlers,
    )
    wait_for(marker, child)
    assert list(temporary.glob("tracetui-stream-*")), "the original is being recorded into a temporary directory"
    child.send_signal(signal_number)
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 130, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert "interrupted" in stderr
    assert "Traceback" not in stderr, stderr
    assert not list(temporary.glob("tracetui-stream-*")), "the temporary trace was left behind"


@needs_posix_signals
def test_closing_the_terminal_mid_stream_removes_the_temporary_trace_and_exits_130(tmp_path: Path) -> None:
    """A real hangup, not `kill -HUP`: the spinner on stderr and "interrupted" can no longer be
    written (EIO); neither may turn the cleanup into a traceback."""
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    marker = tmp_path / "forward-started"
    environment = {**os.environ, "TMPDIR": str(temporary), "TRACETUI_TEST_MARKER": str(marker), "TERM": "xterm-256color"}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "tracetui", "compare", str(script), str(script), "--stream", "--no-tui", "--no-rerun"],
        env=environment,
        encoding="utf-8",
        codec_errors="replace",
        timeout=120,
        preexec_fn=default_signal_handlers,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.isalive() and time.monotonic() < deadline, "the model's forward pass never started"
        child.expect([pexpect.TIMEOUT, pexpect.EOF], timeout=0.1)  # keep reading the spinner
    assert list(temporary.glob("tracetui-stream-*"))
    assert hang_up(child) == (130, None)
    assert not list(temporary.glob("tracetui-stream-*")), "the temporary trace was left behind"


@needs_posix_signals
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGHUP], ids=lambda number: signal.Signals(number).name)
def test_a_terminating_signal_raises_terminated_where_the_main_thread_is_and_finally_runs(signal_number: int) -> None:
    cleaned_up = False
    previous = signal.getsignal(signal_number)
    with pytest.raises(Terminated) as raised, terminating_signals_interrupt():
        try:
            os.kill(os.getpid(), signal_number)
            time.sleep(5)  # the handler interrupts the sleep
        finally:
            cleaned_up = True
    assert cleaned_up
    assert raised.value.signal_number == signal_number
    assert isinstance(raised.value, KeyboardInterrupt)  # every `except KeyboardInterrupt` treats it as Ctrl-C
    assert signal.getsignal(signal_number) is previous  # the caller's handler is back


@needs_posix_signals
def test_an_ignored_signal_stays_ignored() -> None:
    """`nohup tracetui compare ...` ignores SIGHUP on purpose: the command keeps running."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminating_signals_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # ignored: nothing raised
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_command_puts_the_callers_handlers_back_and_the_api_installs_none(tmp_path: Path) -> None:
    before = {signal_number: signal.getsignal(signal_number) for signal_number in (signal.SIGINT, signal.SIGTERM)}
    assert main(["compare", str(tmp_path / "missing.py"), str(tmp_path / "missing.py"), "--no-tui"]) == 2
    assert {signal_number: signal.getsignal(signal_number) for signal_number in before} == before
    script = tmp_path / "tiny.py"
    script.write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2), torch.ones(1, 2)\n")
    observed = []
    tracetui.compare(script, script, rerun=False, progress=lambda message: observed.append(signal.getsignal(signal.SIGTERM)))
    assert observed and all(handler is before[signal.SIGTERM] for handler in observed)

"""Record a port on N processes with PyTorch's own launcher, and bring back rank 0's trace.

``python -m torch.distributed.run --standalone --nproc-per-node N -m tracetui.distributed.worker``
(torchrun: a free rendezvous port of its own, so parallel runs never collide) runs in a session
of its own. The launcher waits at most ``timeout`` seconds; on a timeout, an error, Ctrl-C or
SIGTERM it stops torchrun's session and then every rank by the process id each one wrote (the
elastic agent starts ranks in sessions of their own), so that no process is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from tracetui.distributed.worker import TRACE_FOLDER
from tracetui.errors import RecordingError, TracetuiError, UsageError
from tracetui.options import RunOptions
from tracetui.trace import Trace
from tracetui.tracefile import load_trace

DEFAULT_TIMEOUT = 1800.0  # seconds: generous, a large port's recording takes a while
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL when stopping the ranks
LOG_TAIL = 40  # lines of the launcher's own output shown when a rank died without a word


# Errors a rank gets because another one failed (its collective broke off), not the script's own.
COLLATERAL_KINDS = ("InternalError", "DistBackendError", "RuntimeError")


class DistributedError(TracetuiError):
    """A rank failed, hung past the timeout, or the launcher could not start the ranks."""


def check_nproc(nproc: int, timeout: float) -> None:
    if nproc < 1:
        raise UsageError(f"--nproc {nproc}: the number of processes must be at least 1.")
    if not timeout > 0:
        raise UsageError(f"--timeout {timeout:g}: the time limit must be a positive number of seconds.")


def record_distributed(script: str, options: RunOptions, nproc: int, timeout: float = DEFAULT_TIMEOUT) -> Trace:
    """Run ``script`` on ``nproc`` ranks, each recording, and return rank 0's trace (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="tracetui-ranks-") as working:
        folder = Path(working)
        (folder / "status").mkdir()
        (folder / "errors").mkdir()
        request = {
            "script": str(Path(script).resolve()),
            "folder": str(folder),
            "rerun": options.rerun,
            "seed": options.seed,
            "device": options.device,
            "keep": options.keep,
            "only": options.only,
            "spill": None if options.spill is None else str(options.spill),
        }
        (folder / "request.json").write_text(json.dumps(request))
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
            "--monitor-interval=0.5", "-m", "tracetui.distributed.worker", str(folder / "request.json"),
        ]
        log_path = folder / "launcher.log"
        environment = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        with open(log_path, "wb") as log, ranks_stopped_afterwards(folder):
            launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
            with session_stopped_afterwards(launcher):
                try:
                    exit_code = launcher.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    raise DistributedError(timeout_message(script, nproc, timeout, folder)) from None
        if exit_code != 0:
            raise rank_failure(script, nproc, exit_code, folder, log_path)
        trace_path = options.spill if options.spill is not None else folder / TRACE_FOLDER
        trace = load_trace(trace_path)
        if options.spill is None:
            trace = in_memory(trace)  # the temporary folder goes now
        trace.source = str(script)
        return trace


def in_memory(trace: Trace) -> Trace:
    """The trace's tensors copied out of the memory-mapped files that are about to be removed."""
    copies: dict[int, torch.Tensor] = {}
    for record in trace.records:
        for leaf in record.inputs + record.outputs:
            if leaf.tensor is not None:
                if id(leaf.tensor) not in copies:
                    copies[id(leaf.tensor)] = leaf.tensor.clone()
                leaf.tensor = copies[id(leaf.tensor)]
    return trace


@contextmanager
def session_stopped_afterwards(launcher: subprocess.Popen[bytes]) -> Iterator[None]:
    """Whatever happens (a timeout, Ctrl-C), torchrun's whole session is stopped on the way out."""
    try:
        yield
    finally:
        if launcher.poll() is None:
            stop_group(launcher.pid)
            try:
                launcher.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                with _gone():
                    os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()


@contextmanager
def ranks_stopped_afterwards(folder: Path) -> Iterator[None]:
    """Every rank that wrote its process id is stopped once the launcher is gone (ranks run in sessions of their own)."""
    try:
        yield
    finally:
        pids = [pid for pid in rank_pids(folder) if alive(pid)]
        for pid in pids:
            with _gone():
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in pids:
            if alive(pid):
                with _gone():
                    os.kill(pid, signal.SIGKILL)


def stop_group(pid: int) -> None:
    with _gone():
        os.killpg(pid, signal.SIGTERM)


@contextmanager
def _gone() -> Iterator[None]:
    """A process (or group) that is already gone needs no stopping."""
    with suppress(ProcessLookupError, PermissionError):
        yield


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of ours counts as gone
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


def rank_statuses(folder: Path) -> dict[int, dict[str, object]]:
    statuses = {}
    for path in sorted((folder / "status").glob("rank*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        statuses[int(entry["rank"])] = entry
    return statuses


def rank_pids(folder: Path) -> list[int]:
    return [int(str(entry["pid"])) for entry in rank_statuses(folder).values()]


def timeout_message(script: str, nproc: int, timeout: float, folder: Path) -> str:
    statuses = rank_statuses(folder)
    stages = ", ".join(
        f"rank {rank} {statuses[rank]['stage'] if rank in statuses else 'not started'}" for rank in range(nproc)
    )
    return (
        f"{script}: the port did not finish on {nproc} processes within --timeout {timeout:g} s ({stages}); every rank was "
        "stopped. A rank that stops calling modules (an endless loop, a collective the other ranks never reach) leaves "
        "the others waiting for it: look at the rank that is not 'done', or give a longer --timeout."
    )


def rank_failure(script: str, nproc: int, exit_code: int, folder: Path, log_path: Path) -> TracetuiError:
    """The error of the rank that failed first, named with its rank; else the launcher's last words.

    A rank that raises makes the others fail too, in the collective it no longer joins: those
    errors are tracetui's own (a closed connection) and come later, so the user's error is the
    one shown — the earliest written, an error of the script before an error of tracetui.
    """
    entries = []
    for path in (folder / "errors").glob("rank*.json"):
        try:
            entries.append((json.loads(path.read_text()), path.stat().st_mtime_ns))
        except (OSError, json.JSONDecodeError):
            continue
    entries.sort(key=lambda found: (found[0].get("kind") in COLLATERAL_KINDS, found[1], found[0]["rank"]))
    for entry, _ in entries:
        failure = DistributedError(f"rank {entry['rank']} of {nproc}: {entry['message']}", entry.get("detail"))
        failure.exit_status = int(entry.get("exit_status", 2))
        return failure
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:])
    return RecordingError(
        f"{script}: the distributed run on {nproc} processes failed (torch.distributed.run exited {exit_code}) before a rank "
        "could say why — a rank killed by a signal or out of memory, or a launcher problem. Its last output follows.",
        tail,
    )

"""Stop ipdb in a port that runs on several processes: this process is rank 0, the others follow.

The debugger needs the terminal and the comparison, and both are here. So for a debug run this
process joins the default process group as rank 0 (on a ``TCPStore`` it serves on a free port),
and ranks 1 … N-1 are started as ``python -m tracetui.distributed.worker`` in sessions of their
own, their output going to a log: each builds the script and runs its forward once, with no hook.
While rank 0 sits at the ipdb prompt the others wait in the model's next collective (the process
group's timeout is :data:`DEBUG_TIMEOUT`, not the recording's). Afterwards every follower still
running is stopped — a quit on rank 0 leaves them waiting for a collective that never comes — and
the process group is destroyed, so that the interface can start another session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from tracetui.distributed.launch import COLLATERAL_KINDS, STOP_GRACE, DistributedError
from tracetui.errors import UsageError

# A user may sit at the prompt for a long time; the ranks that wait for rank 0 must not give up.
DEBUG_TIMEOUT = timedelta(days=1)
STARTUP_TIMEOUT = 300.0  # seconds for every follower to start Python and import torch
FINISH_GRACE = 10.0  # seconds the followers get to finish their forward once rank 0 has finished its own
STORE_HOST = "127.0.0.1"


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass
class FollowerRanks:
    """Ranks 1 … N-1 of a debug run, as rank 0 leaves them."""

    processes: list[subprocess.Popen[bytes]]
    # Rank 0 stopped its forward part-way (a quit at the prompt): the others wait in a collective
    # that will not come, and are stopped at once instead of being given time to finish.
    left_waiting: bool = False


@contextmanager
def joined_as_rank_zero(script: str | Path, world_size: int, *, seed: int, device: str) -> Iterator[FollowerRanks]:
    """Inside, this process is rank 0 of ``world_size`` and ranks 1 … N-1 run ``script``'s forward
    (see the module docstring). A follower's own error (its build or forward raised) is raised
    here, named with its rank, when the debug run fails because of it."""
    if dist.is_initialized():
        raise UsageError(
            "this process is already a rank of a process group (run under torchrun?): the debugger starts the port's ranks "
            "itself. Run `tracetui compare … --nproc N --break-at NAME` directly, not under torchrun."
        )
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(0)
    backend = backend_for(device)
    store = dist.TCPStore(STORE_HOST, 0, world_size, is_master=True, timeout=DEBUG_TIMEOUT, wait_for_workers=False)
    with tempfile.TemporaryDirectory(prefix="tracetui-debug-ranks-") as working:
        folder = Path(working)
        for name in ("status", "errors"):
            (folder / name).mkdir()
        request = {
            "mode": "follow",
            "script": str(Path(script).resolve()),
            "folder": str(folder),
            "seed": seed,
            "device": device,
            "backend": backend,
            "store_port": store.port,
        }
        (folder / "request.json").write_text(json.dumps(request))
        with rank_environment(0, world_size, store.port):
            followers = FollowerRanks(start_followers(folder, world_size, store.port))
            try:
                wait_for_followers(store, followers.processes, folder, script)
                dist.init_process_group(backend, store=store, rank=0, world_size=world_size, timeout=DEBUG_TIMEOUT)
                try:
                    yield followers
                except BaseException as error:
                    followers.left_waiting = True
                    failure = follower_failure(folder, world_size)
                    if failure is not None and not isinstance(error, (KeyboardInterrupt, UsageError)):
                        raise failure from error
                    raise
            finally:
                if dist.is_initialized():
                    dist.destroy_process_group()
                stop_followers(followers)


def start_followers(folder: Path, world_size: int, store_port: int) -> list[subprocess.Popen[bytes]]:
    """Ranks 1 … N-1, each in a session of its own (Ctrl-C at the prompt is rank 0's alone), output to a log."""
    followers = []
    for rank in range(1, world_size):
        environment = os.environ | rank_variables(rank, world_size, store_port)
        environment.setdefault("OMP_NUM_THREADS", "1")
        with open(folder / f"rank{rank}.log", "wb") as log:
            followers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tracetui.distributed.worker", str(folder / "request.json")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True,
                )
            )
    return followers


def rank_variables(rank: int, world_size: int, store_port: int) -> dict[str, str]:
    """What torch.distributed.run sets for a rank: scripts read them (``int(os.environ['RANK'])``)."""
    return {
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": STORE_HOST, "MASTER_PORT": str(store_port),
    }


@contextmanager
def rank_environment(rank: int, world_size: int, store_port: int) -> Iterator[None]:
    """This process's environment says it is ``rank`` while inside; as it was afterwards."""
    variables = rank_variables(rank, world_size, store_port)
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def wait_for_followers(store: dist.TCPStore, followers: list[subprocess.Popen[bytes]], folder: Path, script: str | Path) -> None:
    """Every follower says it started before rank 0 joins the group: a follower that dies at start
    would otherwise leave rank 0 waiting for it a whole :data:`DEBUG_TIMEOUT`."""
    keys = [f"started/{rank}" for rank in range(1, len(followers) + 1)]
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not store.check(keys):
        for rank, follower in enumerate(followers, start=1):
            if follower.poll() is not None:
                raise follower_failure(folder, len(followers) + 1) or DistributedError(
                    f"{script}: rank {rank} of the debug run stopped before it started (exit status {follower.returncode}).",
                    (folder / f"rank{rank}.log").read_text(errors="replace"),
                )
        if time.monotonic() > deadline:
            raise DistributedError(f"{script}: the ranks of the debug run did not start within {STARTUP_TIMEOUT:g} s.")
        time.sleep(0.05)


def stop_followers(followers: FollowerRanks) -> None:
    """Rank 0's run is over: the followers finish theirs within :data:`FINISH_GRACE` (a run that
    went to its end), or are stopped (left waiting, or past the grace)."""
    deadline = time.monotonic() + (0.0 if followers.left_waiting else FINISH_GRACE)
    while any(follower.poll() is None for follower in followers.processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for signal_name in ("terminate", "kill"):
        for follower in followers.processes:
            if follower.poll() is None:
                getattr(follower, signal_name)()
        try:
            for follower in followers.processes:
                follower.wait(timeout=STOP_GRACE)
            return
        except subprocess.TimeoutExpired:
            continue


def follower_failure(folder: Path, world_size: int) -> DistributedError | None:
    """The first follower error that is the script's own (not a broken collective), named with its rank."""
    entries = []
    for path in (folder / "errors").glob("rank*.json"):
        try:
            entries.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    for entry in sorted(entries, key=lambda found: found["rank"]):
        if entry.get("kind") not in (*COLLATERAL_KINDS, "collective"):
            return DistributedError(f"rank {entry['rank']} of {world_size}: {entry['message']}", entry.get("detail"))
    return None

"""One rank of a distributed port: initialise the process group, build the script, record, and
(rank 0) write the trace.

Run by the launcher as ``python -m tracetui.distributed.worker REQUEST.json`` under
``torch.distributed.run``, and by ``torchrun … -m tracetui record`` directly
(:func:`record_on_this_rank`). Each rank writes its stage (``building``, ``recording``,
``done``) and its process id to ``status/rank<N>.json``, so that the launcher can say which rank
hung and stop every one of them, and its error to ``errors/rank<N>.json``. With a request whose
``mode`` is ``follow`` it is instead one of the ranks 1 … N-1 of a debug run, rank 0 being the
debugger's own process (tracetui.distributed.debug).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tracetui.distributed.gather import RankGatherer
from tracetui.errors import ScriptError, TracetuiError
from tracetui.frameworks import ForeignScript, foreign_port_error
from tracetui.options import RunOptions
from tracetui.record import KeepPolicy, record_script, record_twice
from tracetui.script import ModelScript, load_script
from tracetui.trace import Trace
from tracetui.tracefile import rewrite_index_document, save_trace

TRACE_FOLDER = "trace"  # under the launcher's working folder: rank 0's trace


@dataclass(frozen=True)
class RankPlace:
    """Where this process is among the ranks, as torch.distributed.run's environment says."""

    rank: int
    local_rank: int
    world_size: int

    @classmethod
    def from_environment(cls) -> RankPlace:
        return cls(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))


def under_launcher() -> bool:
    """This process is a rank started by torchrun / torch.distributed.run."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ and "WORLD_SIZE" in os.environ


def write_status(folder: Path | None, rank: int, stage: str) -> None:
    if folder is None:
        return
    (folder / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "pid": os.getpid(), "stage": stage}))


def record_on_this_rank(script_path: str, options: RunOptions, output: Path | None, status: Path | None = None) -> Trace | None:
    """Record the port on this rank; rank 0 returns the trace (and saves it to ``output``), the others None."""
    place = RankPlace.from_environment()
    write_status(status, place.rank, "starting")  # the process id first: a rank stuck in the rendezvous is stopped too
    device = options.device
    if torch.device(device).type == "cuda":
        device = f"cuda:{place.local_rank}"
        torch.cuda.set_device(place.local_rank)
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    try:
        write_status(status, place.rank, "building")
        script = load_script(script_path, seed=options.seed, device=device)
        if isinstance(script, ForeignScript):
            raise foreign_port_error(script)
        check_parallelism(script, place.world_size)
        write_status(status, place.rank, "recording")
        trace = record_ranks(script, options, place, backend, output)
        write_status(status, place.rank, "done")
        return trace
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def check_parallelism(script: ModelScript, world_size: int) -> None:
    """Under --nproc N > 1 the port must split itself across the ranks; else each rank would run the
    whole model alone and the comparison would say nothing about the parallel port."""
    from torch.distributed.tensor import DTensor

    if world_size == 1:
        return
    tensors = [*script.model.parameters(), *script.model.buffers()]
    if any(isinstance(tensor, DTensor) for tensor in tensors):
        return
    raise ScriptError(
        f"{script.label}: recorded on {world_size} processes (--nproc {world_size}), but build() set up no parallelism: none of "
        "the model's parameters is a DTensor, so every rank would run the whole model alone. In build(), split the model "
        "across the ranks — the default process group is already initialised: `mesh = init_device_mesh('cpu', "
        "(dist.get_world_size(),))` then `parallelize_module(model, mesh, {...})` or `fully_shard(...)` — or drop --nproc."
    )


def record_ranks(script: ModelScript, options: RunOptions, place: RankPlace, backend: str, output: Path | None) -> Trace | None:
    """Every rank records (the gathering is collective); only rank 0 keeps values and writes the trace."""
    gatherer = RankGatherer(place.world_size, backend)
    spilled = options.spill is not None and place.rank == 0
    keep = options.keep_policy() if place.rank == 0 else KeepPolicy(values="none")
    if not spilled:
        keep = KeepPolicy(values=keep.values, only=keep.only)
    with gatherer.watching(script.model):
        if options.rerun:
            trace = record_twice(script, keep=keep, leaf_transform=gatherer)
        else:
            trace = record_script(script, keep=keep, leaf_transform=gatherer)
    if place.rank != 0:
        return None
    trace.distributed = gatherer.info
    if spilled:
        assert options.spill is not None
        rewrite_index_document(options.spill, trace)
    elif output is not None:
        save_trace(trace, output)
    return trace


def error_document(error: BaseException, rank: int) -> dict[str, Any]:
    if isinstance(error, TracetuiError):
        kind = type(error).__name__
        return {"rank": rank, "kind": kind, "message": error.message, "detail": error.detail, "exit_status": error.exit_status}
    return {
        "rank": rank,
        "kind": type(error).__name__,
        "message": f"tracetui failed: {type(error).__name__}: {error}. This is tracetui's failure, not your model's.",
        "detail": "".join(traceback.format_exception(error)),
        "exit_status": 2,
    }


def follow_rank_zero(request: dict[str, Any]) -> None:
    """A rank of a debug run (tracetui.distributed.debug): join the group rank 0 serves, build the
    script, run its forward once with no hook, as rank 0 does under the debugger."""
    from tracetui.distributed.debug import DEBUG_TIMEOUT, STORE_HOST

    place = RankPlace.from_environment()
    store = dist.TCPStore(STORE_HOST, int(request["store_port"]), place.world_size, is_master=False, timeout=DEBUG_TIMEOUT)
    store.set(f"started/{place.rank}", str(os.getpid()))
    device = request["device"]
    if torch.device(device).type == "cuda":
        device = f"cuda:{place.local_rank}"
        torch.cuda.set_device(place.local_rank)
    dist.init_process_group(request["backend"], store=store, rank=place.rank, world_size=place.world_size, timeout=DEBUG_TIMEOUT)
    try:
        script = load_script(request["script"], seed=request["seed"], device=device)
        script.run()
    finally:
        dist.destroy_process_group()


def broken_collective(error: BaseException) -> bool:
    """``error`` comes from a collective that another rank left (it stopped or failed), not from the script."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, dist.DistError) or (isinstance(seen, RuntimeError) and "gloo" in str(seen).lower()):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def main(argv: list[str]) -> int:
    """The launcher's entry on each rank: the request names the script, the options and the folders."""
    request = json.loads(Path(argv[0]).read_text())
    folder = Path(request["folder"])
    rank = int(os.environ.get("RANK", "0"))
    if request.get("mode") == "follow":
        try:
            follow_rank_zero(request)
        except BaseException as error:  # noqa: BLE001 — rank 0 reports it
            document = error_document(error, rank) | ({"kind": "collective"} if broken_collective(error) else {})
            (folder / "errors" / f"rank{rank}.json").write_text(json.dumps(document))
            return 2
        return 0
    options = RunOptions(
        rerun=request["rerun"],
        seed=request["seed"],
        device=request["device"],
        keep=request["keep"],
        only=request["only"],
        spill=None if request["spill"] is None else Path(request["spill"]),
    )
    try:
        record_on_this_rank(request["script"], options, folder / TRACE_FOLDER, folder / "status")
    except BaseException as error:  # noqa: BLE001 — every failure goes to the launcher, SystemExit included
        (folder / "errors" / f"rank{rank}.json").write_text(json.dumps(error_document(error, rank)))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

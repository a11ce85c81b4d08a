"""ipdb in a port that runs on several processes (--nproc): it stops in rank 0, the command's own
process, while the other ranks run the same forward alongside and wait for it; every rank is
gone afterwards, whatever the session's end.

The port is the demo GPT made tensor-parallel with DTensor (demos/gpt/tensor_parallel.py),
the original the same port on one process, as in tests/test_distributed.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch.distributed as dist
from pseudo_terminal import REPO_ROOT, Session

from tracetui import api
from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.debugger import debug_call, find_row
from tracetui.distributed.launch import DistributedError, record_distributed
from tracetui.options import RunOptions

SINGLE_PROCESS = REPO_ROOT / "demos" / "gpt" / "ported.py"
TENSOR_PARALLEL = REPO_ROOT / "demos" / "gpt" / "tensor_parallel.py"
RANK_FAILURES = REPO_ROOT / "tests" / "distributed" / "rank_failures.py"
SESSION_TIMEOUT = 240  # seconds for one expect: both models recorded, two processes started


def processes_under(folder: Path) -> list[str]:
    """Command lines of the processes that run something under ``folder`` (the debug run's ranks
    have their request file in the temporary folder, which the test points at ``folder``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(folder) in command and state != "Z":
            found.append(command)
    return found


@pytest.fixture
def nproc_session(tmp_path: Path) -> Iterator[Callable[..., Session]]:
    started: list[Session] = []
    temporary = tmp_path / "tmp"
    temporary.mkdir()

    def start(*arguments: str, bug: str = "") -> Session:
        environment = {"TRACETUI_TP_BUG": bug, "TMPDIR": str(temporary)}
        started.append(Session([*arguments, "--nproc", "2", "--no-rerun"], tmp_path, environment, timeout=SESSION_TIMEOUT))
        return started[-1]

    yield start
    for running in started:
        running.kill()


def test_break_on_mismatch_stops_rank_0_in_the_culprit_and_compares_its_shard(nproc_session, tmp_path: Path) -> None:
    """A shard split wrongly on rank 1: ipdb stops in the culprit on rank 0, says the difference
    is in rank 1's shard, and ctx compares rank 0's part of a live DTensor with the same part of
    the recorded tensor. The run then goes to its end on both ranks."""
    session = nproc_session(str(SINGLE_PROCESS), str(TENSOR_PARALLEL), "--break-on-mismatch", bug="qkv_split_rank1")
    banner = session.until_prompt()
    assert "module  model.layers.1.self_attn.q_proj (Linear), call 0" in banner
    assert "ranks   the port runs on 2 processes: ipdb stops in rank 0 (this one); rank 1 runs the same forward alongside" in banner
    assert "only rank 1's shard of its output (positions 32-63 of dimension 2, split 2 ways) breaks the tolerance" in banner
    assert "rank 0's shard agrees." in banner
    assert processes_under(tmp_path / "tmp"), "rank 1 runs alongside while rank 0 is at the prompt"

    answer = session.send("p type(input).__name__, ctx.diff_output(F.linear(input, self.weight, self.bias))")
    assert "'DTensor'" in answer
    assert "output (this rank's part [:, :, 0:32] of the DTensor)" in answer
    assert "within tolerance" in answer  # rank 0's half agrees: the bug is rank 1's

    output, status = session.finish("c")
    assert "debugger: the run finished." in output
    assert status == 1  # the comparison's verdict: diverged
    assert processes_under(tmp_path / "tmp") == []


def test_quitting_rank_0_stops_the_ranks_waiting_for_it(nproc_session, tmp_path: Path) -> None:
    session = nproc_session(str(SINGLE_PROCESS), str(TENSOR_PARALLEL), "--break-at", "model.layers.0.mlp.fc_in")
    banner = session.until_prompt()
    assert "module  model.layers.0.mlp.fc_in (Linear), call 0" in banner
    # A plain tensor that holds rank 0's shard is compared with the part the recording gathered it into.
    answer = session.send("p ctx.diff_output(F.linear(input, self.weight, self.bias).to_local())")
    assert "output (rank 0's shard [:, :, 0:128], as the recording gathered it)" in answer
    assert "within tolerance" in answer
    output, status = session.finish("q")
    assert "debugger: quit; the run was stopped." in output
    assert status == 0  # the clean port matches
    assert processes_under(tmp_path / "tmp") == []


@pytest.fixture(scope="module")
def tensor_parallel_comparison() -> Comparison:
    """The clean tensor-parallel port against the single-process one, compared in this process (as the interface has it)."""
    options = RunOptions(rerun=False)
    ported = record_distributed(str(TENSOR_PARALLEL), options, nproc=2, timeout=300)
    return api.compare_sources(
        str(SINGLE_PROCESS), ported, options, tolerance=Tolerance(), rename_map=None, infer=True, stream=False, fixes=False
    )


def test_the_interface_can_debug_the_port_again_and_again(tensor_parallel_comparison, typed_at_prompt, capsys) -> None:
    """What the b key does: each debug run joins a new process group as rank 0 and leaves none behind."""
    comparison = tensor_parallel_comparison
    row = find_row(comparison, "ported", "model.layers.1.mlp.fc_out")
    environment = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    for _ in range(2):
        typed_at_prompt("p torch.distributed.get_rank(), torch.distributed.get_world_size()\np ctx.diff(input)\nc\n")
        assert debug_call(comparison, row, "ported", TENSOR_PARALLEL) == "continued"
        output = capsys.readouterr().out
        assert "(0, 2)" in output
        # RowwiseParallel's input is a DTensor sharded on its last dimension.
        assert "(this rank's part [:, :, 0:128] of the DTensor)" in output and "within tolerance" in output
        assert not dist.is_initialized()
        assert {name: os.environ.get(name) for name in environment} == environment


def test_a_rank_that_fails_in_the_debug_run_is_named(tensor_parallel_comparison, typed_at_prompt, monkeypatch, capsys) -> None:
    """Rank 1's forward raises after rank 0 has stopped and continued: its error, named with its
    rank, is the one reported (rank 0 only sees a collective broken off)."""
    row = find_row(tensor_parallel_comparison, "ported", "model.layers.0.mlp.fc_in")
    monkeypatch.setenv("TRACETUI_TEST_RANK_FAILURE", "raise")
    typed_at_prompt("c\n")
    with pytest.raises(DistributedError, match="rank 1 of 2: .*rank 1 lost its shard"):
        debug_call(tensor_parallel_comparison, row, "ported", RANK_FAILURES)
    assert not dist.is_initialized()


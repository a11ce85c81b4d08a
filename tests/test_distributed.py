"""Ports that run on several processes (issue 17): `--nproc N` and `torchrun … -m tracetui record`.

The port is the demo GPT (demos/gpt/ported.py) made tensor-parallel with DTensor's
`parallelize_module` (demos/gpt/tensor_parallel.py: q/k/v and fc_in column-wise, o_proj and fc_out
row-wise), run on 2 gloo processes on the CPU; the original is the same model in one process.
Each test runs the real command; torch.distributed.run's `--standalone` rendezvous takes a free
port of its own, so tests running in parallel never collide.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SINGLE_PROCESS = REPO_ROOT / "demos" / "gpt" / "ported.py"
TENSOR_PARALLEL = REPO_ROOT / "demos" / "gpt" / "tensor_parallel.py"
RANK_FAILURES = REPO_ROOT / "tests" / "distributed" / "rank_failures.py"
COMMAND_TIMEOUT = 300


def run_tracetui(
    arguments: list[str], environment: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracetui", *arguments],
        env=os.environ | (environment or {}),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        cwd=cwd,
    )


def compare_on_two_ranks(tmp_path: Path, bug: str = "", *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / "report.json"
    completed = run_tracetui(
        ["compare", str(SINGLE_PROCESS), str(TENSOR_PARALLEL), "--nproc", "2", "--no-tui", "--no-rerun", "--json", str(report), *extra],
        {"TRACETUI_TP_BUG": bug},
    )
    assert report.exists(), completed.stdout + completed.stderr
    return completed, json.loads(report.read_text())


def test_a_clean_tensor_parallel_port_matches_the_single_process_model(tmp_path: Path) -> None:
    completed, report = compare_on_two_ranks(tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert report["verdict"] == "match"
    distributed = report["distributed"]
    assert distributed["world_size"] == 2 and distributed["backend"] == "gloo"
    assert distributed["rank_disagreements"] == []
    # ColwiseParallel's outputs reach tracetui as each rank's local shard: gathered along the last dimension.
    gathered = {(entry["part"], entry["leaf"], entry["how"], entry["dim"]) for entry in distributed["gathered"]}
    assert ("outputs", "output", "local shard", 2) in gathered
    assert ("inputs", "input", "dtensor", 2) in gathered  # RowwiseParallel's sharded input
    rows = {row["ported"]: row for row in report["rows"]}
    assert rows["model.layers.1.self_attn.q_proj"]["status"] == "match"  # a full [1, 12, 64] against the original's
    assert rows["model.layers.1.mlp.act_fn"]["status"] == "match"  # fed fc_in's local shard: gathered too
    assert "the port ran on 2 processes" in completed.stdout


def test_a_shard_split_wrongly_on_rank_1_is_the_culprit_with_its_rank(tmp_path: Path) -> None:
    completed, report = compare_on_two_ranks(tmp_path, "qkv_split_rank1")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    culprit = report["first_divergence"]
    assert culprit["ported"] == "model.layers.1.self_attn.q_proj"
    assert culprit["ranks"] == [1]
    assert "only rank 1's shard of its output (positions 32-63 of dimension 2" in culprit["reason"]
    assert "only rank 1's shard" in completed.stdout


def test_a_replicated_value_that_differs_between_ranks_is_reported(tmp_path: Path) -> None:
    completed, report = compare_on_two_ranks(tmp_path, "replicated_rank1")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    disagreements = report["distributed"]["rank_disagreements"]
    first = disagreements[0]
    assert (first["name"], first["part"], first["rank"], first["within_tolerance"]) == (
        "model.layers.0.post_attention_layernorm", "outputs", 1, False,
    )
    assert first["max_abs_diff"] > 0.01
    assert "rank 1 disagrees with rank 0 at model.layers.0.post_attention_layernorm" in completed.stdout
    assert report["first_divergence"]["ranks"] == [1]


def test_nproc_with_stream_keeps_both_traces_on_disk_and_finds_the_rank(tmp_path: Path) -> None:
    completed, report = compare_on_two_ranks(tmp_path, "qkv_split_rank1", "--stream")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert report["first_divergence"]["ported"] == "model.layers.1.self_attn.q_proj"
    assert report["first_divergence"]["ranks"] == [1]


def test_torchrun_records_one_trace_that_compares_like_any_other(tmp_path: Path) -> None:
    """The documented `torchrun --nproc-per-node N -m tracetui record …`: rank 0 writes the trace."""
    trace = tmp_path / "ported.trace"
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "tracetui", "record",
         str(TENSOR_PARALLEL), "-o", str(trace), "--no-rerun"],
        env=os.environ | {"TRACETUI_TP_BUG": "qkv_split_rank1"},
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "on 2 processes" in completed.stdout
    report = tmp_path / "report.json"
    compared = run_tracetui(["compare", str(SINGLE_PROCESS), str(trace), "--no-tui", "--no-rerun", "--json", str(report)])
    assert compared.returncode == 1, compared.stdout + compared.stderr
    culprit = json.loads(report.read_text())["first_divergence"]
    assert (culprit["ported"], culprit["ranks"]) == ("model.layers.1.self_attn.q_proj", [1])


def test_a_port_that_sets_up_no_parallelism_is_refused(tmp_path: Path) -> None:
    completed = run_tracetui(["compare", str(SINGLE_PROCESS), str(SINGLE_PROCESS), "--nproc", "2", "--no-tui"])
    assert completed.returncode == 2
    assert "build() set up no parallelism" in completed.stderr
    assert "parallelize_module" in completed.stderr


def test_a_rank_that_raises_is_named_with_its_traceback(tmp_path: Path) -> None:
    completed = run_tracetui(
        ["record", str(RANK_FAILURES), "--nproc", "2", "-o", str(tmp_path / "t.trace")], {"TRACETUI_TEST_RANK_FAILURE": "raise"}
    )
    assert completed.returncode == 2
    assert "rank 1 of 2" in completed.stderr
    assert "RuntimeError: rank 1 lost its shard" in completed.stderr
    assert "rank_failures.py" in completed.stderr  # the script's own traceback
    assert not (tmp_path / "t.trace").exists()


def test_a_rank_that_hangs_is_stopped_after_the_timeout_and_no_process_is_left(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    started = time.monotonic()
    completed = run_tracetui(
        ["record", str(RANK_FAILURES), "--nproc", "2", "-o", str(tmp_path / "t.trace"), "--timeout", "20"],
        {"TRACETUI_TEST_RANK_FAILURE": "hang", "TRACETUI_TEST_PID_FOLDER": str(pids)},
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "did not finish on 2 processes within --timeout 20 s" in completed.stderr
    assert time.monotonic() - started < 20 + 60
    for pid in [int(path.read_text()) for path in pids.iterdir() if path.read_text()]:
        assert not process_alive(pid), f"rank process {pid} outlived the command"
    # Whatever stage the ranks reached on a loaded machine: no process started for this command is left.
    assert processes_started_with(str(pids)) == []


def processes_started_with(marker: str) -> list[int]:
    """The live processes whose environment holds ``marker`` (this test's own folder): torchrun, its agent, the ranks."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and process_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


@pytest.mark.parametrize("arguments", [["--nproc", "0"], ["--nproc", "2", "--timeout", "0"]])
def test_bad_nproc_options_are_refused_before_anything_runs(arguments: list[str], tmp_path: Path) -> None:
    completed = run_tracetui(["compare", str(SINGLE_PROCESS), str(TENSOR_PARALLEL), "--no-tui", *arguments])
    assert completed.returncode == 2
    assert "--nproc" in completed.stderr or "--timeout" in completed.stderr


def test_terminating_the_command_stops_every_rank(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C) while the ranks run: exit 130, and no rank outlives the command."""
    pids = tmp_path / "pids"
    pids.mkdir()
    command = subprocess.Popen(
        [sys.executable, "-m", "tracetui", "record", str(RANK_FAILURES), "--nproc", "2", "-o", str(tmp_path / "t.trace")],
        env=os.environ | {"TRACETUI_TEST_RANK_FAILURE": "hang", "TRACETUI_TEST_PID_FOLDER": str(pids)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while not (len(list(pids.iterdir())) == 2 and all(path.read_text() for path in pids.iterdir())) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # rank 1 is asleep in build(); rank 0 goes on to wait for it
        rank_pids = [int(path.read_text()) for path in pids.iterdir()]
        assert len(rank_pids) == 2
        command.terminate()
        _, stderr = command.communicate(timeout=120)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130, stderr
    assert "interrupted" in stderr
    for pid in rank_pids:
        assert not process_alive(pid), f"rank process {pid} outlived the command"
    assert processes_started_with(str(pids)) == []

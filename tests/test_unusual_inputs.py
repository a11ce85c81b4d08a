"""Options no run can use and values tracetui did not expect: a clear error (exit 2) or a
correct comparison, never a traceback that blames the model code."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tracetui

MODELS = Path(__file__).parent / "tui" / "models"


def run_command(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracetui", *arguments], cwd=MODELS, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--device=bogus", "device 'bogus' is not a device torch knows"),
        ("--device=meta", "device 'meta' holds no values to compare"),
        pytest.param(
            "--device=cuda",
            "device 'cuda' is not available on this machine",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"),
        ),
        ("--seed=-1", "seed -1 is out of range"),
        (f"--seed={2**32}", f"seed {2**32} is out of range"),
    ],
)
@pytest.mark.parametrize("command", ["compare", "record"])
def test_an_option_no_run_can_use_is_refused_before_any_model_runs(command: str, option: str, expected: str) -> None:
    sources = ["original.py", "ported.py"] if command == "compare" else ["original.py", "-o", "never-written.trace"]
    result = run_command(command, *sources, "--no-tui" if command == "compare" else "--no-rerun", option)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (MODELS / "never-written.trace").exists()


class Sparsify(torch.nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden * self.scale).to_sparse()


class SparseNet(torch.nn.Module):
    """A sparse tensor between two modules, and one passed in as the input."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.sparsify = Sparsify(scale)
        self.head = torch.nn.Linear(4, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.sparsify(self.linear(features.to_dense())).to_dense())


def sparse_pair(scale: float) -> tuple[tuple[SparseNet, torch.Tensor], tuple[SparseNet, torch.Tensor]]:
    torch.manual_seed(0)
    original, ported = SparseNet(), SparseNet(scale)
    ported.load_state_dict(original.state_dict())
    features = torch.randn(3, 4).to_sparse()
    return (original, features), (ported, features.clone())


def test_sparse_tensors_are_recorded_and_compared_by_their_values(tmp_path: Path) -> None:
    clean = tracetui.compare(*sparse_pair(1.0))  # the run-to-run check measures live sparse tensors too
    assert clean.verdict == "match"
    wrong = tracetui.compare(*sparse_pair(1.5))
    assert [row.ported_name for row in wrong.culprits] == ["sparsify"]
    sparsify = wrong.culprits[0]
    assert sparsify.output_max_abs is not None and sparsify.output_max_abs > 0.1
    # Kept as the dense values they stand for, so the trace saves like any other.
    original, _ = sparse_pair(1.0)
    trace = tracetui.record(original, rerun=False)
    kept = [leaf.tensor for record in trace.records for leaf in record.inputs + record.outputs if leaf.tensor is not None]
    assert kept and all(tensor.layout == torch.strided for tensor in kept)
    from tracetui.tracefile import load_trace, save_trace

    saved = save_trace(trace, tmp_path / "sparse.trace")
    assert tracetui.compare(load_trace(saved), original, rerun=False).verdict == "match"


def test_a_failure_in_tracetuis_own_hook_is_not_blamed_on_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracetui.errors import InternalError

    recording = importlib.import_module("tracetui.record")  # the module; tracetui.record is the API function

    def fails(*arguments: object) -> None:
        raise ValueError("cannot flatten this value")

    monkeypatch.setattr(recording, "name_arguments", fails)
    original, _ = sparse_pair(1.0)
    with pytest.raises(InternalError) as raised:
        tracetui.record(original, rerun=False)
    message = raised.value.message
    assert "tracetui failed while watching module" in message and "ValueError: cannot flatten this value" in message
    assert "not the model's" in message and "fix it there" not in message


def test_a_bug_in_tracetui_exits_2_with_a_message_never_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 means "the port diverges": a crash of tracetui's own code must not look like it."""
    from tracetui.cli import compare as compare_command
    from tracetui.cli import main

    def crashes(*arguments: object, **keywords: object) -> None:
        raise RuntimeError("report layout failed")

    monkeypatch.setattr(compare_command, "print_report", crashes)
    status = main(["compare", str(MODELS / "original.py"), str(MODELS / "original.py"), "--no-tui", "--no-rerun", "--no-isolate"])
    assert status == 2
    error = capsys.readouterr().err
    assert "tracetui failed: RuntimeError: report layout failed" in error and "Traceback" not in error

"""Submodules run on worker threads, and calls that raise: recorded where they ran, never a false match.

A single open-call stack shared by every thread used to nest worker calls in one another and
never record the root's output; a missing output then counted as agreement, and a port whose
output was 50 % off was a MATCH.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

import tracetui

WIDTH = 8
EXPERTS = 4


class Expert(nn.Module):
    """A linear layer that waits until every expert has started: their calls overlap, as they
    do in real parallel code, every time."""

    def __init__(self, started: threading.Barrier) -> None:
        super().__init__()
        self.linear = nn.Linear(WIDTH, WIDTH)
        self.started = started

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.started.wait()
        return self.linear(hidden)


class ThreadedMixture(nn.Module):
    """Experts run in parallel on a thread pool, summed, then a head: the shape of MoE code
    that hands experts to worker threads."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        started = threading.Barrier(EXPERTS, timeout=30)
        self.experts = nn.ModuleList(Expert(started) for _ in range(EXPERTS))
        self.head = nn.Linear(WIDTH, WIDTH)
        self.scale = scale

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with ThreadPoolExecutor(max_workers=EXPERTS) as pool:
            outputs = list(pool.map(lambda expert: expert(hidden), self.experts))
        return self.head(sum(outputs)) * self.scale  # after the last submodule: only the root's output shows it


Source = tuple[nn.Module, torch.Tensor]


def mixture_pair(scale: float = 1.0, wrong_expert: int | None = None) -> tuple[Source, Source]:
    torch.manual_seed(0)
    original = ThreadedMixture()
    ported = ThreadedMixture(scale=scale)
    ported.load_state_dict(original.state_dict())
    if wrong_expert is not None:
        with torch.no_grad():
            ported.experts[wrong_expert].linear.weight.mul_(-1.0)
    inputs = torch.randn(3, WIDTH)
    return (original, inputs), (ported, inputs.clone())


def test_worker_thread_calls_nest_in_the_module_that_started_them() -> None:
    (model, inputs), _ = mixture_pair()
    trace = tracetui.record((model, inputs), rerun=False)
    by_name = {record.name: record for record in trace.records}
    root = by_name[""]
    assert root.finished and root.outputs and root.outputs[0].tensor is not None
    assert torch.allclose(root.outputs[0].tensor, model(inputs).detach(), atol=1e-6)
    for position in range(EXPERTS):
        expert = by_name[f"experts.{position}"]
        assert expert.parent == root.index and expert.depth == 1 and expert.finished
        linear = by_name[f"experts.{position}.linear"]
        assert linear.parent == expert.index and linear.depth == 2 and linear.finished
    assert by_name["head"].parent == root.index


def test_a_threaded_port_that_is_wrong_is_never_a_match() -> None:
    comparison = tracetui.compare(*mixture_pair(scale=1.5), rerun=False)
    assert comparison.verdict == "diverged"  # was a MATCH: the root's output was never recorded
    # The scale is the root's own code: the root is the culprit.
    assert [row.ported_name for row in comparison.culprits] == [""]
    root = comparison.rows[0]
    assert root.output_max_abs is not None and root.output_max_abs > 0.1


def test_a_wrong_expert_on_a_worker_thread_is_named() -> None:
    comparison = tracetui.compare(*mixture_pair(wrong_expert=2), rerun=False)
    assert [row.ported_name for row in comparison.culprits] == ["experts.2.linear"]
    assert comparison.status(comparison.culprits[0]) == "diverged"


def test_a_threaded_clean_port_matches() -> None:
    comparison = tracetui.compare(*mixture_pair())
    assert comparison.verdict == "match" and comparison.culprits == []


class Fallback(nn.Module):
    """Calls a block and falls back to the input when it raises, as fast-path/slow-path code does."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        try:
            return self.block(hidden)
        except RuntimeError:
            return hidden


class Doubler(nn.Module):
    def __init__(self, raises: bool) -> None:
        super().__init__()
        self.raises = raises

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.raises:
            raise RuntimeError("fused kernel unavailable")
        return hidden * 2.0


@pytest.mark.parametrize("isolate", [True, False], ids=["fed run", "descent"])
def test_a_call_that_raised_on_one_side_only_is_a_difference(isolate: bool) -> None:
    inputs = torch.randn(2, WIDTH)
    comparison = tracetui.compare(
        (Fallback(Doubler(False)), inputs), (Fallback(Doubler(True)), inputs.clone()), rerun=False, isolate=isolate
    )
    assert comparison.verdict == "diverged"
    assert [row.ported_name for row in comparison.culprits][:1] == ["block"]
    reason = comparison.reason_for(comparison.culprits[0])
    assert "ported call raised an exception" in reason, reason


def test_a_call_that_raised_on_one_side_only_is_a_difference_under_rtol_too() -> None:
    inputs = torch.randn(2, WIDTH)
    comparison = tracetui.compare((Fallback(Doubler(False)), inputs), (Fallback(Doubler(True)), inputs.clone()), rerun=False, rtol=0.01)
    assert [row.ported_name for row in comparison.culprits] == ["block"]

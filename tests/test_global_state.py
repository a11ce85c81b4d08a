"""One script's process-wide settings never reach the other script, nor the caller."""

from __future__ import annotations

import random

import numpy
import torch

import tracetui

FLOAT64_ORIGINAL = """
import torch
torch.set_default_dtype(torch.float64)  # research code often does this at the top


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * torch.ones(x.shape)  # a tensor of the default dtype, made in the forward pass


def build():
    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True)
    return Doubler(), torch.ones(2, 3)
"""

PLAIN_PORT = """
import torch


class Doubler(torch.nn.Module):
    def forward(self, x):
        return x * torch.ones(x.shape)


def build():
    return Doubler(), torch.ones(2, 3)
"""


def test_each_script_runs_under_its_own_settings_and_the_caller_keeps_its_own(write_script) -> None:
    original = write_script("original.py", FLOAT64_ORIGINAL)
    ported = write_script("ported.py", PLAIN_PORT)
    torch.manual_seed(123)
    numpy.random.seed(123)
    random.seed(123)
    expected_draws = (torch.rand(1), numpy.random.rand(), random.random())
    torch.manual_seed(123)
    numpy.random.seed(123)
    random.seed(123)

    comparison = tracetui.compare(original, ported, rerun=False)

    # The original ran in float64 (its import set it), the port in the clean float32: the port
    # is judged under the state it runs in, not the one the original left behind.
    root = comparison.rows[0]
    assert root.original is not None and root.ported is not None
    assert root.original.outputs[0].dtype == "float64" and root.ported.outputs[0].dtype == "float32"
    # The caller's settings and generators are as they were.
    assert torch.get_default_dtype() == torch.float32
    assert torch.is_grad_enabled() and not torch.are_deterministic_algorithms_enabled()
    draws = (torch.rand(1), numpy.random.rand(), random.random())
    assert torch.equal(draws[0], expected_draws[0]) and draws[1:] == expected_draws[1:]


def test_a_model_built_in_the_callers_code_runs_under_the_callers_settings() -> None:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:

        class Scale(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x * torch.ones(x.shape)  # float64 here, as the caller set

        inputs = torch.ones(2, 2)
        comparison = tracetui.compare((Scale(), inputs), (Scale(), inputs), rerun=False)
        assert comparison.verdict == "match"
        assert comparison.rows[0].original.outputs[0].dtype == "float64"  # type: ignore[union-attr]
        assert torch.get_default_dtype() == torch.float64
    finally:
        torch.set_default_dtype(previous)


def test_a_model_the_caller_is_training_comes_back_in_its_modes() -> None:
    """tracetui runs models in eval mode; a model passed in mid-training (one frozen part in
    eval mode) is given back with every module's mode as it was."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4))
    model.train()
    model[2].eval()  # a frozen norm, kept in eval mode by the caller
    inputs = torch.randn(3, 4)
    comparison = tracetui.compare((model, inputs), (model, inputs), rerun=False)
    assert comparison.verdict == "match"  # dropout was off during the runs
    assert [module.training for module in model.modules()] == [True, True, True, False]
    tracetui.record((model, inputs), rerun=False)
    assert [module.training for module in model.modules()] == [True, True, True, False]

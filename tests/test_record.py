"""Recording: one record per call, in call order, with names, nesting and copied tensors."""

from __future__ import annotations

import dataclasses
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn

import tracetui
from tracetui.errors import ScriptError
from tracetui.record import Recorder, record_script
from tracetui.script import ModelScript

Pair = namedtuple("Pair", ["first", "second"])


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]
    note: str = "done"


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(4, 4)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
        scores = self.query(hidden_states) * scale
        tracetui.tap("scores", scores)
        return scores


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.attention = Attention()
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> Output:
        first = self.shared(x)
        second = self.shared(first)
        attended = self.attention(second, attention_mask=None, scale=0.5)
        activated = self.activation(attended)
        return Output(logits=activated, hidden_states=(first, second))


def recorded(model: nn.Module, inputs: object) -> tracetui.Trace:
    return record_script(ModelScript(path=Path("<test>"), model=model, inputs=inputs))


def test_every_call_in_order_with_names_calls_depth_and_parent() -> None:
    trace = recorded(Model(), torch.randn(2, 4))
    summary = [(record.name, record.class_name, record.call, record.depth, record.parent) for record in trace]
    assert summary == [
        ("", "Model", 0, 0, None),
        ("shared", "Linear", 0, 1, 0),
        ("shared", "Linear", 1, 1, 0),
        ("attention", "Attention", 0, 1, 0),
        ("attention.query", "Linear", 0, 2, 3),
        ("scores", "tap", 0, 2, 3),
        ("activation", "ReLU", 0, 1, 0),
    ]
    assert trace[5].kind == "tap"


def test_inputs_are_named_by_the_forward_signature_and_outputs_flattened() -> None:
    trace = recorded(Model(), torch.randn(2, 4))
    attention = trace[3]
    assert [leaf.name for leaf in attention.inputs] == ["hidden_states", "attention_mask", "scale"]
    assert attention.inputs[1].value_repr == "None" and attention.inputs[2].value_repr == "0.5"
    root = trace[0]
    assert [leaf.name for leaf in root.inputs] == ["x"]
    assert [leaf.name for leaf in root.outputs] == ["output.logits", "output.hidden_states.0", "output.hidden_states.1", "output.note"]
    assert root.outputs[3].value_repr == "'done'"


def test_namedtuple_dict_and_model_output_are_flattened() -> None:
    transformers = pytest.importorskip("transformers")

    class Returns(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple:
            model_output = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=x * 2)
            return Pair(first=x, second={"a": [x + 1, None]}), model_output

    trace = recorded(Returns(), torch.ones(3))
    assert [leaf.name for leaf in trace[0].outputs] == [
        "output.0.first",
        "output.0.second.a.0",
        "output.0.second.a.1",
        "output.1.last_hidden_state",
    ]
    assert torch.equal(trace[0].outputs[3].tensor, torch.full((3,), 2.0))


def test_tensors_are_copied_so_later_in_place_changes_do_not_leak_into_the_record() -> None:
    trace = recorded(Model(), torch.randn(2, 4))
    attention_output = trace[3].outputs[0].tensor
    relu_input = trace[6].inputs[0].tensor
    relu_output = trace[6].outputs[0].tensor
    # ReLU(inplace=True) overwrote the attention output after it was recorded.
    assert (attention_output < 0).any()
    assert torch.equal(relu_input, attention_output)
    assert not (relu_output < 0).any()


def test_a_tensor_passed_on_unchanged_is_stored_once_and_knows_its_source() -> None:
    trace = recorded(Model(), torch.randn(2, 4))
    first_call_output = trace[1].outputs[0]
    second_call_input = trace[2].inputs[0]
    assert second_call_input.tensor is first_call_output.tensor
    assert second_call_input.source == (1, "output")


def test_hooks_are_removed_even_when_the_forward_raises() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.layer(x)
            raise ValueError("boom")

    model = Broken()
    with pytest.raises(ScriptError, match="boom"):
        recorded(model, torch.randn(1, 4))
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_tap_outside_a_recording_returns_the_value_and_records_nothing() -> None:
    value = torch.ones(2)
    assert tracetui.tap("loose", value) is value


def test_calls_whose_forward_raised_and_was_caught_keep_depth_right() -> None:
    class Fragile(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("fast path unavailable")

    class Careful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast = Fragile()
            self.slow = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.fast(x)
            except KeyError:
                return self.slow(x)

    model = Careful()
    recorder = Recorder(model, "<test>")
    with recorder.attached(), torch.no_grad():
        model(torch.ones(1, 2))
    records = recorder.trace.records
    assert [(record.name, record.depth, record.parent, record.finished) for record in records] == [
        ("", 0, None, True),
        ("fast", 1, 0, False),
        ("slow", 1, 0, True),
    ]


def test_calls_inside_a_forward_that_raised_are_closed_with_it() -> None:
    class Fragile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.inner(x)
            raise KeyError("fast path unavailable")

    class Careful(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast = Fragile()
            self.slow = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            try:
                return self.fast(x)
            except KeyError:
                tracetui.tap("fallback", x)
                return self.slow(x)

    model = Careful()
    recorder = Recorder(model, "<test>")
    with recorder.attached(), torch.no_grad():
        model(torch.ones(1, 2))
    records = recorder.trace.records
    assert [(record.name, record.depth, record.parent, record.finished) for record in records] == [
        ("", 0, None, True),
        ("fast", 1, 0, False),
        ("fast.inner", 2, 1, True),
        ("fallback", 1, 0, True),
        ("slow", 1, 0, True),
    ]
    assert not records[1].outputs


def test_the_run_to_run_check_measures_each_pair_of_tensors_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One layer's output is the next one's input, in both runs: measured once, not twice, and a
    change still shows on every call that sees it."""
    record_module = sys.modules["tracetui.record"]  # the package's `record` attribute is the function
    measured: list[tuple[torch.Size, torch.Size]] = []
    original_measure = record_module.max_abs_difference

    def counting(first: torch.Tensor, second: torch.Tensor) -> float:
        measured.append((first.shape, second.shape))
        return original_measure(first, second)

    monkeypatch.setattr(record_module, "max_abs_difference", counting)
    class Noise(nn.Module):
        def forward(self, values: torch.Tensor) -> torch.Tensor:
            return values + 0.01 * torch.rand_like(values)  # differs from run to run (another seed)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 6), Noise(), nn.Linear(6, 3))
    trace = tracetui.record((model, torch.randn(2, 4)))

    # x, the three Linear outputs and the noise's output: five unique pairs for 10 leaves.
    assert len(measured) == 5
    assert trace.rerun_output_diff is not None and trace.rerun_input_diff is not None
    by_name = {record.name: record.index for record in trace.records}
    assert trace.rerun_output_diff[by_name["2"]] > 0 and trace.rerun_input_diff[by_name["2"]] == 0
    assert trace.rerun_input_diff[by_name["3"]] == trace.rerun_output_diff[by_name["2"]]  # the same pair, measured once

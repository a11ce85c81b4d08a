"""Record a forward pass: hooks on every module, one :class:`CallRecord` per call, in call order.

Pre-hooks copy the inputs before the module runs (so an in-place operation inside it cannot
change what was recorded); forward hooks copy the outputs. Every hook handle is removed in a
``finally``, whatever the model does. :func:`tap` adds a manual record point.
"""

from __future__ import annotations

import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch

from tracetui.errors import RecordingError
from tracetui.flatten import flatten, name_arguments
from tracetui.memory import garbage_collection_paused
from tracetui.numeric import max_abs_difference
from tracetui.script import ModelScript
from tracetui.trace import CallRecord, Leaf, Trace

REPR_LIMIT = 80
PROGRESS_EVERY = 500  # calls between progress updates: frequent enough to see, too rare to cost

# Receives short messages such as "1500 calls" while a long recording runs.
Progress = Callable[[str], None]


@dataclass
class _KeptCopy:
    """The copy made of one live tensor object, valid while that object is alive and unmodified."""

    original: weakref.ref[torch.Tensor]
    version: int
    copy: torch.Tensor
    source: tuple[int, str] | None


class Recorder:
    """Collects the calls of one forward pass. Use :meth:`attached` around the pass."""

    def __init__(self, model: torch.nn.Module, source: str, progress: Progress | None = None) -> None:
        self.model = model
        self.trace = Trace(source=source)
        self._progress = progress
        # Calls that have started and not yet returned: (record index, module, its _call_impl frame).
        self._open_calls: list[tuple[int, torch.nn.Module, FrameType]] = []
        self._call_counts: Counter[str] = Counter()
        self._tap_counts: Counter[str] = Counter()
        self._kept: dict[int, _KeptCopy] = {}
        self._module_names: dict[int, str] = {}

    @contextmanager
    def attached(self) -> Iterator[Recorder]:
        handles = []
        _active_recorders.append(self)
        try:
            for name, module in self.model.named_modules():
                self._module_names[id(module)] = name
                try:
                    handles.append(module.register_forward_pre_hook(self._before_call, with_kwargs=True))
                    handles.append(module.register_forward_hook(self._after_call, with_kwargs=True))
                except RuntimeError as error:  # TorchScript modules refuse Python hooks
                    raise RecordingError(
                        f"{self.trace.source}: cannot put a hook on module {name or '(root)'} "
                        f"({type(module).__name__}): {error}. TorchScript (torch.jit.script/trace) modules "
                        "cannot be recorded; return the eager model from build()."
                    ) from error
            yield self
        finally:
            for handle in handles:
                handle.remove()
            _active_recorders.remove(self)

    # -- hooks -------------------------------------------------------------------------------

    def _before_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        calling_frame = sys._getframe(1)  # the module's _call_impl, alive until the call ends
        self._close_calls_that_raised(calling_frame)
        name = self._module_names[id(module)]
        record = self._open_record(name, type(module).__name__, self._call_counts, "module")
        record.inputs = self._leaves(name_arguments(module, args, kwargs), record.index)
        self._open_calls.append((record.index, module, calling_frame))

    def _after_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        while self._open_calls:
            index, open_module, _ = self._open_calls.pop()
            if open_module is module:
                record = self.trace.records[index]
                record.outputs = self._leaves([("output", output)], index)
                record.finished = True
                return

    def _close_calls_that_raised(self, current_frame: FrameType) -> None:
        """Forget open calls whose forward raised (and model code caught it): their frames are gone.

        A forward hook never runs for such a call; without this, later calls would be nested in it.
        The innermost open call's frame is normally a few frames up, so the walk is short.
        """
        while self._open_calls:
            open_frame = self._open_calls[-1][2]
            frame: FrameType | None = current_frame
            while frame is not None and frame is not open_frame:
                frame = frame.f_back
            if frame is not None:
                return
            self._open_calls.pop()

    def tap(self, name: str, value: Any) -> None:
        self._close_calls_that_raised(sys._getframe(1))
        record = self._open_record(name, "tap", self._tap_counts, "tap")
        record.outputs = self._leaves([("output", value)], record.index)
        record.finished = True

    # -- helpers -----------------------------------------------------------------------------

    def _open_record(self, name: str, class_name: str, counts: Counter[str], kind: str) -> CallRecord:
        parent = self._open_calls[-1][0] if self._open_calls else None
        record = CallRecord(
            index=len(self.trace.records),
            name=name,
            class_name=class_name,
            call=counts[name],
            depth=len(self._open_calls),
            parent=parent,
            kind=kind,  # type: ignore[arg-type]
        )
        counts[name] += 1
        self.trace.records.append(record)
        if self._progress is not None and record.index % PROGRESS_EVERY == 0:
            self._progress(f"{record.index} calls")
        return record

    def _leaves(self, named_values: list[tuple[str, Any]], record_index: int) -> list[Leaf]:
        """Flatten each named value (an argument, or the output) into leaves, copying tensors."""
        leaves = []
        for leaf_name, value in named_values:
            for path, item in flatten(value, leaf_name):
                if isinstance(item, torch.Tensor):
                    copy, source = self._keep(item, record_index, path)
                    leaves.append(Leaf(name=path, tensor=copy, source=source))
                else:
                    leaves.append(Leaf(name=path, value_type=type(item).__name__, value_repr=short_repr(item)))
        return leaves

    def _keep(self, tensor: torch.Tensor, record_index: int, leaf_name: str) -> tuple[torch.Tensor, tuple[int, str] | None]:
        """Copy a tensor once: the same unmodified tensor object seen again reuses the copy."""
        version = tensor_version(tensor)
        kept = self._kept.get(id(tensor))
        if kept is not None and version is not None and kept.version == version and kept.original() is tensor:
            return kept.copy, kept.source
        copy = tensor.detach().to("cpu", copy=True)
        is_output = leaf_name.startswith("output")
        source = (record_index, leaf_name) if is_output else None
        if version is not None:
            self._kept[id(tensor)] = _KeptCopy(weakref.ref(tensor), version, copy, source)
        return copy, source


def tensor_version(tensor: torch.Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference-mode tensors have no version counter
        return None


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 1] + "…"


_active_recorders: list[Recorder] = []


def tap(name: str, value: Any) -> Any:
    """Record ``value`` under ``name`` when tracetui is recording; return it unchanged.

    Drop it anywhere in model code — ``scores = tracetui.tap("attention_scores", scores)`` —
    to compare a value that is not a module output. It is recorded inside the module that is
    running, and paired with the tap of the same name (and call count) on the other side.
    Outside a recording it does nothing.
    """
    if _active_recorders:
        _active_recorders[-1].tap(name, value)
    return value


def record_script(script: ModelScript, seed: int | None = None, progress: Progress | None = None) -> Trace:
    """Run a built model script once with hooks on every module and return its trace."""
    recorder = Recorder(script.model, script.label, progress)
    with garbage_collection_paused(), recorder.attached():
        script.run(seed=seed)
    trace = recorder.trace
    trace.seed = script.seed if seed is None else seed
    check_hooks_fired(trace, script)
    return trace


def check_hooks_fired(trace: Trace, script: ModelScript) -> None:
    module_records = [record for record in trace.records if record.kind == "module"]
    if not module_records:
        raise RecordingError(
            f"{script.path}: the forward pass ran but no module hook fired, so there is nothing to compare. "
            "This happens when the model is a TorchScript module (torch.jit.script/trace), is compiled, or when "
            "the script's forward() calls `model.forward(...)` directly: call `model(...)` instead, on the eager model."
        )
    if len(module_records) == 1 and module_records[0].name == "" and len(list(script.model.modules())) > 1:
        raise RecordingError(
            f"{script.path}: only the root module's hooks fired; its {len(list(script.model.modules())) - 1} submodules "
            "were never called through `module(...)`. Submodules called as `self.layer.forward(x)`, or "
            "scripted/compiled submodules, cannot be recorded: call them as `self.layer(x)`."
        )


def record_twice(script: ModelScript, progress: Progress | None = None) -> Trace:
    """Record the model, then run it again with another seed to find nondeterministic calls.

    Only the largest run-to-run difference of each call is kept from the second run.
    """
    def run_progress(run: str) -> Progress | None:
        return None if progress is None else (lambda message: progress(f"{run}: {message}"))

    trace = record_script(script, progress=run_progress("run 1 of 2"))
    second_run = record_script(script, seed=script.seed + 1, progress=run_progress("run 2 of 2"))
    attach_rerun_differences(trace, second_run)
    return trace


def attach_rerun_differences(trace: Trace, second_run: Trace) -> None:
    second_by_key = {(record.kind, record.name, record.call): record for record in second_run.records}
    trace.rerun_output_diff = []
    trace.rerun_input_diff = []
    for record in trace.records:
        again = second_by_key.get((record.kind, record.name, record.call))
        if again is None:  # the second run took another path; nothing to judge this call by
            trace.rerun_output_diff.append(0.0)
            trace.rerun_input_diff.append(0.0)
            continue
        trace.rerun_output_diff.append(largest_change(record.outputs, again.outputs))
        trace.rerun_input_diff.append(largest_change(record.inputs, again.inputs))


def largest_change(first: list[Leaf], second: list[Leaf]) -> float:
    second_by_name = {leaf.name: leaf.tensor for leaf in second if leaf.tensor is not None}
    change = 0.0
    for leaf in first:
        other = second_by_name.get(leaf.name)
        if leaf.tensor is not None and other is not None and leaf.tensor is not other:
            change = max(change, max_abs_difference(leaf.tensor, other))
    return change

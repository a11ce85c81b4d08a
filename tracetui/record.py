"""Record a forward pass: hooks on every module, one :class:`CallRecord` per call, in call order.

Pre-hooks copy the inputs before the module runs (so an in-place operation inside it cannot
change what was recorded); forward hooks copy the outputs. Every hook handle is removed in a
``finally``, whatever the model does. :func:`tap` adds a manual record point.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from tracetui.errors import RecordingError, UsageError, own_hook
from tracetui.flatten import flatten, name_arguments
from tracetui.frameworks import ForeignScript
from tracetui.memory import garbage_collection_paused, release_free_memory
from tracetui.numeric import dense, max_abs_difference, summarize, summary_bound
from tracetui.open_calls import OpenCalls
from tracetui.script import ModelScript
from tracetui.spill import SpillStore, prepare_directory
from tracetui.text import shape_text
from tracetui.trace import CallRecord, Leaf, TensorSummary, Trace, summary_leaf
from tracetui.tracefile import INDEX_NAME, trace_document, write_index

REPR_LIMIT = 80
PROGRESS_EVERY = 500  # calls between progress updates: frequent enough to see, too rare to cost

# Receives short messages such as "1500 calls" while a long recording runs.
Progress = Callable[[str], None]
# Called with a call's record, "inputs" or "outputs", and its leaves while their tensors are
# still the live ones: a streamed comparison measures them here, before they are let go.
LiveCheck = Callable[[CallRecord, str, list[Leaf]], None]
# Called the same way before anything else sees the leaves, and may replace their live tensors:
# a distributed port's ranks gather sharded tensors into full ones here (tracetui.distributed).
LeafTransform = Callable[[CallRecord, str, list[Leaf]], None]


@dataclass(frozen=True)
class KeepPolicy:
    """What a recording keeps of each tensor, and where it keeps it.

    ``values="full"`` keeps a copy of every tensor; ``"stats"`` only a :class:`TensorSummary`
    (shape, dtype, min, max, mean, NaN/Inf count); ``"none"`` nothing but the shape of the
    call tree (for a run checked live and then thrown away). ``only`` — a regular expression —
    keeps full values for the modules and taps whose name it finds, statistics elsewhere (a
    tensor already copied for a matching call keeps its copy wherever else it appears: free).
    ``spill`` writes the kept copies to that directory as they are recorded, a shard at a
    time, and reads them back memory-mapped: memory stays bounded whatever the model's size.
    """

    values: Literal["full", "stats", "none"] = "full"
    only: str | None = None
    spill: Path | None = None
    _only_pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.only is not None:
            try:
                object.__setattr__(self, "_only_pattern", re.compile(self.only))
            except re.error as error:
                raise UsageError(f"--only {self.only!r} is not a valid regular expression: {error}.") from error

    def keeps_values(self, name: str) -> bool:
        if self._only_pattern is not None:
            return self._only_pattern.search(name) is not None
        return self.values == "full"

    def describe(self) -> str:
        kept = (
            f"full values for names matching {self.only!r}, statistics elsewhere"
            if self.only
            else {"full": "full values", "stats": "statistics only", "none": "nothing"}[self.values]
        )
        return kept + (f", spilled to {self.spill}" if self.spill else "")


@dataclass
class _KeptCopy:
    """What was kept of one live tensor object, valid while that object is alive and unmodified."""

    original: weakref.ref[torch.Tensor]
    version: int
    copy: torch.Tensor | None
    summary: TensorSummary | None
    source: tuple[int, str] | None
    # Writes through ``.data`` (or to the storage by other means) leave the version counter as it
    # was: where the tensor's memory is and a few of its values tell such writes apart.
    data_pointer: int = 0
    fingerprint: torch.Tensor | None = None

    def still_holds(self, tensor: torch.Tensor, version: int | None) -> bool:
        if version is None or self.version != version or self.original() is not tensor or self.data_pointer != tensor.data_ptr():
            return False
        return self.fingerprint is not None and torch.equal(self.fingerprint, fingerprint(tensor))


FINGERPRINT_POSITIONS = 3  # positions per dimension: the first, the middle and the last


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """A few of the tensor's values spread over every dimension, as raw bytes (NaN compares equal):
    a write to the whole tensor, or to a slice along any dimension, changes them.

    Gathered in one indexing, numpy's ``ix_`` way (each dimension's positions shaped to broadcast
    against the others'): 3 ** ndim elements read, where selecting one dimension after another
    would first copy a third of the tensor (a third of a logits tensor, on every call)."""
    sample = tensor.detach()
    if sample.numel() == 0 or sample.dim() == 0:
        return sample.reshape(-1).to("cpu", copy=True).view(torch.uint8)
    grids = []
    for dimension, size in enumerate(sample.shape):
        if size > FINGERPRINT_POSITIONS:
            positions = torch.linspace(0, size - 1, FINGERPRINT_POSITIONS, device=sample.device).long()
        else:
            positions = torch.arange(size, device=sample.device)
        grids.append(positions.reshape([-1 if axis == dimension else 1 for axis in range(sample.dim())]))
    return sample[tuple(grids)].reshape(-1).view(torch.uint8).to("cpu", copy=True)


class Recorder:
    """Collects the calls of one forward pass. Use :meth:`attached` around the pass."""

    def __init__(
        self,
        model: torch.nn.Module | None,
        source: str,
        progress: Progress | None = None,
        keep: KeepPolicy = KeepPolicy(),
        live_check: LiveCheck | None = None,
        leaf_transform: LeafTransform | None = None,
    ) -> None:
        self.model = model
        self.trace = Trace(source=source)
        self.keep = keep
        self.live_check = live_check
        self.leaf_transform = leaf_transform
        self._progress = progress
        self._spill: SpillStore | None = None
        if keep.spill is not None:
            prepare_directory(keep.spill, INDEX_NAME)
            self._spill = SpillStore(keep.spill)
        # Spilled copies not yet written: their key, and the leaves and cache entries holding them.
        self._pending_keys: dict[int, str] = {}
        self._pending_leaves: list[Leaf] = []
        self._key_of_written: dict[int, str] = {}
        # Calls that have started and not yet ended, innermost last: (record index, module).
        # The module is any object (a Flax or Keras one, for tracetui.frameworks).
        self._open_calls: OpenCalls[tuple[int, object]] = OpenCalls()
        self._call_counts: Counter[str] = Counter()
        self._tap_counts: Counter[str] = Counter()
        self._kept: dict[int, _KeptCopy] = {}
        self._module_names: dict[int, str] = {}

    @contextmanager
    def attached(self) -> Iterator[Recorder]:
        handles = []
        _active_recorders.append(self)
        # One guarded function per hook, shared by every module (wrapping per module costs more than the hooks).
        before_call, after_call, end_call = (
            own_hook(hook, self.trace.source, self._module_names) for hook in (self._before_call, self._after_call, self._end_call)
        )
        assert self.model is not None, "attached() hooks a torch model; other frameworks call begin_call/finish_call/end_call"
        try:
            for name, module in self.model.named_modules():
                self._module_names[id(module)] = name
                try:
                    handles.append(module.register_forward_pre_hook(before_call, with_kwargs=True))
                    handles.append(module.register_forward_hook(after_call, with_kwargs=True))
                    handles.append(module.register_forward_hook(end_call, always_call=True))
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
        self.begin_call(module, self._module_names[id(module)], type(module).__name__, lambda: name_arguments(module, args, kwargs))

    def _after_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """The forward returned: record its output. :meth:`_end_call` closes the call next."""
        self.finish_call(module, output)

    def _end_call(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        """Close the innermost call, whether its forward returned or raised (``always_call``).

        A call whose forward raised, where model code caught the exception, stays unfinished and
        has no outputs; the calls after it are not nested in it. Torch runs this hook after
        :meth:`_after_call` when the forward returned, and alone when it raised.
        """
        self.end_call(module)

    # -- one call, whatever framework runs it (torch hooks, or tracetui.frameworks' wrappers) --

    def begin_call(self, module: object, name: str, class_name: str, named_inputs: Callable[[], list[tuple[str, Any]]]) -> None:
        """A module call starts: open its record (nested in the innermost open call) and record its inputs.

        ``named_inputs`` gives the arguments as ``(name, value)`` pairs with torch tensors inside.
        """
        with self._open_calls.lock:
            record = self._open_record(name, class_name, self._call_counts, "module")
            self._open_calls.push((record.index, module))  # before the inputs: end_call runs even if they fail
            record.inputs = self._leaves(named_inputs(), record, "inputs")

    def finish_call(self, module: object, output: Any) -> None:
        """The innermost call, ``module``'s, returned ``output`` (torch tensors inside): record it."""
        with self._open_calls.lock:
            innermost = self._open_calls.top()
            if innermost is not None and innermost[1] is module:
                record = self.trace.records[innermost[0]]
                record.outputs = self._leaves([("output", output)], record, "outputs")
                record.finished = True

    def end_call(self, module: object) -> None:
        """Close ``module``'s call if it is the innermost open one (after :meth:`finish_call`, or alone when it raised)."""
        with self._open_calls.lock:
            innermost = self._open_calls.top()
            if innermost is not None and innermost[1] is module:
                self._open_calls.pop()

    def innermost_call(self) -> CallRecord | None:
        """The record of the innermost open call on this thread, None outside every call."""
        innermost = self._open_calls.innermost()
        return None if innermost is None else self.trace.records[innermost[0]]

    def tap(self, name: str, value: Any) -> None:
        with self._open_calls.lock:
            record = self._open_record(name, "tap", self._tap_counts, "tap")
            record.outputs = self._leaves([("output", value)], record, "outputs")
            record.finished = True

    # -- helpers -----------------------------------------------------------------------------

    def _open_record(self, name: str, class_name: str, counts: Counter[str], kind: str) -> CallRecord:
        enclosing = self._open_calls.innermost()
        parent = None if enclosing is None else enclosing[0]
        record = CallRecord(
            index=len(self.trace.records),
            name=name,
            class_name=class_name,
            call=counts[name],
            depth=0 if parent is None else self.trace.records[parent].depth + 1,
            parent=parent,
            kind=kind,  # type: ignore[arg-type]
        )
        counts[name] += 1
        self.trace.records.append(record)
        if self._progress is not None and record.index % PROGRESS_EVERY == 0:
            written = f", {self._spill.bytes_written / 1e9:.2f} GB spilled" if self._spill is not None else ""
            self._progress(f"{record.index} calls{written}")
        return record

    def _leaves(self, named_values: list[tuple[str, Any]], record: CallRecord, part: str) -> list[Leaf]:
        """Flatten each named value (an argument, or the output) into leaves, keeping tensors per the policy."""
        leaves = []
        for leaf_name, value in named_values:
            for path, item in flatten(value, leaf_name):
                if isinstance(item, torch.Tensor):
                    leaves.append(Leaf(name=path, tensor=item))  # the live tensor, until _keep replaces it
                else:
                    leaves.append(Leaf(name=path, value_type=type(item).__name__, value_repr=short_repr(item)))
        if self.leaf_transform is not None:
            self.leaf_transform(record, part, leaves)
        if self.live_check is not None:
            self.live_check(record, part, leaves)
        keep_values = self.keep.keeps_values(record.name)
        for leaf in leaves:
            if leaf.tensor is not None:
                self._keep(leaf, record.index, keep_values)
        if self._spill is not None and self._spill.is_full:
            self._write_shard()
        return leaves

    def _keep(self, leaf: Leaf, record_index: int, keep_values: bool) -> None:
        """Replace the leaf's live tensor by what is kept of it (a copy, a summary or nothing).

        The leaf is changed in place: a live check may hold it. The same unmodified tensor
        object seen again reuses what was kept of it.
        """
        tensor = leaf.tensor
        assert tensor is not None
        leaf.tensor = None
        version = tensor_version(tensor)
        kept = self._kept.get(id(tensor))
        if kept is not None and not kept.still_holds(tensor, version):
            kept = None
        if kept is None or (keep_values and kept.copy is None) or (kept.copy is None and kept.summary is None):
            source = kept.source if kept is not None else (record_index, leaf.name) if leaf.name.startswith("output") else None
            kept = _KeptCopy(weakref.ref(tensor), version if version is not None else -1, None, None, source)
            if keep_values:
                kept.copy = dense(tensor.detach()).to("cpu", copy=True)  # the only copy to the host a recording makes
                if self._spill is not None:
                    self._pending_keys[id(kept.copy)] = self._spill.add(kept.copy)
            elif self.keep.values != "none" or self.keep.only is not None:
                kept.summary = summarize(tensor.detach())  # reduced where the tensor lives: only numbers reach the host
            if version is not None:
                kept.data_pointer, kept.fingerprint = tensor.data_ptr(), fingerprint(tensor)
                self._kept[id(tensor)] = kept
        leaf.source = kept.source
        if kept.copy is not None:
            leaf.tensor = kept.copy
            if id(kept.copy) in self._pending_keys:
                self._pending_leaves.append(leaf)
        elif kept.summary is not None:
            described = summary_leaf(leaf.name, kept.summary)
            leaf.summary, leaf.value_type, leaf.value_repr = kept.summary, described.value_type, described.value_repr
        else:
            leaf.value_type, leaf.value_repr = "Tensor", f"{tensor.dtype}{shape_text(tensor.shape, as_list=True)}, not kept"

    # -- spilling ----------------------------------------------------------------------------

    def _write_shard(self) -> None:
        """Write the buffered copies and point every leaf and cache entry at the mapped views."""
        assert self._spill is not None
        mapped = self._spill.flush()
        if not mapped:
            return
        view_of_copy = {copy_id: mapped[key] for copy_id, key in self._pending_keys.items()}
        for leaf in self._pending_leaves:
            assert leaf.tensor is not None
            leaf.tensor = view_of_copy[id(leaf.tensor)]
        for kept in self._kept.values():
            if kept.copy is not None and id(kept.copy) in view_of_copy:
                kept.copy = view_of_copy[id(kept.copy)]
        for copy_id, key in self._pending_keys.items():
            self._key_of_written[id(view_of_copy[copy_id])] = key
        self._pending_keys = {}
        self._pending_leaves = []

    def finish(self) -> Trace:
        """Write what is still buffered and the trace's index; the trace then lives on disk."""
        if self._spill is not None and self.keep.spill is not None:
            self._write_shard()
            document = trace_document(self.trace, lambda tensor: self._key_of_written[id(tensor)])
            write_index(self.keep.spill, document, self._spill)
        self._kept.clear()  # the weak references and copies are only needed while the pass runs
        return self.trace


def tensor_version(tensor: torch.Tensor) -> int | None:
    """The version counter of a strided tensor, None when a copy kept of it cannot be reused."""
    if tensor.layout != torch.strided:
        return None
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


def record_script(
    script: ModelScript | ForeignScript,
    seed: int | None = None,
    progress: Progress | None = None,
    keep: KeepPolicy = KeepPolicy(),
    live_check: LiveCheck | None = None,
    leaf_transform: LeafTransform | None = None,
) -> Trace:
    """Run a built model script once with hooks on every module and return its trace.

    A Flax or Keras original is recorded by its framework's adapter (tracetui.frameworks),
    through the same call and leaf code."""
    if not isinstance(script, ModelScript):
        return script.record(progress, keep, seed=seed, live_check=live_check)
    recorder = Recorder(script.model, script.label, progress, keep, live_check, leaf_transform)
    with garbage_collection_paused(), recorder.attached():
        script.run(seed=seed)
    recorder.trace.seed = script.seed if seed is None else seed
    check_hooks_fired(recorder.trace, script)
    trace = recorder.finish()
    release_free_memory()  # the forward pass's own activations, freed now: back to the system
    return trace


def check_hooks_fired(trace: Trace, script: ModelScript) -> None:
    module_records = [record for record in trace.records if record.kind == "module"]
    if not module_records:
        raise RecordingError(
            f"{script.label}: the forward pass ran but no module hook fired, so there is nothing to compare. "
            "This happens when the model is a TorchScript module (torch.jit.script/trace), is compiled, or when "
            "the script's forward() calls `model.forward(...)` directly: call `model(...)` instead, on the eager model."
        )
    if len(module_records) == 1 and module_records[0].name == "" and len(list(script.model.modules())) > 1:
        raise RecordingError(
            f"{script.label}: only the root module's hooks fired; its {len(list(script.model.modules())) - 1} submodules "
            "were never called through `module(...)`. Submodules called as `self.layer.forward(x)`, or "
            "scripted/compiled submodules, cannot be recorded: call them as `self.layer(x)`."
        )


def record_twice(
    script: ModelScript | ForeignScript,
    progress: Progress | None = None,
    keep: KeepPolicy = KeepPolicy(),
    leaf_transform: LeafTransform | None = None,
) -> Trace:
    """Record the model, then run it again with another seed to find nondeterministic calls.

    The second run keeps nothing: each of its calls is measured against the first run's as it
    happens, and only the largest run-to-run difference of each call is kept.
    """

    def run_progress(run: str) -> Progress | None:
        return None if progress is None else (lambda message: progress(f"{run}: {message}"))

    trace = record_script(script, progress=run_progress("run 1 of 2"), keep=keep, leaf_transform=leaf_transform)
    check = RerunCheck(trace)
    record_script(
        script, seed=script.seed + 1, progress=run_progress("run 2 of 2"), keep=KeepPolicy(values="none"), live_check=check,
        leaf_transform=leaf_transform,
    )
    if keep.spill is not None:  # the run-to-run differences belong in the index written by the first run
        from tracetui.tracefile import rewrite_index_document

        rewrite_index_document(keep.spill, trace)
    return trace


class RerunCheck:
    """Measures a second run of the same model against the first, call by call, as it runs."""

    def __init__(self, first_run: Trace) -> None:
        self.first_run = first_run
        self.first_by_key = {(record.kind, record.name, record.call): record for record in first_run.records}
        # A call the second run never makes (another path taken) has nothing to judge it by: 0.
        first_run.rerun_output_diff = [0.0] * len(first_run.records)
        first_run.rerun_input_diff = [0.0] * len(first_run.records)
        self.changes = ChangeCache()

    def __call__(self, record: CallRecord, part: str, leaves: list[Leaf]) -> None:
        first = self.first_by_key.get((record.kind, record.name, record.call))
        if first is None:
            return
        if part == "inputs":
            assert self.first_run.rerun_input_diff is not None
            self.first_run.rerun_input_diff[first.index] = largest_change(first.inputs, leaves, self.changes)
        else:
            assert self.first_run.rerun_output_diff is not None
            self.first_run.rerun_output_diff[first.index] = largest_change(first.outputs, leaves, self.changes)


class ChangeCache:
    """Run-to-run changes already measured, by (first run's tensor, second run's live tensor).

    A call's input is usually the output of the call before it — the same recorded tensor in
    the first run, the same live tensor in the second — so each pair is measured once. A live
    tensor's id can be reused once it is freed: an entry counts only while the tensor it was
    measured on is alive (a weak reference to it).
    """

    def __init__(self) -> None:
        self._changes: dict[tuple[int, int], tuple[weakref.ref[torch.Tensor], float]] = {}

    def change(self, first: torch.Tensor, second: torch.Tensor) -> float:
        key = (id(first), id(second))
        known = self._changes.get(key)
        if known is not None and known[0]() is second:
            return known[1]
        change = max_abs_difference(first, second)
        self._changes[key] = (weakref.ref(second, lambda _: self._changes.pop(key, None)), change)
        return change


def largest_change(first: list[Leaf], second: list[Leaf], changes: ChangeCache) -> float:
    """Largest |Δ| between same-named tensors of two runs (compared by statistics where the first run kept only those)."""
    second_by_name = {leaf.name: leaf.tensor for leaf in second if leaf.tensor is not None}
    change = 0.0
    for leaf in first:
        other = second_by_name.get(leaf.name)
        if other is None:
            continue
        if leaf.tensor is not None:
            change = max(change, changes.change(leaf.tensor, other))
        elif leaf.summary is not None:
            change = max(change, summary_change(leaf.summary, summarize(other)))
    return change


def summary_change(first: TensorSummary, second: TensorSummary) -> float:
    """The lower bound of max |Δ| that two summaries prove (inf when shapes or NaN/Inf counts differ)."""
    if first.shape != second.shape or first.nonfinite != second.nonfinite:
        return float("inf")
    if first.nonfinite:
        return 0.0
    return summary_bound(first, second)

"""``ctx`` at the ipdb prompt: both sides' recorded inputs and outputs of the call, and diffs against them.

What it prints (the banner, the reprs ``p`` shows) names modules, classes and leaves from the
user's code and trace files: it passes through :func:`~tracetui.safe_text.printable`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.distributed.info import GatheredLeaf
from tracetui.fixes.patches import Undo
from tracetui.fixes.search import rebuilt_patch
from tracetui.flatten import flatten
from tracetui.numeric import TensorDifference, equivalent_shapes, format_difference, measure
from tracetui.rows import LeafPair, Row, pair_leaves
from tracetui.safe_text import printable
from tracetui.sides import Side, other_side, pick
from tracetui.text import shape_text
from tracetui.trace import CallRecord, Leaf

CONTEXT_NAME = "ctx"
FALLBACK_CONTEXT_NAME = "tracetui_ctx"  # when the forward itself uses a name `ctx`


# -- the recorded values at hand --------------------------------------------------------------


class RecordedValues(dict[str, Any]):
    """Leaf name → recorded tensor (or the repr of a non-tensor value); prints as a short list."""

    def __repr__(self) -> str:
        if not self:
            return "{}  (nothing recorded)"
        parts = []
        for name, value in self.items():
            if isinstance(value, torch.Tensor):
                parts.append(f"{name!r}: {str(value.dtype).removeprefix('torch.')}{shape_text(value.shape, as_list=True)}")
            else:
                parts.append(f"{name!r}: {value}")
        return printable("{" + ", ".join(parts) + "}")

    __str__ = __repr__


@dataclass
class RecordedCall:
    """One side's record of this call: ``inputs`` and ``outputs`` by leaf name."""

    side: Side
    name: str
    class_name: str
    call: int
    inputs: RecordedValues
    outputs: RecordedValues

    @classmethod
    def of(cls, side: Side, record: CallRecord) -> RecordedCall:
        return cls(
            side=side,
            name=record.name,
            class_name=record.class_name,
            call=record.call,
            inputs=leaf_values(record.inputs),
            outputs=leaf_values(record.outputs),
        )

    def __repr__(self) -> str:
        return printable(
            f"<{self.side} {self.name or '(root)'} ({self.class_name}) call {self.call}: inputs {self.inputs!r}, outputs {self.outputs!r}>"
        )


def first_tensor_name(values: RecordedValues) -> str | None:
    return next((name for name, value in values.items() if isinstance(value, torch.Tensor)), None)


def is_dtensor(value: Any) -> bool:
    """A DTensor (a port on N processes, at the prompt of rank 0), without importing torch.distributed."""
    return type(value).__name__ == "DTensor" and type(value).__module__.startswith("torch.distributed")


def rank_part(value: torch.Tensor, recorded: torch.Tensor, gathered: GatheredLeaf | None = None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """At the prompt of rank 0 of a port on N processes: a live value that holds this rank's part
    of a tensor (a sharded DTensor, or a plain local shard that the recording ``gathered``), and
    the same part of the recorded full tensor, with a note naming the part; any other tensor as
    it is. (``value.full_tensor()`` would be a collective that the other ranks, waiting in the
    model's own, never join.)"""
    if is_dtensor(value):
        from torch.distributed.tensor import DTensor, Partial
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        assert isinstance(value, DTensor)
        placements = tuple(value.placements)
        if any(isinstance(placement, Partial) for placement in placements):
            raise LookupError(
                f"this DTensor holds a partial sum on this rank (placements {placements}): its value exists only once the "
                "ranks have added theirs; compare the module's output after the reduction instead"
            )
        local = value.to_local()
        if all(placement.is_replicate() for placement in placements) or tuple(recorded.shape) != tuple(value.shape):
            return local, recorded, ""
        shape, offset = compute_local_shape_and_global_offset(tuple(value.shape), value.device_mesh, placements)
        part = tuple(slice(start, start + size) for start, size in zip(offset, shape, strict=True))
        return local, recorded[part], f" (this rank's part [{slices_text(part, tuple(value.shape))}] of the DTensor)"
    if gathered is None or gathered.dim is None or gathered.rank_sizes is None or not torch.distributed.is_initialized():
        return value, recorded, ""
    rank = torch.distributed.get_rank()
    dim = gathered.dim
    expected = [*recorded.shape]
    if rank >= len(gathered.rank_sizes) or value.dim() != recorded.dim():
        return value, recorded, ""
    expected[dim] = gathered.rank_sizes[rank]
    if list(value.shape) != expected:
        return value, recorded, ""
    start = sum(gathered.rank_sizes[:rank])
    part = tuple(slice(start, start + expected[dim]) if axis == dim else slice(0, size) for axis, size in enumerate(recorded.shape))
    return value, recorded[part], f" (rank {rank}'s shard [{slices_text(part, tuple(recorded.shape))}], as the recording gathered it)"


def slices_text(part: tuple[slice, ...], full_shape: tuple[int, ...]) -> str:
    cuts = [":" if (cut.start, cut.stop) == (0, full) else f"{cut.start}:{cut.stop}" for cut, full in zip(part, full_shape, strict=True)]
    return ", ".join(cuts)


def live_leaf(path: str, value: Any) -> Leaf:
    if isinstance(value, torch.Tensor):
        return Leaf(name=path, tensor=value.detach().to("cpu"))
    return Leaf(name=path, value_type=type(value).__name__, value_repr=repr(value)[:80])


def leaf_values(leaves: list[Leaf]) -> RecordedValues:
    return RecordedValues((leaf.name, leaf.tensor if leaf.tensor is not None else leaf.value_repr) for leaf in leaves)


@dataclass
class TensorDiff:
    """A live tensor against a recorded one; prints as one line (``p ctx.diff(x)``)."""

    label: str
    difference: TensorDifference
    tolerance: Tolerance
    side: Side

    @property
    def max_abs(self) -> float:
        return self.difference.max_abs

    @property
    def over_tolerance(self) -> int | None:
        return self.difference.out_of_tolerance(self.tolerance.atol, self.tolerance.rtol)

    @property
    def within_tolerance(self) -> bool:
        return self.difference.within(self.tolerance.atol, self.tolerance.rtol)

    def __repr__(self) -> str:
        return printable(f"{self.label}: {describe_difference(self.difference, self.tolerance)}")

    __str__ = __repr__


@dataclass
class OutputDiff:
    """Each output leaf of a live result against the other side's recorded outputs."""

    lines: list[str]
    pairs: list[LeafPair]

    def __repr__(self) -> str:
        return "\n".join(printable(line) for line in self.lines)

    __str__ = __repr__


@dataclass
class FixSuggestions:
    """What trying the usual porting mistakes on this call alone found (``ctx.fixes``)."""

    lines: list[str]

    def __repr__(self) -> str:
        return "\n".join(printable(line) for line in self.lines)

    __str__ = __repr__


def describe_difference(difference: TensorDifference, tolerance: Tolerance) -> str:
    """``max |Δ| 1.2e-01, 2980 of 3072 over atol 0.001, worst at (0, 5, 17): 0.12 (original) vs 0.45 (ported)``."""
    if not difference.shape_matches:
        original_shape = shape_text(difference.original_shape, as_list=True)
        ported_shape = shape_text(difference.ported_shape, as_list=True)
        return f"shapes differ: {original_shape} (original) vs {ported_shape} (ported)"
    if difference.from_statistics:
        return f"max |Δ| ≥ {format_difference(difference.max_abs)} (from min, max and mean: the other side kept statistics only)"
    over = difference.out_of_tolerance(tolerance.atol, tolerance.rtol)
    if over is None:
        within = "within" if difference.within(tolerance.atol, tolerance.rtol) else "over"
        return f"max |Δ| {format_difference(difference.max_abs)}, {within} {tolerance} (elements not counted: values not kept)"
    text = f"max |Δ| {format_difference(difference.max_abs)}, {over} of {difference.numel} over {tolerance}"
    if difference.nonfinite_mismatches:
        text += f", {difference.nonfinite_mismatches} NaN/Inf mismatches"
    if over and difference.worst_index is not None:
        text += f", worst at {difference.worst_index}: {difference.worst_original:.6g} (original) vs {difference.worst_ported:.6g} (ported)"
    elif not over:
        text += " — within tolerance"
    if not difference.dtype_matches:
        text += f" [dtypes {difference.original_dtype} vs {difference.ported_dtype}]"
    return text


def describe_leaf_pairs(pairs: list[LeafPair], tolerance: Tolerance) -> list[str]:
    lines = []
    for pair in pairs:
        if pair.difference is not None:
            lines.append(f"{pair.name}: {describe_difference(pair.difference, tolerance)}")
            continue
        leaf = pair.original or pair.ported
        if leaf is None or not leaf.is_tensor:
            continue  # non-tensor values are not compared
        owner = "original" if pair.original is not None else "ported"
        lines.append(f"{leaf.describe()}: {owner} only, no counterpart, not compared")
    return lines


class DebugContext:
    """What ``ctx`` is at the ipdb prompt: this call as both sides recorded it, and diff helpers.

    - ``ctx.other.inputs['hidden_states']``, ``ctx.other.outputs['output']``: the other model's
      recorded tensors for the paired call; ``ctx.this``: this side's own recording;
      ``ctx.original`` / ``ctx.ported`` name them by side.
    - ``ctx.diff(tensor)``: a live tensor against the other side's input of the same parameter
      name (found by looking the tensor up among your variables), else of the same shape;
      ``ctx.diff(tensor, 'name')`` names the other side's leaf explicitly.
    - ``ctx.diff_output(result)``: a live result (tensor, tuple, dataclass …) against the other
      side's recorded outputs, leaf by leaf.
    - ``ctx.fixes``: the usual porting mistakes that make this call match on the recorded inputs.
    - ``ctx.try_fix(0)``: apply the first of them to the live port for the rest of this run (``c``
      then shows its effect downstream); ``ctx.undo_fixes()`` takes them back. Never written to files.
    """

    def __init__(self, comparison: Comparison, row: Row, side: Side, script_path: Path, model: torch.nn.Module | None = None) -> None:
        record = pick(row, side)
        assert record is not None
        other_record = pick(row, other_side(side))
        self.comparison = comparison
        self.row = row
        self.side: Side = side
        self.other_side: Side = other_side(side)
        self.script_path = script_path
        self.tolerance = comparison.tolerance
        self.this = RecordedCall.of(side, record)
        self.other = None if other_record is None else RecordedCall.of(self.other_side, other_record)
        self.name = CONTEXT_NAME
        self.model = model  # the model of this debugging run: what ctx.try_fix patches
        self._undos: list[tuple[str, Undo]] = []

    @property
    def original(self) -> RecordedCall | None:
        return self.this if self.side == "original" else self.other

    @property
    def ported(self) -> RecordedCall | None:
        return self.this if self.side == "ported" else self.other

    @property
    def fixes(self) -> FixSuggestions:
        """The comparison's fix search for this call (tracetui.fixes): best first."""
        search = self.comparison.fixes.get(self.row.index)
        if search is None:
            return FixSuggestions(["no fix search ran for this call (it is no culprit, or the port was not run again)"])
        lines = [search.summary(self.tolerance)]
        for attempt in search.suggestions(self.tolerance):
            lines.append(f"  {attempt.kind}: {attempt.patch} (max |Δ| {format_difference(attempt.max_abs_after)})")
        skipped = search.skipped_line()
        if skipped is not None:
            lines.append(skipped)
        return FixSuggestions(lines)

    def try_fix(self, number: int = 0) -> FixSuggestions:
        """Apply suggestion ``number`` of ``ctx.fixes`` to this run's port until ``ctx.undo_fixes()``
        or the end of the run: a hypothesis to watch at work, not a change to any file."""
        search = self.comparison.fixes.get(self.row.index)
        if self.side != "ported" or self.model is None:
            raise ValueError("fixes patch the port: debug the ported side (--side ported, or s in the interface)")
        if search is None:
            raise ValueError("no fix search ran for this call (it is no culprit, or the port was not run again)")
        suggestions = search.suggestions(self.tolerance)
        if not 0 <= number < len(suggestions):
            raise IndexError(f"ctx.fixes lists {len(suggestions)} suggestion(s): pick 0 to {len(suggestions) - 1}")
        attempt = suggestions[number]
        patch = rebuilt_patch(self.comparison, self.row, attempt, self.model)
        if patch is None:
            raise ValueError(f"{attempt.patch} takes values from the original model, which this debugging run does not load")
        self._undos.append((patch.description, patch.apply()))
        return FixSuggestions(
            [
                f"applied: {patch.description} (max |Δ| {format_difference(attempt.max_abs_after)} on the recorded inputs)",
                "it holds for the rest of this run: c continues with it, ctx.undo_fixes() takes it back",
            ]
        )

    def undo_fixes(self) -> FixSuggestions:
        """Take back every fix ``ctx.try_fix`` applied, the last first."""
        undone = [description for description, _ in reversed(self._undos)]
        while self._undos:
            _, undo = self._undos.pop()
            undo()
        return FixSuggestions([f"undone: {description}" for description in undone] or ["no fix was applied"])

    # -- helpers for the prompt ----------------------------------------------------------

    def diff(self, value: Any, name: str | None = None) -> TensorDiff:
        """``value`` (a live tensor) against the other side's recorded input of the same name or shape."""
        other = self._require_other()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"ctx.diff takes a tensor, got a {type(value).__name__}")
        if name is not None:
            leaf_name = name if name in other.inputs else None
            if leaf_name is None and name in other.outputs:
                label = f"tensor vs the {self.other_side}'s output {name}"
                return self._tensor_diff(value, label, other.outputs[name], f"{self.other_side} output {name}")
            if leaf_name is None:
                raise LookupError(f"the {self.other_side} call has no input {name!r}; its inputs: {other.inputs!r}")
        else:
            leaf_name = self._counterpart_input(value, sys._getframe(1).f_locals)
        recorded = other.inputs[leaf_name]
        local_names = self._names_of(value, sys._getframe(1).f_locals)
        label = f"{local_names[0] if local_names else 'tensor'} vs the {self.other_side}'s input {leaf_name}"
        own_name = self._own_input_name(leaf_name)
        gathered = None if own_name is None else self._gathered("inputs", own_name)
        return self._tensor_diff(value, label, recorded, f"{self.other_side} input {leaf_name}", gathered)

    def diff_output(self, value: Any) -> OutputDiff:
        """A live result against the other side's recorded outputs, leaf by leaf."""
        self._require_other()
        other_record = pick(self.row, self.other_side)
        assert other_record is not None
        # A port on N processes, stopped on rank 0: a result that is this rank's part is compared
        # with the same part of the recorded tensor.
        recorded_outputs = list(other_record.outputs)
        live, parts = [], []
        for path, item in flatten(value, "output"):
            recorded_index = next((index for index, leaf in enumerate(recorded_outputs) if leaf.name == path), None)
            recorded = None if recorded_index is None else recorded_outputs[recorded_index].tensor
            if isinstance(item, torch.Tensor) and recorded_index is not None and recorded is not None:
                item, recorded_part, part = rank_part(item.detach(), recorded, self._gathered("outputs", path))
                if part:
                    recorded_outputs[recorded_index] = Leaf(name=path, tensor=recorded_part)
                    parts.append(f"{path}{part}")
            live.append(live_leaf(path, item))
        if self.side == "ported":
            pairs = pair_leaves(recorded_outputs, live, pair_leftovers_by_order=True)
        else:
            pairs = pair_leaves(live, recorded_outputs, pair_leftovers_by_order=True)
        lines = [f"{self.side} result vs {self.other_side} recorded outputs" + (f", {'; '.join(parts)}" if parts else "") + ":"]
        lines += ["  " + line for line in describe_leaf_pairs(pairs, self.tolerance)]
        return OutputDiff(lines=lines, pairs=pairs)

    def _require_other(self) -> RecordedCall:
        if self.other is None:
            raise LookupError(
                f"{printable(self.this.name or '(root)')} has no paired call on the {self.other_side} side, so there is nothing "
                "to compare against (pair it with --map)"
            )
        return self.other

    def _gathered(self, part: str, leaf_name: str) -> GatheredLeaf | None:
        """How the recording of a port on N processes assembled this call's leaf from the ranks' shards."""
        record = pick(self.row, "ported")
        distributed = self.comparison.ported.distributed
        if self.side != "ported" or record is None or distributed is None:
            return None
        return next(
            (leaf for leaf in distributed.gathered if (leaf.record, leaf.part, leaf.leaf) == (record.index, part, leaf_name)), None
        )

    def _own_input_name(self, other_leaf_name: str) -> str | None:
        """This side's input leaf that the comparison paired with the other side's ``other_leaf_name``."""
        for pair in self.row.inputs:
            mine, theirs = (pair.ported, pair.original) if self.side == "ported" else (pair.original, pair.ported)
            if mine is not None and theirs is not None and theirs.name == other_leaf_name:
                return mine.name
        return None

    def _tensor_diff(self, value: torch.Tensor, label: str, recorded: Any, what: str, gathered: GatheredLeaf | None = None) -> TensorDiff:
        if not isinstance(recorded, torch.Tensor):
            raise LookupError(printable(f"the {what} is not a tensor: {recorded}"))
        live, recorded, part = rank_part(value.detach(), recorded, gathered)
        live = live.to("cpu")
        difference = measure(recorded, live) if self.side == "ported" else measure(live, recorded)
        return TensorDiff(label=label + part, difference=difference, tolerance=self.tolerance, side=self.side)

    def _names_of(self, value: Any, namespace: dict[str, Any]) -> list[str]:
        """The names ``value`` has where the user typed the call (pdb's namespace for its frame).

        Only that namespace is read: reading the stopped frame's ``f_locals`` again would refresh
        the dict pdb holds and so undo an assignment typed at the prompt.
        """
        return [name for name, item in namespace.items() if item is value]

    def _counterpart_input(self, value: torch.Tensor, namespace: dict[str, Any]) -> str:
        """The other side's input leaf for ``value``: by parameter name, then by shape."""
        other = self._require_other()
        names = self._names_of(value, namespace)
        for name in names:
            for pair in self.row.inputs:  # this side's leaf of that name, and what the comparison paired it with
                mine, theirs = (pair.ported, pair.original) if self.side == "ported" else (pair.original, pair.ported)
                if mine is not None and theirs is not None and mine.name == name and theirs.is_tensor:
                    return theirs.name
            if isinstance(other.inputs.get(name), torch.Tensor):
                return name
        same_shape = [
            leaf_name
            for leaf_name, recorded in other.inputs.items()
            if isinstance(recorded, torch.Tensor) and equivalent_shapes(tuple(recorded.shape), tuple(value.shape))
        ]
        if same_shape:
            return same_shape[0]
        raise LookupError(
            f"no {self.other_side} input has the name {names[0] if names else '?'!r} or the shape {shape_text(value.shape, as_list=True)}; "
            f"its inputs: {other.inputs!r}. Name one: ctx.diff(tensor, 'name'), or compare a result with ctx.diff_output(...)"
        )

    # -- what it prints ------------------------------------------------------------------

    def summary_lines(self) -> list[str]:
        row = self.row
        this, other = self.this, self.other
        status = f"status {self.comparison.status(row)}" + (" — the culprit (first divergence)" if row is self.comparison.culprit else "")
        lines = [
            f"tracetui: stopped in the {self.side} model, {self.script_path}",
            f"  module  {this.name or '(root)'} ({this.class_name}), call {this.call}   [row #{row.index}, {status}]",
        ]
        if other is None:
            lines.append(f"  paired  nothing on the {self.other_side} side: no recorded values to compare with")
        else:
            lines.append(f"  paired  {self.other_side} {other.name or '(root)'} ({other.class_name}), call {other.call}")
            input_lines = describe_leaf_pairs(row.inputs, self.tolerance)
            output_lines = describe_leaf_pairs(row.outputs, self.tolerance)
            lines.append("  inputs" + ("" if input_lines else "  none compared"))
            lines += ["    " + line for line in input_lines]
            lines.append("  outputs" + ("" if output_lines else " none compared"))
            lines += ["    " + line for line in output_lines]
        return lines + self.rank_lines()

    def rank_lines(self) -> list[str]:
        """A port on N processes stops in rank 0 (tracetui.distributed.debug): what that means here."""
        distributed = self.comparison.ported.distributed
        if self.side != "ported" or distributed is None or not torch.distributed.is_initialized():
            return []
        world_size = torch.distributed.get_world_size()
        others = "rank 1 runs" if world_size == 2 else f"ranks 1 to {world_size - 1} run"
        lines = [
            f"  ranks   the port runs on {world_size} processes: ipdb stops in rank 0 (this one); {others} the same forward "
            "alongside, waiting in its collectives. Live tensors here are rank 0's (its shards); ctx holds the full tensors "
            "recorded, and compares a shard with its part of them."
        ]
        from tracetui.distributed.findings import culprit_ranks, rank_sentence

        shares = culprit_ranks(self.row, distributed, self.tolerance) if self.comparison.is_culprit(self.row) else []
        if shares and all(share.rank != 0 for share in shares):
            lines.append(f"          {rank_sentence(shares, distributed)}; rank 0's shard agrees.")
        return lines

    def usage_lines(self) -> list[str]:
        name = self.name
        example = first_tensor_name(self.this.inputs)
        example_input = first_tensor_name(self.other.inputs) if self.other else None
        example_output = first_tensor_name(self.other.outputs) if self.other else None
        commands = [(f"p {name}", "this summary")]
        if self.other is not None:
            commands += [
                (f"p {name}.diff({example or 'tensor'})", f"a tensor vs the {self.other_side}'s input of that name (or shape)"),
                (f"p {name}.diff_output(result)", f"a result vs the {self.other_side}'s recorded outputs"),
                (f"{name}.other.inputs[{example_input!r}]", f"the {self.other_side}'s recorded tensors; also .outputs[{example_output!r}]"),
            ]
        if self.side == "ported" and self.row.index in self.comparison.fixes:
            commands += [
                (f"p {name}.fixes", "the usual porting mistakes that make this call match"),
                (f"p {name}.try_fix(0)", "apply the first to this run (c shows its effect); .undo_fixes() takes it back"),
            ]
        commands += [
            (f"{name}.this.inputs, .outputs", "this side's own recording"),
            ("n  s  c  q", "next line, step in, continue to the end of the run, stop the run"),
        ]
        width = max(len(command) for command, _ in commands) + 3
        lines = [f"At the prompt, `{name}` holds this call's recorded inputs and outputs, both sides:"]
        lines += [f"  {command.ljust(width)}{meaning}" for command, meaning in commands]
        return lines

    def banner(self) -> str:
        return "\n".join(printable(line) for line in self.summary_lines() + self.usage_lines())

    def __repr__(self) -> str:
        return self.banner()

    __str__ = __repr__

"""Aligned calls and how their leaves differ: what a comparison measures once, whatever the tolerance.

A call's input leaves are paired by parameter name, then by position among tensors of the
same shape; a leaf with no counterpart (an extra mask, a rope table computed inline on the
other side) cannot be judged and stays unpaired. Output leaves in the same structure pair by
name whatever their shapes, so that a changed shape shows as a shape mismatch.
"""

from __future__ import annotations

import math
import time
from ast import literal_eval
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

from tracetui.layouts import NO_LAYOUT, LayoutChoice, LayoutRule, choose_layout, inputs_permuted
from tracetui.numeric import IDENTICAL, Details, TensorDifference, equivalent_shapes, measure, measure_summaries, summarize
from tracetui.pairing.alignment import Alignment, Pair
from tracetui.sides import Side
from tracetui.trace import CallRecord, Leaf, TensorSummary

if TYPE_CHECKING:
    from tracetui.isolate import Isolated, Isolation


@dataclass(frozen=True)
class LeafPair:
    """An input or output leaf of one side, its counterpart on the other, and how they differ."""

    original: Leaf | None
    ported: Leaf | None
    difference: TensorDifference | None = None

    @property
    def name(self) -> str:
        if self.original is not None and self.ported is not None and self.original.name != self.ported.name:
            return f"{self.original.name} ↔ {self.ported.name}"
        leaf = self.original or self.ported
        assert leaf is not None
        return leaf.name


@dataclass(frozen=True, eq=False)
class Row:
    """One aligned call: an original call, its ported counterpart and how their leaves differ.

    A row holds only what does not depend on the tolerance, so that one set of rows serves
    every tolerance; its status under one lives in the :class:`~tracetui.compare.Comparison`
    (``comparison.status(row)``).
    """

    index: int
    original: CallRecord | None
    ported: CallRecord | None
    pairing: Pair
    depth: int
    parent: int | None  # row index
    inputs: list[LeafPair] = field(default_factory=list, repr=False)
    outputs: list[LeafPair] = field(default_factory=list, repr=False)
    # The ported call judged on its own, fed the original's values (None: not judged so).
    isolated: Isolated | None = field(default=None, repr=False)

    @property
    def is_paired(self) -> bool:
        return self.original is not None and self.ported is not None

    @property
    def unreturned_side(self) -> Side | None:
        """The side whose call raised (an exception model code caught) while the other's
        returned: it has no outputs to compare, which is never agreement."""
        if self.original is None or self.ported is None or self.original.finished == self.ported.finished:
            return None
        return "ported" if self.original.finished else "original"

    @property
    def call(self) -> int:
        record = self.original or self.ported
        assert record is not None
        return record.call

    @property
    def kind(self) -> str:
        record = self.original or self.ported
        assert record is not None
        return record.kind

    @property
    def original_name(self) -> str | None:
        return None if self.original is None else self.original.name

    @property
    def ported_name(self) -> str | None:
        return None if self.ported is None else self.ported.name

    @property
    def label(self) -> str:
        """Both names, once when they are the same: ``h.2.mlp ↔ model.layers.2.mlp``."""
        names = [record.display_name for record in (self.original, self.ported) if record is not None]
        name = names[0] if len(set(names)) == 1 else " ↔ ".join(names)
        return f"{name} (call {self.call})" if self.call else name

    @property
    def class_label(self) -> str:
        """``GELU ↔ SiLU``, or one class name when both sides agree or one side is missing."""
        names = [record.class_name for record in (self.original, self.ported) if record is not None]
        return names[0] if len(set(names)) == 1 else " ↔ ".join(names)

    @property
    def pairing_label(self) -> str:
        method = self.pairing.method
        if method == "inferred":
            return f"paired by inference ({self.pairing.confidence:.0%} confident)"
        return {"name": "paired by name", "map": "paired by the rename map", "manual": "paired by hand", "tap": "paired by tap name"}.get(
            method, "unpaired"
        )

    @property
    def layout(self) -> str | None:
        """The transforms into the port's layout its leaves were compared after (outputs first), or None."""
        return "; ".join(row_layouts([*self.outputs, *self.inputs])) or None

    @property
    def layout_ambiguity(self) -> str | None:
        """Why an output of another shape was compared after no transform: several would fit."""
        return next(
            (pair.difference.layout_ambiguity for pair in self.outputs if pair.difference and pair.difference.layout_ambiguity), None
        )

    @property
    def input_max_abs(self) -> float | None:
        return largest_difference(self.inputs)

    @property
    def output_max_abs(self) -> float | None:
        return largest_difference(self.outputs)

    @property
    def isolated_max_abs(self) -> float | None:
        """The largest output difference of the ported call run alone on the original's values."""
        return None if self.isolated is None else largest_difference(self.isolated.outputs)

    def unpaired_inputs(self) -> list[LeafPair]:
        """Tensor inputs with no counterpart on the other side: not part of the agreement test."""
        return [
            pair
            for pair in self.inputs
            if pair.difference is None and any(leaf is not None and leaf.is_tensor for leaf in (pair.original, pair.ported))
        ]


def in_port_layout(pair: LeafPair) -> LeafPair:
    """The pair with the original's tensor as it was compared: transformed into the port's layout
    (:mod:`tracetui.layouts`) when a layout was applied, so that element views line up."""
    difference, original = pair.difference, pair.original
    if difference is None or difference.layout_transform is None or original is None or original.tensor is None:
        return pair
    transformed = replace(original, tensor=difference.layout_transform.apply(original.tensor))
    return LeafPair(transformed, pair.ported, difference)


def largest_difference(pairs: Iterable[LeafPair]) -> float | None:
    values = [pair.difference.max_abs for pair in pairs if pair.difference is not None and pair.difference.shape_matches]
    return max(values) if values else None


def pair_leaves(
    original: list[Leaf],
    ported: list[Leaf],
    pair_leftovers_by_order: bool,
    pair_names_across_shapes: bool = False,
    broadcast: bool = False,
    cache: MeasureCache | None = None,
    compare_values: bool = False,
    scope: LayoutScope | None = None,
) -> list[LeafPair]:
    """Pair tensor leaves by name (same shape), then in order among same-shaped tensors.

    Leftovers are paired by order (and so reported as shape mismatches) only when
    ``pair_leftovers_by_order``; otherwise they stay unpaired. Non-tensor leaves are paired by
    name; with ``compare_values``, numbers and strings are measured too (:func:`measure_values`).
    """
    original_tensors = [leaf for leaf in original if leaf.is_tensor]
    ported_tensors = [leaf for leaf in ported if leaf.is_tensor]
    partner: dict[int, int] = {}  # position in original_tensors -> position in ported_tensors
    taken: set[int] = set()

    ported_position_by_name = {leaf.name: position for position, leaf in enumerate(ported_tensors)}
    for position, leaf in enumerate(original_tensors):
        ported_position = ported_position_by_name.get(leaf.name)
        if ported_position is not None and (pair_names_across_shapes or same_shape(leaf, ported_tensors[ported_position])):
            partner[position] = ported_position
            taken.add(ported_position)
    for position, leaf in enumerate(original_tensors):
        if position in partner:
            continue
        for ported_position, candidate in enumerate(ported_tensors):
            if ported_position not in taken and same_shape(leaf, candidate):
                partner[position] = ported_position
                taken.add(ported_position)
                break
    if pair_leftovers_by_order:
        leftover_ported = [position for position in range(len(ported_tensors)) if position not in taken]
        for position in range(len(original_tensors)):
            if position not in partner and leftover_ported:
                partner[position] = leftover_ported.pop(0)
                taken.add(partner[position])

    pairs: list[LeafPair] = []
    for position, leaf in enumerate(original_tensors):
        if position in partner:
            counterpart = ported_tensors[partner[position]]
            pairs.append(LeafPair(leaf, counterpart, measure_leaves(leaf, counterpart, broadcast, cache, scope)))
        else:
            pairs.append(LeafPair(leaf, None))
    pairs += [LeafPair(None, leaf) for position, leaf in enumerate(ported_tensors) if position not in taken]

    ported_values = {leaf.name: leaf for leaf in ported if not leaf.is_tensor}
    for leaf in original:
        if not leaf.is_tensor:
            value = ported_values.pop(leaf.name) if leaf.name in ported_values else None
            difference = measure_values(leaf, value) if compare_values and value is not None else None
            pairs.append(LeafPair(leaf, value, difference))
    pairs += [LeafPair(None, leaf) for leaf in ported_values.values()]
    return pairs


# Differences already measured between two recorded tensors, by (id, id, broadcast). A call's
# input is usually the previous call's output, the very same recorded tensor on both sides,
# so without it about 40% of the elements would be measured twice. Only for recorded tensors,
# which outlive the comparison: a live tensor's id could be reused by another.
MeasureCache = dict[tuple[int, int, bool, LayoutChoice], TensorDifference]


def measure_leaves(
    original: Leaf, ported: Leaf, broadcast: bool, cache: MeasureCache | None = None, scope: LayoutScope | None = None
) -> TensorDifference:
    """Element by element when both sides kept values; from statistics (a lower bound) otherwise.
    Shapes that differ by a layout (:mod:`tracetui.layouts`) are compared after the transform."""
    if original.tensor is not None and ported.tensor is not None:
        choice = leaf_layout(original, ported, broadcast, scope)
        if cache is None:
            return measure_in_layout(original.tensor, ported.tensor, broadcast, choice, scope)
        key = (id(original.tensor), id(ported.tensor), broadcast, choice)
        if key not in cache:
            cache[key] = measure_in_layout(original.tensor, ported.tensor, broadcast, choice, scope)
        return cache[key]
    return measure_summaries(leaf_summary(original), leaf_summary(ported))


@dataclass(frozen=True)
class LayoutScope:
    """Where a pair of leaves belongs, for the map file's ``[[layout]]`` rules: the original module's name."""

    module_name: str | None
    rules: tuple[LayoutRule, ...] = ()
    permutations: bool = False  # look for permutations too (the models' inputs differ by one)


def permutations_expected(alignment: Alignment) -> bool:
    """Whether the two models were fed inputs that differ by a permutation (see :func:`tracetui.layouts.inputs_permuted`)."""
    shapes = []
    for trace in (alignment.original, alignment.ported):
        root = next((record for record in trace.records if record.parent is None), None)
        if root is None:
            return False
        shapes.append([leaf.shape for leaf in root.inputs if leaf.is_tensor and leaf.shape is not None])
    return inputs_permuted(shapes[0], shapes[1])


def layout_scopes(alignment: Alignment) -> Callable[[str], LayoutScope]:
    """Each original module's layout scope in this alignment: the map's ``[[layout]]`` rules, and
    whether the models' inputs differ by a permutation (worked out once for every call)."""
    rules = () if alignment.rename_map is None else tuple(alignment.rename_map.layouts)
    permutations = permutations_expected(alignment)
    return lambda module_name: LayoutScope(module_name, rules, permutations)


def leaf_layout(original: Leaf, ported: Leaf, broadcast: bool, scope: LayoutScope | None) -> LayoutChoice:
    """The transform into the port's layout, for two leaves whose shapes are not comparable as they are."""
    if original.shape is None or ported.shape is None or equivalent_shapes(original.shape, ported.shape):
        return NO_LAYOUT
    if broadcast:
        try:
            torch.broadcast_shapes(original.shape, ported.shape)
            return NO_LAYOUT
        except RuntimeError:
            pass
    if scope is None:
        return choose_layout(tuple(original.shape), tuple(ported.shape), None, None)
    return choose_layout(tuple(original.shape), tuple(ported.shape), scope.module_name, list(scope.rules), scope.permutations)


def measure_in_layout(
    original: torch.Tensor, ported: torch.Tensor, broadcast: bool, choice: LayoutChoice, scope: LayoutScope | None
) -> TensorDifference:
    if choice.layout is None:
        difference = measure(original, ported, broadcast=broadcast)
        if choice.ambiguous and not difference.shape_matches:
            difference.layout_ambiguity = choice.ambiguity_reason(scope.module_name or "" if scope else "")
        return difference
    difference = measure(choice.layout.apply(original), ported)
    difference.layout = choice.layout.description
    difference.layout_transform = choice.layout
    difference.original_shape = tuple(original.shape)
    return difference


def leaf_summary(leaf: Leaf) -> TensorSummary:
    if leaf.summary is not None:
        return leaf.summary
    assert leaf.tensor is not None
    return summarize(leaf.tensor)


def row_layouts(pairs: Iterable[LeafPair]) -> list[str]:
    """The layout transforms applied to a row's leaves, each once, in order."""
    found: list[str] = []
    for pair in pairs:
        layout = None if pair.difference is None else pair.difference.layout
        if layout is not None and layout not in found:
            found.append(layout)
    return found


def same_shape(original: Leaf, ported: Leaf) -> bool:
    assert original.shape is not None and ported.shape is not None
    return equivalent_shapes(original.shape, ported.shape)


def measure_inputs(
    original: list[Leaf], ported: list[Leaf], cache: MeasureCache | None = None, scope: LayoutScope | None = None
) -> list[LeafPair]:
    """Pair and measure a call's inputs. An extra argument on one side is not evidence of a
    difference; but when both sides pass the same number of tensors, a shape change is."""
    return pair_leaves(
        original,
        ported,
        pair_leftovers_by_order=sum(leaf.is_tensor for leaf in original) == sum(leaf.is_tensor for leaf in ported),
        broadcast=True,  # masks are often given in different but broadcast-equivalent shapes
        cache=cache,
        scope=scope,
    )


def measure_outputs(
    original: list[Leaf], ported: list[Leaf], cache: MeasureCache | None = None, scope: LayoutScope | None = None
) -> list[LeafPair]:
    """Pair and measure a call's outputs. Outputs in the same structure pair by name whatever
    their shapes, so that a changed shape shows as a shape mismatch rather than pairing with
    another same-shaped leaf."""
    return pair_leaves(
        original,
        ported,
        pair_leftovers_by_order=True,
        pair_names_across_shapes=[leaf.name for leaf in original if leaf.is_tensor] == [leaf.name for leaf in ported if leaf.is_tensor],
        cache=cache,
        compare_values=True,
        scope=scope,
    )


NUMBER_TYPES = {"int", "float", "bool"}


def measure_values(original: Leaf, ported: Leaf) -> TensorDifference | None:
    """Python numbers and strings a call returns (a loss, a count, a label): numbers within the
    tolerance like 0-d tensors, bools and ints exactly (they differ by 1 or more), strings by
    their repr — a difference there can never be within tolerance. None for other values."""
    if original.value_type in NUMBER_TYPES and ported.value_type in NUMBER_TYPES:
        try:
            values = [float(literal_eval(leaf.value_repr)) for leaf in (original, ported)]
        except (ValueError, SyntaxError):  # a repr cut short, or not a literal (nan, inf)
            values = [float(leaf.value_repr) if leaf.value_repr in ("nan", "inf", "-inf") else math.nan for leaf in (original, ported)]
        return measure(torch.tensor(values[0], dtype=torch.float64), torch.tensor(values[1], dtype=torch.float64))
    if original.value_type == ported.value_type == "str":
        same = original.value_repr == ported.value_repr
        details = IDENTICAL if same else Details(max_rel=0.0, cosine=0.0)
        return TensorDifference((), (), "str", "str", numel=1, max_abs=0.0 if same else math.inf, _details=details)
    return None


# Leaf pairs measured while the port ran (a streamed comparison), by (original, ported) record index.
Measured = dict[tuple[int, int], tuple[list[LeafPair], list[LeafPair]]]


def build_rows(
    alignment: Alignment,
    measured: Measured | None = None,
    isolation: Isolation | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Row]:
    """One row per pair, with parents resolved to rows and leaf differences measured (or taken
    from ``measured``, for calls measured while the port ran), and what the fed run of the port
    found of each call (:mod:`tracetui.isolate`). ``progress`` hears ``measured 1,200 of 5,000
    calls`` every PROGRESS_SECONDS (a model with large activations takes seconds)."""
    row_by_original: dict[int, int] = {}
    row_by_ported: dict[int, int] = {}
    records: list[tuple[CallRecord | None, CallRecord | None]] = []
    for position, pair in enumerate(alignment.pairs):
        original = None if pair.original is None else alignment.original.records[pair.original]
        ported = None if pair.ported is None else alignment.ported.records[pair.ported]
        if original is not None:
            row_by_original[original.index] = position
        if ported is not None:
            row_by_ported[ported.index] = position
        records.append((original, ported))
    rows: list[Row] = []
    cache: MeasureCache = {}
    scope_of = layout_scopes(alignment)
    reported_at = time.monotonic()
    for position, (pair, (original, ported)) in enumerate(zip(alignment.pairs, records, strict=True)):
        if progress is not None and time.monotonic() - reported_at >= PROGRESS_SECONDS:
            progress(f"measured {position:,} of {len(records):,} calls")
            reported_at = time.monotonic()
        record = original or ported
        assert record is not None
        if original is not None and original.parent is not None:
            parent = row_by_original.get(original.parent)
        elif ported is not None and ported.parent is not None:
            parent = row_by_ported.get(ported.parent)
        else:
            parent = None
        inputs: list[LeafPair] = []
        outputs: list[LeafPair] = []
        if original is not None and ported is not None:
            already = None if measured is None else measured.get((original.index, ported.index))
            if already is not None:
                inputs, outputs = already
            else:
                scope = scope_of(original.name)
                inputs = measure_inputs(original.inputs, ported.inputs, cache, scope)
                outputs = measure_outputs(original.outputs, ported.outputs, cache, scope)
        isolated = isolated_call(original, ported, isolation)
        rows.append(Row(position, original, ported, pair, record.depth, parent, inputs, outputs, isolated))
    return rows


def isolated_call(original: CallRecord | None, ported: CallRecord | None, isolation: Isolation | None) -> Isolated | None:
    """What the fed run found of a paired call's ported side (None: not judged alone)."""
    if isolation is None or original is None or ported is None:
        return None
    return isolation.get((original.index, ported.index))


PROGRESS_SECONDS = 0.25


def paired_parent(row: Row, rows: list[Row]) -> int | None:
    """The nearest enclosing row that is paired: a wrapper that exists on one side only
    (``encoder.layer.1.output`` around a LayerNorm) must not hide its contents from the descent."""
    parent = row.parent
    while parent is not None and not rows[parent].is_paired:
        parent = rows[parent].parent
    return parent

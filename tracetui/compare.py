"""Compare aligned calls against the tolerance and name the culprit.

A row's inputs *agree* when every input tensor that has a counterpart on the other side is
within tolerance. Input leaves are paired by parameter name, then by position among tensors of
the same shape; a leaf with no counterpart (an extra mask, a rope table computed inline on the
other side) cannot be judged and is left out of the test — and named in the culprit's reason,
with the call that produced it, because a wrong extra input is the one way the culprit's own
code can be innocent.

The culprit is found by descent: start at the earliest-executed call whose inputs agree and
outputs do not; step into its first child whose outputs disagree as long as that child's inputs
agree too; stop when the first disagreeing child inherited its difference (the bug is in the
current call's own code, before that child) or when no child disagrees.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

from tracetui.memory import garbage_collection_paused
from tracetui.numeric import TensorDifference, equivalent_shapes, measure, measure_summaries, summarize
from tracetui.pairing.alignment import Alignment, Pair
from tracetui.trace import CallRecord, Leaf, TensorSummary, Trace

Status = Literal[
    "match",
    "diverged",
    "inherited",
    "shape_mismatch",
    "dtype_mismatch",
    "unmatched",
    "nonfinite",
    "nondeterministic",
]
STATUSES: tuple[Status, ...] = get_args(Status)
# Inputs that agree only loosely: an output just over the tolerance may be amplified rounding.
LOOSE_AGREEMENT_FRACTION = 0.1


@dataclass(frozen=True)
class Tolerance:
    """``|ported - original| <= atol + rtol * |original|``; 1e-3 absolute is the porting bar."""

    atol: float = 1e-3
    rtol: float = 0.0

    def __str__(self) -> str:
        return f"atol {self.atol:g}" + (f", rtol {self.rtol:g}" if self.rtol else "")


@dataclass
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

    @property
    def is_tensor_pair(self) -> bool:
        return self.difference is not None


@dataclass
class Row:
    """One aligned call: the comparison of an original call with its ported counterpart."""

    index: int
    original: CallRecord | None
    ported: CallRecord | None
    pairing: Pair
    depth: int
    parent: int | None  # row index
    inputs: list[LeafPair] = field(default_factory=list, repr=False)
    outputs: list[LeafPair] = field(default_factory=list, repr=False)
    status: Status = "match"
    inputs_agree: bool = True
    outputs_agree: bool = True
    nondeterministic: bool = False

    @property
    def is_paired(self) -> bool:
        return self.original is not None and self.ported is not None

    @property
    def disagrees(self) -> bool:
        """Paired, and the outputs break the tolerance (for whatever reason)."""
        return self.is_paired and not self.outputs_agree

    @property
    def introduces(self) -> bool:
        """Inputs agree, outputs do not: the difference starts in this call (or inside it)."""
        return self.disagrees and self.inputs_agree

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
    def input_max_abs(self) -> float | None:
        return largest_difference(self.inputs)

    @property
    def output_max_abs(self) -> float | None:
        return largest_difference(self.outputs)

    def unpaired_inputs(self) -> list[LeafPair]:
        """Tensor inputs with no counterpart on the other side: not part of the agreement test."""
        return [
            pair
            for pair in self.inputs
            if pair.difference is None and any(leaf is not None and leaf.is_tensor for leaf in (pair.original, pair.ported))
        ]


def largest_difference(pairs: Iterable[LeafPair]) -> float | None:
    values = [pair.difference.max_abs for pair in pairs if pair.difference is not None and pair.difference.shape_matches]
    return max(values) if values else None


@dataclass
class Comparison:
    """The outcome of comparing two traces: rows, the verdict and the culprit with its reason."""

    original: Trace = field(repr=False)
    ported: Trace = field(repr=False)
    alignment: Alignment = field(repr=False)
    tolerance: Tolerance
    rows: list[Row] = field(repr=False)
    culprit: Row | None
    reason: str
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Literal["match", "diverged"]:
        return "diverged" if any(row.disagrees for row in self.rows) else "match"

    def status_counts(self) -> Counter[str]:
        return Counter(row.status for row in self.rows)

    def with_tolerance(self, tolerance: Tolerance) -> Comparison:
        """Re-classify every row under another tolerance, reusing the measured differences.

        This comparison is left as it was: the new one shares the rows whose classification
        stays the same, and has its own copies (sharing the leaves) of the others.
        """
        return reclassify(self, tolerance)

    @functools.cached_property
    def classification(self) -> Classification:
        """The rows' classification as arrays, with the figures it was judged from.

        :func:`classify` sets it; a comparison assembled otherwise gathers it on first use.
        """
        return Classification.of_rows(self.rows, RowFigures.gather(self.rows, self.alignment))

    def row_of(self, side: Literal["original", "ported"], record_index: int) -> Row | None:
        for row in self.rows:
            record = row.original if side == "original" else row.ported
            if record is not None and record.index == record_index:
                return row
        return None


# -- pairing leaves ------------------------------------------------------------------------


def pair_leaves(
    original: list[Leaf],
    ported: list[Leaf],
    pair_leftovers_by_order: bool,
    pair_names_across_shapes: bool = False,
    broadcast: bool = False,
    cache: MeasureCache | None = None,
) -> list[LeafPair]:
    """Pair tensor leaves by name (same shape), then in order among same-shaped tensors.

    Leftovers are paired by order (and so reported as shape mismatches) only when
    ``pair_leftovers_by_order``; otherwise they stay unpaired. Non-tensor leaves are paired by
    name for display.
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
            pairs.append(LeafPair(leaf, counterpart, measure_leaves(leaf, counterpart, broadcast, cache)))
        else:
            pairs.append(LeafPair(leaf, None))
    pairs += [LeafPair(None, leaf) for position, leaf in enumerate(ported_tensors) if position not in taken]

    ported_values = {leaf.name: leaf for leaf in ported if not leaf.is_tensor}
    for leaf in original:
        if not leaf.is_tensor:
            pairs.append(LeafPair(leaf, ported_values.pop(leaf.name, None)))
    pairs += [LeafPair(None, leaf) for leaf in ported_values.values()]
    return pairs


# Differences already measured between two recorded tensors, by (id, id, broadcast). A call's
# input is usually the previous call's output, the very same recorded tensor on both sides,
# so without it about 40% of the elements would be measured twice. Only for recorded tensors,
# which outlive the comparison: a live tensor's id could be reused by another.
MeasureCache = dict[tuple[int, int, bool], TensorDifference]


def measure_leaves(original: Leaf, ported: Leaf, broadcast: bool, cache: MeasureCache | None = None) -> TensorDifference:
    """Element by element when both sides kept values; from statistics (a lower bound) otherwise."""
    if original.tensor is not None and ported.tensor is not None:
        if cache is None:
            return measure(original.tensor, ported.tensor, broadcast=broadcast)
        key = (id(original.tensor), id(ported.tensor), broadcast)
        if key not in cache:
            cache[key] = measure(original.tensor, ported.tensor, broadcast=broadcast)
        return cache[key]
    return measure_summaries(leaf_summary(original), leaf_summary(ported))


def leaf_summary(leaf: Leaf) -> TensorSummary:
    if leaf.summary is not None:
        return leaf.summary
    assert leaf.tensor is not None
    return summarize(leaf.tensor)


def same_shape(original: Leaf, ported: Leaf) -> bool:
    assert original.shape is not None and ported.shape is not None
    return equivalent_shapes(original.shape, ported.shape)


def measure_inputs(original: list[Leaf], ported: list[Leaf], cache: MeasureCache | None = None) -> list[LeafPair]:
    """Pair and measure a call's inputs. An extra argument on one side is not evidence of a
    difference; but when both sides pass the same number of tensors, a shape change is."""
    return pair_leaves(
        original,
        ported,
        pair_leftovers_by_order=sum(leaf.is_tensor for leaf in original) == sum(leaf.is_tensor for leaf in ported),
        broadcast=True,  # masks are often given in different but broadcast-equivalent shapes
        cache=cache,
    )


def measure_outputs(original: list[Leaf], ported: list[Leaf], cache: MeasureCache | None = None) -> list[LeafPair]:
    """Pair and measure a call's outputs. Outputs in the same structure pair by name whatever
    their shapes, so that a changed shape shows as a shape mismatch rather than pairing with
    another same-shaped leaf."""
    return pair_leaves(
        original,
        ported,
        pair_leftovers_by_order=True,
        pair_names_across_shapes=[leaf.name for leaf in original if leaf.is_tensor] == [leaf.name for leaf in ported if leaf.is_tensor],
        cache=cache,
    )


def measure_row(row: Row, cache: MeasureCache | None = None) -> None:
    assert row.original is not None and row.ported is not None
    row.inputs = measure_inputs(row.original.inputs, row.ported.inputs, cache)
    row.outputs = measure_outputs(row.original.outputs, row.ported.outputs, cache)


# Leaf pairs measured while the port ran (a streamed comparison), by (original, ported) record index.
Measured = dict[tuple[int, int], tuple[list[LeafPair], list[LeafPair]]]


# -- classification ------------------------------------------------------------------------


def leaves_agree(pairs: list[LeafPair], tolerance: Tolerance) -> bool:
    return all(
        pair.difference.within(tolerance.atol, tolerance.rtol) for pair in pairs if pair.difference is not None
    )


def largest_comparable_difference(pairs: list[LeafPair]) -> float:
    """The largest max |Δ| among the measured pairs: under a tolerance without rtol they all
    agree exactly when it is at most atol (what :meth:`TensorDifference.within` decides).

    NaN when one of them can never agree (shapes differ, NaN/Inf where the other side has
    none), so that no atol is enough; -inf when no pair was measured, so that any atol is.
    """
    largest = -math.inf
    for pair in pairs:
        difference = pair.difference
        if difference is None:
            continue
        if not difference.shape_matches or difference.nonfinite_mismatches or math.isnan(difference.max_abs):
            return math.nan
        largest = max(largest, difference.max_abs)
    return largest


def rerun_changes(trace: Trace, records: list[CallRecord | None]) -> tuple[np.ndarray, np.ndarray]:
    """How much each record's outputs and inputs changed between two runs of the same model
    (NaN for a row with no call on this side, or when the model was run once)."""
    output_changes = np.full(len(records), np.nan)
    input_changes = np.full(len(records), np.nan)
    if trace.rerun_output_diff is None or trace.rerun_input_diff is None:
        return output_changes, input_changes
    for position, record in enumerate(records):
        if record is not None:
            output_changes[position] = trace.rerun_output_diff[record.index]
            input_changes[position] = trace.rerun_input_diff[record.index]
    return output_changes, input_changes


@dataclass(frozen=True, eq=False)
class RowFigures:
    """What classifying the rows needs of their measured leaves, gathered once per set of rows.

    None of it depends on the tolerance: a new tolerance (``t`` in the interface) compares
    these per-row numbers instead of reading every leaf difference of a large model again.
    """

    paired: np.ndarray  # bool, one per row
    input_largest: np.ndarray  # largest_comparable_difference of the inputs
    output_largest: np.ndarray  # ... and of the outputs
    output_shape_mismatch: np.ndarray  # bool: an output pair differs in shape
    output_nonfinite: np.ndarray  # bool: an output pair has NaN/Inf where the other side has none
    output_dtype_mismatch: np.ndarray  # bool: an output pair differs in dtype
    # Per side (original, ported): output and input change between two runs of the model.
    rerun_changes: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    children: dict[int | None, list[int]]  # row positions under each paired parent (the descent)
    paired_count: int
    opaque_output_types: frozenset[str]  # outputs recorded by their repr only (a note)
    statistics_only_pairs: int = 0  # leaf pairs compared by min/max/mean: a side kept no values (a note)

    @classmethod
    def gather(cls, rows: list[Row], alignment: Alignment) -> RowFigures:
        count = len(rows)
        paired = [False] * count
        input_largest = [-math.inf] * count
        output_largest = [-math.inf] * count
        shape_mismatch = [False] * count
        nonfinite = [False] * count
        dtype_mismatch = [False] * count
        children: dict[int | None, list[int]] = {}
        opaque_types: set[str] = set()
        statistics_only = 0
        for position, row in enumerate(rows):
            children.setdefault(paired_parent(row, rows), []).append(position)
            for pair in row.outputs:
                leaf = pair.original or pair.ported
                if leaf is not None and not leaf.is_tensor and leaf.value_type not in SIMPLE_VALUE_TYPES:
                    opaque_types.add(leaf.value_type)
            if not row.is_paired:
                continue
            paired[position] = True
            output_differences = [pair.difference for pair in row.outputs if pair.difference is not None]
            statistics_only += sum(1 for pair in row.inputs + row.outputs if pair.difference is not None and pair.difference.from_statistics)
            input_largest[position] = largest_comparable_difference(row.inputs)
            output_largest[position] = largest_comparable_difference(row.outputs)
            shape_mismatch[position] = any(not difference.shape_matches for difference in output_differences)
            nonfinite[position] = any(difference.nonfinite_mismatches for difference in output_differences)
            dtype_mismatch[position] = any(not difference.dtype_matches for difference in output_differences)
        return cls(
            paired=np.array(paired, dtype=bool),
            input_largest=np.array(input_largest, dtype=np.float64),
            output_largest=np.array(output_largest, dtype=np.float64),
            output_shape_mismatch=np.array(shape_mismatch, dtype=bool),
            output_nonfinite=np.array(nonfinite, dtype=bool),
            output_dtype_mismatch=np.array(dtype_mismatch, dtype=bool),
            rerun_changes=(
                rerun_changes(alignment.original, [row.original for row in rows]),
                rerun_changes(alignment.ported, [row.ported for row in rows]),
            ),
            children=children,
            paired_count=sum(paired),
            opaque_output_types=frozenset(opaque_types),
            statistics_only_pairs=statistics_only,
        )


STATUS_CODES: dict[Status, int] = {status: code for code, status in enumerate(STATUSES)}
STATUS_ARRAY = np.array(STATUSES, dtype=object)  # status code -> status, for whole arrays of codes


def judged_from_figures(tolerance: Tolerance) -> bool:
    """Whether the rows' :class:`RowFigures` alone decide this tolerance (no rtol): then
    re-classifying 20,000 rows takes milliseconds, where an rtol may need elements counted."""
    return tolerance.rtol == 0.0 and not math.isnan(tolerance.atol)


@dataclass(frozen=True, eq=False)
class Classification:
    """Every row's classification under one tolerance, as arrays with one entry per row (what
    the rows' attributes hold), and the figures it was judged from."""

    figures: RowFigures
    inputs_agree: np.ndarray  # bool
    outputs_agree: np.ndarray  # bool
    nondeterministic: np.ndarray  # bool
    status_codes: np.ndarray  # positions in STATUSES

    @classmethod
    def judge(cls, rows: list[Row], figures: RowFigures, tolerance: Tolerance) -> Classification:
        """Classify under ``tolerance``: from the figures alone when they decide it, else leaf
        by leaf (see :func:`judged_from_figures`)."""
        atol = tolerance.atol
        if judged_from_figures(tolerance):
            # NaN (a pair that can never agree) compares False, -inf (nothing measured) True.
            inputs_agree = ~figures.paired | (figures.input_largest <= atol)
            outputs_agree = ~figures.paired | (figures.output_largest <= atol)
        else:
            inputs_agree = np.ones(len(rows), dtype=bool)
            outputs_agree = np.ones(len(rows), dtype=bool)
            for position in np.flatnonzero(figures.paired).tolist():
                row = rows[position]
                inputs_agree[position] = leaves_agree(row.inputs, tolerance)
                outputs_agree[position] = leaves_agree(row.outputs, tolerance)
        # A source of nondeterminism: the call's outputs changed between two runs of the same
        # model while its inputs did not (NaN, no second run, compares False).
        nondeterministic = np.zeros(len(rows), dtype=bool)
        for output_change, input_change in figures.rerun_changes:
            nondeterministic |= (output_change > atol) & (input_change <= atol)
        statuses = status_codes(figures, inputs_agree, outputs_agree, nondeterministic)
        return cls(figures, inputs_agree, outputs_agree, nondeterministic, statuses)

    @classmethod
    def of_rows(cls, rows: list[Row], figures: RowFigures) -> Classification:
        """What the rows' attributes already say (for a comparison not made by :func:`classify`)."""
        return cls(
            figures,
            inputs_agree=np.array([row.inputs_agree for row in rows], dtype=bool),
            outputs_agree=np.array([row.outputs_agree for row in rows], dtype=bool),
            nondeterministic=np.array([row.nondeterministic for row in rows], dtype=bool),
            status_codes=np.array([STATUS_CODES[row.status] for row in rows], dtype=np.int8),
        )

    @property
    def verdict(self) -> Literal["match", "diverged"]:
        """:attr:`Comparison.verdict`, without visiting every row (27 ms for 20,000 rows)."""
        return "diverged" if self.disagrees.any() else "match"

    def statuses(self) -> list[Status]:
        """Every row's status, in order (what ``[row.status for row in rows]`` gives, sooner)."""
        return STATUS_ARRAY[self.status_codes].tolist()

    def status_counts(self) -> Counter[str]:
        """:meth:`Comparison.status_counts`, without visiting every row."""
        counts = np.bincount(self.status_codes, minlength=len(STATUSES)).tolist()
        return Counter({status: count for status, count in zip(STATUSES, counts, strict=True) if count})

    @property
    def disagrees(self) -> np.ndarray:
        """:attr:`Row.disagrees` of every row."""
        return self.figures.paired & ~self.outputs_agree

    @property
    def introduces(self) -> np.ndarray:
        """:attr:`Row.introduces` of every row."""
        return self.disagrees & self.inputs_agree

    def changed_since(self, before: Classification) -> np.ndarray:
        """Positions of the rows classified differently in ``before``."""
        changed = self.status_codes != before.status_codes
        changed |= self.nondeterministic != before.nondeterministic
        changed |= self.figures.paired & (self.inputs_agree != before.inputs_agree)
        changed |= self.figures.paired & (self.outputs_agree != before.outputs_agree)
        return np.flatnonzero(changed)

    def apply(self, rows: list[Row], positions: list[int]) -> None:
        """Set the attributes of the rows at ``positions`` to their classification here."""
        # Plain lists, read once: indexing arrays element by element is slower than this loop.
        columns = zip(
            positions,
            self.figures.paired[positions].tolist(),
            self.inputs_agree[positions].tolist(),
            self.outputs_agree[positions].tolist(),
            self.nondeterministic[positions].tolist(),
            self.status_codes[positions].tolist(),
            strict=True,
        )
        for position, paired, inputs_agree, outputs_agree, nondeterministic, status_code in columns:
            row = rows[position]
            if paired:  # an unmatched row's inputs and outputs are not judged
                row.inputs_agree = inputs_agree
                row.outputs_agree = outputs_agree
            row.nondeterministic = nondeterministic
            row.status = STATUSES[status_code]


def status_codes(
    figures: RowFigures, inputs_agree: np.ndarray, outputs_agree: np.ndarray, nondeterministic: np.ndarray
) -> np.ndarray:
    """Each row's status, as a position in STATUSES: the first condition that holds, in order."""
    paired = figures.paired
    conditions_and_statuses: list[tuple[np.ndarray, Status]] = [
        (~paired, "unmatched"),
        (nondeterministic, "nondeterministic"),
        (figures.output_shape_mismatch, "shape_mismatch"),
        (figures.output_nonfinite, "nonfinite"),
        (~outputs_agree & inputs_agree, "diverged"),
        (~outputs_agree, "inherited"),
        (figures.output_dtype_mismatch, "dtype_mismatch"),
    ]
    return np.select(
        [condition for condition, _ in conditions_and_statuses],
        [STATUS_CODES[status] for _, status in conditions_and_statuses],
        default=STATUS_CODES["match"],
    ).astype(np.int8)


def build_rows(alignment: Alignment, measured: Measured | None = None) -> list[Row]:
    """One row per pair, with parents resolved to rows and leaf differences measured (or taken
    from ``measured``, for calls measured while the port ran)."""
    row_by_original: dict[int, int] = {}
    row_by_ported: dict[int, int] = {}
    rows: list[Row] = []
    cache: MeasureCache = {}
    for position, pair in enumerate(alignment.pairs):
        original = None if pair.original is None else alignment.original.records[pair.original]
        ported = None if pair.ported is None else alignment.ported.records[pair.ported]
        if original is not None:
            row_by_original[original.index] = position
        if ported is not None:
            row_by_ported[ported.index] = position
        record = original or ported
        assert record is not None
        rows.append(Row(index=position, original=original, ported=ported, pairing=pair, depth=record.depth, parent=None))
    for row in rows:
        if row.original is not None and row.original.parent is not None:
            row.parent = row_by_original.get(row.original.parent)
        elif row.ported is not None and row.ported.parent is not None:
            row.parent = row_by_ported.get(row.ported.parent)
        if row.is_paired:
            assert row.original is not None and row.ported is not None
            already = None if measured is None else measured.get((row.original.index, row.ported.index))
            if already is not None:
                row.inputs, row.outputs = already
            else:
                measure_row(row, cache)
    return rows


def classify(alignment: Alignment, tolerance: Tolerance, measured_rows: list[Row] | None = None) -> Comparison:
    """Give every row a status under ``tolerance`` and find the culprit."""
    if measured_rows is None:
        with garbage_collection_paused():
            measured_rows = build_rows(alignment)
    rows = measured_rows
    classification = Classification.judge(rows, RowFigures.gather(rows, alignment), tolerance)
    classification.apply(rows, list(range(len(rows))))
    return conclude(alignment, tolerance, rows, classification)


def reclassify(previous: Comparison, tolerance: Tolerance, *, in_place: bool = False) -> Comparison:
    """``previous`` under another tolerance, judged from the figures gathered once.

    Only the rows whose classification changes are touched. They are copied, leaving
    ``previous`` as it was (:meth:`Comparison.with_tolerance`); or, ``in_place``, changed where
    they are: for a caller that replaces ``previous`` for good (the interface), as copying the
    thousands of rows a new tolerance changes takes 50 ms or more, changing them a few. Neither
    ``previous`` nor a comparison sharing rows with it may then be used again.
    """
    before = previous.classification
    classification = Classification.judge(previous.rows, before.figures, tolerance)
    changed = classification.changed_since(before).tolist()
    rows = list(previous.rows)
    if not in_place:
        for position in changed:
            rows[position] = copy_row(rows[position])
    classification.apply(rows, changed)
    return conclude(previous.alignment, tolerance, rows, classification)


def copy_row(row: Row) -> Row:
    """A shallow copy (the leaves are shared). ``copy.copy`` does the same through
    ``__reduce_ex__``, three times slower over the thousands of rows a new tolerance changes."""
    copied = Row.__new__(Row)
    copied.__dict__ = row.__dict__.copy()
    return copied


def conclude(alignment: Alignment, tolerance: Tolerance, rows: list[Row], classification: Classification) -> Comparison:
    """The comparison of classified rows: the culprit, its reason and the notes."""
    culprit, reason = find_culprit(rows, tolerance, alignment, classification)
    comparison = Comparison(
        original=alignment.original,
        ported=alignment.ported,
        alignment=alignment,
        tolerance=tolerance,
        rows=rows,
        culprit=culprit,
        reason=reason,
    )
    comparison.classification = classification
    comparison.notes = general_notes(comparison)
    return comparison


def compare_traces(alignment: Alignment, tolerance: Tolerance = Tolerance()) -> Comparison:
    return classify(alignment, tolerance)


# -- the culprit ---------------------------------------------------------------------------


def paired_parent(row: Row, rows: list[Row]) -> int | None:
    """The nearest enclosing row that is paired: a wrapper that exists on one side only
    (``encoder.layer.1.output`` around a LayerNorm) must not hide its contents from the descent."""
    parent = row.parent
    while parent is not None and not rows[parent].is_paired:
        parent = rows[parent].parent
    return parent


def find_culprit(
    rows: list[Row], tolerance: Tolerance, alignment: Alignment, classification: Classification
) -> tuple[Row | None, str]:
    """The descent of the module docstring, on the classification's arrays (the rows' own
    ``disagrees`` and ``introduces``, without visiting 20,000 rows in Python)."""
    disagrees = classification.disagrees
    introduces = classification.introduces
    children = classification.figures.children

    starts = np.flatnonzero(introduces)
    if not len(starts):
        disagreeing = np.flatnonzero(disagrees)
        if not len(disagreeing):
            return None, "every paired call's outputs agree within tolerance"
        earliest = rows[int(disagreeing[0])]
        return earliest, no_introducing_call_reason(earliest, tolerance)

    current = int(starts[0])
    while True:
        child = next((position for position in children.get(current, []) if disagrees[position]), None)
        if child is None or rows[child].kind == "tap" or not introduces[child]:
            break
        current = child
    child_rows = [rows[position] for position in children.get(current, [])]
    return rows[current], culprit_reason(rows[current], tolerance, alignment, child_rows)


def first_disagreeing(rows: list[Row]) -> Row | None:
    return next((row for row in rows if row.disagrees), None)


def one_sided_calls_before(children: list[Row], first_disagreeing_child: Row | None) -> list[Row]:
    """Calls with no counterpart that ran after the last agreeing child and before the first
    disagreeing one: where the difference may really start (an extra norm in the port, say)."""
    stop = len(children) if first_disagreeing_child is None else children.index(first_disagreeing_child)
    between: list[Row] = []
    for child in children[:stop]:
        if child.is_paired:
            between = []
        else:
            between.append(child)
    return between


def format_difference(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "inf"
    if value == 0.0:
        return "0"
    return f"{value:.2e}"


def culprit_reason(culprit: Row, tolerance: Tolerance, alignment: Alignment, children: list[Row]) -> str:
    """Why this call is the culprit, in one paragraph: input Δ, output Δ, and what to check."""
    input_difference = culprit.input_max_abs
    if input_difference is None:
        inputs = "it has no paired tensor inputs"
    else:
        inputs = f"its inputs agree (max |Δ| {format_difference(input_difference)} ≤ {tolerance})"
    if culprit.status == "shape_mismatch":
        shapes = next(pair.difference for pair in culprit.outputs if pair.difference and not pair.difference.shape_matches)
        outputs = f"its output shapes differ ({list(shapes.original_shape)} vs {list(shapes.ported_shape)})"
    elif culprit.status == "nonfinite":
        outputs = "its outputs have NaN/Inf where the other side has none"
    else:
        outputs = f"its outputs do not (max |Δ| {format_difference(culprit.output_max_abs)})"
    reason = f"{inputs} but {outputs}"
    if culprit.nondeterministic:
        reason += ", and its outputs change from one run of the same model to the next (dropout left active?)"

    first_disagreeing_child = first_disagreeing(children)
    if first_disagreeing_child is not None and first_disagreeing_child.kind == "tap":
        reason += f"; no submodule introduces it — it first shows at {first_disagreeing_child.label}"
    elif any(child.is_paired for child in children):
        reason += "; none of its submodules introduces it, so look at its own forward code"
        one_sided = one_sided_calls_before(children, first_disagreeing_child)
        if one_sided:
            names = ", ".join(f"{row.label} ({'original' if row.original else 'ported'} only)" for row in one_sided[:3])
            reason += f", and at calls with no counterpart that ran just before the difference shows: {names}"
    if input_difference is not None and input_difference > LOOSE_AGREEMENT_FRACTION * tolerance.atol:
        reason += (
            f". Its inputs agree only loosely ({format_difference(input_difference)} against atol {tolerance.atol:g}): "
            "the output difference may be amplified earlier rounding rather than a bug here"
        )
    extras = describe_unpaired_inputs(culprit, alignment)
    if extras:
        reason += f". Not compared, having no counterpart: {extras} — if one of them is wrong, the bug is where it is made"
    return reason


def describe_unpaired_inputs(row: Row, alignment: Alignment) -> str:
    descriptions = []
    for pair in row.unpaired_inputs():
        side, leaf, trace = ("original", pair.original, alignment.original) if pair.original else ("ported", pair.ported, alignment.ported)
        assert leaf is not None
        text = f"{side} input {leaf.name}"
        if leaf.source is not None:
            text += f" (made by {trace.records[leaf.source[0]].display_name})"
        descriptions.append(text)
    return ", ".join(descriptions)


def no_introducing_call_reason(row: Row, tolerance: Tolerance) -> str:
    if row.parent is None and row.original is not None and row.original.parent is None:
        return (
            f"the models' own inputs already differ (max |Δ| {format_difference(row.input_max_abs)} > {tolerance}): "
            "the two scripts' build() must return the same inputs"
        )
    return (
        "every call whose outputs disagree also has disagreeing inputs; the difference enters through code "
        "that is not a module on either side, or through calls that have no counterpart"
    )


def general_notes(comparison: Comparison) -> list[str]:
    """Notes on the comparison as a whole, from its classification's arrays and figures (the
    parts that do not depend on the tolerance are gathered once)."""
    notes = []
    classification = comparison.classification
    figures = classification.figures
    counts = classification.status_counts()
    paired = figures.paired_count
    if counts["unmatched"] and paired <= 1:
        notes.append(
            f"Only {paired} call(s) could be paired; {counts['unmatched']} are unmatched. "
            "Pass a rename map with --map (`tracetui align ORIG PORTED -o map.toml` writes a first one to edit)."
        )
    sources = [comparison.rows[position] for position in np.flatnonzero(classification.nondeterministic).tolist()]
    if sources:
        names = ", ".join(row.label for row in sources[:3]) + (" …" if len(sources) > 3 else "")
        notes.append(
            f"{len(sources)} call(s) give different outputs from one run of the same model to the next: {names}. "
            "Something random is active in eval mode (dropout with training=True, random sampling): "
            "numbers from such a model cannot be compared reliably."
        )
    opaque_types = figures.opaque_output_types
    if opaque_types:
        notes.append(
            f"Outputs of type {', '.join(sorted(opaque_types))} were recorded by their repr only, not compared: "
            "tracetui compares tensors inside tuples, lists, dicts, dataclasses and namedtuples."
        )
    if figures.statistics_only_pairs:
        notes.append(
            f"{figures.statistics_only_pairs} tensor pair(s) were compared by their min, max and mean only, one side having "
            "kept statistics (--keep stats, outside --only): their |Δ| is a lower bound (shown ≥), so a difference there is "
            "certain but an agreement is not proof, and the first divergence may lie earlier than the one named. "
            "Keep full values for the calls before it (--only) to be sure."
        )
    return notes


SIMPLE_VALUE_TYPES = {"NoneType", "bool", "int", "float", "str", "complex", "bytes"}

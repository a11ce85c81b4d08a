"""Judge measured rows against a tolerance: which agree, which introduce a difference, each row's status.

Everything here is derived from the rows' measured figures (:class:`RowFigures`, gathered once
per set of rows) and one :class:`Tolerance`; a new tolerance gives a new :class:`Classification`
of the same rows, without measuring a tensor again.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from tracetui.errors import UsageError
from tracetui.pairing.alignment import Alignment
from tracetui.rows import LeafPair, Row, paired_parent
from tracetui.trace import CallRecord, Trace

if TYPE_CHECKING:
    from tracetui.noise_floor import RoundingFigures

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


@dataclass(frozen=True)
class Tolerance:
    """``|ported - original| <= atol + rtol * |original|``; 1e-3 absolute is the porting bar."""

    atol: float = 1e-3
    rtol: float = 0.0

    def __post_init__(self) -> None:
        # NaN compares False with everything: an atol or rtol of NaN would pass or fail rows at
        # random, and a gate must never say "match" for that reason.
        for name, value in (("atol", self.atol), ("rtol", self.rtol)):
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be a finite number, zero or positive (got {value!r}); the porting bar is atol 1e-3, rtol 0.")

    def __str__(self) -> str:
        return f"atol {self.atol:g}" + (f", rtol {self.rtol:g}" if self.rtol else "")


# Output types compared by value; any other non-tensor output is recorded by its repr only (a note).
SIMPLE_VALUE_TYPES = {"NoneType", "bool", "int", "float", "str", "complex", "bytes"}


def leaves_agree(pairs: list[LeafPair], tolerance: Tolerance) -> bool:
    return all(pair.difference.within(tolerance.atol, tolerance.rtol) for pair in pairs if pair.difference is not None)


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


@dataclass(frozen=True)
class InputBlame:
    """An input that differed, in the fed run, before it was fed: everything upstream had been
    given the original's values, so the call that made it is at fault — unless the difference
    is within tolerance."""

    consumer: int  # row position of the call that received it
    blamed: int  # row position of the call that returned it, or whose own lines made it
    how: Literal["returned", "inline", "reordered"]  # as tracetui.isolate.Maker
    pair: LeafPair  # the input as the port made it, against the original's
    made_in: int | None = None  # made inline by a one-sided call inside the blamed one: its row


def gather_isolation(rows: list[Row]) -> dict[str, Any]:
    """The fed run's figures (:class:`RowFigures`' last three), or nothing when there was none."""
    if not any(row.isolated is not None for row in rows):
        return {}
    row_of_ported = {row.ported.index: position for position, row in enumerate(rows) if row.ported is not None}
    isolated = np.zeros(len(rows), dtype=bool)
    isolated_largest = np.full(len(rows), -math.inf)
    blames: list[InputBlame] = []
    for position, row in enumerate(rows):
        if row.isolated is None:
            continue
        isolated[position] = not row.isolated.not_judged
        returned_unlike_original = row.original is not None and row.isolated.raised == row.original.finished
        isolated_largest[position] = math.nan if returned_unlike_original else largest_comparable_difference(row.isolated.outputs)
        for pair in row.isolated.fed_inputs:
            if pair.ported is None or pair.difference is None or pair.ported.name not in row.isolated.input_makers:
                continue
            maker = row.isolated.input_makers[pair.ported.name]
            if maker.record_index is not None and maker.record_index in row_of_ported:
                blames.append(InputBlame(position, row_of_ported[maker.record_index], maker.how, pair))
            elif maker.how == "inline" and row.isolated.enclosing in row_of_ported:
                # Made by the enclosing forward's own lines: the nearest paired call owns them (a
                # wrapper that exists in the port only holds code the original has inline).
                owner = paired_parent(row, rows)
                made_in = row_of_ported[row.isolated.enclosing]
                if owner is not None:
                    blames.append(InputBlame(position, owner, "inline", pair, None if made_in == owner else made_in))
    return {"isolated": isolated, "isolated_largest": isolated_largest, "input_blames": tuple(blames)}


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
    # The fed run (tracetui.isolate): which rows it judged on their own, the largest difference
    # of their outputs then (as input_largest), and the inputs that differed before feeding.
    isolated: np.ndarray | None = None  # bool, one per row; None when there was no fed run
    isolated_largest: np.ndarray | None = None
    input_blames: tuple[InputBlame, ...] = ()
    # The original's low-precision rerun, leaf by leaf (tracetui.noise_floor); None: judged strictly.
    rounding: RoundingFigures | None = None

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
            statistics_only += sum(
                1 for pair in row.inputs + row.outputs if pair.difference is not None and pair.difference.from_statistics
            )
            input_largest[position] = largest_comparable_difference(row.inputs)
            # NaN: no tolerance makes a call that returned agree with one that raised.
            output_largest[position] = math.nan if row.unreturned_side else largest_comparable_difference(row.outputs)
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
            **gather_isolation(rows),
        )


STATUS_CODES: dict[Status, int] = {status: code for code, status in enumerate(STATUSES)}
STATUS_ARRAY = np.array(STATUSES, dtype=object)  # status code -> status, for whole arrays of codes


def judged_from_figures(tolerance: Tolerance) -> bool:
    """Whether the rows' :class:`RowFigures` alone decide this tolerance (no rtol): then
    re-classifying 20,000 rows takes milliseconds, where an rtol may need elements counted."""
    return tolerance.rtol == 0.0 and not math.isnan(tolerance.atol)


@dataclass(frozen=True, eq=False)
class Classification:
    """Every row's classification under one tolerance, as arrays with one entry per row, and
    the figures it was judged from. Built by :meth:`judge` and never changed: another
    tolerance is another classification."""

    tolerance: Tolerance
    figures: RowFigures
    inputs_agree: np.ndarray  # bool; True for an unpaired row (nothing to judge)
    outputs_agree: np.ndarray  # bool; likewise
    nondeterministic: np.ndarray  # bool
    status_codes: np.ndarray  # positions in STATUSES
    disagrees: np.ndarray  # bool: paired, and the outputs break the tolerance (for whatever reason)
    introduces: np.ndarray  # bool: disagrees while the inputs agree: the difference starts in the call
    # From the fed run (all False without one): the call's own outputs break the tolerance when it
    # is fed the original's values; the call made an input that breaks it; either (a culprit).
    isolated_disagrees: np.ndarray
    makes_bad_input: np.ndarray
    culprits: np.ndarray
    # Calls whose fed-run figures cannot decide this tolerance (an rtol not counted while the
    # port's values were at hand): they are not judged on their own here.
    isolation_undecided: int = 0
    # bool per row, or None: paired, and the outputs agree only within k× the noise floor (rounding).
    within_rounding: np.ndarray | None = None

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
        strictly_agree = outputs_agree.copy()
        if figures.rounding is not None:  # a leaf within k× the noise floor agrees too
            inputs_agree |= figures.rounding.inputs_agree(tolerance)
            outputs_agree |= figures.rounding.outputs_agree(tolerance)
        # A source of nondeterminism: the call's outputs changed between two runs of the same
        # model while its inputs did not (NaN, no second run, compares False).
        nondeterministic = np.zeros(len(rows), dtype=bool)
        for output_change, input_change in figures.rerun_changes:
            nondeterministic |= (output_change > atol) & (input_change <= atol)
        statuses = status_codes(figures, inputs_agree, outputs_agree, nondeterministic)
        disagrees = figures.paired & ~outputs_agree
        isolated_disagrees, makes_bad_input, undecided = judge_isolation(rows, figures, tolerance)
        return cls(
            tolerance,
            figures,
            inputs_agree,
            outputs_agree,
            nondeterministic,
            statuses,
            disagrees,
            disagrees & inputs_agree,
            isolated_disagrees,
            makes_bad_input,
            isolated_disagrees | makes_bad_input,
            undecided,
            figures.paired & outputs_agree & ~strictly_agree,
        )

    @property
    def verdict(self) -> Literal["match", "diverged"]:
        """Diverged when a paired call's outputs disagree, or a call is wrong on its own (a
        difference its parent's outputs happen to hide is still a bug)."""
        return "diverged" if self.disagrees.any() or self.culprits.any() else "match"

    def status(self, position: int) -> Status:
        return STATUSES[self.status_codes[position]]

    def positions_with(self, status: Status) -> list[int]:
        """The rows of one status, in order (a look at 20,000 rows in the interface's time)."""
        return np.flatnonzero(self.status_codes == STATUSES.index(status)).tolist()

    def statuses(self) -> list[Status]:
        """Every row's status, in order."""
        return STATUS_ARRAY[self.status_codes].tolist()

    def status_counts(self) -> Counter[str]:
        counts = np.bincount(self.status_codes, minlength=len(STATUSES)).tolist()
        return Counter({status: count for status, count in zip(STATUSES, counts, strict=True) if count})


def judge_isolation(rows: list[Row], figures: RowFigures, tolerance: Tolerance) -> tuple[np.ndarray, np.ndarray, int]:
    """Which calls the fed run finds wrong on their own, which made an input that is wrong, and
    how many it cannot decide at this tolerance (counted neither way)."""
    atol, rtol = tolerance.atol, tolerance.rtol
    makes_bad_input = np.zeros(len(rows), dtype=bool)
    if figures.isolated is None or figures.isolated_largest is None:
        return np.zeros(len(rows), dtype=bool), makes_bad_input, 0
    undecided = 0
    if judged_from_figures(tolerance):
        isolated_disagrees = figures.isolated & ~(figures.isolated_largest <= atol)
    else:
        isolated_disagrees = np.zeros(len(rows), dtype=bool)
        for position in np.flatnonzero(figures.isolated).tolist():
            isolated = rows[position].isolated
            assert isolated is not None
            differences = [pair.difference for pair in isolated.outputs if pair.difference is not None]
            if math.isnan(figures.isolated_largest[position]) and not differences:  # returned where the other raised
                isolated_disagrees[position] = True
            elif all(difference.decides(atol, rtol) for difference in differences):
                isolated_disagrees[position] = not all(difference.within(atol, rtol) for difference in differences)
            else:
                undecided += 1
    if figures.rounding is not None:
        isolated_disagrees &= ~figures.rounding.isolated_agree(tolerance)
    explained = figures.rounding.explained_blames if figures.rounding is not None else frozenset()
    for number, blame in enumerate(figures.input_blames):
        if number in explained:
            continue
        difference = blame.pair.difference
        assert difference is not None
        if difference.decides(atol, rtol) and not difference.within(atol, rtol):
            makes_bad_input[blame.blamed] = True
    return isolated_disagrees, makes_bad_input, undecided


def status_codes(figures: RowFigures, inputs_agree: np.ndarray, outputs_agree: np.ndarray, nondeterministic: np.ndarray) -> np.ndarray:
    """Each row's status, as a position in STATUSES: the first condition that holds, in order."""
    paired = figures.paired
    # Judged against the original run in the port's dtype, that very cast is no mismatch.
    expected_cast = figures.rounding.expected_cast if figures.rounding is not None else np.zeros(len(paired), dtype=bool)
    conditions_and_statuses: list[tuple[np.ndarray, Status]] = [
        (~paired, "unmatched"),
        (nondeterministic, "nondeterministic"),
        (figures.output_shape_mismatch, "shape_mismatch"),
        (figures.output_nonfinite, "nonfinite"),
        (~outputs_agree & inputs_agree, "diverged"),
        (~outputs_agree, "inherited"),
        (figures.output_dtype_mismatch & ~expected_cast, "dtype_mismatch"),
    ]
    return np.select(
        [condition for condition, _ in conditions_and_statuses],
        [STATUS_CODES[status] for _, status in conditions_and_statuses],
        default=STATUS_CODES["match"],
    ).astype(np.int8)

"""Which precision a comparison used: the dtypes each side was recorded in, and float64.

Recording keeps each model's own dtype (a bfloat16 model's tensors are stored as bfloat16),
while every difference is computed in float64. A reader judging a Δ of 8e-3 needs both facts:
on a bfloat16 value near 1 that is one step of rounding, not a bug — hence the note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.numeric import COMPARISON_DTYPE, format_difference
from tracetui.rows import Row
from tracetui.trace import Trace

HALF_PRECISION_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Precision:
    """The floating dtypes recorded on each side, the dtype differences are computed in, and a
    note when half-precision rounding alone can break an absolute-only tolerance."""

    original_dtypes: tuple[str, ...]
    ported_dtypes: tuple[str, ...]
    compared_in: str
    note: str | None = None
    # "rounding": judged against the original run in the port's dtype (tracetui.noise_floor), and
    # how the reports say so; "strict": atol/rtol alone.
    mode: str = "strict"
    judged_against: str | None = None

    def __str__(self) -> str:
        if self.original_dtypes == self.ported_dtypes:
            recorded = f"recorded in {dtype_list(self.original_dtypes)} (both sides)"
        else:
            recorded = f"recorded in {dtype_list(self.original_dtypes)} (original) and {dtype_list(self.ported_dtypes)} (port)"
        return f"{recorded}; compared in {self.compared_in}"

    @property
    def short_description(self) -> str:
        """``bfloat16 ↔ bfloat16/float32, compared in float64``: what fits beside the verdict."""
        original = "/".join(self.original_dtypes) or "no floats"
        ported = "/".join(self.ported_dtypes) or "no floats"
        recorded = original if original == ported else f"{original} ↔ {ported}"
        return f"{recorded}, compared in {self.compared_in}"

    @property
    def mode_description(self) -> str:
        """What the header shows: the rounding mode when a floor judges the rows, else the dtypes."""
        return self.judged_against or self.short_description


def dtype_list(dtypes: tuple[str, ...]) -> str:
    return ", ".join(dtypes) if dtypes else "no floating-point tensors"


def recorded_dtypes(trace: Trace) -> tuple[str, ...]:
    """Floating and complex dtypes of the trace's input and output tensors, sorted.

    Integer and bool tensors (token ids, masks) are left out: they have no precision to speak of.
    Set comprehensions over the leaves: the header builds this again on every tolerance change.
    """
    # Leaf.dtype covers tensors kept with statistics only (--keep stats, outside --only) too.
    names = {leaf.dtype for record in trace for leaf in record.inputs + record.outputs if leaf.dtype is not None}
    dtypes = {getattr(torch, name) for name in names if isinstance(getattr(torch, name, None), torch.dtype)}
    return tuple(sorted(dtype_name(dtype) for dtype in dtypes if dtype.is_floating_point or dtype.is_complex))


def half_precision_note(original_dtypes: tuple[str, ...], ported_dtypes: tuple[str, ...], tolerance: Tolerance) -> str | None:
    """With rtol 0, a fixed atol is finer than half-precision rounding of any sizeable value.

    One rounding step (ulp) of ``x`` is more than ``eps * |x| / 2``, so above ``2 * atol / eps``
    (0.26 for bfloat16 and atol 1e-3) a single step of rounding already breaks the tolerance.
    """
    if tolerance.rtol != 0.0:
        return None
    half_dtypes = [name for name in HALF_PRECISION_DTYPES if name in original_dtypes + ported_dtypes]
    if not half_dtypes:
        return None
    coarsest = max(half_dtypes, key=lambda name: torch.finfo(HALF_PRECISION_DTYPES[name]).eps)
    resolution = torch.finfo(HALF_PRECISION_DTYPES[coarsest]).eps
    return (
        f"{coarsest} resolution is {resolution:.1e} relative: one rounding step of a value above "
        f"{2 * tolerance.atol / resolution:.2g} already exceeds atol {tolerance.atol:g}; differences of that size are rounding, "
        "consider --rtol"
    )


def describe_precision(comparison: Comparison) -> Precision:
    """The comparison's precision, read from what was recorded on each side."""
    original_dtypes = recorded_dtypes(comparison.original)
    ported_dtypes = recorded_dtypes(comparison.ported)
    rounding = comparison.rounding
    return Precision(
        original_dtypes=original_dtypes,
        ported_dtypes=ported_dtypes,
        compared_in=dtype_name(COMPARISON_DTYPE),
        # Judged against a measured floor, rounding needs no rtol: no note.
        note=None if rounding.measured else half_precision_note(original_dtypes, ported_dtypes, comparison.tolerance),
        mode=rounding.mode,
        judged_against=rounding.description,
    )


def notes_with_precision(comparison: Comparison, precision: Precision) -> list[str]:
    """The comparison's notes, then the precision notes: what the reports and the header list."""
    return comparison.notes + [note for note in (first_overflow_note(comparison), *rounding_notes(comparison), precision.note) if note]


def rounding_notes(comparison: Comparison) -> list[str]:
    """Why no floor was measured, or what measuring it cost (the original's extra forward passes)."""
    rounding = comparison.rounding
    if rounding.note:
        return [rounding.note]
    if not rounding.measured or rounding.plan is None:
        return []
    plan = rounding.plan
    passes = "one more forward pass" if rounding.forwards == 1 else f"{rounding.forwards} more forward passes"
    return [
        f"{plan.description}: a difference within {rounding.factor:g}× that run's (its noise floor, max and mean |Δ|) is "
        f"{plan.rounding_name} rounding, not a divergence; measuring it took {passes} of the original "
        f"({rounding.seconds:.1f} s). --precision strict judges by atol/rtol alone."
    ]


def first_overflow(comparison: Comparison) -> Row | None:
    """The first call, in call order, whose port outputs are Inf/NaN where the original's are
    finite while its port inputs are finite: where a float16 overflow starts."""
    candidates: set[int] = set()
    for position in comparison.classification.positions_with("nonfinite"):
        row = comparison.rows[position]
        if not row.is_paired:
            continue
        outputs = [pair.difference for pair in row.outputs if pair.difference is not None]
        inputs = [pair.difference for pair in row.inputs if pair.difference is not None]
        if any(difference.nonfinite_ported for difference in outputs) and not any(difference.nonfinite_ported for difference in inputs):
            candidates.add(row.index)
    # The innermost: a call whose submodule overflowed first did not start the overflow itself.
    enclosing = set()
    for index in candidates:
        parent = comparison.rows[index].parent
        while parent is not None:
            enclosing.add(parent)
            parent = comparison.rows[parent].parent
    return next((comparison.rows[index] for index in sorted(candidates - enclosing)), None)


def first_overflow_note(comparison: Comparison) -> str | None:
    row = first_overflow(comparison)
    if row is None:
        return None
    return (
        f"{row.label} is the first call whose outputs hold Inf/NaN in the port where the original's are finite, its inputs being "
        f"finite: the overflow starts there — compute it in float32, or scale its values down"
    )


# -- the noise floor beside each difference -------------------------------------------------------


def row_noise_floor(comparison: Comparison, row: Row) -> tuple[float, float] | None:
    """The floor at this row (largest max |Δ|, largest mean |Δ| of its outputs between the original
    and its low-precision run), or None when no floor judges the rows."""
    figures = comparison.classification.figures.rounding
    if figures is None or row.index not in figures.output_floor:
        return None
    return figures.output_noise(row.index)


def isolated_noise_floor(comparison: Comparison, row: Row) -> tuple[float, float] | None:
    """The floor of the call's own code: the low-precision original fed the original's values."""
    figures = comparison.classification.figures.rounding
    if figures is None or row.index not in figures.isolated_floor:
        return None
    return figures.isolated_noise(row.index)


def within_rounding(comparison: Comparison, row: Row) -> bool:
    """The row agrees only because its difference is within k× the noise floor."""
    flags = comparison.classification.within_rounding
    return flags is not None and bool(flags[row.index])


def rounding_match_label(comparison: Comparison) -> str:
    """``match (within bfloat16 rounding)`` when some call agrees only within the floor, else ``match``."""
    flags = comparison.classification.within_rounding
    plan = comparison.rounding.plan
    if plan is None or flags is None or not flags.any():
        return "match"
    return f"match (within {plan.rounding_name} rounding)"


def floor_sentence(comparison: Comparison, row: Row) -> str:
    """``the bfloat16 noise floor here is 3.1e-03 (4.2× it); fed the original's values, 1.2e-03 (9.8× it)``."""
    plan = comparison.rounding.plan
    floor = row_noise_floor(comparison, row)
    if plan is None or floor is None or math.isnan(floor[0]):
        return ""
    parts = [f"the {plan.rounding_name} noise floor here is {format_difference(floor[0])}{times(row.output_max_abs, floor[0])}"]
    alone = isolated_noise_floor(comparison, row)
    if alone is not None and not math.isnan(alone[0]):
        parts.append(f"its own, fed the original's values, {format_difference(alone[0])}{times(row.isolated_max_abs, alone[0])}")
    return "; ".join(parts)


def times(difference: float | None, floor: float) -> str:
    if difference is None or not math.isfinite(difference) or floor <= 0:
        return ""
    return f" (the difference is {difference / floor:.1f}× it)"

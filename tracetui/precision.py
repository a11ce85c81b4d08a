"""Which precision a comparison used: the dtypes each side was recorded in, and float64.

Recording keeps each model's own dtype (a bfloat16 model's tensors are stored as bfloat16),
while every difference is computed in float64. A reader judging a Δ of 8e-3 needs both facts:
on a bfloat16 value near 1 that is one step of rounding, not a bug — hence the note.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.numeric import COMPARISON_DTYPE
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
    return Precision(
        original_dtypes=original_dtypes,
        ported_dtypes=ported_dtypes,
        compared_in=dtype_name(COMPARISON_DTYPE),
        note=half_precision_note(original_dtypes, ported_dtypes, comparison.tolerance),
    )


def notes_with_precision(comparison: Comparison, precision: Precision) -> list[str]:
    """The comparison's notes, then the precision note: what the reports and the header list."""
    return comparison.notes + ([precision.note] if precision.note else [])

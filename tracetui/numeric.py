"""Element-wise differences between two recorded tensors, computed in float64.

Kept apart from the comparison logic: the recorder uses it for the nondeterminism check, the
comparison for every leaf pair, the interface for its detail pane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy
import torch

# Tensors are compared in float64 whatever their recorded dtype (fp16/bf16/fp32), so the
# difference itself carries no rounding error of its own.
COMPARISON_DTYPE = torch.float64


def as_comparable(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.to(COMPARISON_DTYPE)


@dataclass
class TensorDifference:
    """How two same-named tensors differ. Tolerance-independent figures are computed once."""

    original_shape: tuple[int, ...]
    ported_shape: tuple[int, ...]
    original_dtype: str
    ported_dtype: str
    numel: int = 0
    max_abs: float = 0.0  # over elements finite on both sides
    max_rel: float = 0.0  # |p - o| / |o| over elements with o != 0
    mean_abs: float = 0.0
    cosine: float = 1.0
    worst_index: tuple[int, ...] | None = None
    worst_original: float | None = None
    worst_ported: float | None = None
    # NaN/Inf where the other side has a finite value, or a different non-finite value.
    nonfinite_mismatches: int = 0
    nonfinite_original: int = 0
    nonfinite_ported: int = 0
    # Set when differing shapes were compared after broadcasting (an attention mask given as
    # [2, 1, 1, 10] on one side and [2, 1, 10, 10] on the other holds the same information).
    broadcast_shape: tuple[int, ...] | None = None
    _shape_matches: bool | None = field(default=None, repr=False)  # cached: re-classifying asks often
    _original: torch.Tensor | None = field(default=None, repr=False)
    _ported: torch.Tensor | None = field(default=None, repr=False)
    _counts_by_tolerance: dict[tuple[float, float], int] = field(default_factory=dict, repr=False)

    @property
    def shape_matches(self) -> bool:
        """Same shape, or the same once size-1 dimensions are dropped ([12, 64] and [1, 12, 64]).

        Ports often add or drop a batch dimension; the values are still comparable one to one.
        """
        if self._shape_matches is None:
            self._shape_matches = self.broadcast_shape is not None or equivalent_shapes(self.original_shape, self.ported_shape)
        return self._shape_matches

    @property
    def dtype_matches(self) -> bool:
        return self.original_dtype == self.ported_dtype

    def within(self, atol: float, rtol: float) -> bool:
        """``|p - o| <= atol + rtol * |o|`` for every element, with matching NaN/Inf."""
        if not self.shape_matches or self.nonfinite_mismatches:
            return False
        if rtol == 0.0:
            return self.max_abs <= atol
        return self.out_of_tolerance(atol, rtol) == 0

    def out_of_tolerance(self, atol: float, rtol: float) -> int:
        """How many elements break the tolerance (NaN/Inf mismatches included)."""
        if not self.shape_matches:
            return self.numel
        if rtol == 0.0 and self.max_abs <= atol:
            return self.nonfinite_mismatches
        if (atol, rtol) not in self._counts_by_tolerance:
            self._counts_by_tolerance[(atol, rtol)] = self._count_out_of_tolerance(atol, rtol)
        return self._counts_by_tolerance[(atol, rtol)] + self.nonfinite_mismatches

    def _count_out_of_tolerance(self, atol: float, rtol: float) -> int:
        assert self._original is not None and self._ported is not None
        original, ported = comparable_pair(self._original, self._ported, self.broadcast_shape)
        both_finite = torch.isfinite(original) & torch.isfinite(ported)
        broken = (ported - original).abs() > atol + rtol * original.abs()
        return int((broken & both_finite).sum())


def comparable_pair(
    original: torch.Tensor, ported: torch.Tensor, broadcast_shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    original_values = as_comparable(original)
    if broadcast_shape is not None:
        return original_values.expand(broadcast_shape), as_comparable(ported).expand(broadcast_shape)
    return original_values, as_comparable(ported).reshape(original_values.shape)


def broadcast_shape_of(original: torch.Tensor, ported: torch.Tensor) -> tuple[int, ...] | None:
    try:
        return tuple(torch.broadcast_shapes(original.shape, ported.shape))
    except RuntimeError:
        return None


def measure(original: torch.Tensor, ported: torch.Tensor, broadcast: bool = False) -> TensorDifference:
    """How ``ported`` differs from ``original``; ``broadcast`` allows comparing broadcastable shapes."""
    difference = TensorDifference(
        original_shape=tuple(original.shape),
        ported_shape=tuple(ported.shape),
        original_dtype=str(original.dtype).removeprefix("torch."),
        ported_dtype=str(ported.dtype).removeprefix("torch."),
        numel=original.numel(),
        _original=original,
        _ported=ported,
    )
    if not equivalent_shapes(difference.original_shape, difference.ported_shape):
        difference.broadcast_shape = broadcast_shape_of(original, ported) if broadcast else None
        if difference.broadcast_shape is None:
            return difference
        difference.numel = math.prod(difference.broadcast_shape)
    if difference.numel == 0:
        return difference
    original_values, ported_values = comparable_pair(original, ported, difference.broadcast_shape)
    original_finite = torch.isfinite(original_values)
    ported_finite = torch.isfinite(ported_values)
    both_finite = original_finite & ported_finite
    if not bool(both_finite.all()):
        same_nonfinite = ~original_finite & ~ported_finite & (
            (original_values == ported_values) | (original_values.isnan() & ported_values.isnan())
        )
        difference.nonfinite_mismatches = int(((~original_finite | ~ported_finite) & ~same_nonfinite).sum())
        difference.nonfinite_original = int((~original_finite & ported_finite).sum())
        difference.nonfinite_ported = int((original_finite & ~ported_finite).sum())
    absolute = torch.where(both_finite, (ported_values - original_values).abs(), 0.0)
    worst_flat = int(absolute.argmax())
    difference.max_abs = float(absolute.reshape(-1)[worst_flat])
    difference.mean_abs = float(absolute.mean())
    nonzero = both_finite & (original_values != 0)
    if bool(nonzero.any()):
        difference.max_rel = float((absolute[nonzero] / original_values[nonzero].abs()).max())
    # numpy's unravel_index: torch's imports a slow module on first use.
    difference.worst_index = tuple(int(i) for i in numpy.unravel_index(worst_flat, tuple(original_values.shape)))
    difference.worst_original = float(original_values.reshape(-1)[worst_flat])
    difference.worst_ported = float(ported_values.reshape(-1)[worst_flat])
    difference.cosine = cosine_similarity(
        torch.where(both_finite, original_values, 0.0), torch.where(both_finite, ported_values, 0.0)
    )
    return difference


def equivalent_shapes(original: tuple[int, ...], ported: tuple[int, ...]) -> bool:
    if original == ported:
        return True
    return [size for size in original if size != 1] == [size for size in ported if size != 1]


def cosine_similarity(original: torch.Tensor, ported: torch.Tensor) -> float:
    original_norm = float(original.norm())
    ported_norm = float(ported.norm())
    if original_norm == 0.0 and ported_norm == 0.0:
        return 1.0
    if original_norm == 0.0 or ported_norm == 0.0:
        return 0.0
    value = float((original.reshape(-1) @ ported.reshape(-1)) / (original_norm * ported_norm))
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else 0.0


def max_abs_difference(original: torch.Tensor, ported: torch.Tensor) -> float:
    """Largest |p - o| (inf when shapes or NaN/Inf patterns differ); for the run-to-run check."""
    if original.shape == ported.shape:
        absolute = (as_comparable(ported) - as_comparable(original)).abs()
        if absolute.numel() == 0:
            return 0.0
        if bool(torch.isfinite(absolute).all()):
            return float(absolute.max())
    difference = measure(original, ported)
    if not difference.shape_matches or difference.nonfinite_mismatches:
        return math.inf
    return difference.max_abs

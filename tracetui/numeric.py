"""Element-wise differences between two recorded tensors.

Kept apart from the comparison logic: the recorder uses it for the nondeterminism check, the
comparison for every leaf pair, the interface for its detail pane.

What a row needs — the largest |Δ|, where it is, the mean |Δ|, the largest |original| an rtol could forgive —
is measured in one pass over cache-sized slices, in the tensors' own precision (float32 for
16-bit types), and made exact in float64 on the few elements that can be the largest. The rest
(relative error, cosine) is computed in float64 when a row is shown (:class:`Details`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy
import torch

from tracetui.layouts import Layout
from tracetui.trace import TensorSummary

# Tensors are compared in float64 whatever their recorded dtype (fp16/bf16/fp32), so the
# difference itself carries no rounding error of its own.
COMPARISON_DTYPE = torch.float64


def as_comparable(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.to(COMPARISON_DTYPE)


@dataclass(frozen=True)
class Details:
    """The figures of a difference that only a person reading the row needs."""

    max_rel: float  # |p - o| / |o| over elements with o != 0
    cosine: float


IDENTICAL = Details(max_rel=0.0, cosine=1.0)


@dataclass
class TensorDifference:
    """How two same-named tensors differ. Tolerance-independent figures are computed once."""

    original_shape: tuple[int, ...]
    ported_shape: tuple[int, ...]
    original_dtype: str
    ported_dtype: str
    numel: int = 0
    max_abs: float = 0.0  # over elements finite on both sides
    mean_abs: float = 0.0  # likewise (a noise floor judges by it: measured with the largest |Δ|)
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
    # Computed from statistics (min, max, mean) because one side kept no values: max_abs is
    # then a lower bound of the true largest difference, and the other figures are unknown.
    from_statistics: bool = False
    # Set when the original was compared after a transform into the port's layout
    # (:mod:`tracetui.layouts`): "reshape (2, 7, 4, 16) → (2, 7, 64)", "permute [0, 3, 1, 2]".
    layout: str | None = None
    layout_transform: Layout | None = field(default=None, repr=False)  # the transform itself, for the fed run
    # Set when several transforms would fit and none was applied: which, and how to state one.
    layout_ambiguity: str | None = None
    original_abs_max: float = 0.0  # largest finite |o|: bounds what an rtol can forgive
    # max_rel and cosine: computed from the kept values when first read (see :meth:`details`).
    _details: Details | None = field(default=None, repr=False)
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
            self._shape_matches = (
                self.broadcast_shape is not None or self.layout is not None or equivalent_shapes(self.original_shape, self.ported_shape)
            )
        return self._shape_matches

    @property
    def max_rel(self) -> float:
        """Largest |p - o| / |o| over elements with o != 0."""
        return self.details().max_rel

    @property
    def cosine(self) -> float:
        return self.details().cosine

    def details(self) -> Details:
        """The figures only a shown row needs, computed in float64 the first time they are read.

        NaN when the values were let go before anyone asked (a fed-run or fix-search output,
        never shown), or when the shapes cannot be compared element by element.
        """
        if self._details is None:
            if self.values_kept and self.shape_matches and self.numel:
                assert self._original is not None and self._ported is not None
                full = TensorDifference(
                    self.original_shape,
                    self.ported_shape,
                    self.original_dtype,
                    self.ported_dtype,
                    self.numel,
                    broadcast_shape=self.broadcast_shape,
                )
                accumulate_differences(full, self._original, self._ported)
                self._details = full.details()
            elif self.shape_matches and self.numel and self.max_abs == 0.0 and not self.nonfinite_mismatches:
                return IDENTICAL  # every element equal: nothing to compute, kept or not
            else:
                return Details(math.nan, math.nan)
        return self._details

    @property
    def dtype_matches(self) -> bool:
        return self.original_dtype == self.ported_dtype

    @property
    def values_kept(self) -> bool:
        """Both tensors are still at hand, so any tolerance can be counted element by element."""
        return self._original is not None and self._ported is not None

    def within(self, atol: float, rtol: float) -> bool:
        """``|p - o| <= atol + rtol * |o|`` for every element, with matching NaN/Inf.

        Without the values (a streamed or statistics-only comparison) and with an rtol not
        counted while they were at hand, a difference that only the rtol could forgive is
        judged out of tolerance: the safe side for a porting check.
        """
        if not self.shape_matches or self.nonfinite_mismatches:
            return False
        if self.max_abs <= atol:
            return True
        if rtol == 0.0 or self.max_abs > atol + rtol * self.original_abs_max:
            return False
        return self.out_of_tolerance(atol, rtol) == 0

    def decides(self, atol: float, rtol: float) -> bool:
        """Whether :meth:`within` is certain for this tolerance rather than the safe guess."""
        if not self.shape_matches or self.nonfinite_mismatches or self.max_abs <= atol or rtol == 0.0:
            return True
        return self.max_abs > atol + rtol * self.original_abs_max or self.out_of_tolerance(atol, rtol) is not None

    def out_of_tolerance(self, atol: float, rtol: float) -> int | None:
        """How many elements break the tolerance (NaN/Inf mismatches included).

        None when the values were not kept and this tolerance was not counted while they were.
        """
        if not self.shape_matches:
            return self.numel
        if self.max_abs <= atol:
            return self.nonfinite_mismatches
        if (atol, rtol) not in self._counts_by_tolerance:
            if not self.values_kept:
                return None
            self._counts_by_tolerance[(atol, rtol)] = self._count_out_of_tolerance(atol, rtol)
        return self._counts_by_tolerance[(atol, rtol)] + self.nonfinite_mismatches

    def forget_values(self, atol: float, rtol: float, keep_details: bool = False) -> None:
        """Drop the references to both tensors, first counting ``(atol, rtol)`` while they are here
        (and computing the :meth:`details` a shown row needs, with ``keep_details``).

        A streamed comparison measures the ported tensor while the port runs and cannot keep it.
        """
        if self.values_kept and self.shape_matches and not self.from_statistics:
            self.out_of_tolerance(atol, rtol)
            if keep_details:
                self.details()
        self._original = None
        self._ported = None

    def _count_out_of_tolerance(self, atol: float, rtol: float) -> int:
        assert self._original is not None and self._ported is not None
        broken_count = 0
        dtypes = (self._original.dtype, self._ported.dtype)
        for original, ported in comparable_chunks(self._original, self._ported, self.broadcast_shape):
            original_finite, ported_finite = finite_masks(original, ported, *dtypes)
            both_finite = original_finite & ported_finite
            broken = (ported - original).abs() > atol + rtol * original.abs()
            broken_count += int((broken & both_finite).sum())
        return broken_count


# Tensors are compared a slice at a time: the float64 temporaries of one slice of this many
# elements come to about 20 MB, so measuring a [1, 4096, 128256] logits tensor does not need
# gigabytes of float64 copies, and a comparison's peak stays close to what it keeps.
CHUNK_ELEMENTS = 1 << 18


def comparable_chunks(
    original: torch.Tensor, ported: torch.Tensor, broadcast_shape: tuple[int, ...] | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Flat float64 slices of both tensors, element for element (after broadcasting if asked)."""
    original_flat, ported_flat = flat_pair(original, ported, broadcast_shape)
    for start in range(0, original_flat.numel(), CHUNK_ELEMENTS):
        stop = start + CHUNK_ELEMENTS
        yield as_comparable(original_flat[start:stop]), as_comparable(ported_flat[start:stop])


def flat_pair(original: torch.Tensor, ported: torch.Tensor, broadcast_shape: tuple[int, ...] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tensors as flat views in one element order, complex ones as their real pairs."""
    original_values = real_view(original)
    ported_values = real_view(ported)
    if broadcast_shape is not None:
        return original_values.expand(broadcast_shape).reshape(-1), ported_values.expand(broadcast_shape).reshape(-1)
    return original_values.reshape(-1), ported_values.reshape(-1)


def real_view(tensor: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def broadcast_shape_of(original: torch.Tensor, ported: torch.Tensor) -> tuple[int, ...] | None:
    try:
        return tuple(torch.broadcast_shapes(original.shape, ported.shape))
    except RuntimeError:
        return None


def measure(original: torch.Tensor, ported: torch.Tensor, broadcast: bool = False) -> TensorDifference:
    """How ``ported`` differs from ``original``; ``broadcast`` allows comparing broadcastable shapes.

    Computed where ``ported`` lives: a port streamed on a GPU is measured there against the
    original read from disk, and only the figures come back to the host.
    """
    # Detached: a live tensor from a worker thread (where grad mode is on, whatever the main
    # thread's) would otherwise record every operation here for autograd.
    original, ported = on_device_of(dense(original.detach()), ported), dense(ported.detach())
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
        difference._details = IDENTICAL
        return difference
    if fill_if_identical(difference, original, ported) or fill_largest(difference, original, ported):
        return difference
    accumulate_differences(difference, original, ported)  # NaN/Inf, mask sentinels, integers, complex, broadcast
    return difference


def fill_if_identical(difference: TensorDifference, original: torch.Tensor, ported: torch.Tensor) -> bool:
    """The figures of two bitwise-equal tensors at memory speed: the common case where both sides
    run the same code on the same values, as the fed run's modules do in a clean port. False,
    leaving ``difference`` as it was, otherwise."""
    if original.dtype != ported.dtype or original.shape != ported.shape or original.is_complex() or original.dtype == torch.bool:
        return False
    if not torch.equal(original, ported):  # NaN is never equal: such tensors take the slices' way
        return False
    difference.worst_index = (0,) * original.dim()
    difference.worst_original = difference.worst_ported = float(original.reshape(-1)[0])
    # max_abs stays 0, as the slices would give; equal Inf are no mismatch there either.
    # original_abs_max stays 0: with nothing to forgive, no tolerance reads it.
    difference._details = IDENTICAL
    return True


# Floating dtypes measured in one pass in their own precision (16-bit ones in float32).
FAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fill_largest(difference: TensorDifference, original: torch.Tensor, ported: torch.Tensor) -> bool:
    """The largest |Δ|, its element, the mean |Δ| and the largest |original|, in one pass over
    cache-sized slices.

    Each slice's |p - o| is computed in float32 (float64 if either side is), which rounds, but
    rounding is monotonic: the elements whose exact |Δ| is largest are among those whose rounded
    |Δ| equals the rounded maximum, so those few are measured again in float64 and the figures
    are exactly the float64 ones. False, leaving ``difference`` as it was, for what only the
    float64 slices handle: NaN/Inf or mask sentinels (values from :func:`sentinel_limit` on),
    non-floating or complex tensors, broadcast shapes.
    """
    if original.dtype not in FAST_DTYPES or ported.dtype not in FAST_DTYPES or difference.broadcast_shape is not None:
        return False
    limit = sentinel_limit(original.dtype, ported.dtype)
    working_dtype = torch.float64 if torch.float64 in (original.dtype, ported.dtype) else torch.float32
    original_flat, ported_flat = original.reshape(-1), ported.reshape(-1)
    starts = range(0, original_flat.numel(), FAST_CHUNK_ELEMENTS)
    buffer = torch.empty(min(original_flat.numel(), FAST_CHUNK_ELEMENTS), dtype=working_dtype, device=ported.device)
    # Each slice's figures land in these (no host round trip per slice): its largest |Δ| and
    # both sides' extremes, which tell NaN/Inf (a NaN or infinite |Δ|) and sentinels apart.
    slice_maxima = torch.empty(len(starts), dtype=working_dtype, device=ported.device)
    slice_sums = torch.empty(len(starts), dtype=working_dtype, device=ported.device)  # for the mean |Δ|
    original_extremes = torch.empty(2, len(starts), dtype=original.dtype, device=ported.device)
    ported_extremes = torch.empty(2, len(starts), dtype=ported.dtype, device=ported.device)

    # Two 16-bit sides would be subtracted in their own dtype (and only then written to the
    # float32 buffer): the port's slice is copied up first, and the subtraction done in float32.
    widen_first = torch.promote_types(original.dtype, ported.dtype) != working_dtype

    def slice_differences(start: int) -> torch.Tensor:
        """|p - o| of the slice from ``start``, in the buffer (overwritten by the next slice)."""
        original_slice = original_flat[start : start + FAST_CHUNK_ELEMENTS]
        ported_slice = ported_flat[start : start + FAST_CHUNK_ELEMENTS]
        absolute = buffer[: original_slice.numel()]
        if widen_first:
            absolute.copy_(ported_slice).sub_(original_slice)
        else:
            torch.sub(ported_slice, original_slice, out=absolute)
        return absolute.abs_()

    differences = buffer
    for position, start in enumerate(starts):
        differences = slice_differences(start)
        torch.amax(differences, dim=0, out=slice_maxima[position])
        torch.sum(differences, dim=0, out=slice_sums[position])
        stop = start + FAST_CHUNK_ELEMENTS
        torch.aminmax(original_flat[start:stop], out=(original_extremes[0, position], original_extremes[1, position]))
        torch.aminmax(ported_flat[start:stop], out=(ported_extremes[0, position], ported_extremes[1, position]))
    original_abs_max = float(original_extremes.abs().max())
    largest_rounded = float(slice_maxima.max())
    # NaN fails every comparison, so it leaves by the same door as Inf and sentinels.
    if not (largest_rounded < math.inf and original_abs_max < limit and float(ported_extremes.abs().max()) < limit):
        return False
    largest_exact = -1.0
    worst_flat = 0
    in_buffer = len(starts) - 1  # the slice whose differences the buffer holds
    # The candidates, in element order: the first of equal exact maxima wins, as argmax gives.
    for position in positions_equal(slice_maxima, largest_rounded).tolist():
        start = starts[position]
        if position != in_buffer:
            differences, in_buffer = slice_differences(start), position
        offsets = torch.as_tensor(positions_equal(differences, largest_rounded), device=ported.device)
        stop = start + FAST_CHUNK_ELEMENTS
        exact = (ported_flat[start:stop][offsets].double() - original_flat[start:stop][offsets].double()).abs()
        best = int(exact.argmax())
        if float(exact[best]) > largest_exact:
            largest_exact, worst_flat = float(exact[best]), start + int(offsets[best])
    difference.max_abs = largest_exact
    # Summed per slice in the working precision (pairwise: a relative error near float32's
    # epsilon), the slices' sums in float64.
    difference.mean_abs = float(slice_sums.double().sum()) / difference.numel
    difference.original_abs_max = original_abs_max
    difference.worst_original = float(original_flat[worst_flat])
    difference.worst_ported = float(ported_flat[worst_flat])
    # numpy's unravel_index: torch's imports a slow module on first use.
    difference.worst_index = tuple(int(i) for i in numpy.unravel_index(worst_flat, tuple(original.shape)))
    return True


def positions_equal(values: torch.Tensor, target: float) -> numpy.ndarray | torch.Tensor:
    """Where a flat tensor equals ``target``, in order (numpy on the CPU: torch's eq and nonzero
    take ten times as long on a slice)."""
    if values.device.type == "cpu":
        return numpy.flatnonzero(values.numpy() == target)
    return torch.nonzero(values == target).reshape(-1)


# Slices of the one-pass measurement: 256K elements (1 MB in float32), so that both sides'
# slices and the |Δ| buffer stay in cache through the pass's few reads, while a tensor of a
# usual activation's size is one or a few slices (each slice costs a handful of calls).
FAST_CHUNK_ELEMENTS = 1 << 18


def accumulate_differences(difference: TensorDifference, original: torch.Tensor, ported: torch.Tensor) -> None:
    """Every figure, in float64, one slice at a time (see CHUNK_ELEMENTS): for what
    :func:`fill_largest` leaves (NaN/Inf, sentinels, integers, broadcast shapes), and for the
    :meth:`TensorDifference.details` of a row being shown."""
    shape = difference.broadcast_shape or tuple(real_view(original).shape)
    dtypes = (original.dtype, ported.dtype)
    max_rel = absolute_sum = 0.0
    dot = original_square_sum = ported_square_sum = 0.0
    worst_flat: int | None = None
    start = 0
    for original_values, ported_values in comparable_chunks(original, ported, difference.broadcast_shape):
        # False for NaN, ±Inf and mask sentinels
        original_finite, ported_finite = finite_masks(original_values, ported_values, *dtypes)
        both_finite = original_finite & ported_finite
        raw_original, raw_ported = original_values, ported_values
        if not bool(both_finite.all()):
            same_nonfinite = (
                ~original_finite
                & ~ported_finite
                & ((torch.sign(original_values) == torch.sign(ported_values)) | (original_values.isnan() & ported_values.isnan()))
            )
            difference.nonfinite_mismatches += int(((~original_finite | ~ported_finite) & ~same_nonfinite).sum())
            difference.nonfinite_original += int((~original_finite & ported_finite).sum())
            difference.nonfinite_ported += int((original_finite & ~ported_finite).sum())
            original_values = torch.where(both_finite, original_values, 0.0)
            ported_values = torch.where(both_finite, ported_values, 0.0)
        absolute = (ported_values - original_values).abs()
        chunk_worst = int(absolute.argmax())
        chunk_max = float(absolute[chunk_worst])
        if worst_flat is None or chunk_max > difference.max_abs:  # the first of equal maxima, as argmax gives
            difference.max_abs = chunk_max
            worst_flat = start + chunk_worst
            difference.worst_original = float(raw_original[chunk_worst])
            difference.worst_ported = float(raw_ported[chunk_worst])
        absolute_sum += float(absolute.sum())
        nonzero = original_values != 0  # non-finite elements were zeroed above
        if bool(nonzero.any()):
            max_rel = max(max_rel, float((absolute[nonzero] / original_values[nonzero].abs()).max()))
        difference.original_abs_max = max(difference.original_abs_max, float(original_values.abs().max()))
        dot += float(original_values @ ported_values)
        original_square_sum += float(original_values @ original_values)
        ported_square_sum += float(ported_values @ ported_values)
        start += original_values.numel()
    assert worst_flat is not None
    # numpy's unravel_index: torch's imports a slow module on first use.
    difference.worst_index = tuple(int(i) for i in numpy.unravel_index(worst_flat, shape))
    difference.mean_abs = absolute_sum / difference.numel
    difference._details = Details(max_rel, cosine_from_sums(dot, original_square_sum, ported_square_sum))


def finite_masks(
    original: torch.Tensor, ported: torch.Tensor, original_dtype: torch.dtype, ported_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which elements of each side are numbers, not NaN/Inf or mask sentinels.

    A sentinel is a value from half its own dtype's largest on (``finfo(dtype).min`` masks), or a
    finite value from half the narrower dtype's largest on when the other side's is one too (a
    float32 mask built with float16's min). A float32 1e5 against a float16 port's Inf stays a
    number against an Inf: that is a float16 overflow, not a mask.
    """
    original_magnitude, ported_magnitude = original.abs(), ported.abs()
    narrow = sentinel_limit(original_dtype, ported_dtype)
    both_large = (original_magnitude >= narrow) & (ported_magnitude >= narrow) & original.isfinite() & ported.isfinite()
    original_finite = (original_magnitude < own_sentinel_limit(original_dtype)) & ~both_large
    ported_finite = (ported_magnitude < own_sentinel_limit(ported_dtype)) & ~both_large
    return original_finite, ported_finite


def own_sentinel_limit(dtype: torch.dtype) -> float:
    return 0.5 * torch.finfo(dtype).max if dtype.is_floating_point else math.inf


def sentinel_limit(original_dtype: torch.dtype, ported_dtype: torch.dtype) -> float:
    """Magnitudes from which a value is a sentinel rather than a number: half the largest value of
    the narrower floating dtype. Additive attention masks are built from ``torch.finfo(dtype).min``,
    -3.4e38 in float32 and -3.39e38 in bfloat16: a difference of 1e36 between two masked positions
    means nothing, so such values compare like infinities of their sign (equal to each other, a
    mismatch against a number). Infinite for integer and bool tensors."""
    limits = [torch.finfo(dtype).max for dtype in (original_dtype, ported_dtype) if dtype.is_floating_point]
    return 0.5 * min(limits) if limits else math.inf


def dense(tensor: torch.Tensor) -> torch.Tensor:
    """A sparse (or mkldnn) tensor as the strided tensor it stands for: compared, summarized
    and kept by its values, whatever its storage."""
    return tensor if tensor.layout == torch.strided else tensor.to_dense()


def on_device_of(tensor: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device == other.device else tensor.to(other.device)


def summarize(tensor: torch.Tensor) -> TensorSummary:
    """The statistics kept of a tensor whose values are not: two reductions, no copy."""
    tensor = dense(tensor.detach())
    dtype = str(tensor.dtype).removeprefix("torch.")
    shape = tuple(tensor.shape)
    if tensor.numel() == 0:
        return TensorSummary(shape, dtype, 0.0, 0.0, 0.0, 0)
    values = torch.view_as_real(tensor) if tensor.is_complex() else tensor
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    minimum, maximum = torch.aminmax(values)
    # At least float32 accumulation (a float16 sum would overflow); not float64, which would
    # convert every element first and cost more than the reductions themselves.
    if values.is_floating_point():
        mean = values.mean() if values.dtype in (torch.float32, torch.float64) else values.mean(dtype=torch.float32)
    else:
        mean = values.to(torch.float64).mean()
    low, high, average = float(minimum), float(maximum), float(mean)
    nonfinite = 0
    if not (math.isfinite(low) and math.isfinite(high)):  # aminmax propagates NaN; Inf shows as a bound
        nonfinite = int((~torch.isfinite(values)).sum())
    return TensorSummary(shape, dtype, low, high, average, nonfinite)


def measure_summaries(original: TensorSummary, ported: TensorSummary) -> TensorDifference:
    """A difference from statistics only: max_abs is a lower bound (see :class:`TensorSummary`)."""
    difference = TensorDifference(
        original_shape=original.shape,
        ported_shape=ported.shape,
        original_dtype=original.dtype,
        ported_dtype=ported.dtype,
        numel=math.prod(original.shape),
        from_statistics=True,
        _details=Details(max_rel=0.0, cosine=math.nan),  # what statistics cannot tell
    )
    if not difference.shape_matches or difference.numel == 0:
        return difference
    if original.nonfinite != ported.nonfinite:
        difference.nonfinite_mismatches = abs(original.nonfinite - ported.nonfinite)
        difference.nonfinite_original = max(0, original.nonfinite - ported.nonfinite)
        difference.nonfinite_ported = max(0, ported.nonfinite - original.nonfinite)
    if original.nonfinite or ported.nonfinite:
        return difference  # the statistics themselves are NaN/Inf: nothing finite to bound
    difference.max_abs = summary_bound(original, ported)
    difference.mean_abs = max(0.0, abs(ported.mean - original.mean) - mean_uncertainty(original) - mean_uncertainty(ported))
    difference.original_abs_max = max(abs(original.minimum), abs(original.maximum))
    return difference


def summary_bound(original: TensorSummary, ported: TensorSummary) -> float:
    """The largest |p - o| two finite summaries prove: min and max are exact; the means carry
    their summation's rounding, which is taken off so that the bound stays a bound."""
    mean_gap = abs(ported.mean - original.mean) - mean_uncertainty(original) - mean_uncertainty(ported)
    return max(abs(ported.maximum - original.maximum), abs(ported.minimum - original.minimum), mean_gap, 0.0)


def mean_uncertainty(summary: TensorSummary) -> float:
    """How far a float32 mean can be from the exact one: torch sums floating tensors by cascade
    summation, whose error grows with log2(n), in steps of float32's epsilon times the largest |x|
    (a generous factor 4 on top)."""
    numel = math.prod(summary.shape)
    largest = max(abs(summary.minimum), abs(summary.maximum))
    return 4 * math.ceil(math.log2(numel + 1)) * FLOAT32_EPSILON * largest


FLOAT32_EPSILON = float(torch.finfo(torch.float32).eps)


def equivalent_shapes(original: tuple[int, ...], ported: tuple[int, ...]) -> bool:
    if original == ported:
        return True
    return [size for size in original if size != 1] == [size for size in ported if size != 1]


def cosine_from_sums(dot: float, original_square_sum: float, ported_square_sum: float) -> float:
    original_norm = math.sqrt(original_square_sum)
    ported_norm = math.sqrt(ported_square_sum)
    if original_norm == 0.0 and ported_norm == 0.0:
        return 1.0
    if original_norm == 0.0 or ported_norm == 0.0:
        return 0.0
    value = dot / (original_norm * ported_norm)
    return max(-1.0, min(1.0, value)) if math.isfinite(value) else 0.0


def max_abs_difference(original: torch.Tensor, ported: torch.Tensor) -> float:
    """Largest |p - o| (inf when shapes or NaN/Inf patterns differ); for the run-to-run check,
    where two runs of a model are bitwise equal but for the rare nondeterministic call."""
    difference = measure(original, ported)
    if not difference.shape_matches or difference.nonfinite_mismatches:
        return math.inf
    return difference.max_abs


def format_difference(value: float | None) -> str:
    """A difference as the report and the interface show it: ``—`` when none was measured."""
    if value is None:
        return "—"
    if math.isinf(value):
        return "inf"
    if value == 0.0:
        return "0"
    return f"{value:.2e}"

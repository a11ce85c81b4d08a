"""Recorded values, compared cheaply: which calls' outputs (or inputs) agree, or agree in another order.

Automatic pairing compares every candidate pair's values. A few samples at fixed positions, the
extremes and the mean of each tensor (a :class:`ValueSketch`) rule most pairs out at once; only
the pairs they leave are compared element by element, in float64 and a chunk at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

SAMPLE_SIZE = 32  # positions sampled from each tensor for a first, cheap comparison
CHUNK = 1 << 22  # elements compared at once
SMALL = 1 << 16  # tensors up to this many elements are summarised with numpy


def sample_positions(numel: int) -> torch.Tensor:
    if numel <= SAMPLE_SIZE:
        return torch.arange(numel)
    return torch.linspace(0, numel - 1, SAMPLE_SIZE).round().long()


def comparable(tensor: torch.Tensor) -> torch.Tensor:
    values = tensor.to(torch.float64)
    return torch.nan_to_num(values, nan=1e300, posinf=1e301, neginf=-1e301)


def small_array(tensor: torch.Tensor) -> np.ndarray | None:
    """A numpy view of a small tensor: numpy is much quicker than torch on a few hundred values."""
    if tensor.numel() > SMALL or tensor.device.type != "cpu":
        return None
    if tensor.dtype in (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.int8, torch.int16):
        return tensor.detach().numpy()
    return tensor.detach().to(torch.float64 if tensor.is_floating_point() or tensor.dtype == torch.bool else torch.int64).numpy()


def comparable_array(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=1e300, posinf=1e301, neginf=-1e301)
    return values


def agree_elementwise(first: torch.Tensor, second: torch.Tensor, atol: float) -> bool:
    """Two flat tensors of one size agree within ``atol`` everywhere (NaN with NaN), in float64,
    a chunk at a time so that a large output is never copied whole."""
    first_array, second_array = small_array(first), small_array(second)
    if first_array is not None and second_array is not None:
        return bool((np.abs(comparable_array(first_array) - comparable_array(second_array)) <= atol).all())
    for start in range(0, first.numel(), CHUNK):
        difference = comparable(first[start : start + CHUNK]) - comparable(second[start : start + CHUNK])
        if not bool((difference.abs() <= atol).all()):
            return False
    return True


@dataclass
class ValueSketch:
    """Per-call summaries of one trace's main outputs (or inputs), to compare many pairs at once."""

    samples: dict[int, np.ndarray] = field(default_factory=dict)
    minimum: dict[int, float] = field(default_factory=dict)
    maximum: dict[int, float] = field(default_factory=dict)
    mean: dict[int, float] = field(default_factory=dict)
    sorted_values: dict[int, torch.Tensor] = field(default_factory=dict)


# The same recorded tensor is often one call's output and the next one's input: its summary is
# kept by (address, size, dtype), which only views of the very same values share.
SketchCache = dict[tuple[int, int, torch.dtype], tuple[np.ndarray, float, float, float]]


def sketch_of(tensor: torch.Tensor | None, index: int, sketch: ValueSketch, summaries: SketchCache) -> None:
    """Values at a few fixed positions (equal tensors have equal samples), smallest, largest and
    mean (equal for the same values in any order). NaN makes the last three NaN: never equal."""
    if tensor is None or tensor.numel() == 0:
        return
    key = (tensor.data_ptr(), tensor.numel(), tensor.dtype)
    if key in summaries:
        sketch.samples[index], sketch.minimum[index], sketch.maximum[index], sketch.mean[index] = summaries[key]
        return
    positions = sample_positions(tensor.numel())
    array = small_array(tensor)
    if array is not None:
        samples = comparable_array(array[positions.numpy()])
        minimum, maximum, mean = float(array.min()), float(array.max()), float(array.mean(dtype=np.float64))
    else:
        samples = comparable(tensor[positions]).numpy()
        values = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
        minimum, maximum = float(values.min()), float(values.max())
        total = sum(float(values[start : start + CHUNK].sum(dtype=torch.float64)) for start in range(0, values.numel(), CHUNK))
        mean = total / values.numel()
    sketch.samples[index], sketch.minimum[index], sketch.maximum[index], sketch.mean[index] = samples, minimum, maximum, mean
    summaries[key] = (samples, minimum, maximum, mean)


def sorted_values(tensor: torch.Tensor, index: int, sketch: ValueSketch) -> torch.Tensor:
    if index not in sketch.sorted_values:
        values = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.to(torch.float32)
        sketch.sorted_values[index] = values.sort().values
    return sketch.sorted_values[index]


class PairSet:
    """A set of (original index, ported index) pairs, looked up by original index."""

    def __init__(self) -> None:
        self.by_original: dict[int, set[int]] = defaultdict(set)

    def add(self, pair: tuple[int, int]) -> None:
        self.by_original[pair[0]].add(pair[1])

    def __contains__(self, pair: object) -> bool:
        assert isinstance(pair, tuple)
        return pair[1] in self.by_original.get(pair[0], ())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for original_index, ported_indices in self.by_original.items():
            for ported_index in ported_indices:
                yield original_index, ported_index


@dataclass
class ValueRelations:
    """Which candidate pairs agree element-wise, and which hold the same values in another order."""

    output_agrees: PairSet = field(default_factory=PairSet)
    output_permuted: PairSet = field(default_factory=PairSet)
    input_agrees: PairSet = field(default_factory=PairSet)

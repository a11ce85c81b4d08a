"""The one-pass measurement gives exactly the float64 figures, and leaves the rest for when a row is shown."""

from __future__ import annotations

import math

import numpy
import pytest
import torch

import tracetui
from tracetui.numeric import FAST_CHUNK_ELEMENTS, TensorDifference, accumulate_differences, max_abs_difference, measure


def reference(original: torch.Tensor, ported: torch.Tensor) -> TensorDifference:
    """Every figure the float64 way, element by element: what measure() must agree with."""
    difference = TensorDifference(tuple(original.shape), tuple(ported.shape), str(original.dtype), str(ported.dtype), original.numel())
    accumulate_differences(difference, original, ported)
    return difference


def assert_same_figures(measured: TensorDifference, expected: TensorDifference) -> None:
    assert measured.max_abs == expected.max_abs
    assert measured.worst_index == expected.worst_index
    assert measured.worst_original == expected.worst_original
    assert measured.worst_ported == expected.worst_ported
    assert measured.original_abs_max == expected.original_abs_max
    assert measured.nonfinite_mismatches == expected.nonfinite_mismatches
    assert measured.mean_abs == pytest.approx(expected.mean_abs, rel=1e-6)  # summed in float32 slices
    assert measured.max_rel == pytest.approx(expected.max_rel, rel=1e-12)
    assert measured.cosine == pytest.approx(expected.cosine, rel=1e-12)


@pytest.mark.parametrize(
    ("original_dtype", "ported_dtype"),
    [
        (torch.float32, torch.float32),
        (torch.float32, torch.bfloat16),
        (torch.float16, torch.float16),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float32),
    ],
)
def test_figures_are_the_float64_ones_in_every_dtype(original_dtype: torch.dtype, ported_dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(3, FAST_CHUNK_ELEMENTS + 1234, generator=generator) * 10
    ported = original + 1e-3 * torch.randn(original.shape, generator=generator)
    original, ported = original.to(original_dtype), ported.to(ported_dtype)
    assert_same_figures(measure(original, ported), reference(original, ported))


def test_rounding_ties_are_settled_in_float64() -> None:
    """Two elements whose |Δ| round to the same float32 value: the exactly larger one, in a later
    slice, is the worst element — as the float64 measurement says, not the first of the tie."""
    original = torch.zeros(3 * FAST_CHUNK_ELEMENTS)
    ported = torch.zeros(3 * FAST_CHUNK_ELEMENTS)
    ported[10] = 1.0  # |Δ| exactly 1
    original[2 * FAST_CHUNK_ELEMENTS + 5] = -1e-8  # |Δ| = 1.00000001: 1.0 in float32, larger in float64
    ported[2 * FAST_CHUNK_ELEMENTS + 5] = 1.0
    assert float(torch.tensor(1e-8, dtype=torch.float32) + 1.0) == 1.0  # the tie float32 cannot see

    difference = measure(original, ported)

    assert difference.worst_index == (2 * FAST_CHUNK_ELEMENTS + 5,)
    assert difference.max_abs == 1.0 + float(torch.tensor(1e-8, dtype=torch.float32))
    assert_same_figures(difference, reference(original, ported))


def test_equal_maxima_keep_the_first_element() -> None:
    original = torch.zeros(4, 5)
    ported = original.clone()
    ported[1, 2] = ported[3, 4] = 0.5
    assert measure(original, ported).worst_index == (1, 2)


@pytest.mark.parametrize(
    "case",
    ["nan on one side", "matching nan", "inf against a number", "float32 and bfloat16 masks", "integers", "complex"],
)
def test_what_one_pass_cannot_decide_takes_the_float64_way(case: str) -> None:
    original = torch.linspace(-1, 1, 2 * FAST_CHUNK_ELEMENTS)
    ported = original + 1e-4
    if case == "nan on one side":
        ported[7] = math.nan
    elif case == "matching nan":
        original[7] = ported[7] = math.nan
    elif case == "inf against a number":
        original[FAST_CHUNK_ELEMENTS + 3] = math.inf
    elif case == "float32 and bfloat16 masks":
        original[:100] = torch.finfo(torch.float32).min
        ported = ported.to(torch.bfloat16)
        ported[:100] = torch.finfo(torch.bfloat16).min
    elif case == "integers":
        original, ported = torch.arange(1000), torch.arange(1000) + (torch.arange(1000) == 500)
    else:
        original, ported = original.to(torch.complex64), (ported + 1e-3j).to(torch.complex64)
    difference = measure(original, ported)
    assert_same_figures(difference, reference(original, ported))
    if case == "float32 and bfloat16 masks":
        assert difference.nonfinite_mismatches == 0 and difference.max_abs < 1e-2  # the masks compare equal


def test_the_run_to_run_check_agrees_with_the_measurement() -> None:
    generator = torch.Generator().manual_seed(1)
    first = torch.randn(FAST_CHUNK_ELEMENTS * 2 + 7, generator=generator)
    second = first.clone()
    assert max_abs_difference(first, second) == 0.0
    second[FAST_CHUNK_ELEMENTS + 9] += 0.25
    assert max_abs_difference(first, second) == reference(first, second).max_abs
    second[3] = math.nan
    assert max_abs_difference(first, second) == math.inf


def test_a_rows_detail_figures_wait_until_the_row_is_shown() -> None:
    """Comparing measures what classifying needs; max rel and cosine of a recorded pair are
    computed when first read, and then equal the float64 figures."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)).eval()
    port = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(16, 4)).eval()
    port.load_state_dict(model.state_dict())
    inputs = torch.randn(8, 16)
    comparison = tracetui.compare((model, inputs), (port, inputs), rerun=False)
    activation = next(row for row in comparison.rows if row.original_name == "1")
    difference = next(pair.difference for pair in activation.outputs if pair.difference is not None)

    assert difference.max_abs > 0 and difference._details is None
    expected = reference(difference._original, difference._ported)  # type: ignore[arg-type]
    assert difference.cosine == expected.cosine and difference.mean_abs == pytest.approx(expected.mean_abs, rel=1e-6)
    assert difference._details is not None
    assert numpy.isclose(difference.max_rel, expected.max_rel)


def test_a_difference_equal_everywhere_is_measured_at_once() -> None:
    """A constant offset makes every element a candidate for the largest |Δ|: still one pass, the
    first element the worst, as argmax says; and the same for values equal across dtypes."""
    original = torch.randn(2 * FAST_CHUNK_ELEMENTS + 3)
    offset = measure(original, original + 0.5)
    assert_same_figures(offset, reference(original, original + 0.5))
    exact_in_bfloat16 = torch.arange(3 * FAST_CHUNK_ELEMENTS, dtype=torch.float32) % 64
    across = measure(exact_in_bfloat16, exact_in_bfloat16.to(torch.bfloat16))
    assert across.max_abs == 0.0 and across.worst_index == (0,)
    assert_same_figures(across, reference(exact_in_bfloat16, exact_in_bfloat16.to(torch.bfloat16)))


def test_ties_in_two_slices_are_each_measured_from_their_own_slice() -> None:
    original = torch.zeros(3 * FAST_CHUNK_ELEMENTS)
    ported = original.clone()
    ported[5] = 0.75
    ported[2 * FAST_CHUNK_ELEMENTS + 1] = 0.75
    original[2 * FAST_CHUNK_ELEMENTS + 1] = -1e-9  # larger in float64, equal in float32
    assert_same_figures(measure(original, ported), reference(original, ported))


def test_measuring_reports_its_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tracetui.rows.PROGRESS_SECONDS", 0.0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(8, 8) for _ in range(5)]).eval()
    inputs = torch.randn(2, 8)
    messages: list[str] = []
    tracetui.compare((model, inputs), (model, inputs), rerun=False, progress=messages.append)
    measuring = [message for message in messages if message.startswith("comparing, measured")]
    assert measuring[0] == "comparing, measured 0 of 6 calls" and measuring[-1] == "comparing, measured 5 of 6 calls"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_two_16_bit_sides_are_subtracted_in_float32(dtype: torch.dtype) -> None:
    """256 - 0.5 is 255.5, which neither bfloat16 nor float16 (at 2048) can hold: the mean |Δ|
    must not be the 16-bit rounding of each difference."""
    large = 256.0 if dtype == torch.bfloat16 else 2048.0
    original = torch.full((FAST_CHUNK_ELEMENTS + 10,), large, dtype=dtype)
    ported = torch.full((FAST_CHUNK_ELEMENTS + 10,), 0.25, dtype=dtype)
    difference = measure(original, ported)
    assert difference.mean_abs == large - 0.25 and difference.max_abs == large - 0.25
    assert_same_figures(difference, reference(original, ported))

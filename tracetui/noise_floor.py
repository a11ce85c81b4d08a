"""The rounding noise a low-precision port must have: the original run again in the port's dtype.

A port run in bfloat16 or float16 against a float32 original differs everywhere by rounding;
at a porting tolerance (atol 1e-3) that alone would make every comparison diverge, clean ports
included. So the original is run a second time with its weights and floating inputs cast to the
port's dtype (same seed; integer inputs untouched) and recorded. Same model, same call order:
its records pair one to one with the original trace's, by index. At every call the difference
between the original and its low-precision run is the *noise floor* there — what rounding alone
produces at that point of the network, with the error that accumulates along the way.

A leaf (one output or input tensor) of the port is then within tolerance when it is within
atol + rtol·|x| *or* when its max |Δ| ≤ k × the floor's max |Δ| and its mean |Δ| ≤ k × the
floor's mean |Δ| (k = :data:`FLOOR_FACTOR`). Both figures: a bug that changes a few elements a
lot breaks the max, one that shifts everything a little breaks the mean.

For the per-module verdicts (:mod:`tracetui.isolate`) each module needs the floor of its own
contribution, not of everything before it: the low-precision original is run once more the way
the port's fed run is, every module fed the original's recorded values cast to the low dtype,
against the original trace. A module's difference there is the rounding its own code produces.
Cost: two more forward passes of the original (one with the descent only, ``isolate=False``).

When both sides already share a 16-bit dtype and ``precision="rounding"`` forces the judgement,
the original is rerun in float32 instead: the floor is then its own rounding against float32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from tracetui.errors import UsageError
from tracetui.pairing.alignment import Alignment, Pair
from tracetui.rows import LeafPair, Row, measure_inputs, measure_outputs
from tracetui.trace import Trace

if TYPE_CHECKING:
    from tracetui.classify import InputBlame, Tolerance
    from tracetui.script import ModelScript

PrecisionMode = Literal["auto", "strict", "rounding"]
PRECISION_MODES: tuple[str, ...] = get_args(PrecisionMode)

# k: a port's difference up to this many times the floor (max and mean) is rounding. Measured on
# the clean ports of the tests (demos, tests/ports) cast to bfloat16 and float16, the largest
# ratio of a clean module's difference to its floor was about 1.6 (max) and 1.3 (mean); the
# planted bugs sit at 8× and far above at their culprit (README, "Mixed precision").
FLOOR_FACTOR = 3.0

HALF_DTYPES = (torch.bfloat16, torch.float16)


def check_precision_mode(mode: str) -> PrecisionMode:
    if mode not in PRECISION_MODES:
        raise UsageError(f"precision {mode!r} is not one of {', '.join(PRECISION_MODES)}.")
    return mode  # type: ignore[return-value]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def floating_dtypes(trace: Trace) -> set[torch.dtype]:
    """The floating dtypes of a trace's tensors (integer ids and bool masks have no precision)."""
    names = {leaf.dtype for record in trace for leaf in record.inputs + record.outputs if leaf.dtype is not None}
    dtypes = {getattr(torch, name, None) for name in names}
    return {dtype for dtype in dtypes if isinstance(dtype, torch.dtype) and dtype.is_floating_point}


@dataclass(frozen=True)
class RoundingPlan:
    """Which dtype to rerun the original in, and how the reports describe the judgement."""

    original_dtype: str  # the original's (widest) floating dtype
    ported_dtype: str  # the port's low-precision dtype
    rerun_dtype: torch.dtype  # what the original is run again in

    @property
    def description(self) -> str:
        """``bfloat16 port vs float32 original: judged against the original run in bfloat16``."""
        return (
            f"{self.ported_dtype} port vs {self.original_dtype} original: judged against the original run in {dtype_name(self.rerun_dtype)}"
        )

    @property
    def rounding_name(self) -> str:
        """Whose rounding a match is within: ``bfloat16``."""
        return self.ported_dtype


def plan_rounding(original: Trace, ported: Trace, mode: PrecisionMode) -> RoundingPlan | None:
    """The rerun ``mode`` asks for, given the dtypes each side was recorded in; None: judge strictly.

    ``auto``: the port has a 16-bit dtype the original lacks (a float32 original, a bfloat16 port).
    ``rounding``: also when both share one 16-bit dtype (the original is then rerun in float32).
    """
    if mode == "strict":
        return None
    original_dtypes, ported_dtypes = floating_dtypes(original), floating_dtypes(ported)
    ported_half = [dtype for dtype in HALF_DTYPES if dtype in ported_dtypes]
    original_wide = [dtype for dtype in (torch.float64, torch.float32) if dtype in original_dtypes]
    if len(ported_half) != 1:
        return None  # no 16-bit port, or both 16-bit kinds at once: no single dtype to rerun in
    low = ported_half[0]
    if original_wide and low not in original_dtypes:
        return RoundingPlan(dtype_name(original_wide[0]), dtype_name(low), low)
    if mode == "rounding" and low in original_dtypes:
        return RoundingPlan(dtype_name(low), dtype_name(low), torch.float32)
    return None


def cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor in it cast to ``dtype`` (ids, masks and other values as they are)."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {key: cast_floats(item, dtype) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(cast_floats(item, dtype) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(cast_floats(item, dtype) for item in value)
    return value


def cast_script(script: ModelScript, dtype: torch.dtype, in_place: bool) -> ModelScript:
    """The same script with its model and floating inputs in ``dtype``. A copy of the model
    unless ``in_place`` (the caller no longer needs the original's own weights)."""
    import copy

    model = script.model if in_place else copy.deepcopy(script.model)
    return replace(script, model=model.to(dtype), inputs=cast_floats(script.inputs, dtype))


@dataclass(frozen=True, eq=False)
class NoiseFloor:
    """The original's run in the low dtype, paired by index with the original trace, and (when
    measured) that run fed the original's values module by module."""

    plan: RoundingPlan
    original: Trace
    rerun: Trace
    # Per original record index: the low-precision module fed the original's values, its outputs
    # and fed inputs against the original's (tracetui.isolate.Isolated), or absent.
    isolation: dict[int, Any] = field(default_factory=dict)
    forwards: int = 1
    seconds: float = 0.0
    _output_floors: dict[int, list[LeafPair]] = field(default_factory=dict, repr=False)

    def output_floor(self, index: int) -> list[LeafPair]:
        """The original record's outputs against its low-precision rerun's, measured once."""
        if index not in self._output_floors:
            self._output_floors[index] = measure_outputs(self.original.records[index].outputs, self.rerun.records[index].outputs)
        return self._output_floors[index]

    def pairing_atol(self, atol: float) -> float:
        """The tolerance for pairing calls by their values: rounding moves them too, so that a
        projection whose rows the port permutes (a RoPE layout) is still seen as a reordering.
        k× the median of the floor's largest differences (a bug nearby moves them further than
        rounding alone), or ``atol`` when it is coarser."""
        maxima = [largest_noise(self.output_floor(index))[0] for index in range(len(self.original.records))]
        finite = [value for value in maxima if math.isfinite(value)]
        return max(atol, FLOOR_FACTOR * float(np.median(finite))) if finite else atol

    def figures(self, rows: list[Row], input_blames: tuple[InputBlame, ...]) -> RoundingFigures:
        return RoundingFigures.gather(self, rows, input_blames)


@dataclass(frozen=True)
class Rounding:
    """How a comparison treats rounding: the plan, whether a floor was measured, and why not."""

    plan: RoundingPlan | None = None
    measured: bool = False
    note: str | None = None  # why no floor was measured although the dtypes differ, or a fallback
    forwards: int = 0
    seconds: float = 0.0
    factor: float = FLOOR_FACTOR

    @property
    def mode(self) -> str:
        """``rounding`` when a floor judges the rows, else ``strict``."""
        return "rounding" if self.measured else "strict"

    @property
    def description(self) -> str | None:
        if self.plan is None or not self.measured:
            return None
        return self.plan.description


def measure_noise_floor(
    original_script: ModelScript,
    original: Trace,
    plan: RoundingPlan,
    tolerance: Tolerance,
    progress: Callable[[str], None],
    fed: bool,
    in_place: bool,
) -> NoiseFloor | str:
    """Run the original again in ``plan.rerun_dtype`` (and, with ``fed``, once more fed the
    original's values); a note saying why not when the runs cannot be paired with the original's."""
    from tracetui.isolate import FedRun, kept_every_value
    from tracetui.memory import garbage_collection_paused, release_free_memory
    from tracetui.record import record_script

    started = time.perf_counter()
    low = dtype_name(plan.rerun_dtype)
    prefix = f"measuring {plan.rounding_name} rounding"
    progress(f"{prefix}: running the original in {low}")
    script = cast_script(original_script, plan.rerun_dtype, in_place)
    rerun = record_script(script, seed=original.seed, progress=lambda message: progress(f"{prefix}, {message}"))
    if not same_calls(original, rerun):
        return (
            f"the original run in {low} made other calls than in {plan.original_dtype} (its code depends on the dtype), "
            "so no noise floor could be paired with it: judged strictly"
        )
    isolation: dict[int, Any] = {}
    forwards = 1
    if fed and kept_every_value(original):
        progress(f"{prefix}: running the original in {low} once more, each module fed the original's values")
        self_alignment = Alignment(original, rerun, [Pair(index, index, "name") for index in range(len(original.records))])
        run = FedRun(script.model, self_alignment, tolerance)
        with garbage_collection_paused(), run.attached():
            script.run(seed=original.seed)
        release_free_memory()
        isolation = {original_index: isolated for (original_index, _), isolated in run.isolation.items()}
        forwards = 2
    return NoiseFloor(plan, original, rerun, isolation, forwards, time.perf_counter() - started)


def same_calls(original: Trace, rerun: Trace) -> bool:
    """The rerun made the very calls of the original, in order: its records pair by index."""
    return len(original.records) == len(rerun.records) and all(
        (first.name, first.kind, first.call) == (second.name, second.kind, second.call)
        for first, second in zip(original.records, rerun.records, strict=True)
    )


# -- judging against the floor --------------------------------------------------------------------


def explained(pair: LeafPair, floor: dict[str, LeafPair], factor: float) -> bool:
    """The port's leaf differs from the original's by no more than ``factor`` × rounding (max and mean)."""
    difference = pair.difference
    if pair.original is None or difference is None or difference.from_statistics:
        return False
    if not difference.shape_matches or difference.nonfinite_mismatches or math.isnan(difference.max_abs):
        return False
    floor_pair = floor.get(pair.original.name)
    noise = None if floor_pair is None else floor_pair.difference
    if noise is None or not noise.shape_matches or math.isnan(noise.max_abs):
        return False
    return difference.max_abs <= factor * noise.max_abs and difference.mean_abs <= factor * noise.mean_abs


def unexplained(pairs: list[LeafPair], floor: dict[str, LeafPair] | None, factor: float) -> list[LeafPair]:
    """The measured leaves that rounding does not explain: these must be within atol/rtol."""
    if floor is None:
        return [pair for pair in pairs if pair.difference is not None]
    return [pair for pair in pairs if pair.difference is not None and not explained(pair, floor, factor)]


def by_original_name(pairs: list[LeafPair]) -> dict[str, LeafPair]:
    return {pair.original.name: pair for pair in pairs if pair.original is not None and pair.difference is not None}


def largest_noise(pairs: list[LeafPair] | None) -> tuple[float, float]:
    """The floor's largest max |Δ| and mean |Δ| over a call's leaves (NaN: none measured)."""
    differences = [pair.difference for pair in pairs or [] if pair.difference is not None and pair.difference.shape_matches]
    if not differences:
        return math.nan, math.nan
    return max(difference.max_abs for difference in differences), max(difference.mean_abs for difference in differences)


@dataclass(frozen=True, eq=False)
class RoundingFigures:
    """What judging against the floor needs, gathered once (it does not depend on the tolerance).

    For each row the leaves rounding does not explain: the row agrees when those are within
    atol/rtol (all of them explained: it agrees whatever the tolerance).
    """

    rounding: Rounding
    # Per row position: the floor's leaf pairs (original vs its low-precision run), outputs and inputs.
    output_floor: dict[int, list[LeafPair]]
    input_floor: dict[int, list[LeafPair]]
    isolated_floor: dict[int, list[LeafPair]]
    # Per row: the largest comparable max |Δ| among the leaves rounding does not explain
    # (-inf: every one is explained; NaN: one can never agree), and those leaves (for an rtol).
    input_unexplained: np.ndarray
    output_unexplained: np.ndarray
    isolated_unexplained: np.ndarray
    unexplained_inputs: dict[int, list[LeafPair]]
    unexplained_outputs: dict[int, list[LeafPair]]
    unexplained_isolated: dict[int, list[LeafPair]]
    explained_blames: frozenset[int]  # positions in RowFigures.input_blames that rounding explains
    expected_cast: np.ndarray  # bool: the outputs' dtypes differ by the port's cast only

    @classmethod
    def gather(cls, floor: NoiseFloor, rows: list[Row], input_blames: tuple[InputBlame, ...]) -> RoundingFigures:
        from tracetui.classify import largest_comparable_difference

        factor = FLOOR_FACTOR
        count = len(rows)
        output_floor: dict[int, list[LeafPair]] = {}
        input_floor: dict[int, list[LeafPair]] = {}
        isolated_floor: dict[int, list[LeafPair]] = {}
        input_unexplained = np.full(count, -math.inf)
        output_unexplained = np.full(count, -math.inf)
        isolated_unexplained = np.full(count, -math.inf)
        unexplained_inputs: dict[int, list[LeafPair]] = {}
        unexplained_outputs: dict[int, list[LeafPair]] = {}
        unexplained_isolated: dict[int, list[LeafPair]] = {}
        expected_cast = np.zeros(count, dtype=bool)
        cast = (floor.plan.original_dtype, floor.plan.ported_dtype)
        for position, row in enumerate(rows):
            if row.original is None or row.ported is None:
                continue
            rerun = floor.rerun.records[row.original.index]
            output_floor[position] = floor.output_floor(row.original.index)
            input_floor[position] = measure_inputs(row.original.inputs, rerun.inputs)
            inputs = unexplained(row.inputs, by_original_name(input_floor[position]), factor)
            outputs = unexplained(row.outputs, by_original_name(output_floor[position]), factor)
            unexplained_inputs[position], unexplained_outputs[position] = inputs, outputs
            input_unexplained[position] = largest_comparable_difference(inputs)
            output_unexplained[position] = math.nan if row.unreturned_side else largest_comparable_difference(outputs)
            expected_cast[position] = all(
                pair.difference.dtype_matches or (pair.difference.original_dtype, pair.difference.ported_dtype) == cast
                for pair in row.outputs
                if pair.difference is not None
            )
            fed = floor.isolation.get(row.original.index)
            if row.isolated is not None:
                isolated_floor[position] = [] if fed is None else fed.outputs
                isolated = unexplained(row.isolated.outputs, by_original_name(isolated_floor[position]), factor)
                unexplained_isolated[position] = isolated
                returned_unlike_original = row.isolated.raised == row.original.finished
                isolated_unexplained[position] = math.nan if returned_unlike_original else largest_comparable_difference(isolated)
        explained_blames = set()
        for number, blame in enumerate(input_blames):
            consumer = rows[blame.consumer]
            fed = None if consumer.original is None else floor.isolation.get(consumer.original.index)
            if fed is not None and explained(blame.pair, by_original_name(fed.fed_inputs), factor):
                explained_blames.add(number)
        rounding = Rounding(floor.plan, measured=True, forwards=floor.forwards, seconds=floor.seconds, factor=factor)
        return cls(
            rounding, output_floor, input_floor, isolated_floor, input_unexplained, output_unexplained, isolated_unexplained,
            unexplained_inputs, unexplained_outputs, unexplained_isolated, frozenset(explained_blames), expected_cast,
        )  # fmt: skip

    def agree(self, largest: np.ndarray, leaves: dict[int, list[LeafPair]], tolerance: Tolerance) -> np.ndarray:
        """Per row: the leaves rounding does not explain are within the tolerance."""
        if tolerance.rtol == 0.0 and not math.isnan(tolerance.atol):
            return largest <= tolerance.atol
        agree = np.zeros(len(largest), dtype=bool)
        for position, pairs in leaves.items():
            agree[position] = not math.isnan(largest[position]) and all(
                pair.difference.within(tolerance.atol, tolerance.rtol) for pair in pairs if pair.difference is not None
            )
        return agree

    def inputs_agree(self, tolerance: Tolerance) -> np.ndarray:
        return self.agree(self.input_unexplained, self.unexplained_inputs, tolerance)

    def outputs_agree(self, tolerance: Tolerance) -> np.ndarray:
        return self.agree(self.output_unexplained, self.unexplained_outputs, tolerance)

    def isolated_agree(self, tolerance: Tolerance) -> np.ndarray:
        return self.agree(self.isolated_unexplained, self.unexplained_isolated, tolerance)

    def output_noise(self, position: int) -> tuple[float, float]:
        """The floor at this row: the largest max |Δ| and mean |Δ| of its outputs (NaN: none)."""
        return largest_noise(self.output_floor.get(position))

    def input_noise(self, position: int) -> tuple[float, float]:
        return largest_noise(self.input_floor.get(position))

    def isolated_noise(self, position: int) -> tuple[float, float]:
        return largest_noise(self.isolated_floor.get(position))

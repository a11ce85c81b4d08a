"""Try the usual porting mistakes on each culprit alone, on the original's recorded inputs.

One forward pass of the port, stopped once every culprit has been called, captures each
culprit's arguments with the original's recorded values fed in (as the fed run gives them,
:mod:`tracetui.isolate`). Then each hypothesis of :mod:`tracetui.fixes.library` is one call of
one module: apply the patch, call the culprit on those arguments, measure its outputs against
the original's recorded ones, undo the patch. A fix is a patch that brings the module within
tolerance: a hypothesis that makes it match on the recorded inputs, not a proof.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils._pytree import tree_map

from tracetui.classify import Tolerance, largest_comparable_difference
from tracetui.compare import Comparison
from tracetui.feeding import Arguments, CallReturned, fed_arguments, on_call
from tracetui.fixes.library import KINDS, Counterpart, Culprit, patches_for
from tracetui.fixes.patches import Patch
from tracetui.global_state import script_state
from tracetui.isolate import live_leaves
from tracetui.numeric import TensorDifference, format_difference
from tracetui.rows import Row, measure_outputs
from tracetui.script import ModelScript, seed_everything
from tracetui.weights import TensorSource, check_weights, state_with_buffers

# The search of one culprit stops trying after this much CPU time: the work it did, not how long
# other processes on a busy machine held the cores (which would cut the same search short at
# random, and the right fix with it).
SECONDS_PER_CULPRIT = 10.0
SECONDS_IN_ALL = 60.0  # culprits not reached by then are not searched (a bug repeated in every layer of a big model)
EXACT_FRACTION_OF_ATOL = 1e-3  # a fix this close is exact: no other patch of its kind is tried
CLOSEST_SHOWN = 3  # attempts that are no fix, listed as what came closest
ORDERS_OF_MAGNITUDE = 100.0  # a reduction this large is worth saying, though it is no fix
KEPT_BELOW = 0.9  # an attempt is kept only if it leaves at most this fraction of the difference: less is noise


@dataclass(frozen=True)
class Attempt:
    """One patch tried on a culprit, and how far its outputs stayed from the original's."""

    kind: str
    detail: str
    patch: str
    max_abs_after: float  # math.inf when the outputs cannot agree (another shape, NaN)
    differences: tuple[TensorDifference, ...] = field(repr=False, default=())

    def within(self, tolerance: Tolerance) -> bool:
        return bool(self.differences) and all(difference.within(tolerance.atol, tolerance.rtol) for difference in self.differences)

    def is_exact(self, tolerance: Tolerance) -> bool:
        return self.max_abs_after <= tolerance.atol * EXACT_FRACTION_OF_ATOL


@dataclass(frozen=True)
class FixSearch:
    """What trying the library on one culprit found: every attempt that lowered its difference."""

    ported_name: str
    call: int
    max_abs_before: float  # the culprit alone on the captured arguments, unpatched
    tried: int
    seconds: float
    attempts: tuple[Attempt, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (kind, why it was not tried)
    # Judged against a noise floor (tracetui.noise_floor): k× the culprit's own floor, the
    # difference rounding alone leaves when it is fed the original's values; a patch within it fixes.
    rounding_atol: float = 0.0

    def judged_at(self, tolerance: Tolerance) -> Tolerance:
        """``tolerance``, its atol widened to the rounding the culprit's dtype leaves anyway."""
        return tolerance if self.rounding_atol <= tolerance.atol else replace(tolerance, atol=self.rounding_atol)

    def ranked(self, tolerance: Tolerance) -> list[Attempt]:
        """Fixes first (exact ones before the rest, the more specific kind first, then the smaller
        difference), then the attempts that came closest."""
        tolerance = self.judged_at(tolerance)
        kind_rank = {kind: rank for rank, kind in enumerate(KINDS)}
        fixes = [attempt for attempt in self.attempts if attempt.within(tolerance)]
        others = [attempt for attempt in self.attempts if not attempt.within(tolerance)]
        fixes.sort(
            key=lambda attempt: (not attempt.is_exact(tolerance), kind_rank.get(attempt.kind, len(kind_rank)), attempt.max_abs_after)
        )
        others.sort(key=lambda attempt: attempt.max_abs_after)
        return fixes + others

    def fixes(self, tolerance: Tolerance) -> list[Attempt]:
        return [attempt for attempt in self.ranked(tolerance) if attempt.within(self.judged_at(tolerance))]

    def suggestions(self, tolerance: Tolerance) -> list[Attempt]:
        """Every fix, else the few attempts that came closest."""
        return self.fixes(tolerance) or self.ranked(tolerance)[:CLOSEST_SHOWN]

    def summary(self, tolerance: Tolerance) -> str:
        """One line for the report: the best fix, or that none is known and what came closest."""
        fixes = self.fixes(tolerance)
        if fixes:
            others = {1: "", 2: " (1 other patch also does)"}.get(len(fixes), f" ({len(fixes) - 1} other patches also do)")
            after = format_difference(fixes[0].max_abs_after)
            return f"fix: {fixes[0].patch} makes it match on the recorded inputs (max |Δ| {after}){others}"
        closest = self.ranked(tolerance)[:1]
        if not closest:
            return f"no known fix found ({self.tried} usual porting mistakes tried, none came closer)"
        attempt = closest[0]
        factor = self.max_abs_before / attempt.max_abs_after if attempt.max_abs_after > 0 else math.inf
        reduction = f"reduces the difference {factor:.0f}-fold but " if factor >= ORDERS_OF_MAGNITUDE else ""
        return (
            f"no known fix found; closest: {attempt.patch} {reduction}leaves max |Δ| "
            f"{format_difference(attempt.max_abs_after)} (was {format_difference(self.max_abs_before)})"
        )

    def skipped_line(self) -> str | None:
        """The kinds not tried and why, in one line (None: every kind was tried)."""
        if not self.skipped:
            return None
        reasons: dict[str, list[str]] = {}
        for kind, reason in self.skipped:
            reasons.setdefault(reason, []).append(kind)
        return "not tried: " + "; ".join(f"{', '.join(kinds)} ({reason})" for reason, kinds in reasons.items())


Progress = Callable[[str], None]


def searchable(comparison: Comparison, row: Row) -> bool:
    """A paired module call whose original outputs were kept whole (there is something to match),
    and whose outputs do not change from one run to the next (no patch can match a random draw)."""
    return (
        row.kind == "module"
        and not comparison.is_nondeterministic(row)
        and row.original is not None
        and row.ported is not None
        and bool(row.original.outputs)
        and all(leaf.summary is None for leaf in row.original.outputs)
    )


NO_ORIGINAL_MODEL = "the original model is not at hand"
# The kinds that cannot be tried at all without the original model (the others need only its
# recorded inputs and outputs; eps and scale then try the usual values, not the original's own).
NEED_THE_ORIGINAL_MODEL = ("heads", "weight")
# The kinds that patch the port's weights in place: of no use where the weights are offloaded
# (accelerate's hooks load them from their offload folder for each forward, over any patch).
PATCH_THE_WEIGHTS = ("heads", "rope_permutation", "layout", "swap", "weight")
OFFLOADED_WEIGHTS = "its weights are offloaded (on the meta device until accelerate's hooks load them): a patch to them is not used"


def search_fixes(
    comparison: Comparison,
    ported: ModelScript,
    original: ModelScript | None = None,
    progress: Progress | None = None,
    why_no_original: str = NO_ORIGINAL_MODEL,
) -> dict[int, FixSearch]:
    """Try the library on every culprit of ``comparison``; the searches by row index.

    ``ported`` is the port's built script (the one the comparison recorded); ``original`` the
    original's, when ORIG was a script: the hypotheses that read the original's own values (its
    eps, its weights, its head count) need it, the others do not. Without it, the searches list
    the kinds they could not try, with ``why_no_original`` as the reason.
    """
    culprits = [row for row in comparison.culprits if searchable(comparison, row)] if comparison.verdict == "diverged" else []
    if not culprits:
        return {}
    if progress is not None:
        progress(f"trying the usual porting mistakes on {len(culprits)} culprit{'s' if len(culprits) > 1 else ''}")
    try:
        captured = capture_fed_arguments(ported, culprits, comparison.ported.seed)
    except Exception:  # the port failed where its earlier runs did not: the search is an extra, the comparison stands
        return {}
    counterparts = counterpart_modules(comparison, None if original is None else original.model)
    original_tensors, sources = weight_sources(original.model, ported.model, culprits) if original is not None else ({}, {})
    skipped = () if original is not None else tuple((kind, why_no_original) for kind in NEED_THE_ORIGINAL_MODEL)
    searches = {}
    started = time.perf_counter()
    for row in culprits:
        if time.perf_counter() - started > SECONDS_IN_ALL:
            break
        if row.index in captured:
            assert row.ported is not None
            module = submodule(ported.model, row.ported.name)
            culprit = Culprit(row.ported.name, module, ported.model, counterparts, original_tensors, sources)
            row_skipped = skipped
            if holds_offloaded_weights(module):
                row_skipped += tuple((kind, OFFLOADED_WEIGHTS) for kind in PATCH_THE_WEIGHTS if kind not in dict(skipped))
            skip = frozenset(kind for kind, _ in row_skipped)
            search = search_culprit(culprit, row, captured[row.index], ported, comparison.tolerance, skip)
            searches[row.index] = replace(search, skipped=row_skipped, rounding_atol=rounding_atol(comparison, row))
    return searches


def weight_sources(
    original_model: torch.nn.Module, ported_model: torch.nn.Module, culprits: list[Row]
) -> tuple[dict[str, torch.Tensor], dict[str, TensorSource]]:
    """The original's state dict, and where the weights check finds each culprit's tensors in it
    (by value: same, sliced, assembled, rearranged), by ported tensor name. Empty when the check
    fails: the weight hypotheses it feeds are an extra."""
    original_state = state_with_buffers(original_model)
    ported_state: dict[str, torch.Tensor] = {}
    for row in culprits:
        assert row.ported is not None
        prefix = row.ported.name + "." if row.ported.name else ""
        for name, tensor in submodule(ported_model, row.ported.name).state_dict(prefix=prefix).items():
            if tensor.is_floating_point():
                ported_state[name] = tensor
    try:
        report = check_weights(original_state, ported_state)
    except Exception:
        return {}, {}
    return original_state, {source.ported: source for source in report.sources}


def rounding_atol(comparison: Comparison, row: Row) -> float:
    """k× the culprit's own noise floor (0 without one): what rounding leaves after any fix."""
    figures = comparison.classification.figures.rounding
    if figures is None:
        return 0.0
    floor = figures.isolated_noise(row.index)[0]
    return figures.rounding.factor * floor if math.isfinite(floor) else 0.0


def submodule(model: torch.nn.Module, name: str) -> torch.nn.Module:
    return model.get_submodule(name) if name else model


def rebuilt_patch(comparison: Comparison, row: Row, attempt: Attempt, model: torch.nn.Module) -> Patch | None:
    """The patch ``attempt`` tried, built again against ``model`` (a fresh build of the port, as a
    debugging run has). None when it cannot be: it took values from the original model, which
    such a run does not load (the original's own eps, its weights)."""
    assert row.ported is not None
    try:
        module = submodule(model, row.ported.name)
    except AttributeError:
        return None
    culprit = Culprit(row.ported.name, module, model, counterpart_modules(comparison, None))
    return next((patch for patch in patches_for(culprit) if (patch.kind, patch.detail) == (attempt.kind, attempt.detail)), None)


def counterpart_modules(comparison: Comparison, original_model: torch.nn.Module | None) -> dict[str, Counterpart]:
    """The original's module paired with each ported module (by their first paired call)."""
    found: dict[str, Counterpart] = {}
    for row in comparison.rows:
        if row.kind != "module" or row.original is None or row.ported is None or row.ported.name in found:
            continue
        module = None
        if original_model is not None:
            with contextlib.suppress(AttributeError):
                module = submodule(original_model, row.original.name)
        found[row.ported.name] = Counterpart(row.original.name, row.original.class_name, module)
    return found


def detached_copy(value: Any) -> Any:
    """The tensors of a call's arguments copied, so that a module changing them in place cannot
    spoil the next attempt (other values are shared)."""
    return tree_map(lambda item: item.detach().clone() if isinstance(item, torch.Tensor) else item, value)


def capture_fed_arguments(ported: ModelScript, culprits: list[Row], seed: int) -> dict[int, Arguments]:
    """One forward pass of the port, up to the last culprit's call: each culprit's arguments,
    its inputs replaced by the original's recorded values."""
    captured: dict[int, Arguments] = {}

    def capture(row: Row, originals: dict[str, torch.Tensor]) -> Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], Arguments]:
        def before(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arguments:
            fed = fed_arguments(hooked, args, kwargs, originals)
            captured[row.index] = detached_copy(fed)
            if len(captured) == len(culprits):
                raise CallReturned  # the rest of the forward pass is not needed
            return fed

        return before

    with contextlib.ExitStack() as hooks:
        for row in culprits:
            assert row.ported is not None
            originals = {
                pair.ported.name: pair.original.tensor
                for pair in row.inputs
                if pair.original is not None and pair.original.tensor is not None and pair.ported is not None and pair.ported.is_tensor
            }
            hooks.enter_context(on_call(submodule(ported.model, row.ported.name), row.ported.call, capture(row, originals)))
        with contextlib.suppress(CallReturned):
            ported.run(seed=seed)
    return captured


def call_alone(module: torch.nn.Module, arguments: Arguments, ported: ModelScript) -> Any:
    args, kwargs = detached_copy(arguments)
    with script_state(ported.global_state), torch.no_grad():
        seed_everything(ported.seed)
        return module(*args, **kwargs)


def measure_attempt(row: Row, output: Any, tolerance: Tolerance) -> tuple[float, tuple[TensorDifference, ...]]:
    """The largest difference of the outputs from the original's (inf when they cannot agree),
    and each output's difference, its tensors let go."""
    assert row.original is not None
    pairs = measure_outputs(row.original.outputs, live_leaves([("output", output)]))
    differences = []
    for pair in pairs:
        if pair.original is not None and pair.original.is_tensor and pair.difference is None:
            return math.inf, ()  # an output the original has is missing
        if pair.difference is not None:
            pair.difference.forget_values(tolerance.atol, tolerance.rtol)
            differences.append(pair.difference)
    largest = largest_comparable_difference(pairs)
    return (largest if math.isfinite(largest) else math.inf), tuple(differences)


def try_patch(patch: Patch, culprit: Culprit, row: Row, arguments: Arguments, ported: ModelScript, tolerance: Tolerance) -> Attempt | None:
    """The culprit called once with the patch applied; None when applying it or the call fails
    (a patch that makes the call raise is no fix). The patch is undone whatever happens."""
    undo = None
    try:
        undo = patch.apply()
        output = call_alone(culprit.module, arguments, ported)
        largest, differences = measure_attempt(row, output, tolerance)
    except Exception:
        return None
    finally:
        if undo is not None:
            undo()
    return Attempt(patch.kind, patch.detail, patch.description, largest, differences)


def holds_offloaded_weights(module: torch.nn.Module) -> bool:
    """A parameter or buffer of the module (or a submodule) on the meta device: an accelerate-dispatched model's offloaded weights."""
    return any(tensor.device.type == "meta" for tensor in (*module.parameters(), *module.buffers()))


def search_culprit(
    culprit: Culprit, row: Row, arguments: Arguments, ported: ModelScript, tolerance: Tolerance, skip: frozenset[str] = frozenset()
) -> FixSearch:
    """Every applicable patch in priority order (but the ``skip`` kinds), within the time budget;
    the first exact fix of a kind ends that kind."""
    started = time.perf_counter()
    cpu_started = time.process_time()
    try:
        before, _ = measure_attempt(row, call_alone(culprit.module, arguments, ported), tolerance)
    except Exception:
        before = math.inf
    attempts = []
    exact_kinds: set[str] = set()
    tried = 0
    for patch in patches_for(culprit, skip):
        if time.process_time() - cpu_started > SECONDS_PER_CULPRIT:
            break
        if patch.kind in exact_kinds:
            continue
        tried += 1
        attempt = try_patch(patch, culprit, row, arguments, ported, tolerance)
        if attempt is None or not attempt.max_abs_after <= KEPT_BELOW * before:
            continue
        attempts.append(attempt)
        if attempt.is_exact(tolerance) and attempt.within(tolerance):
            exact_kinds.add(attempt.kind)
    return FixSearch(culprit.full_name(""), row.call, before, tried, time.perf_counter() - started, tuple(attempts))

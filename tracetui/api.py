"""The Python API: record or compare scripts, traces or models from tests and notebooks.

Each of ``original`` and ``ported`` may be a model script path, a trace file path, a
:class:`Trace`, or a ``(model, inputs)`` pair built in the caller's own code.

:func:`record` and :func:`compare` take the run options as keywords, for their users; they
build one :class:`RunOptions` and hand it to :func:`record_source` and :func:`compare_sources`,
which the command line calls directly with the options it built from its arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison, compare_and_isolate
from tracetui.errors import ScriptError
from tracetui.frameworks import FRAMEWORKS, ForeignScript, foreign_port_error
from tracetui.global_state import GlobalState
from tracetui.isolate import IsolateWhen
from tracetui.isolate import isolate as judge_alone
from tracetui.noise_floor import NoiseFloor, PrecisionMode, Rounding, RoundingPlan, check_precision_mode, measure_noise_floor, plan_rounding
from tracetui.options import Keep, RunOptions
from tracetui.output_files import absolute_path
from tracetui.pairing.alignment import align
from tracetui.pairing.rename_map import RenameMap, load_rename_map, parse_rename_rules
from tracetui.record import Progress, record_script, record_twice
from tracetui.script import DEFAULT_SEED, ModelScript, check_built, foreign_script, load_script, prepare
from tracetui.sides import Side
from tracetui.trace import Trace
from tracetui.tracefile import load_trace

Source = str | Path | Trace | ModelScript | ForeignScript | tuple[Any, Any]
RenameRules = str | Path | RenameMap | list[list[str]] | list[tuple[str, str]] | None


def is_script_path(path: str | Path) -> bool:
    return Path(path).suffix == ".py"


def load_source(source: Source, options: RunOptions) -> ModelScript | ForeignScript | Trace:
    """Resolve what the caller passed into a built script (PyTorch, or Flax/Keras) or a loaded trace."""
    if isinstance(source, (Trace, ModelScript, ForeignScript)):
        return source
    if isinstance(source, tuple):
        model, inputs = check_built(Path("<python>"), source)
        foreign = foreign_script(Path(f"<{type(model).__name__}>"), Path.cwd() / "<python>", model, inputs, None, options.seed)
        if foreign is not None:
            foreign.global_state = GlobalState.capture()
            return foreign
        model, inputs = prepare(model, inputs, options.device)
        # Built in the caller's own code: it runs under the caller's settings (a float64 default, say).
        return ModelScript(
            path=Path(f"<{type(model).__name__}>"), model=model, inputs=inputs, seed=options.seed, global_state=GlobalState.capture()
        )
    if isinstance(source, (str, Path)):
        if is_script_path(source):
            return load_script(source, seed=options.seed, device=options.device)
        return load_trace(source, options.progress)
    raise ScriptError(f"cannot compare a {type(source).__name__}: pass a script path, a trace file path, a Trace or (model, inputs).")


def record(
    source: Source,
    *,
    rerun: bool = True,
    seed: int = DEFAULT_SEED,
    device: str = "cpu",
    progress: Progress | None = None,
    keep: Keep = "full",
    only: str | None = None,
    spill: str | Path | None = None,
) -> Trace:
    """Record one model's forward pass (twice, to catch nondeterminism, unless ``rerun=False``).

    ``keep="stats"`` keeps statistics instead of tensors; ``only`` (a regex) keeps full tensors
    for the matching modules only; ``spill`` (a directory) writes tensors there as they are
    recorded and reads them back memory-mapped, for traces bigger than memory.
    """
    spill_directory = None if spill is None else absolute_path(spill)  # a script may change the working directory
    options = RunOptions(rerun=rerun, seed=seed, device=device, progress=progress, keep=keep, only=only, spill=spill_directory)
    with modes_restored(source):
        return record_source(source, options)


def record_source(source: Source, options: RunOptions) -> Trace:
    """:func:`record` with its options as one value."""
    policy = options.keep_policy()  # an invalid --only fails before the model is built
    loaded = load_source(source, options)
    if isinstance(loaded, Trace):
        return loaded
    if options.rerun:
        return record_twice(loaded, options.progress, policy)
    return record_script(loaded, progress=options.progress, keep=policy)


def resolve_rename_map(rules: RenameRules) -> RenameMap | None:
    if rules is None or isinstance(rules, RenameMap):
        return rules
    if isinstance(rules, (str, Path)):
        return load_rename_map(rules)
    return parse_rename_rules([list(rule) for rule in rules], "<rename rules>")


def compare(
    original: Source,
    ported: Source,
    *,
    atol: float = 1e-3,
    rtol: float = 0.0,
    rename_map: RenameRules = None,
    infer: bool = True,
    rerun: bool = True,
    seed: int = DEFAULT_SEED,
    device: str = "cpu",
    progress: Progress | None = None,
    keep: Keep = "full",
    only: str | None = None,
    spill: str | Path | None = None,
    stream: bool = False,
    isolate: bool = True,
    fixes: bool = True,
    precision: PrecisionMode = "auto",
) -> Comparison:
    """Record both models, pair their calls, compare them and name the culprits.

    Calls are paired by equal names and ``rename_map`` first, then (unless ``infer=False``)
    automatically by structure, kind, names and values: no map is needed to begin with.

    For models too big for memory: ``spill=DIR`` writes both traces to ``DIR/original`` and
    ``DIR/ported`` as they are recorded; ``stream=True`` records the original to disk and
    checks the port against it as it runs (see :mod:`tracetui.stream`). ``keep`` and ``only``
    choose what is kept of each tensor, as in :func:`record`.

    ``isolate`` (the default) runs the port once more to judge every module on its own and name
    every culprit (:mod:`tracetui.isolate`); ``isolate=False`` saves that forward pass and finds
    the first culprit only, by descent.

    ``fixes`` (the default) tries the usual porting mistakes on each culprit alone, on the
    original's recorded inputs, and keeps those that make it match in ``comparison.fixes``
    (:mod:`tracetui.fixes`); it needs the port's model (not a trace) and the fed run.

    ``precision``: ``"auto"`` (the default) judges a 16-bit port of a float32 original against
    the original run again in the port's dtype, so that rounding is not a divergence
    (:mod:`tracetui.noise_floor`); ``"strict"`` judges by atol/rtol alone; ``"rounding"`` also
    measures the floor when both sides share a 16-bit dtype.
    """
    check_precision_mode(precision)
    resolved_map = resolve_rename_map(rename_map)
    spill_directory = None if spill is None else absolute_path(spill)  # a script may change the working directory
    options = RunOptions(rerun=rerun, seed=seed, device=device, progress=progress, keep=keep, only=only, spill=spill_directory)
    tolerance = Tolerance(atol=atol, rtol=rtol)
    with modes_restored(original, ported):
        return compare_sources(
            original,
            ported,
            options,
            tolerance=tolerance,
            rename_map=resolved_map,
            infer=infer,
            stream=stream,
            isolate="always" if isolate else "never",
            fixes=fixes,
            precision=precision,
        )


@contextmanager
def modes_restored(*sources: Source) -> Iterator[None]:
    """A model the caller passes in comes back in the train/eval mode of each of its modules:
    tracetui runs it in eval mode, and the caller may be in the middle of training it."""
    modes = [
        (module, module.training)
        for source in sources
        if isinstance(source, tuple) and source and isinstance(source[0], torch.nn.Module)
        for module in source[0].modules()
    ]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def compare_sources(
    original: Source,
    ported: Source,
    options: RunOptions,
    *,
    tolerance: Tolerance,
    rename_map: RenameMap | None,
    infer: bool,
    stream: bool,
    isolate: IsolateWhen = "always",
    fixes: bool = True,
    on_loaded: Callable[[Side, ModelScript | ForeignScript | Trace], None] | None = None,
    precision: PrecisionMode = "auto",
) -> Comparison:
    """:func:`compare` with its run options as one value and its rename map resolved.

    ``isolate="if diverged"`` runs the fed run only for a port that diverged: where nothing can
    change the tolerance afterwards (a headless report), a port whose outputs all agree has no
    culprit to name, and is spared one more forward pass.

    ``on_loaded`` sees each side's script (or trace) as soon as it is loaded, before it is
    recorded (the command line checks a --break-at name there)."""
    report = options.progress or (lambda message: None)
    check = on_loaded or (lambda side, loaded: None)

    def load_checked(source: Source, side: Side, side_options: RunOptions) -> ModelScript | ForeignScript | Trace:
        loaded = load_source(source, side_options)
        check(side, loaded)
        return loaded

    def load_port(source: Source, side_options: RunOptions) -> ModelScript | Trace:
        loaded = load_source(source, side_options)
        if isinstance(loaded, ForeignScript):
            raise foreign_port_error(loaded)
        check("ported", loaded)
        return loaded

    if stream:
        from tracetui.stream import compare_streaming

        streamed = replace(options, progress=report)
        streamed_comparison = compare_streaming(
            lambda: load_checked(original, "original", streamed),
            lambda: load_port(ported, streamed),
            streamed,
            rename_map=rename_map,
            tolerance=tolerance,
            infer=infer,
            isolate=isolate,
            fixes=fixes,
        )
        plan = plan_rounding(streamed_comparison.original, streamed_comparison.ported, precision)
        if plan is None:
            return streamed_comparison
        return replace(streamed_comparison, rounding=Rounding(plan, note=unmeasured_note(plan, "--stream")))

    def stage(name: str, side: Side) -> RunOptions:
        """The options for recording one side: its own progress prefix, and its own spill directory."""
        report(name)
        side_spill = None if options.spill is None else options.spill / side
        return replace(options, progress=lambda message: report(f"{name}, {message}"), spill=side_spill)

    original_options = stage("recording the original", "original")
    # Kept for the fix search, which reads the original's own values (its eps, its weights) — not
    # when spilling: that is for models too big to keep both in memory.
    keep_original = fixes and isolate != "never" and options.spill is None
    # Kept until the port's dtype is known, to be run again in it (tracetui.noise_floor).
    keep_for_rounding = precision != "strict" and options.spill is None
    loaded = load_checked(original, "original", original_options)
    original_trace = record_source(loaded, original_options)
    # A Flax or Keras original is then treated as a trace: only the port runs again.
    foreign_framework = loaded.framework if isinstance(loaded, ForeignScript) else None
    keep_loaded = (keep_original or keep_for_rounding) and foreign_framework is None
    original_loaded = loaded if keep_loaded else None  # else the built model goes now, once recorded
    del loaded
    ported_options = stage("recording the port", "ported")
    ported_loaded = load_port(ported, ported_options)
    ported_trace = record_source(ported_loaded, ported_options)
    noise_floor, rounding = rounding_floor(
        original_loaded, original_trace, ported_trace, precision, tolerance, options, report,
        fed=isolate != "never", keep_original=keep_original, foreign_framework=foreign_framework,
    )
    if not keep_original:
        original_loaded = None
    report("comparing")
    pairing_atol = tolerance.atol if noise_floor is None else noise_floor.pairing_atol(tolerance.atol)
    alignment = align(original_trace, ported_trace, rename_map, infer=infer, atol=pairing_atol)
    comparison, isolation = compare_and_isolate(
        alignment,
        tolerance,
        isolate,
        lambda: judge_alone(ported_loaded, alignment, tolerance, report),
        noise_floor=noise_floor,
        rounding=rounding,
        progress=lambda message: report(f"comparing, {message}"),
    )
    if fixes and isolation is not None and isinstance(ported_loaded, ModelScript):
        from tracetui.fixes.search import NO_ORIGINAL_MODEL, search_fixes

        original_script = original_loaded if isinstance(original_loaded, ModelScript) else None
        why = (
            "--spill let it go once recorded" if options.spill is not None
            else f"the original is a {foreign_framework} model, which tracetui does not patch" if foreign_framework is not None
            else "ORIG was given as a trace"
        )
        found = search_fixes(comparison, ported_loaded, original_script, report, why_no_original=f"{NO_ORIGINAL_MODEL}: {why}")
        comparison = replace(comparison, fixes=found)
    return comparison


def rounding_floor(
    original_loaded: ModelScript | ForeignScript | Trace | None,
    original_trace: Trace,
    ported_trace: Trace,
    precision: PrecisionMode,
    tolerance: Tolerance,
    options: RunOptions,
    report: Progress,
    fed: bool,
    keep_original: bool,
    foreign_framework: str | None = None,
) -> tuple[NoiseFloor | None, Rounding | None]:
    """The noise floor ``precision`` asks for, given the dtypes both sides were recorded in; else
    what to tell the user about rounding (nothing when the dtypes agree or ``strict`` was asked)."""
    plan = plan_rounding(original_trace, ported_trace, precision)
    if plan is None:
        return None, None
    if options.spill is not None:
        return None, Rounding(plan, note=unmeasured_note(plan, "--spill"))
    if foreign_framework is not None:
        return None, Rounding(plan, note=unmeasured_note(plan, foreign_framework))
    if not isinstance(original_loaded, ModelScript):
        return None, Rounding(plan, note=unmeasured_note(plan, "a trace"))
    # The original's own weights are cast in place unless the fix search still reads them.
    measured = measure_noise_floor(original_loaded, original_trace, plan, tolerance, report, fed=fed, in_place=not keep_original)
    if isinstance(measured, str):
        return None, Rounding(plan, note=measured)
    return measured, None


def unmeasured_note(plan: RoundingPlan, why: str) -> str:
    """Why no floor was measured although the dtypes differ: rounding is then judged strictly."""
    cause = (
        "the original was given as a trace, which cannot be run again"
        if why == "a trace"
        else f"the original is a {why} model, which tracetui does not cast to run again"
        if why in FRAMEWORKS
        else f"with {why} the original's model is not kept to run again"
    )
    return (
        f"{plan.ported_dtype} port vs {plan.original_dtype} original: no noise floor was measured ({cause} in "
        f"{plan.ported_dtype}), so differences are judged by atol/rtol alone and rounding may show as a divergence"
    )


def assert_match(original: Source, ported: Source, **options: Any) -> Comparison:
    """Compare and raise ``AssertionError`` naming the culprit when the outputs diverge.

    Meant for the regression tests a porter keeps: ``tracetui.assert_match("orig.py", "port.py")``.
    """
    comparison = compare(original, ported, **options)
    if comparison.verdict != "match":
        from tracetui.report import summary_line

        raise AssertionError(summary_line(comparison))
    return comparison

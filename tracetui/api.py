"""The Python API: record or compare scripts, traces or models from tests and notebooks.

Each of ``original`` and ``ported`` may be a model script path, a trace file path, a
:class:`Trace`, or a ``(model, inputs)`` pair built in the caller's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison, compare_alignment
from tracetui.errors import ScriptError
from tracetui.isolate import isolate
from tracetui.pairing.alignment import align
from tracetui.pairing.rename_map import RenameMap, load_rename_map, parse_rename_rules
from tracetui.record import KeepPolicy, Progress, record_script, record_twice
from tracetui.script import DEFAULT_SEED, ModelScript, check_built, load_script, prepare
from tracetui.trace import Trace
from tracetui.tracefile import load_trace

Source = Union[str, Path, Trace, ModelScript, tuple[torch.nn.Module, Any]]
Keep = Literal["full", "stats"]
RenameRules = Union[str, Path, RenameMap, list[list[str]], list[tuple[str, str]], None]


def is_script_path(path: str | Path) -> bool:
    return Path(path).suffix == ".py"


def load_source(source: Source, seed: int = DEFAULT_SEED, device: str = "cpu", progress: Progress | None = None) -> ModelScript | Trace:
    """Resolve what the caller passed into a built script or a loaded trace."""
    if isinstance(source, (Trace, ModelScript)):
        return source
    if isinstance(source, tuple):
        model, inputs = prepare(*check_built(Path("<python>"), source), device)
        return ModelScript(path=Path(f"<{type(model).__name__}>"), model=model, inputs=inputs, seed=seed)
    if isinstance(source, (str, Path)):
        if is_script_path(source):
            return load_script(source, seed=seed, device=device)
        return load_trace(source, progress)
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
    policy = KeepPolicy(values=keep, only=only, spill=None if spill is None else Path(spill))
    loaded = load_source(source, seed=seed, device=device, progress=progress)
    if isinstance(loaded, Trace):
        return loaded
    return record_twice(loaded, progress, policy) if rerun else record_script(loaded, progress=progress, keep=policy)


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
) -> Comparison:
    """Record both models, pair their calls, compare them and name the culprit.

    Calls are paired by equal names and ``rename_map`` first, then (unless ``infer=False``)
    automatically by structure, kind, names and values: no map is needed to begin with.

    For models too big for memory: ``spill=DIR`` writes both traces to ``DIR/original`` and
    ``DIR/ported`` as they are recorded; ``stream=True`` records the original to disk and
    checks the port against it as it runs (see :mod:`tracetui.stream`). ``keep`` and ``only``
    choose what is kept of each tensor, as in :func:`record`.
    """
    resolved_map = resolve_rename_map(rename_map)
    report = progress or (lambda message: None)
    tolerance = Tolerance(atol=atol, rtol=rtol)
    spill_directory = None if spill is None else Path(spill)

    def stage(name: str) -> Progress:
        report(name)
        return lambda message: report(f"{name}, {message}")

    if stream:
        from tracetui.stream import compare_streaming

        return compare_streaming(
            lambda: load_source(original, seed=seed, device=device, progress=report),
            lambda: load_source(ported, seed=seed, device=device, progress=report),
            directory=spill_directory,
            keep=KeepPolicy(values=keep, only=only, spill=spill_directory),
            rename_map=resolved_map,
            tolerance=tolerance,
            infer=infer,
            rerun=rerun,
            progress=report,
        )

    def side_spill(side: str) -> Path | None:
        return None if spill_directory is None else spill_directory / side

    original_trace = record(
        original, rerun=rerun, seed=seed, device=device, progress=stage("recording the original"),
        keep=keep, only=only, spill=side_spill("original"),
    )
    ported_loaded = load_source(ported, seed=seed, device=device, progress=report)
    ported_trace = record(
        ported_loaded, rerun=rerun, seed=seed, device=device, progress=stage("recording the port"),
        keep=keep, only=only, spill=side_spill("ported"),
    )
    stage("comparing")
    alignment = align(original_trace, ported_trace, resolved_map, infer=infer, atol=atol)
    # Each ported module judged on its own needs the port's model: not there for a trace file.
    isolation = isolate(ported_loaded, alignment, tolerance, report) if isinstance(ported_loaded, ModelScript) else None
    return compare_alignment(alignment, tolerance, isolation=isolation)


def assert_match(original: Source, ported: Source, **options: Any) -> Comparison:
    """Compare and raise ``AssertionError`` naming the culprit when the outputs diverge.

    Meant for the regression tests a porter keeps: ``tracetui.assert_match("orig.py", "port.py")``.
    """
    comparison = compare(original, ported, **options)
    if comparison.verdict != "match":
        from tracetui.report import summary_line

        raise AssertionError(summary_line(comparison))
    return comparison

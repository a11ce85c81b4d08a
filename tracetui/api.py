"""The Python API: record or compare scripts, traces or models from tests and notebooks.

Each of ``original`` and ``ported`` may be a model script path, a trace file path, a
:class:`Trace`, or a ``(model, inputs)`` pair built in the caller's own code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from tracetui.align import align
from tracetui.compare import Comparison, Tolerance, compare_traces
from tracetui.errors import ScriptError
from tracetui.record import Progress, record_script, record_twice
from tracetui.rename import RenameMap, load_rename_map, parse_rename_rules
from tracetui.script import DEFAULT_SEED, ModelScript, check_built, load_script, prepare
from tracetui.trace import Trace
from tracetui.tracefile import load_trace

Source = Union[str, Path, Trace, ModelScript, tuple[torch.nn.Module, Any]]
RenameRules = Union[str, Path, RenameMap, list[list[str]], list[tuple[str, str]], None]


def is_script_path(path: str | Path) -> bool:
    return Path(path).suffix == ".py"


def load_source(source: Source, seed: int = DEFAULT_SEED, device: str = "cpu") -> ModelScript | Trace:
    """Resolve what the caller passed into a built script or a loaded trace."""
    if isinstance(source, (Trace, ModelScript)):
        return source
    if isinstance(source, tuple):
        model, inputs = prepare(*check_built(Path("<python>"), source), device)
        return ModelScript(path=Path(f"<{type(model).__name__}>"), model=model, inputs=inputs, seed=seed)
    if isinstance(source, (str, Path)):
        if is_script_path(source):
            return load_script(source, seed=seed, device=device)
        return load_trace(source)
    raise ScriptError(f"cannot compare a {type(source).__name__}: pass a script path, a trace file path, a Trace or (model, inputs).")


def record(
    source: Source, *, rerun: bool = True, seed: int = DEFAULT_SEED, device: str = "cpu", progress: Progress | None = None
) -> Trace:
    """Record one model's forward pass (twice, to catch nondeterminism, unless ``rerun=False``)."""
    loaded = load_source(source, seed=seed, device=device)
    if isinstance(loaded, Trace):
        return loaded
    return record_twice(loaded, progress) if rerun else record_script(loaded, progress=progress)


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
) -> Comparison:
    """Record both models, pair their calls, compare them and name the culprit.

    Calls are paired by equal names and ``rename_map`` first, then (unless ``infer=False``)
    automatically by structure, kind, names and values: no map is needed to begin with.
    """
    resolved_map = resolve_rename_map(rename_map)
    report = progress or (lambda message: None)

    def stage(name: str) -> Progress:
        report(name)
        return lambda message: report(f"{name}, {message}")

    original_trace = record(original, rerun=rerun, seed=seed, device=device, progress=stage("recording the original"))
    ported_trace = record(ported, rerun=rerun, seed=seed, device=device, progress=stage("recording the port"))
    stage("comparing")
    alignment = align(original_trace, ported_trace, resolved_map, infer=infer, atol=atol)
    return compare_traces(alignment, Tolerance(atol=atol, rtol=rtol))


def assert_match(original: Source, ported: Source, **options: Any) -> Comparison:
    """Compare and raise ``AssertionError`` naming the culprit when the outputs diverge.

    Meant for the regression tests a porter keeps: ``tracetui.assert_match("orig.py", "port.py")``.
    """
    comparison = compare(original, ported, **options)
    if comparison.verdict != "match":
        from tracetui.report import summary_line

        raise AssertionError(summary_line(comparison))
    return comparison

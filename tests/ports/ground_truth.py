"""Ground truth for the port pairs, measured with plain forward hooks (no tracetui code).

    python tests/ports/ground_truth.py [nanogpt|llama2c ...]

For each pair and each planted bug: the final-logits difference, the culprit found by the
definition (earliest, innermost paired module call whose main input agrees within 1e-3 and whose
main output does not), and the input/output differences at the culprit listed in ``BUGS``.
"main" input: the first positional argument, else the first tensor keyword argument; "main"
output: the first tensor in the (flattened) output. Only modules called through ``module(...)``
are seen, as with tracetui's hooks.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
ATOL = 1e-3
SCRIPT_MODULES = ("model", "original", "ported")


@dataclass
class Call:
    name: str
    index: int  # how many earlier calls of this module
    start: int
    inputs: list[torch.Tensor]
    output: torch.Tensor | None = None
    children: list[int] = field(default_factory=list)


def tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors(item)]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in tensors(item)]
    return []


def record(model: torch.nn.Module, inputs: Any) -> tuple[list[Call], Any]:
    calls: list[Call] = []
    stack: list[int] = []
    counts: dict[str, int] = {}
    names = {id(module): name for name, module in model.named_modules()}

    def before(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        name = names[id(module)]
        main = tensors(args[0]) if args else tensors(kwargs)
        call = Call(name, counts.get(name, 0), len(calls), [t.detach().clone() for t in main[:1]])
        counts[name] = call.index + 1
        if stack:
            calls[stack[-1]].children.append(len(calls))
        stack.append(len(calls))
        calls.append(call)

    def after(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        call = calls[stack.pop()]
        found = tensors(output)
        call.output = found[0].detach().clone() if found else None

    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        with torch.no_grad():
            result = model(inputs) if isinstance(inputs, torch.Tensor) else model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls, result


def difference(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        return float("nan")
    if a.shape != b.shape:
        return float("inf")
    return (a.float() - b.float()).abs().max().item()


def load_pair(folder: str) -> tuple[Any, Any, list[tuple[str, str]]]:
    for name in SCRIPT_MODULES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(HERE / folder))
    try:
        original = importlib.import_module("original")
        ported = importlib.import_module("ported")
    finally:
        sys.path.pop(0)
    with open(HERE / folder / "map.toml", "rb") as handle:
        rename = [tuple(rule) for rule in tomllib.load(handle)["rename"]]
    return original, ported, rename


def build(script: Any) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    model, inputs = script.build()
    return model.eval(), inputs


def renamed(name: str, rename: list[tuple[str, str]]) -> str:
    for pattern, replacement in rename:
        name = re.sub(pattern, replacement, name)
    return name


def logits(result: Any) -> torch.Tensor:
    return tensors(result)[0]


@dataclass
class Outcome:
    bug: str  # "" for the clean port
    logits_delta: float
    found: str | None  # culprit by the definition, measured here
    expected: str | None  # BUGS[bug]
    original: str | None = None  # original-side partner of the expected culprit
    input_delta: float = float("nan")  # at the expected culprit
    output_delta: float = float("nan")

    @property
    def holds(self) -> bool:
        if not self.bug:
            return self.found is None and self.logits_delta < 1e-4
        return (
            self.found == self.expected
            and self.logits_delta > ATOL
            and self.input_delta < 1e-4
            and self.output_delta > ATOL
        )


def analyse(folder: str) -> list[Outcome]:
    original, ported, rename = load_pair(folder)
    model, inputs = build(original)
    original_calls, original_result = record(model, inputs)
    by_key = {(renamed(c.name, rename), c.index): c for c in original_calls}
    outcomes = []
    for bug in ["", *ported.BUGS]:
        os.environ["TRACETUI_PORT_BUG"] = bug
        try:
            ported_model, ported_inputs = build(ported)
        finally:
            os.environ.pop("TRACETUI_PORT_BUG", None)
        ported_calls, ported_result = record(ported_model, ported_inputs)
        diverged: set[int] = set()
        for i, call in enumerate(ported_calls):
            other = by_key.get((call.name, call.index))
            if other is None:
                continue
            input_delta = max([difference(a, b) for a, b in zip(other.inputs, call.inputs, strict=False)], default=0.0)
            if input_delta <= ATOL and difference(other.output, call.output) > ATOL:
                diverged.add(i)
        innermost = [i for i in sorted(diverged) if not (descendants(ported_calls, i) & diverged)]
        outcome = Outcome(
            bug=bug,
            logits_delta=difference(logits(original_result), logits(ported_result)),
            found=ported_calls[innermost[0]].name if innermost else None,
            expected=ported.BUGS.get(bug),
        )
        if bug:
            call = next(c for c in ported_calls if c.name == outcome.expected)
            other = by_key[(call.name, call.index)]
            outcome.original = other.name
            outcome.input_delta = difference(other.inputs[0], call.inputs[0])
            outcome.output_delta = difference(other.output, call.output)
        outcomes.append(outcome)
    return outcomes


def descendants(calls: list[Call], index: int) -> set[int]:
    found: set[int] = set()
    pending = list(calls[index].children)
    while pending:
        child = pending.pop()
        found.add(child)
        pending.extend(calls[child].children)
    return found


def main(folders: list[str]) -> int:
    failures = 0
    for folder in folders:
        print(f"== {folder}")
        for o in analyse(folder):
            line = f"{o.bug or 'clean':34s} logits Δ={o.logits_delta:.2e}  culprit={o.found}"
            if o.bug:
                line += f"  (BUGS: {o.expected} <- {o.original}; in Δ={o.input_delta:.2e} out Δ={o.output_delta:.2e})"
            print(("ok   " if o.holds else "FAIL ") + line)
            failures += not o.holds
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["nanogpt", "llama2c"]))

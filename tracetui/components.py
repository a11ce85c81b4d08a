"""Component tests a porter keeps: each paired module, run alone on the original's recorded values.

``tracetui export-tests ORIG PORTED -o tests/test_port_components.py`` writes two files: the
pytest file, one test per paired module call, and next to it a safetensors fixture with the
original's recorded inputs and outputs of those calls (the case list in its metadata). Each
test builds the port with the user's own script, runs its forward until the module's call,
gives that call the original's inputs, and checks what it returns against the original's
outputs — the component-by-component tests the porting guide asks for, kept after the port
is done, and needing neither the original's code nor its weights.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.errors import UsageError
from tracetui.feeding import Arguments, CallReturned, fed_arguments, on_call
from tracetui.flatten import tensor_leaves
from tracetui.numeric import TensorDifference, format_difference, measure
from tracetui.output_files import check_output_file, write_text_atomically
from tracetui.rows import LeafPair
from tracetui.safe_text import printable
from tracetui.script import ModelScript, load_script
from tracetui.spill import read_safetensors, storable, write_safetensors
from tracetui.text import shape_text

FIXTURE_FORMAT = "tracetui.components/1"


@dataclass(frozen=True)
class ComponentCase:
    """One paired module call: where it is in the port, and its original's values by leaf name."""

    name: str  # the ported module's qualified name ("" for the root)
    call: int
    original_name: str
    inputs: dict[str, str]  # ported input leaf name → tensor key in the fixture
    outputs: dict[str, str]  # ported output leaf name → tensor key

    @property
    def label(self) -> str:
        return (self.name or "(root)") + (f" (call {self.call})" if self.call else "")


# -- writing -----------------------------------------------------------------------------------


GENERATED_MARK = "written by `tracetui export-tests`"  # in the first line of every generated test file


def check_export_paths(test_file: str, inputs: list[Path]) -> Path:
    """Before any model runs: the absolute test file path, if it and its fixture may be written.

    Both may replace files an earlier export wrote, never anything else (a test file of the
    user's own, a checkpoint that happens to have the fixture's name, an input of the command).
    """
    test_path = check_output_file(test_file, "-o", inputs, python_allowed=True, creates_folder=True, example="test_port_components.py")
    if not test_path.name.startswith("test_") or test_path.suffix != ".py":
        raise UsageError(f"-o {test_file}: name the test file test_<something>.py, so that pytest collects it.")
    fixture_path = test_path.with_suffix(".safetensors")
    fixture_shown = str(Path(test_file).with_suffix(".safetensors"))
    check_output_file(fixture_shown, "-o (its fixture)", inputs, creates_folder=True)
    if test_path.exists() and not is_generated_test_file(test_path):
        raise UsageError(
            f"-o {test_file}: the file exists and was not written by `tracetui export-tests`; "
            "choose a new name, or delete it first if it should go."
        )
    if os.path.lexists(fixture_path) and not is_fixture(fixture_path):
        raise UsageError(
            f"-o {test_file}: the tests' values go to {fixture_shown}, which exists and is not a fixture of "
            "`tracetui export-tests`; choose another test file name, or move that file."
        )
    return test_path


def is_generated_test_file(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return GENERATED_MARK in file.readline()
    except OSError:
        return False


def is_fixture(path: Path) -> bool:
    try:
        _, metadata = read_safetensors(path)
    except Exception:  # unreadable as safetensors: not ours
        return False
    return metadata.get("format") == FIXTURE_FORMAT


def export_component_tests(comparison: Comparison, ported_script: Path, test_path: Path) -> list[ComponentCase]:
    """Write the pytest file and its fixture for every paired module call whose original kept values.

    ``test_path`` is checked first by :func:`check_export_paths`; each file is written whole or not at all.
    """
    cases, tensors = component_cases(comparison)
    if not cases:
        raise UsageError("no paired module call has the original's values to test against (was the original recorded with --keep stats?).")
    fixture_path = test_path.with_suffix(".safetensors")
    script = Path(os.path.relpath(ported_script.resolve(), test_path.resolve().parent))
    metadata = {
        "format": FIXTURE_FORMAT,
        "script": script.as_posix(),
        "seed": str(comparison.ported.seed),
        "atol": repr(comparison.tolerance.atol),
        "rtol": repr(comparison.tolerance.rtol),
        "cases": json.dumps([case.__dict__ for case in cases]),
    }
    test_path.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(fixture_path, tensors, metadata)
    write_text_atomically(test_path, generated_source(comparison, cases, fixture_path.name))
    return cases


def component_cases(comparison: Comparison) -> tuple[list[ComponentCase], dict[str, torch.Tensor]]:
    """The cases, and every original tensor they use, stored once however many cases share it."""
    tensors: dict[str, torch.Tensor] = {}
    key_of: dict[int, str] = {}

    def key(tensor: torch.Tensor) -> str:
        if id(tensor) not in key_of:
            key_of[id(tensor)] = f"t{len(key_of)}"
            tensors[key_of[id(tensor)]] = storable(tensor)
        return key_of[id(tensor)]

    def keys(pairs: list[LeafPair]) -> dict[str, str]:
        """Ported leaf name → the key of its original counterpart's values."""
        found = {}
        for pair in pairs:
            if pair.original is not None and pair.original.tensor is not None and pair.ported is not None and pair.ported.is_tensor:
                found[pair.ported.name] = key(pair.original.tensor)
        return found

    cases = []
    for row in comparison.rows:
        if row.original is None or row.ported is None or row.kind != "module":
            continue
        outputs = keys(row.outputs)
        if outputs:
            cases.append(ComponentCase(row.ported.name, row.ported.call, row.original.name, keys(row.inputs), outputs))
    return cases, tensors


def function_name(case: ComponentCase, taken: Counter[str]) -> str:
    name = "test_" + (re.sub(r"\W+", "_", case.name).strip("_") or "root") + (f"_call_{case.call}" if case.call else "")
    taken[name] += 1
    return name if taken[name] == 1 else f"{name}_{taken[name]}"


def generated_source(comparison: Comparison, cases: list[ComponentCase], fixture_name: str) -> str:
    taken: Counter[str] = Counter()
    header = f'''"""Component tests of the port, {GENERATED_MARK} (edit freely).

Each test builds the port with its script, runs the named module on the original's recorded
inputs and checks its outputs against the original's at {comparison.tolerance}.
Recorded values: {fixture_name}, next to this file.
Original: {docstring_safe(comparison.original.source)}
Port: {docstring_safe(comparison.ported.source)}
"""

from tracetui.components import ComponentSuite

SUITE = ComponentSuite(__file__)
'''
    tests = [
        f'''

def {function_name(case, taken)}() -> None:
    """{docstring_safe(case.label)}, against the original's {docstring_safe(case.original_name or "(root)")}."""
    SUITE.check({case.name!r}, call={case.call})
'''
        for case in cases
    ]
    return header + "".join(tests)


def docstring_safe(text: str) -> str:
    """Text for a generated docstring that stays inside it: names come from the models and from
    trace files others send, and a quote or a newline in one would end the docstring and put
    the rest of the name in the test file as code."""
    return printable(text).replace("\\", "\\\\").replace('"', '\\"')


# -- running (from the generated file) --------------------------------------------------------------


class ComponentSuite:
    """The fixture next to a generated test file, and the port built once for all its tests."""

    def __init__(self, test_file: str | Path) -> None:
        self.test_file = Path(test_file)
        self.fixture_path = self.test_file.with_suffix(".safetensors")
        tensors, metadata = read_safetensors(self.fixture_path)
        if metadata.get("format") != FIXTURE_FORMAT:
            raise UsageError(f"{self.fixture_path}: not a fixture written by `tracetui export-tests`.")
        self.tensors = tensors
        self.script_path = (self.test_file.parent / metadata["script"]).resolve()
        self.seed = int(metadata["seed"])
        self.tolerance = Tolerance(float(metadata["atol"]), float(metadata["rtol"]))
        self.cases = {(case["name"], case["call"]): ComponentCase(**case) for case in json.loads(metadata["cases"])}
        self._script: ModelScript | None = None

    @property
    def script(self) -> ModelScript:
        if self._script is None:
            script = load_script(self.script_path, seed=self.seed)
            if not isinstance(script, ModelScript):
                raise UsageError(f"{self.script_path}: the port must be a PyTorch model; build() returned a {script.framework} model.")
            self._script = script
        return self._script

    def check(self, name: str, call: int = 0) -> None:
        """Run module ``name`` (its ``call``-th call) on the original's inputs; fail naming the worst element."""
        case = self.cases[(name, call)]
        outputs = self.run(case)
        failures = []
        for leaf_name, tensor_key in case.outputs.items():
            expected = self.tensors[tensor_key]
            if leaf_name not in outputs:
                failures.append(f"{leaf_name}: the module returned no such output")
                continue
            difference = measure(expected, outputs[leaf_name])
            if not difference.within(self.tolerance.atol, self.tolerance.rtol):
                failures.append(describe_failure(leaf_name, difference))
        assert not failures, f"{case.label} differs from the original's {case.original_name or '(root)'} at {self.tolerance}:\n  " + (
            "\n  ".join(failures)
        )

    def run(self, case: ComponentCase) -> dict[str, torch.Tensor]:
        """The port's forward pass up to the case's call, fed there; that call's output leaves."""
        with self.fed_call(case) as captured, contextlib.suppress(CallReturned):
            self.script.run(seed=self.seed)
        if captured is None or not captured:
            raise AssertionError(f"{case.label} was never called: the port took another path than when the tests were written.")
        return captured

    @contextmanager
    def fed_call(self, case: ComponentCase) -> Iterator[dict[str, torch.Tensor]]:
        module = self.script.model.get_submodule(case.name) if case.name else self.script.model
        originals = {path: self.tensors[tensor_key] for path, tensor_key in case.inputs.items()}
        captured: dict[str, torch.Tensor] = {}

        def before(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arguments:
            return fed_arguments(hooked, args, kwargs, originals)

        def after(hooked: torch.nn.Module, output: Any) -> None:
            if not captured:
                captured.update((path, tensor.detach()) for path, tensor in tensor_leaves([("output", output)]))
                raise CallReturned  # the rest of the forward pass is not needed

        with on_call(module, case.call, before, after):
            yield captured


def describe_failure(leaf_name: str, difference: TensorDifference) -> str:
    if not difference.shape_matches:
        ported, original = (shape_text(shape, as_list=True) for shape in (difference.ported_shape, difference.original_shape))
        return f"{leaf_name}: shape {ported}, the original's {original}"
    worst = ""
    if difference.worst_index is not None:
        index = list(difference.worst_index)
        worst = f"; worst at {index}: {difference.worst_ported!r}, the original's {difference.worst_original!r}"
    return f"{leaf_name}: max |Δ| {format_difference(difference.max_abs)}{worst}"

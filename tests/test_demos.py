"""Tests for the bundled demos in demos/: weight conversion, clean-port equivalence, planted bugs.

Everything above the END-TO-END section uses plain torch only, so it checks the demos
themselves whether or not tracetui works. The END-TO-END section runs the real
`python -m tracetui compare` CLI on every demo and bug.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomllib
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMOS_DIR = REPO_ROOT / "demos"
DEMOS = ["gpt", "bert"]
# Originals in Flax and Keras (issue 11): the CLI section runs them too; tests/test_frameworks.py
# checks each of their bugs in-process, with and without the map.
FOREIGN_DEMOS = ["flax_gpt", "keras_llama"]
BUG_ENV_VAR = "TRACETUI_DEMO_BUG"
ATOL = 1e-3  # tracetui's default agreement tolerance
CONVERTERS = {"gpt": "convert_nanogpt_state_dict", "bert": "convert_bert_state_dict"}

_loaded_modules: dict[tuple[str, str], ModuleType] = {}


def load_demo(demo: str, role: str) -> ModuleType:
    """Import demos/<demo>/<role>.py under a unique module name (both demos have an original.py)."""
    if (demo, role) not in _loaded_modules:
        module_name = f"_test_demos_{demo}_{role}"
        spec = importlib.util.spec_from_file_location(module_name, DEMOS_DIR / demo / f"{role}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        _loaded_modules[demo, role] = module
    return _loaded_modules[demo, role]


def bug_cases() -> list[tuple[str, str]]:
    return [(demo, bug) for demo in DEMOS for bug in load_demo(demo, "ported").BUGS]


BUG_CASES = bug_cases()
BUG_IDS = [f"{demo}-{bug}" for demo, bug in BUG_CASES]


def multi_bug_cases() -> list[Any]:
    """Several bugs planted at once (comma-separated in TRACETUI_DEMO_BUG) and the culprits, in call
    order, that the fed run must name: exactly the BUGS entries of the planted bugs. More
    combinations, with and without the map, run in-process in tests/test_align_auto.py."""
    gpt, bert = load_demo("gpt", "ported").BUGS, load_demo("bert", "ported").BUGS
    return [
        # two bugs in one layer: layer 1's o_proj runs before its MLP's activation
        pytest.param("gpt", "activation,unconverted_weight", [gpt["unconverted_weight"], gpt["activation"]], id="gpt-two-in-layer-1"),
        # swapped_qk makes block 2's query *and* key wrong on its own (BUGS names the first, q), so
        # both are culprits. dropout is left out: it is in every block, and nondeterministic.
        pytest.param(
            "bert",
            "norm_eps,swapped_qk,pooler_activation",
            [bert["norm_eps"], bert["swapped_qk"], "encoder.blocks.2.attn.k", bert["pooler_activation"]],
            id="bert-three-layers",
        ),
    ]


MULTI_BUG_CASES = multi_bug_cases()


@pytest.fixture(autouse=True)
def no_bug_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TRACETUI_DEMO_BUG left in the developer's shell must not leak into the clean-port tests."""
    monkeypatch.delenv(BUG_ENV_VAR, raising=False)


def tensor_leaves(value: Any) -> list[torch.Tensor]:
    """Every tensor in a (possibly nested) tuple / list / mapping / dataclass, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in tensor_leaves(item)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [leaf for f in dataclasses.fields(value) for leaf in tensor_leaves(getattr(value, f.name))]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in tensor_leaves(item)]
    return []


def run_model(model: nn.Module, inputs: Any) -> Any:
    """Call a model the way tracetui does: eval mode, no grad, inputs as tensor / args / kwargs."""
    model.eval()
    with torch.no_grad():
        if isinstance(inputs, dict):
            return model(**inputs)
        if isinstance(inputs, tuple):
            return model(*inputs)
        return model(inputs)


def max_abs_diff(original: list[torch.Tensor], ported: list[torch.Tensor]) -> float:
    assert len(original) == len(ported), f"{len(original)} vs {len(ported)} output tensors"
    for original_tensor, ported_tensor in zip(original, ported, strict=True):
        assert original_tensor.shape == ported_tensor.shape
    return max((o.float() - p.float()).abs().max().item() for o, p in zip(original, ported, strict=True))


def final_outputs(demo: str, bug: str | None, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(seed)
    original_model, original_inputs = load_demo(demo, "original").build()
    original_output = tensor_leaves(run_model(original_model, original_inputs))
    torch.manual_seed(seed)
    ported_model, ported_inputs = load_demo(demo, "ported").build(bug=bug or "")
    ported_output = tensor_leaves(run_model(ported_model, ported_inputs))
    return original_output, ported_output


def rename_modules(demo: str, original_names: list[str]) -> dict[str, str]:
    """Apply demos/<demo>/map.toml to original module names, exactly as the contract says (re.sub, in order)."""
    with open(DEMOS_DIR / demo / "map.toml", "rb") as map_file:
        rules = tomllib.load(map_file)["rename"]
    renamed = {}
    for original_name in original_names:
        name = original_name
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        renamed[original_name] = name
    return renamed


def paired_module_names(demo: str) -> dict[str, str]:
    """original name -> ported name, for every original module the map pairs with a ported module."""
    original_model, _ = load_demo(demo, "original").build()
    ported_model, _ = load_demo(demo, "ported").build(bug="")
    ported_names = {name for name, _ in ported_model.named_modules()}
    renamed = rename_modules(demo, [name for name, _ in original_model.named_modules()])
    return {original: ported for original, ported in renamed.items() if ported in ported_names}


# --------------------------------------------------------------------------- (a) conversion


@pytest.mark.parametrize("demo", DEMOS)
def test_conversion_uses_every_original_key_and_fills_every_ported_key(demo: str) -> None:
    original_model, _ = load_demo(demo, "original").build()
    ported = load_demo(demo, "ported")
    ported_model, _ = ported.build(bug="")
    original_state = original_model.state_dict()
    converted = getattr(ported, CONVERTERS[demo])(original_state)

    ported_state = ported_model.state_dict()
    assert sorted(converted) == sorted(ported_state), "converted keys differ from the port's keys"
    for key, tensor in converted.items():
        assert tensor.shape == ported_state[key].shape, key
    # nothing dropped, nothing invented: splitting and renaming keep the parameter count
    assert sum(t.numel() for t in converted.values()) == sum(t.numel() for t in original_state.values())
    # and every converted tensor is a real copy of original values, not left at some init
    original_values = torch.cat([t.flatten().float() for t in original_state.values()]).sort().values
    converted_values = torch.cat([t.flatten().float() for t in converted.values()]).sort().values
    assert torch.equal(original_values, converted_values)


def convert_and_load(demo: str, model: nn.Module, original_state: dict[str, torch.Tensor]) -> None:
    ported = load_demo(demo, "ported")
    converted = getattr(ported, CONVERTERS[demo])(original_state)
    if demo == "bert":
        ported.load_converted(model, converted)
    else:
        model.load_state_dict(converted, strict=True)


@pytest.mark.parametrize("demo", DEMOS)
def test_conversion_rejects_unknown_and_missing_keys(demo: str) -> None:
    original_model, _ = load_demo(demo, "original").build()
    ported_model, _ = load_demo(demo, "ported").build(bug="")
    original_state = dict(original_model.state_dict())

    with_extra_key = {**original_state, "encoder.layer.0.attention.self.rotary.weight": torch.zeros(3)}
    with pytest.raises((KeyError, RuntimeError)):
        convert_and_load(demo, ported_model, with_extra_key)

    without_a_key = dict(original_state)
    without_a_key.pop(next(key for key in original_state if key.endswith(".bias")))
    with pytest.raises((KeyError, RuntimeError)):
        convert_and_load(demo, ported_model, without_a_key)


# --------------------------------------------------------------------------- (b) clean port


@pytest.mark.parametrize("demo", DEMOS)
def test_clean_port_matches_original(demo: str) -> None:
    original_output, ported_output = final_outputs(demo, bug=None)
    assert max_abs_diff(original_output, ported_output) <= 1e-5


@pytest.mark.parametrize("demo", DEMOS)
def test_clean_port_is_deterministic_across_seeds(demo: str) -> None:
    """tracetui reruns each model under another seed to spot nondeterminism; the clean demos have none."""
    _, first = final_outputs(demo, bug=None, seed=0)
    original_again, second = final_outputs(demo, bug=None, seed=12345)
    assert max_abs_diff(first, second) == 0.0
    assert max_abs_diff(final_outputs(demo, bug=None, seed=0)[0], original_again) == 0.0


# --------------------------------------------------------------------------- (c) planted bugs


@pytest.mark.parametrize(("demo", "bug"), BUG_CASES, ids=BUG_IDS)
def test_bug_changes_final_output(demo: str, bug: str) -> None:
    original_output, ported_output = final_outputs(demo, bug=bug)
    assert max_abs_diff(original_output, ported_output) > ATOL


@pytest.mark.parametrize("demo", DEMOS)
def test_unknown_bug_is_a_clear_error(demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ported = load_demo(demo, "ported")
    monkeypatch.setenv(BUG_ENV_VAR, "no_such_bug")
    with pytest.raises(ValueError, match="no_such_bug") as error:
        ported.build()
    for bug in ported.BUGS:
        assert bug in str(error.value)


@pytest.mark.parametrize(("demo", "bug"), BUG_CASES, ids=BUG_IDS)
def test_environment_variable_selects_bug(demo: str, bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUG_ENV_VAR, bug)
    model, _ = load_demo(demo, "ported").build()
    assert model.config.planted_bugs == {bug}


@pytest.mark.parametrize("demo", DEMOS)
def test_environment_variable_selects_several_bugs(demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ported = load_demo(demo, "ported")
    names = list(ported.BUGS)[-2:]
    monkeypatch.setenv(BUG_ENV_VAR, f" {names[0]} ,{names[1]},")
    model, _ = ported.build()
    assert model.config.planted_bugs == set(names)
    monkeypatch.setenv(BUG_ENV_VAR, f"{names[0]},no_such_bug")
    with pytest.raises(ValueError, match="no_such_bug") as error:
        ported.build()
    for bug in ported.BUGS:
        assert bug in str(error.value)


@pytest.mark.parametrize(("demo", "bug"), BUG_CASES, ids=BUG_IDS)
def test_map_pairs_each_bug_module(demo: str, bug: str) -> None:
    assert load_demo(demo, "ported").BUGS[bug] in paired_module_names(demo).values()


# ------------------------------------------------------------- (d) culprit rule, re-stated in plain torch
# A small re-statement of tracetui's rule, to check that each BUGS entry is where the rule
# points, independently of tracetui: pair calls by (renamed qualified name, occurrence), and
# the culprit is the earliest call, among those with no such call nested inside them, whose
# inputs agree within ATOL but whose outputs do not. Inputs are compared on the tensors both
# calls have (the port may pass extra keyword tensors such as an attention mask).


@dataclass
class ModuleCall:
    name: str
    order: int  # position in call-start order
    parent: int | None  # order of the enclosing module call
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor] = field(default_factory=list)


def record_module_calls(model: nn.Module, inputs: Any) -> list[ModuleCall]:
    calls: list[ModuleCall] = []
    open_calls: list[int] = []
    handles = []

    def snapshot(value: Any) -> list[torch.Tensor]:
        return [tensor.detach().clone() for tensor in tensor_leaves(value)]

    for name, module in model.named_modules():

        def before(module: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            parent = open_calls[-1] if open_calls else None
            calls.append(ModuleCall(name, len(calls), parent, snapshot((args, kwargs))))
            open_calls.append(len(calls) - 1)

        def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            calls[open_calls.pop()].outputs = snapshot(output)

        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        run_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def agree(first: list[torch.Tensor], second: list[torch.Tensor], common_prefix: bool) -> bool:
    if common_prefix:
        count = min(len(first), len(second))
        first, second = first[:count], second[:count]
    if len(first) != len(second):
        return False
    return all(a.shape == b.shape and (a.float() - b.float()).abs().max().item() <= ATOL for a, b in zip(first, second, strict=True))


def reference_culprit(demo: str, bug: str | None) -> tuple[str | None, float]:
    """(ported name of the culprit or None, max |output diff| at the culprit)."""
    torch.manual_seed(0)
    original_model, original_inputs = load_demo(demo, "original").build()
    torch.manual_seed(0)
    ported_model, ported_inputs = load_demo(demo, "ported").build(bug=bug or "")
    original_calls = record_module_calls(original_model, original_inputs)
    ported_calls = record_module_calls(ported_model, ported_inputs)

    renamed = rename_modules(demo, [name for name, _ in original_model.named_modules()])
    original_by_key: dict[tuple[str, int], ModuleCall] = {}
    seen: dict[str, int] = {}
    for call in original_calls:
        ported_name = renamed[call.name]
        original_by_key[ported_name, seen.get(ported_name, 0)] = call
        seen[ported_name] = seen.get(ported_name, 0) + 1

    suspects: dict[int, ModuleCall] = {}  # ported call order -> paired original call
    seen = {}
    for call in ported_calls:
        occurrence = seen.get(call.name, 0)
        seen[call.name] = occurrence + 1
        original_call = original_by_key.get((call.name, occurrence))
        if original_call is None:
            continue
        inputs_agree = agree(original_call.inputs, call.inputs, common_prefix=True)
        outputs_agree = agree(original_call.outputs, call.outputs, common_prefix=False)
        if inputs_agree and not outputs_agree:
            suspects[call.order] = original_call

    def has_suspect_inside(order: int) -> bool:
        return any(
            _is_nested(ported_calls, inner, order) for inner in suspects if inner != order
        )

    for order in sorted(suspects):
        if not has_suspect_inside(order):
            call = ported_calls[order]
            return call.name, max_abs_diff(suspects[order].outputs, call.outputs)
    return None, 0.0


def _is_nested(calls: list[ModuleCall], inner: int, outer: int) -> bool:
    parent = calls[inner].parent
    while parent is not None:
        if parent == outer:
            return True
        parent = calls[parent].parent
    return False


@pytest.mark.parametrize("demo", DEMOS)
def test_reference_rule_finds_no_culprit_in_clean_port(demo: str) -> None:
    assert reference_culprit(demo, bug=None) == (None, 0.0)


@pytest.mark.parametrize(("demo", "bug"), BUG_CASES, ids=BUG_IDS)
def test_reference_rule_blames_the_bugs_module(demo: str, bug: str) -> None:
    culprit, output_diff = reference_culprit(demo, bug)
    assert culprit == load_demo(demo, "ported").BUGS[bug]
    assert output_diff > 10 * ATOL, "a planted bug should be clearly above the tolerance"


# --------------------------------------------------------------------------- END-TO-END (real CLI)
# These run `python -m tracetui compare` as a subprocess from the repository root, so they
# need the tracetui package importable (installed, or in the working tree). Deselect them with
# `pytest -k "not cli_end_to_end"` when working on the demos alone.


def run_tracetui_compare(demo: str, bug: str | None, report_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ)
    env.pop(BUG_ENV_VAR, None)
    if bug:
        env[BUG_ENV_VAR] = bug
    source_dir = REPO_ROOT / "src"
    if source_dir.is_dir():  # a src/ layout that is not installed is still found
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source_dir), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "tracetui", "compare",
        f"demos/{demo}/original.py", f"demos/{demo}/ported.py",
        "--map", f"demos/{demo}/map.toml",
        "--no-tui", "--json", str(report_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert report_path.exists(), f"no JSON report\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    report = json.loads(report_path.read_text())
    assert report["schema"] == "tracetui.report/1"
    return result, report


@pytest.mark.parametrize("demo", DEMOS + FOREIGN_DEMOS)
def test_cli_end_to_end_clean_port_matches(demo: str, tmp_path: Path) -> None:
    result, report = run_tracetui_compare(demo, None, tmp_path / "report.json")
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, output
    assert report["verdict"] == "match", output
    assert report["first_divergence"] is None, output
    assert report["culprits"] == [], output


@pytest.mark.parametrize(("demo", "bug"), BUG_CASES, ids=BUG_IDS)
def test_cli_end_to_end_names_the_planted_bug(demo: str, bug: str, tmp_path: Path) -> None:
    result, report = run_tracetui_compare(demo, bug, tmp_path / "report.json")
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, output
    assert report["verdict"] == "diverged", output
    assert report["first_divergence"]["ported"] == load_demo(demo, "ported").BUGS[bug], output


@pytest.mark.parametrize(("demo", "bugs", "expected"), MULTI_BUG_CASES)
def test_cli_end_to_end_names_every_planted_bug(demo: str, bugs: str, expected: list[str], tmp_path: Path) -> None:
    result, report = run_tracetui_compare(demo, bugs, tmp_path / "report.json")
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, output
    assert report["verdict"] == "diverged", output
    assert [culprit["ported"] for culprit in report["culprits"]] == expected, output
    assert report["first_divergence"] == report["culprits"][0], output
    renamed = rename_modules(demo, [culprit["original"] for culprit in report["culprits"]])
    assert [renamed[culprit["original"]] for culprit in report["culprits"]] == expected, output


FOREIGN_MULTI_BUG_CASES = [
    pytest.param(
        demo,
        "norm_eps,kernel_not_transposed,attention_scale",
        ["model.layers.0.self_attn", "model.layers.1.self_attn.o_proj", "model.norm"],
        id=f"{demo}-three-bugs",
    )
    for demo in FOREIGN_DEMOS
]


@pytest.mark.parametrize(("demo", "bugs", "expected"), FOREIGN_MULTI_BUG_CASES)
def test_cli_end_to_end_names_every_planted_bug_of_a_foreign_original(demo: str, bugs: str, expected: list[str], tmp_path: Path) -> None:
    result, report = run_tracetui_compare(demo, bugs, tmp_path / "report.json")
    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 1, output
    assert [culprit["ported"] for culprit in report["culprits"]] == expected, output
    ported = load_demo(demo, "ported")
    assert set(expected) == {ported.BUGS[bug] for bug in bugs.split(",")}

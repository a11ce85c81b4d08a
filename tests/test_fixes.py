"""Fix suggestions (issue 18): the usual porting mistakes tried on each culprit alone.

Each planted bug whose mistake is in the library gets the right patch as its first suggestion;
a bug that is not in the library gets "no known fix found", never a false fix; a clean port
gets nothing; every patch is undone.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import torch
from planted import read_bugs
from rich.console import Console
from torch import nn

import tracetui
from tracetui.api import load_source
from tracetui.classify import Tolerance
from tracetui.cli import main
from tracetui.fixes.library import Culprit
from tracetui.fixes.patches import Patch, replace_values
from tracetui.fixes.search import try_patch
from tracetui.json_report import report_document
from tracetui.options import RunOptions
from tracetui.report import print_report
from tracetui.rows import Row
from tracetui.script import ModelScript, load_script

ROOT = Path(__file__).resolve().parent.parent
PAIRS = {
    "gpt": (ROOT / "demos" / "gpt", "TRACETUI_DEMO_BUG"),
    "bert": (ROOT / "demos" / "bert", "TRACETUI_DEMO_BUG"),
    "llama2c": (ROOT / "tests" / "ports" / "llama2c", "TRACETUI_PORT_BUG"),
    "nanogpt": (ROOT / "tests" / "ports" / "nanogpt", "TRACETUI_PORT_BUG"),
}

# (pair, planted bug) → the first suggestion for the culprit BUGS names: (kind, detail).
FIRST_SUGGESTION = {
    ("gpt", "activation"): ("activation", "gelu_tanh"),  # the original's nn.GELU(approximate="tanh")
    ("gpt", "norm_eps"): ("eps", "1e-05"),
    ("gpt", "unconverted_weight"): ("weight", "model.layers.1.self_attn.o_proj.weight <- transformer.h.1.attn.c_proj.weight"),
    ("gpt", "attention_scale"): ("scale", "0.25"),
    ("gpt", "missing_residual"): ("residual", "input of model.layers.2.post_attention_layernorm"),
    ("bert", "norm_eps"): ("eps", "1e-12"),
    ("bert", "swapped_qk"): ("swap", "encoder.blocks.2.attn.q <-> encoder.blocks.2.attn.k"),
    ("bert", "pooler_activation"): ("activation", "tanh"),
    ("llama2c", "rms_norm_eps_wrong"): ("eps", "1e-05"),
    ("llama2c", "gate_up_swapped_layer1"): ("swap", "model.layers.1.mlp.gate_proj <-> model.layers.1.mlp.up_proj"),
    ("llama2c", "qk_not_permuted"): ("rope_permutation", "interleaved → half-split"),
    ("llama2c", "lm_head_unconverted"): ("weight", "lm_head.weight <- output.weight"),
    ("llama2c", "k_permuted_with_n_heads"): ("rope_permutation", "k_proj permuted with 4 heads, not 2"),
    ("nanogpt", "layer_norm_epsilon_wrong"): ("eps", "1e-05"),
    ("nanogpt", "attn_c_proj_not_transposed"): ("layout", "transformer.h.0.attn.c_proj.weight transposed"),
    ("nanogpt", "qk_swapped_layer1"): ("swap", "transformer.h.1.attn.c_attn q <-> k"),
    ("nanogpt", "attn_c_proj_bias_missing_layer2"): ("weight", "transformer.h.2.attn.c_proj.bias <- transformer.h.2.attn.c_proj.bias"),
    ("nanogpt", "lm_head_untied_unconverted"): ("weight", "lm_head.weight <- lm_head.weight"),
}
# Mistakes the library does not know: the culprit must get no fix.
NOT_IN_LIBRARY = [("llama2c", "rope_theta_wrong"), ("nanogpt", "n_head_wrong")]


@functools.cache
def compared(pair: str, bug: str) -> tracetui.Comparison:
    """One comparison per planted bug, shared by the tests that read it."""
    folder, variable = PAIRS[pair]
    previous = os.environ.get(variable)
    os.environ[variable] = bug
    try:
        return tracetui.compare(str(folder / "original.py"), str(folder / "ported.py"), rename_map=str(folder / "map.toml"), rerun=False)
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous


def planted_culprit(pair: str, bug: str) -> tuple[tracetui.Comparison, Row]:
    comparison = compared(pair, bug)
    module = read_bugs(PAIRS[pair][0] / "ported.py")[bug]
    culprit = next((row for row in comparison.culprits if row.ported_name == module), None)
    assert culprit is not None, f"{module} is not among the culprits {[row.ported_name for row in comparison.culprits]}"
    return comparison, culprit


def needs_transformers(pair: str) -> None:
    if pair in ("llama2c", "nanogpt"):
        pytest.importorskip("transformers")


@pytest.mark.parametrize(("pair", "bug"), list(FIRST_SUGGESTION), ids=[f"{pair}-{bug}" for pair, bug in FIRST_SUGGESTION])
def test_planted_bug_gets_its_fix_first(pair: str, bug: str) -> None:
    needs_transformers(pair)
    comparison, culprit = planted_culprit(pair, bug)
    search = comparison.fixes[culprit.index]
    fixes = search.fixes(comparison.tolerance)
    assert fixes, search.summary(comparison.tolerance)
    assert (fixes[0].kind, fixes[0].detail) == FIRST_SUGGESTION[(pair, bug)], [(fix.kind, fix.detail) for fix in fixes]
    assert fixes[0].max_abs_after <= comparison.tolerance.atol
    assert search.summary(comparison.tolerance).startswith(f"fix: {fixes[0].patch} makes it match on the recorded inputs")


@pytest.mark.parametrize(("pair", "bug"), NOT_IN_LIBRARY, ids=[f"{pair}-{bug}" for pair, bug in NOT_IN_LIBRARY])
def test_a_mistake_not_in_the_library_gets_no_false_fix(pair: str, bug: str) -> None:
    needs_transformers(pair)
    comparison, culprit = planted_culprit(pair, bug)
    for row in comparison.culprits:
        search = comparison.fixes[row.index]
        assert search.fixes(comparison.tolerance) == [], search.summary(comparison.tolerance)
        assert search.summary(comparison.tolerance).startswith("no known fix found")
    entry = report_document(comparison)["culprits"][0]
    assert all(not fix["within_tolerance"] for fix in entry["fixes"])


def test_clean_port_gets_no_fixes() -> None:
    comparison = compared("gpt", "")
    assert comparison.verdict == "match" and comparison.fixes == {}
    assert report_document(comparison)["culprits"] == []


def test_json_culprit_entries_list_the_fixes_best_first() -> None:
    comparison = compared("gpt", "activation")
    document = json.loads(json.dumps(report_document(comparison)))
    entry = document["culprits"][0]
    assert entry == document["first_divergence"]
    assert set(entry["fixes"][0]) == {"kind", "detail", "patch", "max_abs_diff_after", "within_tolerance"}
    assert entry["fixes"][0] == {
        "kind": "activation",
        "detail": "gelu_tanh",
        "patch": "replacing SiLU by GELU (tanh approximation) in model.layers.1.mlp.act_fn",
        "max_abs_diff_after": 0.0,
        "within_tolerance": True,
    }
    assert entry["fix_search"]["tried"] >= 1 and entry["fix_search"]["max_abs_diff_before"] > 0.1
    assert all(row.get("fixes") is None for row in document["rows"])  # rows keep their shape


def test_headless_report_says_the_fix_under_the_culprit() -> None:
    console = Console(record=True, width=400)
    print_report(compared("gpt", "activation"), console)
    text = console.export_text()
    assert (
        "  fix: replacing SiLU by GELU (tanh approximation) in model.layers.1.mlp.act_fn makes it match on the recorded inputs (max |Δ| 0)"
        in text
    )
    console = Console(record=True, width=400)
    pytest.importorskip("transformers")
    print_report(compared("llama2c", "rope_theta_wrong"), console)
    assert "  no known fix found" in console.export_text()


def test_fixes_survive_another_tolerance() -> None:
    comparison = compared("gpt", "norm_eps")
    looser = comparison.with_tolerance(Tolerance(atol=1e-2))
    assert looser.fixes is comparison.fixes
    culprit = looser.culprits[0]
    assert looser.fixes[culprit.index].fixes(looser.tolerance)[0].detail == "1e-05"


def test_no_fixes_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = PAIRS["gpt"][0]
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "activation")
    report = tmp_path / "report.json"
    arguments = [str(folder / "original.py"), str(folder / "ported.py"), "--map", str(folder / "map.toml")]
    status = main(["compare", *arguments, "--no-tui", "--no-rerun", "--no-fixes", "--json", str(report)])
    entry = json.loads(report.read_text())["culprits"][0]
    assert status == 1 and entry["fixes"] == [] and entry["fix_search"] is None


def test_a_port_given_as_a_trace_gets_no_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = PAIRS["gpt"][0]
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "activation")
    trace = tracetui.record(str(folder / "ported.py"), rerun=False)
    comparison = tracetui.compare(str(folder / "original.py"), trace, rename_map=str(folder / "map.toml"), rerun=False)
    assert comparison.culprit is not None and comparison.fixes == {}


def test_a_streamed_comparison_tries_what_needs_no_original_model(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = PAIRS["gpt"][0]
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "activation,unconverted_weight")
    comparison = tracetui.compare(
        str(folder / "original.py"), str(folder / "ported.py"), rename_map=str(folder / "map.toml"), rerun=False, stream=True
    )
    summaries = {row.ported_name: comparison.fixes[row.index].summary(comparison.tolerance) for row in comparison.culprits}
    assert summaries["model.layers.1.mlp.act_fn"].startswith("fix: replacing SiLU by GELU (tanh approximation)")
    # The original's weights went with its model: an unconverted weight has no known fix then.
    assert summaries["model.layers.1.self_attn.o_proj"].startswith("no known fix found")


class Block(nn.Module):
    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.act = activation

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.act(self.fc(self.norm(hidden_states)))


def test_the_search_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    original, ported = Block(nn.GELU()), Block(nn.ReLU())
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(2, 3, 8)
    before_state = {name: tensor.clone() for name, tensor in ported.state_dict().items()}
    with torch.no_grad():
        before_output = ported(inputs)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    search = comparison.fixes[comparison.culprits[0].index]
    assert search.fixes(comparison.tolerance)[0].detail == "gelu"
    for name, tensor in ported.state_dict().items():
        assert torch.equal(tensor, before_state[name]), name
    for module in ported.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and "forward" not in module.__dict__
    with torch.no_grad():
        assert torch.equal(ported(inputs), before_output)


def test_a_patch_that_makes_the_call_raise_is_no_fix_and_is_undone() -> None:
    torch.manual_seed(0)
    original, ported = Block(nn.GELU()), Block(nn.SiLU())
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(2, 3, 8)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False, fixes=False)
    assert comparison.fixes == {}
    root = next(row for row in comparison.rows if row.ported_name == "")
    weight = ported.fc.weight
    kept = weight.detach().clone()
    breaking = Patch("weight", "wrong shape", "a weight of the wrong shape", lambda: replace_values(weight, torch.ones(3)))
    script = load_source((ported, inputs), RunOptions(rerun=False))
    attempt = try_patch(breaking, Culprit("", ported, ported), root, ((inputs,), {}), script, comparison.tolerance)  # type: ignore[arg-type]
    assert attempt is None
    assert weight.shape == (8, 8) and torch.equal(weight.detach(), kept)


def test_the_detail_pane_lists_the_fixes() -> None:
    from tracetui.tui.row_detail import row_fixes
    from tracetui.tui.tensor_detail import Palette

    comparison = compared("gpt", "activation")
    text = row_fixes(comparison, comparison.culprits[0], Palette())
    assert text is not None
    assert text.plain.startswith("fixes that make it match on the recorded inputs")
    assert "replacing SiLU by GELU (tanh approximation) in model.layers.1.mlp.act_fn  max |Δ| 0" in text.plain
    assert row_fixes(comparison, comparison.rows[0], Palette()) is None  # not a culprit: no search


def test_the_debugger_context_lists_the_fixes() -> None:
    from tracetui.debugger.context import DebugContext

    comparison = compared("gpt", "norm_eps")
    context = DebugContext(comparison, comparison.culprits[0], "ported", PAIRS["gpt"][0] / "ported.py")
    shown = repr(context.fixes)
    assert shown.startswith("fix: setting model.norm.eps to 1e-05 (was 0.1) makes it match on the recorded inputs")
    assert "\n  eps: setting model.norm.eps to 1e-05 (was 0.1) (max |Δ| 0)" in shown
    elsewhere = DebugContext(comparison, comparison.rows[1], "ported", PAIRS["gpt"][0] / "ported.py")
    assert repr(elsewhere.fixes).startswith("no fix search ran")


def built_port(pair: str, bug: str) -> ModelScript:
    """A fresh build of the port with the bug planted, as a debugging run builds it."""
    folder, variable = PAIRS[pair]
    previous = os.environ.get(variable)
    os.environ[variable] = bug
    try:
        return load_script(folder / "ported.py")
    finally:
        if previous is None:
            del os.environ[variable]
        else:
            os.environ[variable] = previous


def final_difference(comparison: tracetui.Comparison, script: ModelScript) -> float:
    """How far the port's final output, run now, is from the original's recorded one."""
    recorded = comparison.rows[0].original
    assert recorded is not None and recorded.outputs[0].tensor is not None
    logits = script.run()["logits"]  # the port returns a ModelOutput; the original, the logits
    return float((logits - recorded.outputs[0].tensor).abs().max())


@pytest.mark.parametrize("bug", ["activation", "norm_eps"])
def test_ctx_try_fix_applies_a_fix_to_the_debugging_run_and_undo_takes_it_back(bug: str) -> None:
    from tracetui.debugger.context import DebugContext

    comparison, culprit = planted_culprit("gpt", bug)
    script = built_port("gpt", bug)
    context = DebugContext(comparison, culprit, "ported", Path(script.label), model=script.model)
    assert final_difference(comparison, script) > 1e-2  # the planted bug
    applied = repr(context.try_fix(0))
    assert applied.startswith("applied: ") and "ctx.undo_fixes()" in applied
    assert final_difference(comparison, script) < 1e-5  # the port's only bug, fixed for this run
    assert repr(context.undo_fixes()).startswith("undone: ")
    assert final_difference(comparison, script) > 1e-2


def test_ctx_try_fix_says_what_it_cannot_do() -> None:
    from tracetui.debugger.context import DebugContext

    comparison, culprit = planted_culprit("gpt", "unconverted_weight")
    script = built_port("gpt", "unconverted_weight")
    context = DebugContext(comparison, culprit, "ported", Path(script.label), model=script.model)
    with pytest.raises(ValueError, match="takes values from the original model"):
        context.try_fix(0)  # the original's weight: not loaded in a debugging run
    with pytest.raises(IndexError, match="pick 0 to"):
        context.try_fix(99)
    on_the_original = DebugContext(comparison, culprit, "original", Path(script.label), model=script.model)
    with pytest.raises(ValueError, match="debug the ported side"):
        on_the_original.try_fix(0)

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
from typing import Any

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
    # q's rows sliced out of the fused c_attn at k's offset: the weights check finds where they came from
    ("gpt", "q_sliced_wrong"): ("weight", "model.layers.3.self_attn.q_proj.weight <- transformer.h.3.attn.c_attn.weight[0:64] (rows)"),
    ("bert", "norm_eps"): ("eps", "1e-12"),
    ("bert", "swapped_qk"): ("swap", "encoder.blocks.2.attn.q <-> encoder.blocks.2.attn.k"),
    ("bert", "pooler_activation"): ("activation", "tanh"),
    # dropout_p given to scaled_dot_product_attention whatever the mode (a culprit without the rerun)
    ("bert", "dropout"): ("dropout", "functional dropout off"),
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
    ("nanogpt", "n_head_wrong"): ("heads", "transformer.h.0.attn.num_heads = 4"),  # the original's n_head
}
# Mistakes the library does not know: the culprit must get no fix.
NOT_IN_LIBRARY = [("llama2c", "rope_theta_wrong")]


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


@pytest.mark.parametrize("mode", ["trace", "spill", "stream"])
def test_without_the_original_model_the_kinds_that_need_its_recording_still_work(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORIG given as a trace, --spill and --stream let the original model go: activation, eps, ...
    work from its recorded inputs and outputs; weight and heads are not tried, and the report says so."""
    folder = PAIRS["gpt"][0]
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "activation,norm_eps,q_sliced_wrong")
    original: str | tracetui.Trace = str(folder / "original.py")
    options: dict[str, Any] = {"stream": True} if mode == "stream" else {"spill": tmp_path / "spill"} if mode == "spill" else {}
    if mode == "trace":
        original = tracetui.record(str(folder / "original.py"), rerun=False)
    comparison = tracetui.compare(original, str(folder / "ported.py"), rename_map=str(folder / "map.toml"), rerun=False, **options)
    summaries = {row.ported_name: comparison.fixes[row.index].summary(comparison.tolerance) for row in comparison.culprits}
    assert summaries["model.layers.1.mlp.act_fn"].startswith("fix: replacing SiLU by GELU (tanh approximation)")
    assert summaries["model.norm"].startswith("fix: setting model.norm.eps to 1e-05 (was 0.1)")
    # The original's weights went with its model: q sliced at the wrong offset has no known fix then.
    assert summaries["model.layers.3.self_attn"].startswith("no known fix found")
    why = {"trace": "ORIG was given as a trace", "spill": "--spill let it go once recorded", "stream": "--stream let it go once recorded"}
    reason = f"the original model is not at hand: {why[mode]}"
    entry = next(entry for entry in report_document(comparison)["culprits"] if entry["ported"] == "model.layers.3.self_attn")
    assert entry["fix_search"]["skipped"] == [{"kind": "heads", "reason": reason}, {"kind": "weight", "reason": reason}]
    console = Console(record=True, width=400)
    print_report(comparison, console)
    assert f"    not tried: heads, weight ({reason})" in console.export_text()


def test_with_the_original_model_nothing_is_skipped() -> None:
    comparison, culprit = planted_culprit("gpt", "q_sliced_wrong")
    assert comparison.fixes[culprit.index].skipped == ()
    assert report_document(comparison)["culprits"][0]["fix_search"]["skipped"] == []


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


# -- the kinds added for the weights check, channels layouts, dropout: small models of the usual shapes --


class SeparateAttention(nn.Module):
    """Causal self-attention with separate q, k, v projections (two heads of 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.out = nn.Linear(8, 8)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(attend(self.q(hidden), self.k(hidden), self.v(hidden)))


class FusedAttention(nn.Module):
    """The same attention with one fused qkv projection, as a port might write it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.out = nn.Linear(8, 8)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(hidden).split(8, dim=-1)
        return self.out(attend(query, key, value))


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    batch, length, _ = query.shape
    query, key, value = (tensor.view(batch, length, 2, 4).transpose(1, 2) for tensor in (query, key, value))
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True)
    return output.transpose(1, 2).reshape(batch, length, 8)


class Attending(nn.Module):
    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.attn = attention

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.attn(self.norm(hidden))


def test_a_fused_projection_assembled_in_the_wrong_order_gets_the_original_order_back() -> None:
    """Separate q, k, v on the original side, fused on the port in the order k, v, q (weight and
    bias alike): no two-block swap undoes that; the weights check finds the blocks and the
    weight fix puts them back in the order that matches."""
    torch.manual_seed(0)
    separate, fused = SeparateAttention(), FusedAttention()
    original, ported = Attending(separate), Attending(fused)
    with torch.no_grad():
        ported.norm.load_state_dict(original.norm.state_dict())
        fused.out.load_state_dict(separate.out.state_dict())
        fused.qkv.weight.copy_(torch.cat([separate.k.weight, separate.v.weight, separate.q.weight]))
        fused.qkv.bias.copy_(torch.cat([separate.k.bias, separate.v.bias, separate.q.bias]))
    inputs = torch.randn(2, 5, 8)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    culprit = comparison.culprits[0]
    assert culprit.ported_name == "attn"
    fixes = comparison.fixes[culprit.index].fixes(comparison.tolerance)
    assert fixes, comparison.fixes[culprit.index].summary(comparison.tolerance)
    assert (fixes[0].kind, fixes[0].detail) == (
        "weight",
        "attn.qkv.weight <- cat(attn.q.weight, attn.k.weight, attn.v.weight), attn.qkv.bias <- cat(attn.q.bias, attn.k.bias, attn.v.bias)",
    )


class Norm2d(nn.Module):
    """A LayerNorm over the channels of an NCHW tensor; the port's forgets to move them last."""

    def __init__(self, channels: int, moves_channels_last: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.moves_channels_last = moves_channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.moves_channels_last:
            return self.norm(images.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.norm(images)  # normalises over the width: as wide as the channels, so it runs


class ConvNet(nn.Module):
    def __init__(self, moves_channels_last: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = Norm2d(8, moves_channels_last)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.conv(images)))


def test_a_norm_run_on_channels_first_where_it_expects_channels_last_gets_the_layout_fix() -> None:
    torch.manual_seed(0)
    original, ported = ConvNet(moves_channels_last=True), ConvNet(moves_channels_last=False)
    ported.load_state_dict(original.state_dict())
    images = torch.randn(2, 3, 8, 8)
    comparison = tracetui.compare((original, images), (ported, images.clone()), rerun=False)
    culprit = comparison.culprits[0]
    assert culprit.ported_name == "norm"
    fixes = comparison.fixes[culprit.index].fixes(comparison.tolerance)
    assert [(fix.kind, fix.detail) for fix in fixes[:1]] == [("layout", "input channels-first → channels-last, output back")]
    assert fixes[0].patch == (
        "running norm on its input permuted from channels-first to channels-last, and its output permuted back (it expects channels-last)"
    )


class ChannelsLastConv(nn.Module):
    """A conv block that hands its output on channels-last (the port's next layer wants it so)."""

    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(images))
        return features.permute(0, 2, 3, 1) if self.channels_last else features


class Classifier(nn.Module):
    def __init__(self, channels_last: bool) -> None:
        super().__init__()
        self.block = ChannelsLastConv(channels_last)
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.block(images)
        return features.mean(dim=(1, 2)) if self.channels_last else features.mean(dim=(2, 3))


def test_a_conv_returning_channels_last_gets_its_output_permuted() -> None:
    torch.manual_seed(0)
    original, ported = Classifier(channels_last=False), Classifier(channels_last=True)
    ported.load_state_dict(original.state_dict())
    images = torch.randn(2, 3, 6, 5)
    comparison = tracetui.compare((original, images), (ported, images.clone()), rerun=False)
    culprit = next(row for row in comparison.culprits if row.ported_name == "block")
    fixes = comparison.fixes[culprit.index].fixes(comparison.tolerance)
    assert [(fix.kind, fix.detail) for fix in fixes[:1]] == [("layout", "output channels-last → channels-first")]


class Feedforward(nn.Module):
    def __init__(self, dropout_always_on: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.dropout_always_on = dropout_always_on

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        # The port copied the training code's call, training=True and all.
        return torch.nn.functional.dropout(self.fc(hidden), p=0.1, training=self.dropout_always_on or self.training)


class FeedforwardNet(nn.Module):
    def __init__(self, dropout_always_on: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.mlp = Feedforward(dropout_always_on)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.mlp(self.norm(hidden))


def test_a_dropout_left_on_gets_the_dropout_fix() -> None:
    """Without the second run (``rerun=False``) a dropout left on is a culprit like any other; the
    fix search names it. (With the rerun it shows as nondeterministic instead, and is not searched.)"""
    dropout = torch.nn.functional.dropout
    torch.manual_seed(0)
    original, ported = FeedforwardNet(dropout_always_on=False), FeedforwardNet(dropout_always_on=True)
    ported.load_state_dict(original.state_dict())
    hidden = torch.randn(2, 5, 8)
    comparison = tracetui.compare((original, hidden), (ported, hidden.clone()), rerun=False)
    culprit = comparison.culprits[0]
    assert culprit.ported_name == "mlp"
    fixes = comparison.fixes[culprit.index].fixes(comparison.tolerance)
    assert [(fix.kind, fix.detail) for fix in fixes[:1]] == [("dropout", "functional dropout off")]
    assert torch.nn.functional.dropout is dropout  # the patch is undone

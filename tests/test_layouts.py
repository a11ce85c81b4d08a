"""Layouts that differ across frameworks: tensors compared, paired and fed in the port's layout.

The original here is a PyTorch GPT written the way a Flax one is (tests/flax_named_gpt.py: names
such as ``h_0.attn.query``, q/k/v as (batch, seq, heads, head_dim)), its port the demo GPT
(demos/gpt/ported.py, q/k/v as (batch, seq, hidden)); and small channels-last/first conv pairs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flax_named_gpt import build_pair
from torch import nn

import tracetui
from tracetui.cli import main
from tracetui.errors import UsageError
from tracetui.json_report import report_document
from tracetui.layouts import candidate_layouts
from tracetui.pairing.rename_map import load_rename_map


def descriptions(original: tuple[int, ...], ported: tuple[int, ...]) -> list[str]:
    return [layout.description for layout in candidate_layouts(original, ported)]


def test_the_transform_that_maps_the_original_shape_onto_the_port_is_found() -> None:
    assert descriptions((2, 7, 4, 16), (2, 7, 64)) == ["reshape (2, 7, 4, 16) → (2, 7, 64)"]
    assert descriptions((2, 7, 64), (2, 7, 4, 16)) == ["reshape (2, 7, 64) → (2, 7, 4, 16)"]
    assert descriptions((2, 8, 8, 3), (2, 3, 8, 8)) == ["permute [0, 3, 1, 2]"]  # NHWC → NCHW
    assert descriptions((2, 3, 8, 8), (2, 8, 8, 3)) == ["permute [0, 2, 3, 1]"]  # NCHW → NHWC
    assert descriptions((2, 16, 5), (2, 5, 16)) == ["permute [0, 2, 1]"]  # NLC → NCL
    assert descriptions((2, 7, 4, 16), (2, 4, 7, 16)) == ["permute [0, 2, 1, 3]"]  # heads before sequence
    assert descriptions((2, 8, 8, 3), (2, 3, 64)) == []  # no split or merge of the trailing dimensions
    assert descriptions((2, 3, 4), (2, 12)) == []  # a flatten after the batch is a shape change, not a layout
    assert descriptions((2, 7, 8, 8), (2, 8, 7, 8)) == ["permute [0, 3, 1, 2]", "permute [0, 2, 1, 3]"]  # ambiguous


def row_by_original(comparison: tracetui.Comparison, name: str):  # noqa: ANN201
    return next(row for row in comparison.rows if row.original_name == name)


def test_flax_layout_attention_projections_are_compared_after_a_reshape_with_no_map() -> None:
    original, ported = build_pair("")
    comparison = tracetui.compare(original, ported, fixes=False)
    assert comparison.verdict == "match"
    query = row_by_original(comparison, "h_1.attn.query")
    assert query.ported_name == "model.layers.1.self_attn.q_proj" and query.pairing.method == "inferred"
    assert query.layout == "reshape (1, 12, 4, 16) → (1, 12, 64)"
    out = row_by_original(comparison, "h_1.attn.out")
    assert out.ported_name == "model.layers.1.self_attn.o_proj" and out.layout == "reshape (1, 12, 4, 16) → (1, 12, 64)"
    rows = {entry["original"]: entry for entry in report_document(comparison)["rows"]}
    assert rows["h_0.attn.key"]["layout"] == "reshape (1, 12, 4, 16) → (1, 12, 64)"
    assert rows["h_0.ln_1"]["layout"] is None and rows["h_0.ln_1"]["layout_ambiguity"] is None
    # Kinds across frameworks: Embed ↔ Embedding, Dense ↔ Linear, the Flax layers ↔ the port's.
    assert row_by_original(comparison, "wte").ported_name == "model.embed_tokens"
    assert row_by_original(comparison, "h_2.mlp.c_fc").ported_name == "model.layers.2.mlp.fc_in"
    assert row_by_original(comparison, "h_3").ported_name == "model.layers.3"


@pytest.mark.parametrize(
    ("bug", "culprit"),
    [
        ("unconverted_weight", ("h_1.attn.out", "model.layers.1.self_attn.o_proj")),  # fed a reshaped input
        ("q_sliced_wrong", ("h_3.attn.query", "model.layers.3.self_attn.q_proj")),  # its output reshaped
        ("norm_eps", ("ln_f", "model.norm")),  # downstream of every reshaped projection
    ],
)
def test_a_bug_next_to_a_reshaped_projection_names_its_culprit(bug: str, culprit: tuple[str, str]) -> None:
    original, ported = build_pair(bug)
    comparison = tracetui.compare(original, ported, fixes=False)
    assert [(row.original_name, row.ported_name) for row in comparison.culprits] == [culprit]
    # The fed run gave each output projection the original's (batch, seq, heads, head_dim) input
    # reshaped to the port's (batch, seq, hidden): every one was judged on its own.
    for layer in range(4):
        out = row_by_original(comparison, f"h_{layer}.attn.out")
        assert out.isolated is not None and out.isolated.not_judged == []
        assert out.isolated_max_abs is not None
        expected_wrong = (f"h_{layer}.attn.out", out.ported_name) == culprit
        assert (out.isolated_max_abs > 1e-3) == expected_wrong


class Conv(nn.Module):
    """Flax's Conv: NHWC in and out, kernel (kh, kw, in, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.kernel = nn.Parameter(weight.permute(2, 3, 1, 0).clone())
        self.bias = nn.Parameter(bias.clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = nn.functional.conv2d(inputs.permute(0, 3, 1, 2), self.kernel.permute(3, 2, 0, 1), self.bias, padding=1)
        return output.permute(0, 2, 3, 1)


class FlaxStyleCnn(nn.Module):
    def __init__(self, port: PortCnn) -> None:
        super().__init__()
        self.Conv_0 = Conv(port.conv1.weight.detach(), port.conv1.bias.detach())
        self.Conv_1 = Conv(port.conv2.weight.detach(), port.conv2.bias.detach())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.Conv_1(torch.relu(self.Conv_0(images)))


class PortCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(images)))


def cnn_pair(bias_bug: bool) -> tuple[tuple[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    port = PortCnn().eval()
    original = FlaxStyleCnn(port).eval()
    if bias_bug:
        with torch.no_grad():
            port.conv2.bias[1] += 0.5
    images = torch.randn(2, 6, 7, 3)  # NHWC: height 6, width 7, 3 channels (a width equal to a channel count is ambiguous)
    return (original, images), (port, images.permute(0, 3, 1, 2).contiguous())


def test_channels_last_activations_are_compared_permuted_and_the_bugged_conv_is_named() -> None:
    original, ported = cnn_pair(bias_bug=False)
    clean = tracetui.compare(original, ported, fixes=False)
    assert clean.verdict == "match"
    assert row_by_original(clean, "Conv_0").ported_name == "conv1"
    assert row_by_original(clean, "Conv_1").layout == "permute [0, 3, 1, 2]"
    original, ported = cnn_pair(bias_bug=True)
    bugged = tracetui.compare(original, ported, fixes=False)
    assert [(row.original_name, row.ported_name) for row in bugged.culprits] == [("Conv_1", "conv2")]
    culprit = bugged.culprits[0]
    assert culprit.isolated is not None and culprit.isolated.not_judged == []  # fed the permuted input


class HeadsOut(nn.Module):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.reshape(2, 7, 8, 8)


class HeadsFirstOut(nn.Module):
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden.reshape(2, 7, 8, 8).transpose(1, 2)


class Wrapper(nn.Module):
    def __init__(self, projection: nn.Module) -> None:
        super().__init__()
        self.proj = projection

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden) * 2


def test_an_ambiguous_layout_is_not_applied_and_a_map_rule_states_it(tmp_path: Path) -> None:
    hidden = torch.randn(2, 7, 64)
    original, ported = (Wrapper(HeadsOut()), hidden), (Wrapper(HeadsFirstOut()), hidden)
    ambiguous = tracetui.compare(original, ported, fixes=False)
    proj = row_by_original(ambiguous, "proj")
    assert ambiguous.status(proj) == "shape_mismatch" and proj.layout is None
    assert proj.layout_ambiguity is not None
    assert "permute [0, 3, 1, 2], permute [0, 2, 1, 3]" in proj.layout_ambiguity
    assert "[[layout]] original = '^proj$' permute = [0, 3, 1, 2]" in proj.layout_ambiguity
    assert "several layouts fit" in ambiguous.reason_for(ambiguous.culprits[0])

    stated = tmp_path / "map.toml"
    stated.write_text(
        '[[layout]]\noriginal = "^(proj)?$"  # the projection and the root, which returns its output\npermute = [0, 2, 1, 3]\n'
    )
    resolved = tracetui.compare(original, ported, rename_map=str(stated), fixes=False)
    assert resolved.verdict == "match" and row_by_original(resolved, "proj").layout == "permute [0, 2, 1, 3]"
    stated.write_text('rename = []\n[[layout]]\noriginal = "^(proj)?$"\npermute = [0, 3, 1, 2]\n')  # the wrong one: values differ
    wrong = tracetui.compare(original, ported, rename_map=str(stated), fixes=False)
    assert wrong.status(row_by_original(wrong, "proj")) == "diverged"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[layout]]\npermute = [0, 2, 1]\n", "layout rule 1 needs `original`"),
        ('[[layout]]\noriginal = "x"\n', "exactly one of `permute`"),
        ('[[layout]]\noriginal = "x"\npermute = [0, 2, 2]\n', "not an order of dimensions"),
        ('[[layout]]\noriginal = "x"\nreshape = [2, -1, -1]\n', "at most one -1"),
        ('[[layout]]\noriginal = "("\npermute = [0, 1]\n', "invalid regex"),
        ('[[layout]]\noriginal = "x"\npermute = [1, 0]\nmode = "nhwc"\n', "unknown key(s) mode"),
        ('layout = "nhwc"\n', "[[layout]] tables"),
    ],
)
def test_a_bad_layout_rule_names_the_file_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "map.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as error:
        load_rename_map(path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_rename_rules_keep_working_beside_layout_rules(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text("rename = [['^h_(\\d+)', 'model.layers.\\1']]\n[[layout]]\noriginal = 'attn'\nreshape = [1, 12, -1]\n")
    rename_map = load_rename_map(path)
    assert rename_map.apply("h_3.attn") == "model.layers.3.attn"
    assert len(rename_map.layouts) == 1 and rename_map.layouts[0].reshape == (1, 12, -1)


def test_the_json_report_of_the_command_carries_the_layout(tmp_path: Path) -> None:
    scripts = {}
    for side in ("original", "ported"):
        scripts[side] = tmp_path / f"{side}.py"
        scripts[side].write_text(
            "import sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from flax_named_gpt import build_pair\n"
            f"def build():\n    return build_pair('')[{0 if side == 'original' else 1}]\n"
        )
    report = tmp_path / "report.json"
    status = main(["compare", str(scripts["original"]), str(scripts["ported"]), "--no-tui", "--no-rerun", "--json", str(report)])
    assert status == 0
    rows = {entry["original"]: entry for entry in json.loads(report.read_text())["rows"]}
    assert rows["h_2.attn.value"]["layout"] == "reshape (1, 12, 4, 16) → (1, 12, 64)"


def test_align_generalises_flax_layer_names_and_its_map_reproduces_the_pairing(tmp_path: Path) -> None:
    from tracetui.pairing.alignment import align
    from tracetui.pairing.map_writer import rename_rules, write_rename_map

    original, ported = build_pair("")
    original_trace = tracetui.record(original, rerun=False)
    ported_trace = tracetui.record(ported, rerun=False)
    alignment = align(original_trace, ported_trace)
    rules = [(rule.pattern, rule.replacement) for rule in rename_rules(alignment)]
    assert ("^h_(\\d+)\\.attn\\.query$", "model.layers.\\1.self_attn.q_proj") in rules
    assert ("^h_(\\d+)\\.ln_1$", "model.layers.\\1.input_layernorm") in rules  # ln_1 is a module, not a layer index
    written = write_rename_map(alignment, tmp_path / "map.toml")
    mapped = align(original_trace, ported_trace, load_rename_map(written), infer=False)
    assert {(pair.original, pair.ported) for pair in mapped.paired()} == {(pair.original, pair.ported) for pair in alignment.paired()}


def test_the_detail_pane_shows_the_layout_and_the_original_values_in_the_port_layout() -> None:
    from tracetui.tui.detail import render_to_strips
    from tracetui.tui.row_detail import describe_row
    from tracetui.tui.tensor_detail import Palette

    original, ported = build_pair("q_sliced_wrong")
    comparison = tracetui.compare(original, ported, fixes=False)
    query = row_by_original(comparison, "h_3.attn.query")
    strips = render_to_strips(describe_row(comparison, query, 160, Palette()), 160)  # type: ignore[arg-type]
    text = "\n".join(strip.text.rstrip() for strip in strips)
    assert "layout: reshape (1, 12, 4, 16) → (1, 12, 64)" in text
    assert "layout: the original's [1, 12, 4, 16] compared after reshape (1, 12, 4, 16) → (1, 12, 64)" in text
    assert "of [1, 12, 64]" in text  # both previews in the port's shape

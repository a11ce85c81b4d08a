"""The diagnosis: statuses, and the culprit named where the bug is — not downstream of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tracetui
from tracetui.classify import Tolerance
from tracetui.cli import main
from tracetui.json_report import report_document

WIDTH = 8


class Attention(nn.Module):
    """Original style: positional arguments, rope (a simple rotation) computed inline."""

    def __init__(self, scale_bug: bool = False) -> None:
        super().__init__()
        self.query = nn.Linear(WIDTH, WIDTH)
        self.value = nn.Linear(WIDTH, WIDTH)
        self.scale_bug = scale_bug

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], dtype=x.dtype)[:, None]
        query = self.query(x) + torch.sin(positions)
        scale = 1.0 / WIDTH if self.scale_bug else WIDTH**-0.5
        scores = (query @ query.transpose(-1, -2)) * scale + mask
        return scores.softmax(-1) @ self.value(x)


class Block(nn.Module):
    def __init__(self, residual_bug: bool = False, scale_bug: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.attn = Attention(scale_bug)
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.residual_bug = residual_bug

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.attn(self.norm(x), mask)
        x = attended if self.residual_bug else x + attended
        return x + self.fc(x)


class Original(nn.Module):
    def __init__(self, **bugs: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, WIDTH)
        self.blocks = nn.ModuleList([Block(**(bugs if index == 1 else {})) for index in range(3)])
        self.head = nn.Linear(WIDTH, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        mask = torch.triu(torch.full((ids.shape[1], ids.shape[1]), -1e9), 1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x)


class Rotary(nn.Module):
    def __init__(self, frequency: float = 1.0) -> None:
        super().__init__()
        self.frequency = frequency

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(hidden_states.shape[1], dtype=hidden_states.dtype)[:, None]
        return torch.sin(positions * self.frequency)


class PortedAttention(nn.Module):
    """Port style: keyword arguments, rope passed in from a model-level module."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(WIDTH, WIDTH)
        self.value = nn.Linear(WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_embeddings: torch.Tensor) -> torch.Tensor:
        query = self.query(hidden_states) + position_embeddings
        scores = (query @ query.transpose(-1, -2)) * WIDTH**-0.5 + attention_mask
        return scores.softmax(-1) @ self.value(hidden_states)


class PortedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.attn = PortedAttention()
        self.fc = nn.Linear(WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor, position_embeddings: torch.Tensor) -> torch.Tensor:
        attended = self.attn(hidden_states=self.norm(hidden_states), attention_mask=attention_mask, position_embeddings=position_embeddings)
        hidden_states = hidden_states + attended
        return hidden_states + self.fc(hidden_states)


class Ported(nn.Module):
    def __init__(self, frequency: float = 1.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, WIDTH)
        self.rotary = Rotary(frequency)
        self.blocks = nn.ModuleList([PortedBlock() for _ in range(3)])
        self.head = nn.Linear(WIDTH, 5)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed(input_ids)
        attention_mask = torch.triu(torch.full((input_ids.shape[1], input_ids.shape[1]), -1e9), 1)
        position_embeddings = self.rotary(hidden_states)
        for block in self.blocks:
            hidden_states = block(hidden_states, attention_mask=attention_mask, position_embeddings=position_embeddings)
        return self.head(hidden_states)


IDS = torch.tensor([[0, 4, 5, 2, 3, 7, 9]])


def original(**bugs: bool) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Original(**bugs), IDS


def ported(frequency: float = 1.0) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = Ported(frequency)
    source = Original()
    torch.manual_seed(0)
    source = Original()
    model.load_state_dict(source.state_dict(), strict=True)
    return model, IDS


def test_clean_port_with_other_argument_style_and_an_extra_rope_module_matches() -> None:
    comparison = tracetui.compare(original(), ported(), rerun=False)
    assert comparison.verdict == "match", comparison.reason
    assert comparison.culprit is None
    statuses = {(row.original_name, row.ported_name): comparison.status(row) for row in comparison.rows}
    assert statuses[(None, "rotary")] == "unmatched"
    assert statuses[("blocks.1.attn", "blocks.1.attn")] == "match"


def test_inline_code_bug_is_blamed_on_the_module_whose_forward_holds_it() -> None:
    comparison = tracetui.compare(ported(), original(residual_bug=True), rerun=False)
    assert comparison.verdict == "diverged"
    assert comparison.culprit is not None and comparison.culprit.ported_name == "blocks.1"
    assert "look at its own forward code" in comparison.reason
    statuses = {row.ported_name: comparison.status(row) for row in comparison.rows}
    assert statuses["blocks.1.attn"] == "match"
    assert statuses["blocks.1.fc"] == "inherited"
    assert statuses["blocks.2"] == "inherited"
    assert statuses[""] == "diverged"  # the root contains the culprit; it is not the culprit


def test_inputs_agree_across_keyword_and_positional_arguments() -> None:
    comparison = tracetui.compare(original(), original(scale_bug=True), rerun=False)
    assert comparison.culprit is not None and comparison.culprit.original_name == "blocks.1.attn"

    comparison = tracetui.compare(original(scale_bug=True), ported(), rerun=False)
    culprit = comparison.culprit
    assert culprit is not None and (culprit.original_name, culprit.ported_name) == ("blocks.1.attn", "blocks.1.attn")
    assert comparison.status(culprit) == "diverged" and comparison.inputs_agree(culprit)
    paired_input_names = {pair.name for pair in culprit.inputs if pair.difference is not None}
    assert paired_input_names == {"x ↔ hidden_states", "mask ↔ attention_mask"}


def test_a_wrong_extra_input_is_named_with_the_module_that_made_it() -> None:
    comparison = tracetui.compare(original(), ported(frequency=2.0), rerun=False)
    culprit = comparison.culprit
    # The first paired call consuming the wrong rope table; the table itself has no counterpart.
    assert culprit is not None and culprit.ported_name == "blocks.0.attn"
    assert "ported input position_embeddings (made by rotary)" in comparison.reason


def chain(*middle: nn.Module) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), *middle, nn.Linear(4, 4)), torch.randn(4, 4)


def test_shape_mismatch_is_the_culprit_when_it_starts_there() -> None:
    class Flatten(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], -1)

    def built(middle: nn.Module) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(4, 4), middle, nn.Tanh()), torch.randn(2, 3, 4)

    comparison = tracetui.compare(built(nn.Identity()), built(Flatten()), rerun=False)
    culprit = comparison.culprit
    assert culprit is not None and culprit.ported_name == "1" and comparison.status(culprit) == "shape_mismatch"
    assert "output shapes differ ([2, 3, 4] vs [2, 12])" in comparison.reason
    assert [comparison.status(row) for row in comparison.rows] == ["shape_mismatch", "match", "shape_mismatch", "shape_mismatch"]
    assert comparison.inputs_agree(comparison.rows[3]) is False


def test_nan_on_one_side_is_marked_nonfinite() -> None:
    class Log(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    class SafeLog(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x.clamp_min(1e-6))

    comparison = tracetui.compare(chain(SafeLog()), chain(Log()), rerun=False)
    culprit = comparison.culprit
    assert culprit is not None and culprit.ported_name == "1" and comparison.status(culprit) == "nonfinite"
    assert comparison.verdict == "diverged"
    difference = culprit.outputs[0].difference
    assert difference is not None and difference.nonfinite_ported > 0 and math.isfinite(difference.max_abs)


def test_dropout_left_active_is_nondeterministic_and_the_culprit() -> None:
    class AlwaysDropout(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.dropout(x, p=0.5, training=True)

    comparison = tracetui.compare(chain(nn.Dropout(0.5)), chain(AlwaysDropout()), rerun=True)
    culprit = comparison.culprit
    assert culprit is not None and culprit.ported_name == "1" and comparison.status(culprit) == "nondeterministic"
    assert any("different outputs from one run of the same model to the next" in note for note in comparison.notes)
    downstream = comparison.rows[-1]
    assert comparison.status(downstream) == "inherited"


def test_different_model_inputs_are_reported_as_such() -> None:
    model, ids = original()
    comparison = tracetui.compare((model, ids), (model, ids + 1), rerun=False)
    assert comparison.verdict == "diverged"
    assert comparison.culprit is not None and comparison.culprit.original_name == ""
    assert "the models' own inputs already differ" in comparison.reason


def test_rename_map_pairs_modules_and_the_rest_stay_unmatched() -> None:
    class Renamed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_projection = nn.Linear(4, 4)
            self.extra = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.extra(self.input_projection(x))

    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 4))
    renamed = Renamed()
    renamed.input_projection.load_state_dict(plain[0].state_dict())
    inputs = torch.randn(2, 4)
    comparison = tracetui.compare((plain, inputs), (renamed, inputs), rename_map=[[r"^0$", "input_projection"]], rerun=False)
    pairs = [(row.original_name, row.ported_name, row.pairing.method, comparison.status(row)) for row in comparison.rows]
    assert pairs == [
        ("", "", "name", "match"),
        ("0", "input_projection", "map", "match"),
        (None, "extra", "none", "unmatched"),
    ]


def test_tolerance_change_reclassifies_without_rerunning() -> None:
    class Nudge(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 5e-4

    comparison = tracetui.compare(chain(nn.Identity()), chain(Nudge()), rerun=False)
    assert comparison.verdict == "match"
    stricter = comparison.with_tolerance(Tolerance(atol=1e-4))
    assert stricter.verdict == "diverged"
    assert stricter.culprit is not None and stricter.culprit.ported_name == "1"
    assert stricter.culprit.outputs[0].difference.out_of_tolerance(1e-4, 0.0) == 16
    looser_relative = comparison.with_tolerance(Tolerance(atol=0.0, rtol=10.0))
    assert looser_relative.verdict == "match"


def test_taps_pair_by_name_and_locate_the_difference_inside_a_module() -> None:
    class Inner(nn.Module):
        def __init__(self, bug: bool) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)
            self.bug = bug

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.linear(x)
            tracetui.tap("after_linear", x)
            x = x * 2.0 if self.bug else x * 1.0
            tracetui.tap("after_scale", x)
            return x

    def built(bug: bool) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        return nn.Sequential(Inner(bug)), torch.randn(2, 4)

    comparison = tracetui.compare(built(False), built(True), rerun=False)
    assert comparison.culprit is not None and comparison.culprit.ported_name == "0"
    assert "first shows at tap 'after_scale'" in comparison.reason
    statuses = {row.ported_name: comparison.status(row) for row in comparison.rows}
    assert statuses["after_linear"] == "match"


def test_dtype_difference_within_tolerance_is_flagged_but_matches() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    inputs = torch.randn(2, 4)
    wide = nn.Sequential(nn.Linear(4, 4)).double()
    wide.load_state_dict(model.state_dict())
    comparison = tracetui.compare((model, inputs), (wide, inputs.double()), rerun=False)
    assert comparison.verdict == "match"
    assert comparison.status(comparison.rows[1]) == "dtype_mismatch"


def test_json_report_follows_the_contract(tmp_path: Path, write_script) -> None:
    script = """
    import torch
    def build():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.{activation}()), torch.randn(2, 4)
    """
    original_path = write_script("original.py", script.format(activation="GELU"))
    ported_path = write_script("ported.py", script.format(activation="SiLU"))
    report_path = tmp_path / "report.json"
    assert main(["compare", str(original_path), str(ported_path), "--no-tui", "--json", str(report_path)]) == 1
    document = json.loads(report_path.read_text())
    assert document["schema"] == "tracetui.report/1"
    assert (document["atol"], document["rtol"], document["verdict"]) == (0.001, 0.0, "diverged")
    assert document["first_divergence"]["original"] == "1" and document["first_divergence"]["ported"] == "1"
    assert document["first_divergence"]["max_abs_diff"] > 1e-3
    assert [row["original"] for row in document["rows"]] == ["", "0", "1"]
    assert {"original", "ported", "call", "status", "max_abs_diff"} <= set(document["rows"][0])
    assert [row["status"] for row in document["rows"]] == ["diverged", "match", "diverged"]

    assert main(["compare", str(original_path), str(original_path), "--no-tui", "--json", str(report_path)]) == 0
    document = json.loads(report_path.read_text())
    assert document["verdict"] == "match" and document["first_divergence"] is None


def test_assert_match_names_the_culprit() -> None:
    with pytest.raises(AssertionError, match=r"first divergence at blocks\.1 — its inputs agree .* look at its own forward code"):
        tracetui.assert_match(ported(), original(residual_bug=True), rerun=False)
    comparison = tracetui.assert_match(original(), ported(), rerun=False)
    assert report_document(comparison)["verdict"] == "match"


def test_outputs_tracetui_cannot_look_into_are_named_in_a_note() -> None:
    class Box:
        """Neither a container nor a dataclass: tracetui cannot see the tensor inside."""

        def __init__(self, tensor: torch.Tensor) -> None:
            self.tensor = tensor

        def __repr__(self) -> str:
            return "Box(...)"

    class Boxing(nn.Module):
        def forward(self, x: torch.Tensor) -> Box:
            return Box(x * 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.boxing = Boxing()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.boxing(x).tensor

    comparison = tracetui.compare((Net(), torch.ones(2)), (Net(), torch.ones(2)), rerun=False)
    assert comparison.verdict == "match"
    assert any("Outputs of type Box were recorded by their repr only, not compared" in note for note in comparison.notes)
    assert comparison.rows[1].ported.outputs[0].value_repr == "Box(...)"


def test_show_lists_the_calls_of_one_trace(write_script, capsys) -> None:
    script = write_script(
        "model.py", "import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()), torch.ones(4, 3)\n"
    )
    assert main(["show", str(script), "--no-tui", "--no-rerun"]) == 0
    output = capsys.readouterr().out
    assert "Sequential" in output and "Linear" in output and "ReLU" in output and "output: float32[4, 2]" in output


def test_a_one_sided_module_just_before_the_difference_is_pointed_at() -> None:
    class Block(nn.Module):
        def __init__(self, extra_norm: bool) -> None:
            super().__init__()
            self.first = nn.Linear(4, 4)
            self.extra_norm = nn.LayerNorm(4) if extra_norm else None
            self.second = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.first(x)
            if self.extra_norm is not None:
                x = self.extra_norm(x)
            return self.second(x)

    def built(extra_norm: bool) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(Block(extra_norm=False))
        inputs = torch.randn(2, 4) * 3
        if extra_norm:
            ported = nn.Sequential(Block(extra_norm=True))
            ported.load_state_dict(model.state_dict(), strict=False)
            model = ported
        return model, inputs

    # Judged on its own, the port's extra norm is the culprit: it makes the input of `second`,
    # which differs although everything before it was fed the original's values.
    comparison = tracetui.compare(built(False), built(True), rerun=False)
    assert [row.ported_name for row in comparison.culprits] == ["0.extra_norm"]
    assert "makes the argument 'input' of 0.second" in comparison.reason
    assert "it has no counterpart in the original" in comparison.reason
    # Without the port's model (a trace), the descent names the block and points at the norm.
    traced = tracetui.compare(built(False), tracetui.record(built(True), rerun=False), rerun=False)
    assert traced.culprit is not None and traced.culprit.ported_name == "0"
    assert "look at its own forward code" in traced.reason
    assert "calls with no counterpart that ran just before the difference shows: 0.extra_norm (ported only)" in traced.reason


def test_a_new_tolerance_leaves_the_old_comparison_as_it_was() -> None:
    comparison = tracetui.compare(ported(), original(residual_bug=True), rerun=False)
    statuses = [comparison.status(row) for row in comparison.rows]
    looser = comparison.with_tolerance(Tolerance(atol=100.0))
    assert looser.verdict == "match" and looser.culprit is None
    assert [comparison.status(row) for row in comparison.rows] == statuses
    assert comparison.verdict == "diverged" and comparison.culprit is not None
    assert len(repr(comparison)) < 2000


def test_tuple_outputs_pair_by_position_so_a_changed_shape_shows() -> None:
    class Pair(nn.Module):
        def __init__(self, flatten: bool) -> None:
            super().__init__()
            self.flatten = flatten

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            first = x.reshape(-1) if self.flatten else x
            return first, x.reshape(-1) * 0

    comparison = tracetui.compare((Pair(False), torch.ones(2, 3)), (Pair(True), torch.ones(2, 3)), rerun=False)
    assert comparison.status(comparison.rows[0]) == "shape_mismatch"
    assert comparison.culprit is not None and "output shapes differ ([2, 3] vs [6])" in comparison.reason


def test_inputs_in_broadcast_equivalent_shapes_agree() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.linear(x) + mask

    class Net(nn.Module):
        def __init__(self, expand_mask: bool) -> None:
            super().__init__()
            self.masked = Masked()
            self.expand_mask = expand_mask

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mask = torch.zeros(1, 4)
            if self.expand_mask:
                mask = mask.expand(3, 4).contiguous()
            return self.masked(x, mask)

    def built(expand_mask: bool) -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        return Net(expand_mask), torch.randn(3, 4)

    comparison = tracetui.compare(built(False), built(True), rerun=False)
    assert comparison.verdict == "match"
    masked = next(row for row in comparison.rows if row.ported_name == "masked")
    mask_pair = next(pair for pair in masked.inputs if pair.name == "mask")
    assert mask_pair.difference.broadcast_shape == (3, 4) and mask_pair.difference.shape_matches


@pytest.mark.parametrize("option", [["--atol", "nan"], ["--rtol", "nan"], ["--atol", "inf"], ["--rtol", "-1"]])
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(option: list[str], write_script, capsys) -> None:
    """NaN compares False with everything: `--rtol nan` once said MATCH for a 0.45 difference."""
    script = write_script("model.py", "import torch\ndef build():\n    return torch.nn.Linear(3, 2), torch.ones(4, 3)\n")
    assert main(["compare", str(script), str(script), "--no-tui", *option]) == 2
    assert f"{option[0]} must be a finite number, zero or positive" in capsys.readouterr().err
    with pytest.raises(tracetui.TracetuiError, match="must be a finite number"):
        tracetui.compare(original(), original(), rerun=False, **{option[0].removeprefix("--"): float(option[1])})


def test_numbers_and_strings_a_module_returns_are_compared() -> None:
    """A count of 10 against 20 in a module's outputs was recorded and never compared: MATCH."""

    class Counting(nn.Module):
        def __init__(self, count: int, label: str = "tokens") -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)
            self.count = count
            self.label = label

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, float, str]:
            return self.linear(x), self.count, self.count / 3, self.label

    def built(count: int, label: str = "tokens") -> tuple[nn.Module, torch.Tensor]:
        torch.manual_seed(0)
        return nn.Sequential(Counting(count, label)), torch.ones(1, 2)

    assert tracetui.compare(built(10), built(10), rerun=False).verdict == "match"
    counted = tracetui.compare(built(10), built(20), rerun=False)
    assert counted.verdict == "diverged" and [row.ported_name for row in counted.culprits] == ["0"]
    assert "max |Δ| 1.00e+01" in counted.reason
    labelled = tracetui.compare(built(10), built(10, label="words"), rerun=False)
    assert labelled.verdict == "diverged" and [row.ported_name for row in labelled.culprits] == ["0"]

"""Every module judged on its own: all the bugs of a port in one run, none misplaced.

The port runs once more with each paired module fed the original's inputs and handing on the
original's outputs (tracetui.isolate); a culprit is a module still wrong then, or one that made
an input that is wrong although everything before it was fed.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import tracetui
from tracetui.cli import main
from tracetui.json_report import report_document
from tracetui.numeric import measure

WIDTH = 8


class Block(nn.Module):
    """norm → fc → activation, with a residual; ``bug`` plants one mistake."""

    def __init__(self, bug: str | None = None) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH, eps=0.5 if bug == "norm_eps" else 1e-5)
        self.fc = nn.Linear(WIDTH, WIDTH)
        self.act = nn.SiLU() if bug == "activation" else nn.GELU()
        self.bug = bug

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.fc(self.norm(x)))
        if self.bug == "own_code":
            hidden = hidden * 1.5  # the block's own line, between its submodules
        return x + hidden


class Stack(nn.Module):
    def __init__(self, bugs: dict[int, str] | None = None, layers: int = 4) -> None:
        super().__init__()
        bugs = bugs or {}
        self.blocks = nn.ModuleList([Block(bugs.get(index)) for index in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def stack_pair(bugs: dict[int, str], layers: int = 4) -> tuple[tuple[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    original = Stack(layers=layers)
    ported = Stack(bugs, layers=layers)
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(2, 5, WIDTH)
    return (original, inputs), (ported, inputs.clone())


def culprit_names(comparison: tracetui.Comparison) -> list[str | None]:
    return [row.ported_name for row in comparison.culprits]


def test_every_bug_of_a_port_is_named_in_one_run() -> None:
    comparison = tracetui.compare(*stack_pair({1: "activation", 2: "own_code", 3: "norm_eps"}), rerun=False)
    assert culprit_names(comparison) == ["blocks.1.act", "blocks.2", "blocks.3.norm"]
    # The first is the first divergence; the later ones inherit a difference in the run, and
    # are named all the same, each with how wrong it is on its own.
    assert comparison.culprit is comparison.culprits[0]
    assert comparison.status(comparison.culprits[1]) == "inherited"
    assert "look at its own forward code" in comparison.reason_for(comparison.culprits[1])
    assert "its own code or weights are wrong" in comparison.reason_for(comparison.culprits[2])
    # A module that merely contains a culprit is not one.
    containing = next(row for row in comparison.rows if row.ported_name == "blocks.1")
    assert not comparison.is_culprit(containing) and containing.isolated_max_abs == 0.0
    document = report_document(comparison)
    assert [entry["ported"] for entry in document["culprits"]] == ["blocks.1.act", "blocks.2", "blocks.3.norm"]
    assert document["first_divergence"] == document["culprits"][0]
    by_name = {row["ported"]: row for row in document["rows"]}
    assert by_name["blocks.3.norm"]["culprit"] is True and by_name["blocks.3.norm"]["isolated_max_abs_diff"] > 0.1
    assert by_name["blocks.3.fc"]["culprit"] is False and by_name["blocks.3.fc"]["isolated_max_abs_diff"] == 0.0


def test_a_clean_port_has_no_culprit_and_a_traced_port_falls_back_to_one() -> None:
    clean = tracetui.compare(*stack_pair({}), rerun=False)
    assert clean.verdict == "match" and clean.culprits == []
    original, ported = stack_pair({1: "activation", 3: "norm_eps"})
    traced = tracetui.compare(original, tracetui.record(ported, rerun=False), rerun=False)
    # Without the port's model there is no fed run: the descent names the first culprit only.
    assert culprit_names(traced) == ["blocks.1.act"]
    assert all(row.isolated is None for row in traced.rows)


def test_a_difference_its_parent_hides_is_still_a_culprit() -> None:
    """A norm whose wrong eps changes its output by far more than atol, inside a block whose
    output moves by less than atol: the run's outputs agree, the port is still wrong."""

    class Damped(nn.Module):
        def __init__(self, eps: float) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(WIDTH, eps=eps)
            self.fc = nn.Linear(WIDTH, WIDTH)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1e-4 * self.fc(self.norm(x))

    torch.manual_seed(0)
    original = nn.Sequential(Damped(1e-5), Damped(1e-5), Damped(1e-5))
    ported = nn.Sequential(Damped(1e-5), Damped(0.5), Damped(1e-5))
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(4, WIDTH) * 0.3
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    final = comparison.rows[0]
    assert final.output_max_abs is not None and final.output_max_abs < 1e-3  # the model's output agrees
    assert comparison.verdict == "diverged"
    assert culprit_names(comparison) == ["1.norm"]


class Rotary(nn.Module):
    """The port's rotary embedding module: the cos/sin tables the original computes inline."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = theta

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_tables(x, self.theta)


def rope_tables(x: torch.Tensor, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    frequencies = theta ** (-torch.arange(0, WIDTH, 2, dtype=x.dtype) / WIDTH)
    angles = torch.arange(x.shape[1], dtype=x.dtype)[:, None] * frequencies[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


class RotaryAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(WIDTH, WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = self.query(x)
        half = WIDTH // 2
        rotated = torch.cat([-query[..., half:], query[..., :half]], dim=-1)
        query = query * cos + rotated * sin
        scores = query @ query.transpose(-1, -2) + mask
        return self.out(scores.softmax(-1) @ x)


class RotaryModel(nn.Module):
    """``ported=True`` computes the tables in a Rotary module (with ``theta``), the original inline."""

    def __init__(self, ported: bool, theta: float = 10000.0, mask_value: float | None = None) -> None:
        super().__init__()
        self.rotary = Rotary(theta) if ported else None
        self.attention = RotaryAttention()
        self.mask_value = mask_value if mask_value is not None else torch.finfo(torch.float32).min

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cos, sin = self.rotary(x) if self.rotary is not None else rope_tables(x, 10000.0)
        causal = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool).triu(1)
        mask = torch.zeros(x.shape[1], x.shape[1]).masked_fill(causal, self.mask_value)
        return self.attention(x, cos, sin, mask=mask)


def rotary_pair(**ported_options: float) -> tuple[tuple[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    original = RotaryModel(ported=False)
    ported = RotaryModel(ported=True, **ported_options)
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(2, 6, WIDTH)
    return (original, inputs), (ported, inputs.clone())


def test_a_module_that_exists_in_the_port_only_is_named_when_it_makes_a_wrong_input() -> None:
    clean = tracetui.compare(*rotary_pair(), rerun=False)
    assert clean.verdict == "match", clean.reason
    comparison = tracetui.compare(*rotary_pair(theta=500.0), rerun=False)
    assert culprit_names(comparison) == ["rotary"]
    assert "no counterpart in the original" in comparison.reason
    # Fed the original's tables, the attention is right: it is not blamed for its inputs.
    attention = next(row for row in comparison.rows if row.ported_name == "attention")
    assert comparison.status(attention) == "inherited" and not comparison.is_culprit(attention)


def test_mask_sentinels_of_another_dtype_agree() -> None:
    """float32's finfo.min against bfloat16's (what a bf16 port builds, seen here in float32):
    the masked positions differ by 1.3e36 and mean the same."""
    original = torch.tensor([[0.0, torch.finfo(torch.float32).min], [0.0, 0.0]])
    ported = torch.tensor([[0.0, torch.finfo(torch.bfloat16).min], [0.0, 0.0]], dtype=torch.bfloat16)
    assert measure(original, ported).within(1e-3, 0.0)
    assert not measure(original, torch.zeros(2, 2)).within(1e-3, 0.0)  # a mask against none still differs
    comparison = tracetui.compare(*rotary_pair(mask_value=float(torch.finfo(torch.bfloat16).min)), rerun=False)
    assert comparison.verdict == "match", comparison.reason
    attention = next(row for row in comparison.rows if row.ported_name == "attention")
    assert attention.input_max_abs == 0.0


def test_an_identity_in_place_of_a_norm_is_paired_and_named() -> None:
    class Original(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(WIDTH, WIDTH)
            self.block = Block()
            self.ln_f = nn.LayerNorm(WIDTH)
            self.head = nn.Linear(WIDTH, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.ln_f(self.block(self.embed(x))))

    class Ported(Original):
        """The same model under the port's names, its final norm left out."""

        def __init__(self) -> None:
            super().__init__()
            del self.ln_f
            self.norm = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.block(self.embed(x))))

    torch.manual_seed(0)
    original, ported = Original(), Ported()
    ported.load_state_dict(original.state_dict(), strict=False)
    inputs = torch.randn(2, WIDTH)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)  # no map: inferred
    assert culprit_names(comparison) == ["norm"]
    assert comparison.culprits[0].class_label == "LayerNorm ↔ Identity"
    assert comparison.culprits[0].pairing.method == "inferred"


def test_writes_through_data_do_not_leave_a_stale_recorded_copy() -> None:
    """The port doubles a tensor through ``.data`` (no version bump); the next module's input must
    be recorded as it really was, so that its own bug is not taken for an inherited one."""

    class Doubler(nn.Module):
        def __init__(self, through_data: bool) -> None:
            super().__init__()
            self.through_data = through_data

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.through_data:
                x.data.mul_(2)
                return x
            return x * 2

    class Model(nn.Module):
        def __init__(self, port: bool) -> None:
            super().__init__()
            self.first = nn.Linear(4, 4)
            self.doubler = Doubler(through_data=port)
            self.act = nn.SiLU() if port else nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.first(x)
            hidden = self.doubler(hidden)
            return self.act(hidden)

    torch.manual_seed(0)
    original, ported = Model(port=False), Model(port=True)
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(3, 4)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    act = next(row for row in comparison.rows if row.ported_name == "act")
    assert act.input_max_abs == 0.0
    assert comparison.status(act) == "diverged" and culprit_names(comparison) == ["act"]


@dataclasses.dataclass
class Pieces:
    hidden: torch.Tensor
    gate: torch.Tensor


class Splitter(nn.Module):
    """Returns a dataclass and a tuple; called twice per forward, with a keyword mask."""

    def __init__(self, bug: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(WIDTH, 2 * WIDTH)
        self.bug = bug

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor) -> tuple[Pieces, torch.Tensor]:
        hidden, gate = self.linear(x).chunk(2, dim=-1)
        if self.bug:
            gate = gate * 2
        return Pieces(hidden * mask, gate), mask.sum()


class TwoCalls(nn.Module):
    def __init__(self, bug: bool = False) -> None:
        super().__init__()
        self.splitter = Splitter(bug)
        self.merge = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(x.shape[-1])
        for _ in range(2):
            pieces, _ = self.splitter(x, mask=mask)
            x = self.merge(pieces.hidden * torch.sigmoid(pieces.gate))
        return x


def test_structured_outputs_keyword_arguments_and_repeated_calls_are_fed() -> None:
    torch.manual_seed(0)
    original, ported = TwoCalls(), TwoCalls(bug=True)
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(3, WIDTH)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    # Both calls of the splitter are wrong on their own; merge, fed the original's dataclass
    # fields, is not — although in the run its inputs differ.
    assert [(row.ported_name, row.call) for row in comparison.culprits] == [("splitter", 0), ("splitter", 1)]
    merges = [row for row in comparison.rows if row.ported_name == "merge"]
    assert [comparison.status(row) for row in merges] == ["inherited", "inherited"]
    assert all(row.isolated_max_abs == 0.0 for row in merges)


def test_the_command_lists_every_culprit(write_script, tmp_path: Path) -> None:
    source = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_isolation import stack_pair

        def build():
            return stack_pair({{BUGS}})[{{SIDE}}]
    """
    original = write_script("original.py", source.replace("{BUGS}", "{}").replace("{SIDE}", "0"))
    ported = write_script("ported.py", source.replace("{BUGS}", "{1: 'activation', 3: 'norm_eps'}").replace("{SIDE}", "1"))
    report = tmp_path / "report.json"
    assert main(["compare", str(original), str(ported), "--no-tui", "--no-rerun", "--json", str(report)]) == 1
    document = json.loads(report.read_text())
    assert [entry["ported"] for entry in document["culprits"]] == ["blocks.1.act", "blocks.3.norm"]
    assert document["first_divergence"]["ported"] == "blocks.1.act"
    # --no-isolate saves the extra run: the first culprit only, found by descent.
    arguments = ["compare", str(original), str(ported), "--no-tui", "--no-rerun", "--no-isolate", "--json", str(report)]
    assert main(arguments) == 1
    document = json.loads(report.read_text())
    assert [entry["ported"] for entry in document["culprits"]] == ["blocks.1.act"]
    assert all(row["isolated_max_abs_diff"] is None for row in document["rows"])


def test_a_headless_report_runs_the_fed_run_only_for_a_port_that_diverged(write_script, tmp_path: Path) -> None:
    source = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_isolation import stack_pair

        def build():
            return stack_pair({{BUGS}})[{{SIDE}}]
    """
    original = write_script("original.py", source.replace("{BUGS}", "{}").replace("{SIDE}", "0"))
    clean = write_script("clean.py", source.replace("{BUGS}", "{}").replace("{SIDE}", "1"))
    buggy = write_script("buggy.py", source.replace("{BUGS}", "{1: 'activation', 3: 'norm_eps'}").replace("{SIDE}", "1"))
    report = tmp_path / "report.json"
    # Every output agrees: no culprit to name at this (final) tolerance, so no fed run.
    assert main(["compare", str(original), str(clean), "--no-tui", "--no-rerun", "--json", str(report)]) == 0
    document = json.loads(report.read_text())
    assert document["verdict"] == "match" and document["culprits"] == []
    assert all(row["isolated_max_abs_diff"] is None for row in document["rows"])
    # A port that diverged gets it after the comparison: the same culprits and figures as a fed
    # run made before it (the Python API's way, which keeps it for another tolerance).
    assert main(["compare", str(original), str(buggy), "--no-tui", "--no-rerun", "--json", str(report)]) == 1
    headless = json.loads(report.read_text())
    always = report_document(tracetui.compare(str(original), str(buggy), rerun=False))
    assert [entry["ported"] for entry in headless["culprits"]] == ["blocks.1.act", "blocks.3.norm"]
    # (The fix search's own figures, such as the CPU time it took, vary from run to run.)
    def without_search(entries: list[dict]) -> list[dict]:
        return [{key: value for key, value in entry.items() if key != "fix_search"} for entry in entries]

    assert without_search(headless["culprits"]) == without_search(always["culprits"])
    assert [row["isolated_max_abs_diff"] for row in headless["rows"]] == [row["isolated_max_abs_diff"] for row in always["rows"]]
    assert any(row["isolated_max_abs_diff"] is not None for row in headless["rows"])


@pytest.mark.parametrize("rtol", [0.0, 1e-2])
def test_another_tolerance_reclassifies_the_culprits(rtol: float) -> None:
    comparison = tracetui.compare(*stack_pair({1: "activation", 3: "norm_eps"}), rerun=False)
    loose = comparison.with_tolerance(tracetui.Tolerance(atol=10.0, rtol=rtol))
    assert loose.verdict == "match" and loose.culprits == []
    assert culprit_names(comparison) == ["blocks.1.act", "blocks.3.norm"]  # the first comparison is unchanged


def test_a_fed_call_keeps_its_arguments_positional_or_keyword() -> None:
    """A decorated forward that takes a keyword out of ``**kwargs`` (as transformers' do) must
    get it as a keyword again: fed arguments keep the call's own structure."""
    import functools

    def reads_flag(forward):  # noqa: ANN001, ANN202
        @functools.wraps(forward)
        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            flag = kwargs.pop("flag", False)
            return forward(self, *args, flag=flag, **kwargs)

        return wrapper

    class Scaled(nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.linear = nn.Linear(WIDTH, WIDTH)
            self.factor = factor

        @reads_flag
        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, flag: bool = False) -> torch.Tensor:
            hidden = self.linear(x) * self.factor
            return hidden * mask if flag and mask is not None else hidden

    class Model(nn.Module):
        def __init__(self, factor: float) -> None:
            super().__init__()
            self.scaled = Scaled(factor)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.scaled(x, mask=torch.ones(WIDTH), flag=True)

    torch.manual_seed(0)
    original, ported = Model(1.0), Model(2.0)
    ported.load_state_dict(original.state_dict())
    inputs = torch.randn(3, WIDTH)
    comparison = tracetui.compare((original, inputs), (ported, inputs.clone()), rerun=False)
    assert culprit_names(comparison) == ["scaled"]
    scaled = comparison.culprits[0]
    assert scaled.isolated is not None and not scaled.isolated.unfed_inputs and not scaled.isolated.not_judged

"""Half-precision models: recorded in their own dtype, compared in float64, and the reports say so."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from rich.console import Console
from textual.widgets import Label
from torch import nn

import tracetui
from tracetui.classify import Tolerance
from tracetui.cli import main
from tracetui.compare import Comparison
from tracetui.json_report import report_document
from tracetui.numeric import measure
from tracetui.precision import Precision, describe_precision
from tracetui.report import print_report
from tracetui.tui import TracetuiApp

WIDTH = 8


def small_model(seed: int = 0) -> nn.Sequential:
    """Linear, GELU, LayerNorm, Linear with seeded random weights (LayerNorm's too, not just ones)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(WIDTH, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
    with torch.no_grad():
        model[2].weight.normal_()
        model[2].bias.normal_()
    return model


def small_inputs(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(2, 3, WIDTH, generator=torch.Generator().manual_seed(1)).to(dtype)


class Float32LayerNorm(nn.Module):
    """A port's habit: the norm computed in float32 inside a bfloat16 model, cast back after."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm.float()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden_states.float()).to(hidden_states.dtype)


class Constant(nn.Module):
    """Returns a fixed tensor whatever its input: two of them give a chosen output difference."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.value.clone()


def compare_in(original_dtype: torch.dtype, ported_dtype: torch.dtype, **options: float) -> Comparison:
    model = small_model()
    return tracetui.compare(
        (copy.deepcopy(model).to(original_dtype), small_inputs(original_dtype)),
        (copy.deepcopy(model).to(ported_dtype), small_inputs(ported_dtype)),
        rerun=False,
        **options,
    )


def floating_leaf_dtypes(comparison: Comparison, side: str) -> set[torch.dtype]:
    trace = comparison.original if side == "original" else comparison.ported
    return {
        leaf.tensor.dtype
        for record in trace
        for leaf in record.inputs + record.outputs
        if leaf.tensor is not None and leaf.tensor.is_floating_point()
    }


def headless_report(comparison: Comparison) -> str:
    console = Console(record=True, width=200, color_system=None)
    print_report(comparison, console)
    return console.export_text()


@pytest.fixture(scope="module")
def bfloat16_comparison() -> Comparison:
    return compare_in(torch.bfloat16, torch.bfloat16)


def test_bfloat16_models_are_recorded_in_bfloat16(bfloat16_comparison: Comparison) -> None:
    assert floating_leaf_dtypes(bfloat16_comparison, "original") == {torch.bfloat16}
    assert floating_leaf_dtypes(bfloat16_comparison, "ported") == {torch.bfloat16}
    differences = [pair.difference for row in bfloat16_comparison.rows for pair in row.outputs if pair.difference]
    assert differences and all(d.original_dtype == d.ported_dtype == "bfloat16" for d in differences)


def test_the_description_names_the_recorded_and_the_comparison_dtype(bfloat16_comparison: Comparison) -> None:
    precision = describe_precision(bfloat16_comparison)
    assert precision.original_dtypes == precision.ported_dtypes == ("bfloat16",)
    assert precision.compared_in == "float64"
    assert str(precision) == "recorded in bfloat16 (both sides); compared in float64"
    assert precision.short_description == "bfloat16, compared in float64"


def test_integer_inputs_are_not_a_precision() -> None:
    """Token ids (int64) have no precision: only floating dtypes are listed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, WIDTH), nn.Linear(WIDTH, 4)).to(torch.bfloat16)
    token_ids = torch.tensor([[1, 2, 3]])
    comparison = tracetui.compare((model, token_ids), (copy.deepcopy(model), token_ids), rerun=False)
    assert describe_precision(comparison).original_dtypes == ("bfloat16",)


def test_sides_recorded_in_different_dtypes_are_told_apart() -> None:
    model = small_model().to(torch.bfloat16)
    port = copy.deepcopy(model)
    port[2] = Float32LayerNorm(port[2])
    comparison = tracetui.compare((model, small_inputs(torch.bfloat16)), (port, small_inputs(torch.bfloat16)), rerun=False)
    precision = describe_precision(comparison)
    assert precision == Precision(
        original_dtypes=("bfloat16",), ported_dtypes=("bfloat16", "float32"), compared_in="float64", note=precision.note
    )
    assert str(precision) == "recorded in bfloat16 (original) and bfloat16, float32 (port); compared in float64"
    assert precision.short_description == "bfloat16 ↔ bfloat16/float32, compared in float64"


def test_the_difference_is_computed_in_float64_not_in_the_recorded_dtype() -> None:
    """1 - 3·2⁻¹⁰ is exact in float64 but rounds to 0.99609375 when subtracted in bfloat16."""
    original_value = torch.tensor([1.0], dtype=torch.bfloat16)
    ported_value = torch.tensor([3 * 2**-10], dtype=torch.bfloat16)
    exact = 1.0 - 3 * 2**-10
    assert float((original_value - ported_value).abs()) != exact  # the test would be void otherwise
    assert measure(original_value, ported_value).max_abs == exact

    inputs = torch.zeros(1, dtype=torch.bfloat16)
    comparison = tracetui.compare((Constant(original_value), inputs), (Constant(ported_value), inputs), rerun=False)
    (output,) = comparison.rows[0].outputs
    assert output.original is not None and output.original.tensor is not None
    assert output.original.tensor.dtype == torch.bfloat16  # stored as recorded, no up-cast
    assert output.difference is not None and output.difference.max_abs == exact


def test_half_precision_with_rtol_zero_gets_a_note(bfloat16_comparison: Comparison) -> None:
    note = describe_precision(bfloat16_comparison).note
    assert note is not None and note.startswith("bfloat16 resolution is 7.8e-03 relative")
    assert "above 0.26 already exceeds atol 0.001" in note and "--rtol" in note
    assert describe_precision(bfloat16_comparison.with_tolerance(Tolerance(atol=1e-3, rtol=1e-2))).note is None


def test_float16_note_gives_float16_resolution() -> None:
    note = describe_precision(compare_in(torch.float16, torch.float16)).note
    assert note is not None and note.startswith("float16 resolution is 9.8e-04 relative")


def test_float32_models_get_no_note() -> None:
    precision = describe_precision(compare_in(torch.float32, torch.float32))
    assert precision.original_dtypes == ("float32",) and precision.note is None


def test_the_json_report_has_the_precision(bfloat16_comparison: Comparison) -> None:
    document = json.loads(json.dumps(report_document(bfloat16_comparison)))
    precision = document["precision"]
    assert {key: precision[key] for key in ("original", "ported", "compared_in")} == {
        "original": ["bfloat16"],
        "ported": ["bfloat16"],
        "compared_in": "float64",
    }
    assert precision["note"].startswith("bfloat16 resolution")


def test_the_headless_report_has_the_precision_line(bfloat16_comparison: Comparison) -> None:
    text = headless_report(bfloat16_comparison)
    assert "precision: recorded in bfloat16 (both sides); compared in float64" in text.splitlines()
    assert "note: bfloat16 resolution is 7.8e-03 relative" in text


def test_the_interface_header_shows_the_precision(bfloat16_comparison: Comparison) -> None:
    async def header_precision_and_note() -> tuple[str, str]:
        app = TracetuiApp(bfloat16_comparison)
        async with app.run_test(size=(140, 30)) as pilot:
            await pilot.pause()
            return str(app.query_one("#precision", Label).content), str(app.query_one("ComparisonHeader .note", Label).content)

    precision, note = asyncio.run(header_precision_and_note())
    assert precision == "bfloat16, compared in float64"
    assert note.startswith("note: bfloat16 resolution")


SCRIPT = """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
        return model.to(torch.{dtype}), torch.randn(2, 3, 8).to(torch.{dtype})
"""


def test_the_command_reports_the_precision(
    write_script: Callable[[str, str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = write_script("original.py", SCRIPT.format(dtype="bfloat16"))
    ported = write_script("ported.py", SCRIPT.format(dtype="float32"))
    report = tmp_path / "report.json"
    exit_status = main(["compare", str(original), str(ported), "--no-tui", "--no-rerun", "--json", str(report)])
    assert exit_status in (0, 1)
    assert "precision: recorded in bfloat16 (original) and float32 (port); compared in float64" in capsys.readouterr().out
    precision = json.loads(report.read_text())["precision"]
    assert (precision["original"], precision["ported"], precision["compared_in"]) == (["bfloat16"], ["float32"], "float64")

"""Ports run in bfloat16 or float16 against a float32 original: rounding is measured (the original
run again in the port's dtype) and told apart from bugs, on the demos and the third-party ports."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from planted import read_bugs
from rich.console import Console
from textual.widgets import Label
from torch import nn

import tracetui
import tracetui.api
from tracetui.classify import Tolerance
from tracetui.cli import main
from tracetui.compare import Comparison
from tracetui.json_report import report_document
from tracetui.noise_floor import cast_script
from tracetui.pairing.rename_map import load_rename_map
from tracetui.report import print_report
from tracetui.script import load_script
from tracetui.tui import TracetuiApp

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {
    "gpt": (ROOT / "demos" / "gpt", "TRACETUI_DEMO_BUG"),
    "bert": (ROOT / "demos" / "bert", "TRACETUI_DEMO_BUG"),
    "nanogpt": (ROOT / "tests" / "ports" / "nanogpt", "TRACETUI_PORT_BUG"),  # transformers' GPT-2
    "llama2c": (ROOT / "tests" / "ports" / "llama2c", "TRACETUI_PORT_BUG"),  # transformers' Llama
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(autouse=True)
def no_bug_from_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for _, variable in PAIRS.values():
        monkeypatch.delenv(variable, raising=False)
    yield


def compare_cast(pair: str, dtype: torch.dtype, bug: str = "", **options: object) -> Comparison:
    """The pair's original in float32 against its port cast to ``dtype`` (weights and float inputs)."""
    folder, variable = PAIRS[pair]
    os.environ[variable] = bug
    try:
        original = load_script(folder / "original.py")
        ported = cast_script(load_script(folder / "ported.py"), dtype, in_place=True)
    finally:
        del os.environ[variable]
    return tracetui.compare(original, ported, rename_map=load_rename_map(folder / "map.toml"), rerun=False, fixes=False, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pair", "dtype"),
    [
        ("gpt", "bfloat16"),
        ("bert", "bfloat16"),
        ("nanogpt", "bfloat16"),
        ("llama2c", "bfloat16"),
        ("gpt", "float16"),
        ("llama2c", "float16"),
    ],
)
def test_a_clean_port_cast_to_16_bits_matches(pair: str, dtype: str) -> None:
    comparison = compare_cast(pair, DTYPES[dtype])
    assert comparison.rounding.measured and comparison.rounding.plan is not None
    assert comparison.rounding.plan.description == f"{dtype} port vs float32 original: judged against the original run in {dtype}"
    assert comparison.verdict == "match", comparison.reason
    assert comparison.culprits == []


# One of each kind of planted bug, in bfloat16: still diverged, with the float32 run's culprit
# (BUGS gives the first culprit the float32 tests expect).
BFLOAT16_BUGS = [
    ("gpt", "activation"),
    ("gpt", "norm_eps"),
    ("gpt", "attention_scale"),
    ("nanogpt", "attn_c_proj_bias_missing_layer2"),  # a missing bias
    ("gpt", "unconverted_weight"),
    ("nanogpt", "qk_swapped_layer1"),  # q and k slices swapped
    ("llama2c", "rms_norm_eps_wrong"),
]


@pytest.mark.parametrize(("pair", "bug"), BFLOAT16_BUGS, ids=[f"{pair}-{bug}" for pair, bug in BFLOAT16_BUGS])
def test_a_planted_bug_still_diverges_in_bfloat16_with_its_culprit(pair: str, bug: str) -> None:
    comparison = compare_cast(pair, torch.bfloat16, bug)
    assert comparison.rounding.measured
    assert comparison.verdict == "diverged"
    assert comparison.culprit is not None and comparison.culprit.ported_name == read_bugs(PAIRS[pair][0] / "ported.py")[bug]


def test_strict_precision_judges_by_atol_alone_as_before() -> None:
    comparison = compare_cast("llama2c", torch.bfloat16, precision="strict")
    assert not comparison.rounding.measured and comparison.rounding.note is None
    assert comparison.verdict == "diverged"  # bfloat16 rounding breaks atol 1e-3


# -- small models: what is run, and what the reports say ------------------------------------------

WIDTH = 8


def small_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
    with torch.no_grad():
        model[2].weight.normal_()
        model[2].bias.normal_()
    return model


def small_inputs() -> torch.Tensor:
    return torch.randn(2, 3, WIDTH, generator=torch.Generator().manual_seed(1))


def compare_small(ported_dtype: torch.dtype, **options: object) -> Comparison:
    model = small_model()
    ported = copy.deepcopy(model).to(ported_dtype)
    return tracetui.compare((model, small_inputs()), (ported, small_inputs().to(ported_dtype)), rerun=False, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def bfloat16_port() -> Comparison:
    return compare_small(torch.bfloat16)


def test_a_float32_comparison_runs_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[torch.dtype] = []
    measure = tracetui.api.measure_noise_floor

    def counted(script, original, plan, *arguments, **options):  # noqa: ANN001, ANN002, ANN003, ANN202
        runs.append(plan.rerun_dtype)
        return measure(script, original, plan, *arguments, **options)

    monkeypatch.setattr(tracetui.api, "measure_noise_floor", counted)
    float32 = compare_small(torch.float32)
    assert runs == [] and float32.rounding.mode == "strict" and float32.classification.figures.rounding is None
    assert compare_small(torch.bfloat16).rounding.measured and runs == [torch.bfloat16]


def test_the_progress_says_what_the_floor_costs() -> None:
    messages: list[str] = []
    compare_small(torch.bfloat16, progress=messages.append)
    assert "measuring bfloat16 rounding: running the original in bfloat16" in messages
    assert "measuring bfloat16 rounding: running the original in bfloat16 once more, each module fed the original's values" in messages


def test_rounding_that_breaks_atol_is_a_match_within_bfloat16_rounding(bfloat16_port: Comparison) -> None:
    assert compare_small(torch.bfloat16, precision="strict").verdict == "diverged"
    assert bfloat16_port.verdict == "match"
    assert {bfloat16_port.status(row) for row in bfloat16_port.rows} == {"match"}  # the cast itself is no dtype mismatch
    # Another tolerance (the interface's t) judges from the same figures, floor included.
    assert bfloat16_port.with_tolerance(Tolerance(atol=1e-4)).verdict == "match"
    assert bfloat16_port.with_tolerance(Tolerance(atol=1e-4, rtol=1e-3)).rounding.measured


def test_both_16_bit_sides_are_judged_against_float32_when_forced() -> None:
    model = small_model().to(torch.bfloat16)
    sides = ((model, small_inputs().to(torch.bfloat16)), (copy.deepcopy(model), small_inputs().to(torch.bfloat16)))
    assert tracetui.compare(*sides, rerun=False).rounding.mode == "strict"
    forced = tracetui.compare(*sides, rerun=False, precision="rounding")
    assert forced.rounding.measured and forced.rounding.plan is not None
    assert forced.rounding.plan.description == "bfloat16 port vs bfloat16 original: judged against the original run in float32"


def test_an_original_given_as_a_trace_says_no_floor_was_measured(bfloat16_port: Comparison) -> None:
    comparison = tracetui.compare(
        bfloat16_port.original, (copy.deepcopy(small_model()).to(torch.bfloat16), small_inputs().to(torch.bfloat16)), rerun=False
    )
    assert not comparison.rounding.measured
    assert comparison.rounding.note is not None and "no noise floor was measured" in comparison.rounding.note
    document = report_document(comparison)
    assert document["precision"]["mode"] == "strict" and "no noise floor was measured" in document["precision"]["floor_note"]
    console = Console(record=True, width=400, color_system=None)
    print_report(comparison, console)
    assert "no noise floor was measured (the original was given as a trace" in console.export_text()


def test_the_json_report_states_the_mode_and_each_rows_floor(bfloat16_port: Comparison) -> None:
    document = json.loads(json.dumps(report_document(bfloat16_port)))
    precision = document["precision"]
    assert precision["mode"] == "rounding" and precision["floor_factor"] == 3.0
    assert precision["judged_against"] == "bfloat16 port vs float32 original: judged against the original run in bfloat16"
    assert document["verdict"] == "match" and document["verdict_detail"] == "match (within bfloat16 rounding)"
    floors = [row["noise_floor"] for row in document["rows"]]
    assert all(floor is not None and floor["max_abs"] > 0 and floor["mean_abs"] > 0 for floor in floors)
    assert any(row["within_rounding"] and row["max_abs_diff"] > 1e-3 for row in document["rows"])
    strict = report_document(compare_small(torch.bfloat16, precision="strict"))
    assert strict["precision"]["mode"] == "strict" and all(row["noise_floor"] is None for row in strict["rows"])


def test_the_headless_report_states_the_mode_and_the_floor(bfloat16_port: Comparison) -> None:
    console = Console(record=True, width=200, color_system=None)
    print_report(bfloat16_port, console)
    text = console.export_text()
    assert "mode: bfloat16 port vs float32 original: judged against the original run in bfloat16" in text
    assert "MATCH (WITHIN BFLOAT16 ROUNDING)" in text and "floor |Δ|" in text and "match (rounding)" in text
    assert "measuring it took 2 more forward passes of the original" in text
    assert "match (within bfloat16 rounding): all 5 paired calls agree within atol 0.001" in text


def test_a_culprits_why_line_gives_the_floor_and_the_ratio() -> None:
    model = small_model()
    port = copy.deepcopy(model)
    port[2].eps = 0.5  # a norm eps bug, far beyond rounding
    comparison = tracetui.compare((model, small_inputs()), (port.to(torch.bfloat16), small_inputs().to(torch.bfloat16)), rerun=False)
    assert comparison.verdict == "diverged" and comparison.culprit is not None and comparison.culprit.ported_name == "2"
    console = Console(record=True, width=400, color_system=None)
    print_report(comparison, console)
    text = console.export_text()
    assert "its inputs agree within rounding" in text
    assert "the bfloat16 noise floor here is" in text and "× it); its own, fed the original's values," in text
    # The fix search judges the patch against the rounding the culprit leaves anyway.
    assert "fix: setting 2.eps to 1e-05 (was 0.5) makes it match on the recorded inputs" in text


def test_the_interface_header_shows_the_mode(bfloat16_port: Comparison) -> None:
    async def header() -> tuple[str, str]:
        app = TracetuiApp(bfloat16_port)
        async with app.run_test(size=(200, 30)) as pilot:
            await pilot.pause()
            return str(app.query_one("#precision", Label).content), str(app.query_one("#verdict", Label).content)

    precision, verdict = asyncio.run(header())
    assert precision == "bfloat16 port vs float32 original: judged against the original run in bfloat16"
    assert verdict == "MATCH (WITHIN BFLOAT16 ROUNDING)"


class Amplify(nn.Module):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * 1e5


def test_a_float16_overflow_is_nonfinite_and_its_first_module_named() -> None:
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), Amplify(), nn.LayerNorm(WIDTH))
    port = copy.deepcopy(model).to(torch.float16)
    comparison = tracetui.compare((model, small_inputs()), (port, small_inputs().to(torch.float16)), rerun=False)
    assert comparison.status(comparison.rows[2]) == "nonfinite"  # (root)=0, Linear=1, Amplify=2
    assert comparison.verdict == "diverged"
    console = Console(record=True, width=400, color_system=None)
    print_report(comparison, console)
    text = console.export_text()
    assert (
        "note: 1 is the first call whose outputs hold Inf/NaN in the port where the original's are finite, its inputs being finite" in text
    )


SCRIPT = """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4))
        with torch.no_grad():
            model[2].weight.normal_()
        return model.to(torch.{dtype}), torch.randn(2, 3, 8).to(torch.{dtype})
"""


def test_the_command_takes_the_precision_option(write_script: Callable[[str, str], Path], tmp_path: Path) -> None:
    original = write_script("original.py", SCRIPT.format(dtype="float32"))
    ported = write_script("ported.py", SCRIPT.format(dtype="bfloat16"))
    common = ["compare", str(original), str(ported), "--no-tui", "--no-rerun", "--json", str(tmp_path / "report.json")]
    assert main(common) == 0
    assert json.loads((tmp_path / "report.json").read_text())["precision"]["mode"] == "rounding"
    assert main([*common, "--precision", "strict"]) == 1


@pytest.mark.parametrize("memory_option", ["stream", "spill"])
def test_stream_and_spill_say_no_floor_was_measured(memory_option: str, tmp_path: Path) -> None:
    options: dict[str, object] = {"stream": True} if memory_option == "stream" else {"spill": tmp_path / "spill"}
    comparison = compare_small(torch.bfloat16, **options)
    assert not comparison.rounding.measured and comparison.classification.figures.rounding is None
    assert comparison.rounding.note is not None
    assert f"no noise floor was measured (with --{memory_option} the original's model is not kept" in comparison.rounding.note


def test_the_detail_pane_gives_the_floor_beside_the_difference_and_the_ratio(bfloat16_port: Comparison) -> None:
    from tracetui.tui.row_detail import row_summary
    from tracetui.tui.tensor_detail import Palette

    linear = bfloat16_port.rows[1]
    summary = row_summary(bfloat16_port, linear, Palette())
    assert summary is not None
    assert "the bfloat16 noise floor here is" in summary.plain and "(the difference is 1.0× it)" in summary.plain

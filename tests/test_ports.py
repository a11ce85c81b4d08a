"""Real-world port pairs: third-party research code (nanoGPT, llama2.c) against transformers.

Each pair lives in tests/ports/<pair>/ as original.py, ported.py and map.toml. ported.py plants
one conversion bug when TRACETUI_PORT_BUG names it (several when it lists them, comma-separated);
its BUGS dict gives the ported module that tracetui must report as the first divergence. Those
expectations are ground truth measured with plain forward hooks by tests/ports/ground_truth.py,
which test_ground_truth_holds re-checks. With several bugs planted, every culprit is named.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from planted import read_bugs

pytest.importorskip("transformers")

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

PORTS = Path(__file__).resolve().parent / "ports"
PAIRS = ("nanogpt", "llama2c")
TIMEOUT = 600


def bugs(pair: str) -> dict[str, str]:
    return read_bugs(PORTS / pair / "ported.py")


def renamed(pair: str, name: str) -> str:
    with open(PORTS / pair / "map.toml", "rb") as handle:
        for pattern, replacement in tomllib.load(handle)["rename"]:
            name = re.sub(pattern, replacement, name)
    return name


def compare(pair: str, bug: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    folder = PORTS / pair
    report = tmp_path / "report.json"
    env = {key: value for key, value in os.environ.items() if key != "TRACETUI_PORT_BUG"}
    if bug:
        env["TRACETUI_PORT_BUG"] = bug
    command = [
        sys.executable, "-m", "tracetui", "compare",
        str(folder / "original.py"), str(folder / "ported.py"),
        "--map", str(folder / "map.toml"), "--no-tui", "--json", str(report),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    return result, json.loads(report.read_text()) if report.exists() else None


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("pair", PAIRS)
def test_clean_port_matches(pair: str, tmp_path: Path) -> None:
    result, report = compare(pair, "", tmp_path)
    assert result.returncode == 0, explain(result)
    assert report is not None and report["schema"] == "tracetui.report/1"
    assert report["verdict"] == "match"
    assert report["first_divergence"] is None
    assert report["culprits"] == []


@pytest.mark.parametrize(
    ("pair", "bug"),
    [pytest.param(pair, bug, id=f"{pair}-{bug}") for pair in PAIRS for bug in bugs(pair)],
)
def test_planted_bug_is_found(pair: str, bug: str, tmp_path: Path) -> None:
    result, report = compare(pair, bug, tmp_path)
    assert result.returncode == 1, explain(result)
    assert report is not None and report["verdict"] == "diverged"
    culprit = report["first_divergence"]
    assert culprit is not None
    assert culprit["ported"] == bugs(pair)[bug], json.dumps(culprit)
    assert renamed(pair, culprit["original"]) == culprit["ported"]
    assert culprit["max_abs_diff"] > 1e-3


def multi_bug_cases() -> list[Any]:
    """Several bugs planted at once and the culprits, in call order, that must be named: the BUGS
    entries of the planted bugs, plus what a bug makes wrong on its own beyond its BUGS entry.
    More combinations (two of them known to fail), with and without the map, run in-process in
    tests/test_align_auto.py."""
    nanogpt, llama2c = bugs("nanogpt"), bugs("llama2c")
    # n_head_wrong is in every layer's attention (each is wrong on its own); layer_norm_epsilon_wrong
    # and rms_norm_eps_wrong are in every norm, but only the first norm's input is small enough for
    # the eps to matter; rope_theta_wrong is in every decoder layer; gate_up_swapped_layer1 makes
    # both gate_proj and up_proj wrong. Layers run before their submodules.
    every_attention = ["transformer.h.0.attn", "transformer.h.1.attn", "transformer.h.2.attn"]
    assert nanogpt["n_head_wrong"] == every_attention[0]
    every_layer = ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert llama2c["rope_theta_wrong"] == every_layer[0]
    gate_and_up = [llama2c["gate_up_swapped_layer1"], "model.layers.1.mlp.up_proj"]
    return [
        pytest.param(
            "nanogpt",
            "qk_swapped_layer1,attn_c_proj_bias_missing_layer2,lm_head_untied_unconverted",
            [nanogpt["qk_swapped_layer1"], nanogpt["attn_c_proj_bias_missing_layer2"], nanogpt["lm_head_untied_unconverted"]],
            id="nanogpt-three-layers",
        ),
        pytest.param(  # two in layer 0: ln_1 and the attention
            "nanogpt",
            "layer_norm_epsilon_wrong,n_head_wrong",
            [nanogpt["layer_norm_epsilon_wrong"], *every_attention],
            id="nanogpt-two-in-layer-0",
        ),
        pytest.param(
            "llama2c",
            "rms_norm_eps_wrong,gate_up_swapped_layer1,lm_head_unconverted",
            [llama2c["rms_norm_eps_wrong"], *gate_and_up, llama2c["lm_head_unconverted"]],
            id="llama2c-three-layers",
        ),
        pytest.param(  # two in layer 1: the attention (rope) and the MLP
            "llama2c",
            "rope_theta_wrong,gate_up_swapped_layer1",
            [every_layer[0], every_layer[1], *gate_and_up, every_layer[2]],
            id="llama2c-two-in-layer-1",
        ),
    ]


@pytest.mark.parametrize(("pair", "planted", "expected"), multi_bug_cases())
def test_every_planted_bug_is_found(pair: str, planted: str, expected: list[str], tmp_path: Path) -> None:
    result, report = compare(pair, planted, tmp_path)
    assert result.returncode == 1, explain(result)
    assert report is not None and report["verdict"] == "diverged"
    culprits = report["culprits"]
    assert [culprit["ported"] for culprit in culprits] == expected, json.dumps(culprits, indent=1)
    assert report["first_divergence"] == culprits[0]
    for culprit in culprits:
        assert renamed(pair, culprit["original"]) == culprit["ported"]
        assert culprit["max_abs_diff"] > 1e-3


def test_ground_truth_holds() -> None:
    """The expectations above still hold by plain hooks (guards against e.g. a transformers upgrade)."""
    result = subprocess.run(
        [sys.executable, str(PORTS / "ground_truth.py"), *PAIRS], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, explain(result)

"""Models dispatched with accelerate (issue 17): offloaded parameters sit on the meta device until
accelerate's hooks load them for each forward.

tracetui's hooks see a call's real inputs and outputs (accelerate replaces `forward`; torch's
module hooks run around that replacement), so an offloaded port compares like any other: the
port is the demo GPT (demos/gpt/ported.py) dispatched by tests/offload/disk_offloaded.py, the
original the same model undispatched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
UNDISPATCHED = REPO_ROOT / "demos" / "gpt" / "ported.py"
OFFLOADED = REPO_ROOT / "tests" / "offload" / "disk_offloaded.py"


def compare_offloaded(tmp_path: Path, how: str, bug: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "tracetui", "compare", str(UNDISPATCHED), str(OFFLOADED), "--no-tui", "--no-rerun", "--json", str(report)]
        + list(extra),
        env=os.environ | {"TRACETUI_OFFLOAD_HOW": how, "TRACETUI_OFFLOAD_BUG": bug, "TRACETUI_DEMO_BUG": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.exists(), completed.stdout + completed.stderr
    return completed, json.loads(report.read_text())


@pytest.mark.parametrize("how", ["disk_offload", "device_map"])
def test_an_offloaded_port_compares_equal_to_the_same_model_undispatched(how: str, tmp_path: Path) -> None:
    completed, report = compare_offloaded(tmp_path, how, "")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert report["verdict"] == "match"
    assert report["counts"] == {"match": 54}  # every call recorded with real values, none unmatched
    assert max(row["max_abs_diff"] for row in report["rows"]) == 0


@pytest.mark.parametrize(
    ("how", "bug", "culprit", "memory"),
    [
        ("disk_offload", "activation", "model.layers.1.mlp.act_fn", "--stream"),
        ("device_map", "norm_eps", "model.norm", "--stream"),
        ("disk_offload", "norm_eps", "model.norm", "--spill"),
    ],
)
def test_a_bug_planted_in_an_offloaded_port_is_found_within_the_memory_bound(
    how: str, bug: str, culprit: str, memory: str, tmp_path: Path
) -> None:
    extra = [memory, str(tmp_path / "spill")] if memory == "--spill" else [memory]
    completed, report = compare_offloaded(tmp_path, how, bug, *extra)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert [entry["ported"] for entry in report["culprits"]] == [culprit]


def test_the_fix_search_does_not_patch_offloaded_weights(tmp_path: Path) -> None:
    """A patch to a meta parameter would crash (or be overwritten by accelerate's next load): those kinds are skipped, saying why."""
    completed, report = compare_offloaded(tmp_path, "disk_offload", "unconverted_weight")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    culprit = report["first_divergence"]
    assert culprit["ported"] == "model.layers.1.self_attn.o_proj"
    skipped = {entry["kind"]: entry["reason"] for entry in culprit["fix_search"]["skipped"]}
    assert "offloaded" in skipped["weight"]

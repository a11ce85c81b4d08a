"""Trace files: a saved trace compares like the live run; damaged or foreign files get clear errors."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tracetui
from tracetui.cli import main
from tracetui.errors import TraceFileError
from tracetui.tracefile import FORMAT_VERSION, load_trace, save_trace

SCRIPT = """
import torch
import tracetui

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.second = torch.nn.Linear(4, 4)

    def forward(self, x, scale=1.0):
        hidden = self.first(x)
        tracetui.tap("hidden", hidden)
        return {{"out": self.second(hidden) * scale, "both": (hidden, None)}}

def build():
    torch.manual_seed(0)
    return Net(), {{"x": torch.randn(2, 4), "scale": {scale}}}
"""


@pytest.fixture
def scripts(write_script) -> tuple[Path, Path]:
    return write_script("original.py", SCRIPT.format(scale=1.0)), write_script("ported.py", SCRIPT.format(scale=1.5))


def test_round_trip_keeps_every_record_leaf_and_tensor(scripts: tuple[Path, Path], tmp_path: Path) -> None:
    trace = tracetui.record(scripts[0])
    path = save_trace(trace, tmp_path / "original.trace")
    loaded = load_trace(path)
    assert len(loaded) == len(trace)
    for before, after in zip(trace, loaded, strict=True):
        assert (before.name, before.class_name, before.call, before.depth, before.parent, before.kind) == (
            after.name, after.class_name, after.call, after.depth, after.parent, after.kind,
        )
        assert [leaf.name for leaf in before.inputs + before.outputs] == [leaf.name for leaf in after.inputs + after.outputs]
        for leaf_before, leaf_after in zip(before.inputs + before.outputs, after.inputs + after.outputs, strict=True):
            if leaf_before.tensor is None:
                assert leaf_after.value_repr == leaf_before.value_repr
            else:
                assert torch.equal(leaf_before.tensor, leaf_after.tensor) and leaf_before.source == leaf_after.source
    assert loaded.rerun_output_diff == trace.rerun_output_diff
    # A tensor passed on unchanged is stored once in the file too.
    assert loaded[1].outputs[0].tensor is loaded[2].outputs[0].tensor or loaded[1].outputs[0].tensor is loaded[3].inputs[0].tensor


def test_cli_record_then_compare_a_trace_with_a_script(scripts: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    trace_path = tmp_path / "original.trace"
    assert main(["record", str(scripts[0]), "-o", str(trace_path)]) == 0
    assert "recorded 4 calls" in capsys.readouterr().out
    report = tmp_path / "report.json"
    assert main(["compare", str(trace_path), str(scripts[1]), "--no-tui", "--json", str(report)]) == 1
    document = json.loads(report.read_text())
    assert document["first_divergence"]["ported"] == ""  # the scale is applied inline in the root's forward
    assert main(["compare", str(trace_path), str(scripts[0]), "--no-tui"]) == 0


def write_header(path: Path, header: dict, payload: bytes = b"") -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + payload)


def damaged_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    truncated = tmp_path / "truncated.trace"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.trace"
    garbage.write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    pickled = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(2)}, pickled)
    checkpoint = tmp_path / "model.safetensors"
    save_file({"weight": torch.ones(2)}, str(checkpoint))
    newer = tmp_path / "newer.trace"
    save_file({}, str(newer), metadata={"format": "tracetui.trace", "format_version": str(FORMAT_VERSION + 1), "trace": "{}"})
    bad_json = tmp_path / "bad_json.trace"
    save_file({}, str(bad_json), metadata={"format": "tracetui.trace", "format_version": "1", "trace": "{not json"})
    missing_tensor = tmp_path / "missing_tensor.trace"
    document = json.loads(json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])["__metadata__"]["trace"])
    save_file({}, str(missing_tensor), metadata={"format": "tracetui.trace", "format_version": "1", "trace": json.dumps(document)})
    return {
        "truncated": (truncated, "corrupt, truncated or not a safetensors file"),
        "garbage": (garbage, "corrupt, truncated or not a safetensors file"),
        "pickle": (pickled, "corrupt, truncated or not a safetensors file"),
        "checkpoint": (checkpoint, "not a tracetui trace (it has no tracetui metadata"),
        "newer": (newer, "written by a newer tracetui"),
        "bad_json": (bad_json, "records are missing or damaged"),
        "missing_tensor": (missing_tensor, "records are damaged (KeyError"),
    }


@pytest.mark.parametrize("kind", ["truncated", "garbage", "pickle", "checkpoint", "newer", "bad_json", "missing_tensor"])
def test_damaged_or_foreign_trace_files_get_a_clear_error(kind: str, scripts: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    good = save_trace(tracetui.record(scripts[0], rerun=False), tmp_path / "good.trace")
    path, phrase = damaged_files(tmp_path, good)[kind]
    with pytest.raises(TraceFileError, match=phrase.replace("(", r"\(")):
        load_trace(path)
    assert main(["compare", str(path), str(scripts[1]), "--no-tui"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and phrase in error and "Traceback" not in error


def rewrite_records(good: Path, destination: Path, change: Callable[[dict], None]) -> Path:
    """``good`` with its record metadata changed by ``change`` and its tensors as they were."""
    with safe_open(str(good), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not a dict)
    document = json.loads(metadata["trace"])
    change(document)
    save_file(tensors, str(destination), metadata=metadata | {"trace": json.dumps(document)})
    return destination


def set_field(position: int, field: str, value: object) -> Callable[[dict], None]:
    def change(document: dict) -> None:
        document["records"][position][field] = value

    return change


OUT_OF_RANGE_RECORDS: dict[str, tuple[Callable[[dict], None], str]] = {
    "parent_far_away": (set_field(1, "parent", 999), "record 1 has parent 999"),
    "parent_after_child": (set_field(1, "parent", 2), "record 1 has parent 2"),
    "huge_call": (set_field(1, "call", 10**30), f"record 1 has call {10**30}"),
    "negative_depth": (set_field(1, "depth", -5), "record 1 has depth -5"),
    "text_depth": (set_field(1, "depth", "1"), "record 1 has depth '1'"),
    "unknown_kind": (set_field(1, "kind", "lambda"), "record 1 has kind 'lambda'"),
    "shuffled_index": (set_field(0, "index", 3), "record 0 has index 3"),
    "name_not_text": (set_field(2, "name", ["h"]), "record 2 has a name that is not text"),
    "short_rerun_diffs": (lambda document: document.update(rerun_output_diff=[0.0]), "run-to-run differences do not match"),
}


@pytest.mark.parametrize("kind", sorted(OUT_OF_RANGE_RECORDS))
def test_record_metadata_out_of_range_gets_a_clear_error(kind: str, scripts: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    """A trace someone sent, with numbers no recording makes: a clear error naming the file and
    the record, before the pairing or the interface index with them."""
    good = save_trace(tracetui.record(scripts[0]), tmp_path / "good.trace")
    change, phrase = OUT_OF_RANGE_RECORDS[kind]
    path = rewrite_records(good, tmp_path / f"{kind}.trace", change)
    with pytest.raises(TraceFileError, match=re.escape(phrase)):
        load_trace(path)
    assert main(["compare", str(path), str(scripts[1]), "--no-tui"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and phrase in error and "Traceback" not in error

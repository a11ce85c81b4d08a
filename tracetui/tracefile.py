"""Trace files: tensors in safetensors, the call records as JSON in its metadata. Never pickle.

One file per trace. Each distinct recorded tensor is stored once (``t0``, ``t1``, …) and leaves
refer to it by key, so a tensor passed unchanged from one module to the next costs nothing twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tracetui.errors import TraceFileError
from tracetui.trace import CallRecord, Leaf, Trace

FORMAT_NAME = "tracetui.trace"
FORMAT_VERSION = 1


def save_trace(trace: Trace, path: str | Path) -> Path:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    key_by_tensor: dict[int, str] = {}
    complex_keys: list[str] = []

    def tensor_key(tensor: torch.Tensor) -> str:
        key = key_by_tensor.get(id(tensor))
        if key is None:
            key = f"t{len(tensors)}"
            key_by_tensor[id(tensor)] = key
            stored = tensor
            if tensor.is_complex():  # safetensors has no complex dtypes
                complex_keys.append(key)
                stored = torch.view_as_real(tensor)
            tensors[key] = stored.contiguous()
        return key

    def leaf_entry(leaf: Leaf) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": leaf.name}
        if leaf.tensor is not None:
            entry["tensor"] = tensor_key(leaf.tensor)
        else:
            entry["type"] = leaf.value_type
            entry["repr"] = leaf.value_repr
        if leaf.source is not None:
            entry["source"] = list(leaf.source)
        return entry

    records = [
        {
            "index": record.index,
            "name": record.name,
            "class": record.class_name,
            "call": record.call,
            "depth": record.depth,
            "parent": record.parent,
            "kind": record.kind,
            "finished": record.finished,
            "inputs": [leaf_entry(leaf) for leaf in record.inputs],
            "outputs": [leaf_entry(leaf) for leaf in record.outputs],
        }
        for record in trace.records
    ]
    document = {
        "source": trace.source,
        "seed": trace.seed,
        "torch_version": trace.torch_version,
        "rerun_output_diff": trace.rerun_output_diff,
        "rerun_input_diff": trace.rerun_input_diff,
        "complex_tensors": complex_keys,
        "records": records,
    }
    metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "trace": json.dumps(document)}
    try:
        save_file(tensors, str(path), metadata=metadata)
    except OSError as error:
        raise TraceFileError(f"{path}: cannot write the trace file ({error.strerror}).") from error
    return path


def load_trace(path: str | Path) -> Trace:
    path = Path(path)
    if not path.exists():
        raise TraceFileError(f"{path}: no such file. Pass a model script (.py) or a trace saved by `tracetui record SCRIPT -o FILE`.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            document = read_document(path, metadata)
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except SafetensorError as error:
        raise TraceFileError(
            f"{path}: not a readable tracetui trace — the file is corrupt, truncated or not a safetensors file ({error}). "
            "Record it again with `tracetui record SCRIPT -o FILE`."
        ) from error
    except OSError as error:
        raise TraceFileError(f"{path}: cannot read the trace file ({error}).") from error
    for key in document.get("complex_tensors", []):
        if key in tensors:
            tensors[key] = torch.view_as_complex(tensors[key])
    try:
        return build_trace(document, tensors, path)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise TraceFileError(
            f"{path}: the trace's records are damaged ({type(error).__name__}: {error}). Record it again with `tracetui record`."
        ) from error


def read_document(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if metadata.get("format") != FORMAT_NAME:
        raise TraceFileError(
            f"{path}: a safetensors file, but not a tracetui trace (it has no tracetui metadata; a model checkpoint?). "
            "Pass a model script or a trace saved by `tracetui record SCRIPT -o FILE`."
        )
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise TraceFileError(f"{path}: the trace has an unreadable format version {version!r}. Record it again with `tracetui record`.")
    if int(version) > FORMAT_VERSION:
        raise TraceFileError(
            f"{path}: the trace was written by a newer tracetui (format {version}; this one reads up to {FORMAT_VERSION}). "
            "Upgrade tracetui, or record the trace again with this version."
        )
    try:
        document = json.loads(metadata["trace"])
    except (KeyError, json.JSONDecodeError) as error:
        raise TraceFileError(f"{path}: the trace's records are missing or damaged ({error}). Record it again with `tracetui record`.") from error
    if not isinstance(document, dict):
        raise TraceFileError(f"{path}: the trace's records are damaged (not a JSON object). Record it again with `tracetui record`.")
    return document


def build_trace(document: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> Trace:
    def leaf(entry: dict[str, Any]) -> Leaf:
        source = tuple(entry["source"]) if "source" in entry else None
        if "tensor" in entry:
            return Leaf(name=entry["name"], tensor=tensors[entry["tensor"]], source=source)  # type: ignore[arg-type]
        return Leaf(name=entry["name"], value_type=entry["type"], value_repr=entry["repr"], source=source)  # type: ignore[arg-type]

    trace = Trace(
        source=str(path),
        seed=int(document["seed"]),
        torch_version=str(document["torch_version"]),
        rerun_output_diff=document.get("rerun_output_diff"),
        rerun_input_diff=document.get("rerun_input_diff"),
    )
    for position, entry in enumerate(document["records"]):
        if entry["index"] != position:
            raise ValueError(f"record {position} has index {entry['index']}")
        trace.records.append(
            CallRecord(
                index=position,
                name=entry["name"],
                class_name=entry["class"],
                call=int(entry["call"]),
                depth=int(entry["depth"]),
                parent=entry["parent"],
                kind=entry["kind"],
                finished=bool(entry["finished"]),
                inputs=[leaf(item) for item in entry["inputs"]],
                outputs=[leaf(item) for item in entry["outputs"]],
            )
        )
    return trace

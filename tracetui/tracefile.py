"""Trace files: tensors in safetensors, the call records as JSON. Never pickle.

Two layouts hold the same document:

- **one file** (``trace.safetensors``): the records in the safetensors metadata;
- **a directory** (the bounded-memory layout, written while recording with ``--spill``): the
  records in ``trace.json`` and the tensors in shards ``tensors-00000.safetensors``, … — the
  layout of sharded checkpoints, so a trace bigger than RAM is never held whole.

Each distinct recorded tensor is stored once (``t0``, ``t1``, …) and leaves refer to it by key,
so a tensor passed unchanged from one module to the next costs nothing twice. Tensors are read
back memory-mapped in both layouts. Leaves recorded with statistics only store their summary.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from tracetui.errors import TraceFileError
from tracetui.output_files import write_text_atomically
from tracetui.spill import SpillStore, prepare_directory, read_safetensors, storable, write_safetensors
from tracetui.trace import CallRecord, Leaf, TensorSummary, Trace, summary_leaf

FORMAT_NAME = "tracetui.trace"
FORMAT_VERSION = 2  # 2: statistics-only leaves ("summary") and the directory layout
INDEX_NAME = "trace.json"

# Receives short messages such as "shard 3 of 12" while a large trace is saved or loaded.
Progress = Callable[[str], None]


def is_directory_trace(path: Path) -> bool:
    """Where a trace is (or will be) a directory: an existing directory, or a name with no suffix."""
    return path.is_dir() or (not path.exists() and path.suffix == "")


def trace_document(trace: Trace, tensor_key: Callable[[torch.Tensor], str]) -> dict[str, Any]:
    """The trace as JSON-ready data; ``tensor_key`` names (and stores) each tensor."""

    def leaf_entry(leaf: Leaf) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": leaf.name}
        if leaf.tensor is not None:
            entry["tensor"] = tensor_key(leaf.tensor)
        elif leaf.summary is not None:
            entry["summary"] = asdict(leaf.summary)
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
    return {
        "source": trace.source,
        "seed": trace.seed,
        "torch_version": trace.torch_version,
        "rerun_output_diff": trace.rerun_output_diff,
        "rerun_input_diff": trace.rerun_input_diff,
        "records": records,
    } | ({} if trace.distributed is None else {"distributed": trace.distributed.to_document()})


def save_trace(trace: Trace, path: str | Path, progress: Progress | None = None) -> Path:
    """Write ``trace`` as one file, or as a directory when ``path`` is one (see the module docstring)."""
    path = Path(path)
    if is_directory_trace(path):
        return save_trace_directory(trace, path, progress)
    tensors: dict[str, torch.Tensor] = {}
    key_by_tensor: dict[int, str] = {}
    complex_keys: list[str] = []

    def tensor_key(tensor: torch.Tensor) -> str:
        key = key_by_tensor.get(id(tensor))
        if key is None:
            key = f"t{len(tensors)}"
            key_by_tensor[id(tensor)] = key
            if tensor.is_complex():  # safetensors has no complex dtypes
                complex_keys.append(key)
            tensors[key] = storable(tensor)
        return key

    document = trace_document(trace, tensor_key)
    document["complex_tensors"] = complex_keys
    if progress is not None:
        progress(f"writing {sum(tensor.numel() * tensor.element_size() for tensor in tensors.values()) / 1e6:.0f} MB")
    metadata = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "trace": json.dumps(document)}
    write_safetensors(path, tensors, metadata)
    return path


def save_trace_directory(trace: Trace, directory: Path, progress: Progress | None = None) -> Path:
    """Write ``trace`` in the directory layout, one shard at a time."""
    prepare_directory(directory, INDEX_NAME)
    store = SpillStore(directory)
    key_by_tensor: dict[int, str] = {}

    def tensor_key(tensor: torch.Tensor) -> str:
        key = key_by_tensor.get(id(tensor))
        if key is None:
            key = store.add(tensor)
            key_by_tensor[id(tensor)] = key
            if store.is_full:
                store.flush(on_write=progress)
        return key

    document = trace_document(trace, tensor_key)
    store.flush(on_write=progress)
    write_index(directory, document, store)
    return directory


def write_index(directory: Path, document: dict[str, Any], store: SpillStore) -> None:
    """Finish a directory trace: its records, and which shard holds each tensor.

    Written last, and whole or not at all: a directory without it is a recording that did not finish.
    """
    index = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "trace": document | {"complex_tensors": store.complex_keys},
        "tensor_files": store.file_of_key,
    }
    write_text_atomically(directory / INDEX_NAME, json.dumps(index))


def rewrite_index_document(directory: Path, trace: Trace) -> None:
    """Store what was found after a directory trace's index was written: the run-to-run
    differences, and what a distributed recording learnt about its ranks."""
    index_path = directory / INDEX_NAME
    index = json.loads(index_path.read_text())
    index["trace"]["rerun_output_diff"] = trace.rerun_output_diff
    index["trace"]["rerun_input_diff"] = trace.rerun_input_diff
    if trace.distributed is not None:
        index["trace"]["distributed"] = trace.distributed.to_document()
    write_text_atomically(index_path, json.dumps(index))


def load_trace(path: str | Path, progress: Progress | None = None) -> Trace:
    path = Path(path)
    if not path.exists():
        raise TraceFileError(f"{path}: no such file. Pass a model script (.py) or a trace saved by `tracetui record SCRIPT -o FILE`.")
    if path.is_dir():
        return load_trace_directory(path, progress)
    try:
        tensors, metadata = read_safetensors(path)
        document = read_document(path, metadata)
    except SafetensorError as error:
        raise TraceFileError(
            f"{path}: not a readable tracetui trace — the file is corrupt, truncated or not a safetensors file ({error}). "
            "Record it again with `tracetui record SCRIPT -o FILE`."
        ) from error
    except OSError as error:
        raise TraceFileError(f"{path}: cannot read the trace file ({error}).") from error
    return finish_loading(document, tensors, path, progress)


def load_trace_directory(directory: Path, progress: Progress | None = None) -> Trace:
    index_path = directory / INDEX_NAME
    if not index_path.exists():
        shards = sorted(directory.glob("tensors-*.safetensors"))
        problem = (
            f"it has {len(shards)} tensor shard(s) but no {INDEX_NAME}: the recording did not finish"
            if shards
            else f"it has no {INDEX_NAME}, so it is not a tracetui trace directory"
        )
        raise TraceFileError(f"{directory}: {problem}. Record it again with `tracetui record SCRIPT -o DIRECTORY --spill`.")
    try:
        index = json.loads(index_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TraceFileError(f"{index_path}: the trace index is damaged ({error}). Record it again with `tracetui record`.") from error
    if not isinstance(index, dict):
        raise TraceFileError(f"{index_path}: the trace index is damaged (not a JSON object). Record it again with `tracetui record`.")
    document = read_document(
        index_path,
        {"format": str(index.get("format")), "format_version": str(index.get("format_version")), "trace": json.dumps(index.get("trace"))},
    )
    tensor_files = index.get("tensor_files")
    if not isinstance(tensor_files, dict):
        raise TraceFileError(f"{index_path}: the trace index is damaged (no tensor_files). Record it again with `tracetui record`.")
    tensors: dict[str, torch.Tensor] = {}
    shard_names = sorted(set(tensor_files.values()))
    for number, shard_name in enumerate(shard_names, start=1):
        shard = directory / str(shard_name)
        if progress is not None:
            progress(f"mapping shard {number} of {len(shard_names)}")
        try:
            mapped, _ = read_safetensors(shard)
        except (SafetensorError, OSError) as error:
            raise TraceFileError(
                f"{shard}: a shard of the trace is missing, corrupt or truncated ({error}). Record the trace again with `tracetui record`."
            ) from error
        tensors.update(mapped)
    return finish_loading(document, tensors, directory, progress)


def finish_loading(document: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path, progress: Progress | None) -> Trace:
    for key in document.get("complex_tensors", []):
        if key in tensors:
            tensors[key] = torch.view_as_complex(tensors[key])
    if progress is not None:
        progress(f"reading {len(document.get('records', []))} calls")
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
        raise TraceFileError(
            f"{path}: the trace's records are missing or damaged ({error}). Record it again with `tracetui record`."
        ) from error
    if not isinstance(document, dict):
        raise TraceFileError(f"{path}: the trace's records are damaged (not a JSON object). Record it again with `tracetui record`.")
    return document


def build_trace(document: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path) -> Trace:
    def leaf(entry: dict[str, Any]) -> Leaf:
        source = tuple(entry["source"]) if "source" in entry else None
        if "tensor" in entry:
            return Leaf(name=entry["name"], tensor=tensors[entry["tensor"]], source=source)
        if "summary" in entry:
            summary = entry["summary"]
            return summary_leaf(entry["name"], TensorSummary(**summary | {"shape": tuple(summary["shape"])}), source)
        return Leaf(name=entry["name"], value_type=entry["type"], value_repr=entry["repr"], source=source)

    trace = Trace(
        source=str(path),
        seed=int(document["seed"]),
        torch_version=str(document["torch_version"]),
        rerun_output_diff=document.get("rerun_output_diff"),
        rerun_input_diff=document.get("rerun_input_diff"),
    )
    if document.get("distributed") is not None:
        from tracetui.distributed.info import DistributedInfo

        trace.distributed = DistributedInfo.from_document(document["distributed"])
    for position, entry in enumerate(document["records"]):
        record = CallRecord(
            index=position,
            name=entry["name"],
            class_name=entry["class"],
            call=entry["call"],
            depth=entry["depth"],
            parent=entry["parent"],
            kind=entry["kind"],
            finished=bool(entry["finished"]),
            inputs=[leaf(item) for item in entry["inputs"]],
            outputs=[leaf(item) for item in entry["outputs"]],
        )
        check_record(record, entry["index"], trace.records)
        trace.records.append(record)
    for record in trace.records:
        for recorded in record.inputs + record.outputs:
            source = recorded.source  # the record that returned this tensor first, and where in its output
            if source is not None and not (len(source) == 2 and type(source[0]) is int and 0 <= source[0] < len(trace.records)):
                raise ValueError(f"record {record.index} has a leaf whose source is {list(source)!r}")
    for diffs in (trace.rerun_output_diff, trace.rerun_input_diff):
        if diffs is not None and (len(diffs) != len(trace.records) or not all(isinstance(value, (int, float)) for value in diffs)):
            raise ValueError("the run-to-run differences do not match the records")
    return trace


def check_record(record: CallRecord, stored_index: object, earlier: list[CallRecord]) -> None:
    """A ValueError for a record no recording can make: the pairing, the tree and the interface
    index with these numbers, and a file someone sent may hold anything."""
    position = record.index
    problems = []
    if stored_index != position:
        problems.append(f"index {stored_index!r}")
    if not (isinstance(record.name, str) and isinstance(record.class_name, str)):
        problems.append("a name that is not text")
    if record.kind not in ("module", "tap"):
        problems.append(f"kind {record.kind!r}")
    if not (type(record.call) is int and 0 <= record.call <= position):
        problems.append(f"call {record.call!r}")  # at most one call per earlier record of the same name
    parent = record.parent
    if parent is not None and not (type(parent) is int and 0 <= parent < position):
        problems.append(f"parent {parent!r}")  # a parent is recorded before its children
    elif not (type(record.depth) is int and record.depth == (0 if parent is None else earlier[parent].depth + 1)):
        problems.append(f"depth {record.depth!r}")
    if problems:
        raise ValueError(f"record {position} has {', '.join(problems)}")

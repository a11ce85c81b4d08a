"""Tensors on disk: a streaming safetensors writer and the spill store of bounded-memory recording.

``safetensors.torch.save_file`` turns every tensor into a ``bytes`` copy before writing, so
saving a trace would briefly need its size twice over in memory. :func:`write_safetensors`
writes the same format straight from each tensor's memory instead. Files are read back with
``safetensors.safe_open``, whose tensors are memory-mapped: pages come from disk when touched
and the kernel can drop them again, so a trace bigger than RAM can still be compared.

:class:`SpillStore` is where a bounded-memory recording puts its tensors: copies wait in a
buffer of at most ``shard_bytes`` and are then written as one shard and replaced by their
memory-mapped views.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from tracetui.errors import TraceFileError
from tracetui.memory import release_free_memory
from tracetui.output_files import PARTIAL_SUFFIX, write_atomically

SHARD_BYTES = 128 * 1024 * 1024  # a shard buffered in memory before it is written: the spill's footprint
SHARD_PATTERN = "tensors-{:05d}.safetensors"

# safetensors' dtype codes; complex tensors are stored as their real view (see the callers).
DTYPE_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
for _name, _code in (("uint16", "U16"), ("uint32", "U32"), ("uint64", "U64")):
    if hasattr(torch, _name):
        DTYPE_CODES[getattr(torch, _name)] = _code


def storable(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as safetensors can hold it: on the CPU, contiguous, complex as its real view."""
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.detach().to("cpu").contiguous()


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file without an in-memory copy of the data (tensors must be storable).

    Written whole or not at all (:func:`tracetui.output_files.write_atomically`): a full disk
    leaves the file that was there, never a truncated one.
    """
    header = safetensors_header(path, tensors, metadata)
    write_atomically(path, lambda temporary: write_header_and_data(temporary, header, tensors))


def safetensors_header(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> bytes:
    """The file's header: each tensor's dtype, shape and byte range, then the metadata."""
    header: dict[str, object] = {}
    offset = 0
    for key, tensor in tensors.items():
        if tensor.dtype not in DTYPE_CODES:
            raise TraceFileError(f"{path}: cannot store a {tensor.dtype} tensor ({key}) in a trace file.")
        size = tensor.numel() * tensor.element_size()
        header[key] = {"dtype": DTYPE_CODES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes with spaces


def write_header_and_data(path: Path, header: bytes, tensors: dict[str, torch.Tensor]) -> None:
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(header)))
        file.write(header)
        for tensor in tensors.values():
            if tensor.numel():
                file.write(tensor.reshape(-1).view(torch.uint8).numpy().data)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Memory-mapped tensors and the metadata of one safetensors file."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    return tensors, metadata


class SpillStore:
    """Recorded tensors on their way to shard files in ``directory``; see the module docstring."""

    def __init__(self, directory: Path, shard_bytes: int | None = None) -> None:
        self.directory = directory
        self.shard_bytes = SHARD_BYTES if shard_bytes is None else shard_bytes
        self.file_of_key: dict[str, str] = {}
        self.complex_keys: list[str] = []
        self.bytes_written = 0
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards = 0

    def add(self, tensor: torch.Tensor) -> str:
        """Take a recorded copy (the store keeps it until the shard is written); return its key."""
        key = f"t{len(self.file_of_key) + len(self._pending)}"
        if tensor.is_complex():
            self.complex_keys.append(key)
        stored = storable(tensor)
        self._pending[key] = stored
        self._pending_bytes += stored.numel() * stored.element_size()
        return key

    @property
    def is_full(self) -> bool:
        return self._pending_bytes >= self.shard_bytes

    def flush(self, on_write: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
        """Write the buffered copies as one shard; return their memory-mapped views by key."""
        if not self._pending:
            return {}
        name = SHARD_PATTERN.format(self._shards)
        path = self.directory / name
        write_safetensors(path, self._pending)
        self._shards += 1
        self.bytes_written += self._pending_bytes
        mapped, _ = read_safetensors(path)
        for key in self._pending:
            self.file_of_key[key] = name
            if key in self.complex_keys:
                mapped[key] = torch.view_as_complex(mapped[key])
        self._pending = {}
        self._pending_bytes = 0
        release_free_memory()  # the copies just freed: back to the system, not kept in the heap
        if on_write is not None:
            on_write(name)
        return mapped


def prepare_directory(directory: Path, index_name: str) -> None:
    """Create ``directory`` for a new trace, clearing an old trace there; refuse anything else."""
    ours = trace_directory_entries(directory, index_name)
    directory.mkdir(parents=True, exist_ok=True)
    for entry in ours:
        entry.unlink()


def trace_directory_entries(directory: Path, index_name: str, shown: str | None = None) -> list[Path]:
    """The files of an old trace in ``directory`` (none if it does not exist yet); a
    :class:`TraceFileError` if it is not a directory or holds anything else.

    Called by the command line before any model runs too, so that a wrong folder costs nothing.
    """
    shown = str(directory) if shown is None else shown
    if os.path.lexists(directory) and not directory.is_dir():
        raise TraceFileError(f"{shown}: exists and is not a directory; pass a new directory for the spilled trace.")
    if not directory.exists():
        return []
    entries = list(directory.iterdir())
    ours = [entry for entry in entries if is_trace_file(entry.name, index_name)]
    if len(ours) != len(entries):
        raise TraceFileError(f"{shown}: the directory holds files that are not a tracetui trace; pass an empty or new directory.")
    return ours


def is_trace_file(name: str, index_name: str) -> bool:
    """The index, a shard, or one of them left half-written by a run that was killed."""
    if name.endswith(PARTIAL_SUFFIX):
        return True
    return name == index_name or (name.startswith("tensors-") and name.endswith(".safetensors"))

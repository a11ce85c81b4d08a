"""Hashes of the original state dict's tensors, whole and by row and column: what the check looks ported tensors up in."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

CANDIDATES_PER_ROW = 8  # a row value shared by more original rows than this (all zeros, say) is not looked up
WholeKey = tuple[tuple[int, ...], str, int]  # shape, dtype, hash of the bytes


# -- hashing ---------------------------------------------------------------------------------


def common_dtype(tensors: list[torch.Tensor]) -> torch.dtype:
    """The narrowest floating dtype among the tensors: both sides are compared cast to it."""
    floating = {tensor.dtype for tensor in tensors if tensor.is_floating_point()}
    if not floating:
        return torch.float32
    return min(floating, key=lambda dtype: (torch.finfo(dtype).bits, dtype != torch.bfloat16))


def canonical(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    if tensor.is_floating_point():
        tensor = tensor.to(dtype)
    elif tensor.dtype == torch.bool:
        tensor = tensor.to(torch.uint8)
    else:
        tensor = tensor.to(torch.int64)
    return tensor.contiguous()


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous tensor, without copying when possible."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return flat.view(torch.uint8).numpy().data.cast("B")


def whole_key(tensor: torch.Tensor) -> WholeKey:
    return (tuple(tensor.shape), str(tensor.dtype), hash(bytes(tensor_bytes(tensor))))


def row_hashes(matrix: torch.Tensor) -> list[int]:
    """One hash per row of a contiguous 2-D tensor."""
    data = bytes(tensor_bytes(matrix))
    view = memoryview(data)
    width = len(data) // matrix.shape[0] if matrix.shape[0] else 0
    return [hash(view[row * width : (row + 1) * width]) for row in range(matrix.shape[0])]


# -- the original side's index ---------------------------------------------------------------


@dataclass
class OriginalIndex:
    """Hashes of the original tensors: whole, and (built on first need) every row and column."""

    tensors: dict[str, torch.Tensor]  # canonical tensors by name
    aliases: dict[str, list[str]]  # first name of a shared storage -> every name of it
    by_whole: dict[WholeKey, list[str]] = field(default_factory=lambda: defaultdict(list))
    rows_of: dict[str, list[int]] = field(default_factory=dict)
    columns_of: dict[str, list[int]] = field(default_factory=dict)
    by_row: dict[int, list[tuple[str, int]]] | None = None
    by_column: dict[int, list[tuple[str, int]]] | None = None
    sorted_keys: dict[str, int] = field(default_factory=dict)

    def build_line_index(self) -> None:
        if self.by_row is not None:
            return
        self.by_row, self.by_column = defaultdict(list), defaultdict(list)
        for name, tensor in self.tensors.items():
            if tensor.dim() != 2 or tensor.numel() == 0:
                continue
            self.rows_of[name] = row_hashes(tensor)
            self.columns_of[name] = row_hashes(tensor.t().contiguous())
            for lines, index in ((self.rows_of[name], self.by_row), (self.columns_of[name], self.by_column)):
                for position, line_hash in enumerate(lines):
                    bucket = index[line_hash]
                    if len(bucket) <= CANDIDATES_PER_ROW:
                        bucket.append((name, position))

    def with_same_values(self, tensor: torch.Tensor) -> list[str]:
        """Original tensors holding the same values as ``tensor`` in any order (same sorted values).

        Only tensors with as many elements and the same smallest and largest value are sorted.
        """
        smallest, largest = tensor.min(), tensor.max()
        key = sorted_key(tensor)
        names = []
        for name, original in self.tensors.items():
            if original.numel() != tensor.numel() or original.dtype != tensor.dtype:
                continue
            if not (torch.equal(original.min(), smallest) and torch.equal(original.max(), largest)):
                continue
            if name not in self.sorted_keys:
                self.sorted_keys[name] = sorted_key(original)
            if self.sorted_keys[name] == key:
                names.append(name)
        return names


def sorted_key(tensor: torch.Tensor) -> int:
    values = tensor.reshape(-1)
    if values.dtype in (torch.float16, torch.bfloat16):
        values = values.float()  # sort supports them poorly; the cast is exact
    return hash(bytes(tensor_bytes(values.sort().values.contiguous())))


def build_original_index(state: Mapping[str, torch.Tensor], dtype: torch.dtype) -> OriginalIndex:
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, list[str]] = {}
    storage_owner: dict[tuple[int, tuple[int, ...], tuple[int, ...], str], str] = {}
    for name, tensor in state.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), str(tensor.dtype))
        if tensor.numel() and identity in storage_owner:  # tied weights: one tensor, two names
            aliases[storage_owner[identity]].append(name)
            continue
        storage_owner[identity] = name
        aliases[name] = [name]
        tensors[name] = canonical(tensor, dtype)
    index = OriginalIndex(tensors=tensors, aliases=aliases)
    for name, tensor in tensors.items():
        index.by_whole[whole_key(tensor)].append(name)
    return index

"""On each rank, while the port is recorded: make every recorded tensor the full, single-process one.

Three kinds of tensor reach tracetui's hooks in a tensor-parallel port:

- **DTensors** (a RowwiseParallel module's sharded input, a module kept with
  ``use_local_output=False``): recorded as ``full_tensor()``.
- **Local shards**: ColwiseParallel turns its DTensor output into this rank's shard
  (``use_local_output``) in a forward hook registered when the model was parallelised, which
  runs before tracetui's. A forward hook put *first* (``prepend=True``) sees the DTensor, notes
  its placements, and the shard the recorder then sees is assembled from every rank's with
  them (``DTensor.from_local(...).full_tensor()``, uneven shards included). The same shard
  passed on as another module's input is assembled again, and a module fed local shards that
  returns a tensor of the same shape (an activation between two parallel linears) is taken to
  return a shard of the same layout.
- **Plain tensors**, which should be the same on every rank: rank 0's value is recorded and
  every other rank measures its own against it; any difference is a :class:`RankDisagreement`.

Every step is a collective, taken by every rank at the same hook of the same call: the ranks run
the same modules in the same order, as tensor parallelism requires. Results are cached by the
tensor object they came from (alive and unmodified), so a tensor handed from one module to the
next is gathered once and stays one recorded tensor.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Replicate, Shard

from tracetui.distributed.info import DistributedInfo, GatheredLeaf, RankDisagreement
from tracetui.flatten import flatten
from tracetui.record import tensor_version
from tracetui.trace import CallRecord, Leaf

SHAPE_SLOTS = 9  # a shape sent between ranks: its number of dimensions, then up to 8 sizes


@dataclass(frozen=True)
class ShardLayout:
    """How a plain tensor is one rank's part of a DTensor: enough to assemble the whole."""

    mesh: Any  # DeviceMesh
    placements: tuple[Any, ...]
    shape: torch.Size
    stride: tuple[int, ...]
    local_shape: torch.Size

    def full(self, local: torch.Tensor) -> torch.Tensor:
        distributed = DTensor.from_local(local, self.mesh, self.placements, run_check=False, shape=self.shape, stride=self.stride)
        return distributed.full_tensor()


@dataclass
class _Gathered:
    source: weakref.ref[torch.Tensor]
    version: int | None
    full: torch.Tensor | None  # None: the tensor itself is what is recorded (replicated, rank 0's value)
    layout: ShardLayout | None  # the layout it was assembled by (None: replicated)


class RankGatherer:
    """The recorder's leaf transform on one rank (see the module docstring).

    Only rank 0's notes (:attr:`info`) are kept; every rank computes them the same way.
    """

    def __init__(self, world_size: int, backend: str) -> None:
        self.rank = dist.get_rank()
        self.world_size = world_size
        self.info = DistributedInfo(world_size=world_size, backend=backend)
        # By the module's name: the layouts of its DTensor outputs, seen before a parallel style made them local.
        self._output_layouts: dict[str, dict[str, ShardLayout]] = {}
        # By the record's index: the layout of a local shard it was given (for what it returns).
        self._fed_shards: dict[int, ShardLayout] = {}
        self._cache: dict[int, _Gathered] = {}
        self._gathered_keys: set[tuple[str, int, str, str]] = set()
        self._disagreement_keys: set[tuple[str, int, str, str, int]] = set()
        self._module_names: dict[int, str] = {}

    @contextmanager
    def watching(self, model: torch.nn.Module) -> Iterator[RankGatherer]:
        """A forward hook first in line on every module, to see DTensor outputs before they are made local."""
        handles = []
        try:
            for name, module in model.named_modules():
                self._module_names[id(module)] = name
                handles.append(module.register_forward_hook(self._note_output_layouts, prepend=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _note_output_layouts(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        layouts = {}
        for path, item in flatten(output, "output"):
            # Only a sharded output made local is this rank's part of a whole; a Partial one is
            # summed across ranks by the parallel style (RowwiseParallel) before tracetui sees it.
            if isinstance(item, DTensor) and any(isinstance(placement, Shard) for placement in item.placements):
                local = item.to_local()
                layouts[path] = ShardLayout(item.device_mesh, tuple(item.placements), item.shape, item.stride(), local.shape)
        name = self._module_names.get(id(module), "")
        if layouts:
            self._output_layouts[name] = layouts
        else:
            self._output_layouts.pop(name, None)

    # -- the leaf transform ------------------------------------------------------------------

    def __call__(self, record: CallRecord, part: str, leaves: list[Leaf]) -> None:
        output_layouts = self._output_layouts.pop(record.name, {}) if part == "outputs" else {}
        for leaf in leaves:
            tensor = leaf.tensor
            if tensor is None:
                continue
            cached = self._cached(tensor)
            if cached is not None:
                leaf.tensor = tensor if cached.full is None else cached.full
                if cached.layout is not None:
                    self._note_gathered(record, part, leaf.name, cached.layout, "local shard")
                    if part == "inputs":
                        self._fed_shards[record.index] = cached.layout
                continue
            if isinstance(tensor, DTensor):
                placed = ShardLayout(tensor.device_mesh, tuple(tensor.placements), tensor.shape, tensor.stride(), tensor.to_local().shape)
                if all(isinstance(placement, Replicate) for placement in placed.placements):
                    leaf.tensor = self._remember(tensor, self._replicated(record, part, leaf.name, tensor.to_local()), None)
                else:
                    leaf.tensor = self._remember(tensor, tensor.full_tensor(), None)
                    self._note_gathered(record, part, leaf.name, placed, "dtensor")
                continue
            layout = output_layouts.get(leaf.name) or self._layout_of_returned(record, part, tensor)
            if layout is not None and tuple(tensor.shape) == tuple(layout.local_shape):
                leaf.tensor = self._remember(tensor, layout.full(tensor), layout)
                self._note_gathered(record, part, leaf.name, layout, "local shard")
                if part == "inputs":
                    self._fed_shards[record.index] = layout
                continue
            self._replicated(record, part, leaf.name, tensor)
            self._remember(tensor, None, None)  # not the tensor itself: the cache must not keep it alive

    def _layout_of_returned(self, record: CallRecord, part: str, tensor: torch.Tensor) -> ShardLayout | None:
        """A module fed a local shard that returns a tensor of the shard's shape returns a shard too."""
        if part != "outputs":
            return None
        fed = self._fed_shards.get(record.index)
        return fed if fed is not None and tuple(tensor.shape) == tuple(fed.local_shape) else None

    def _cached(self, tensor: torch.Tensor) -> _Gathered | None:
        cached = self._cache.get(id(tensor))
        if cached is None or cached.source() is not tensor or cached.version != tensor_version(tensor):
            return None
        return cached

    def _remember(self, tensor: torch.Tensor, full: torch.Tensor | None, layout: ShardLayout | None) -> torch.Tensor:
        key = id(tensor)
        self._cache[key] = _Gathered(weakref.ref(tensor, lambda _: self._cache.pop(key, None)), tensor_version(tensor), full, layout)
        return tensor if full is None else full

    # -- findings ----------------------------------------------------------------------------

    def _note_gathered(self, record: CallRecord, part: str, leaf_name: str, layout: ShardLayout, how: str) -> None:
        key = (record.name, record.call, part, leaf_name)
        if key in self._gathered_keys:  # the second run of the same pass
            return
        self._gathered_keys.add(key)
        dim, rank_sizes = shard_split(layout)
        self.info.gathered.append(
            GatheredLeaf(record.index, part, leaf_name, repr(layout.placements), dim=dim, rank_sizes=rank_sizes, how=how)
        )

    def _replicated(self, record: CallRecord, part: str, leaf_name: str, local: torch.Tensor) -> torch.Tensor:
        """Rank 0's value of a tensor every rank should hold alike; each other rank's difference from it is noted."""
        if self.world_size == 1:
            return local
        local = local.detach()
        shapes = self._all_shapes(local)
        if any(described != shapes[0] for described in shapes):
            for rank, (shape, dtype_code) in enumerate(shapes):
                if (shape, dtype_code) != shapes[0]:
                    detail = f"shape {list(shape)} on rank {rank}, {list(shapes[0][0])} on rank 0"
                    if shape == shapes[0][0]:
                        detail = "another dtype than on rank 0"
                    self._note_disagreement(record, part, leaf_name, rank, float("inf"), detail)
            return local
        reference = local.contiguous().clone() if self.rank == 0 else torch.empty_like(local.contiguous())
        dist.broadcast(_sendable(reference), src=0)
        difference = torch.tensor([largest_difference(local, reference)], dtype=torch.float64, device=local.device)
        differences = [torch.zeros_like(difference) for _ in range(self.world_size)]
        dist.all_gather(differences, difference)
        for rank, value in enumerate(differences):
            if rank != 0 and value.item() != 0:
                self._note_disagreement(record, part, leaf_name, rank, value.item(), "")
        return local

    def _all_shapes(self, local: torch.Tensor) -> list[tuple[tuple[int, ...], int]]:
        """Every rank's (shape, dtype code) of this leaf: a broadcast needs the same on all."""
        description = torch.full((SHAPE_SLOTS + 1,), -1, dtype=torch.int64, device=local.device)
        if local.dim() < SHAPE_SLOTS:
            description[0] = local.dim()
            description[1 : 1 + local.dim()] = torch.tensor(local.shape, dtype=torch.int64)
        description[SHAPE_SLOTS] = DTYPE_CODES.get(local.dtype, -2)
        descriptions = [torch.empty_like(description) for _ in range(self.world_size)]
        dist.all_gather(descriptions, description)
        shapes = []
        for gathered in descriptions:
            dims = int(gathered[0])
            shapes.append((tuple(int(size) for size in gathered[1 : 1 + max(dims, 0)]), int(gathered[SHAPE_SLOTS])))
        return shapes

    def _note_disagreement(self, record: CallRecord, part: str, leaf_name: str, rank: int, difference: float, detail: str) -> None:
        key = (record.name, record.call, part, leaf_name, rank)
        if key in self._disagreement_keys:
            return
        self._disagreement_keys.add(key)
        self.info.disagreements.append(RankDisagreement(record.index, record.name, record.call, part, leaf_name, rank, difference, detail))


DTYPE_CODES = {dtype: code for code, dtype in enumerate(
    (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
     torch.uint8, torch.bool, torch.complex64, torch.complex128)
)}


def _sendable(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor as a collective can send it: gloo has no bool or complex, so their bytes go instead."""
    if tensor.dtype == torch.bool:
        return tensor.view(torch.uint8)
    if tensor.is_complex():
        return torch.view_as_real(tensor)
    return tensor


def largest_difference(local: torch.Tensor, reference: torch.Tensor) -> float:
    """max |local - reference|, NaN where both are NaN counting as agreement, NaN on one side as inf."""
    if local.numel() == 0:
        return 0.0
    if local.is_complex():
        local, reference = torch.view_as_real(local), torch.view_as_real(reference)
    mine, theirs = local.to(torch.float64), reference.to(torch.float64)
    difference = (mine - theirs).abs()
    both_nan = mine.isnan() & theirs.isnan()
    difference = torch.where(both_nan, torch.zeros_like(difference), difference)
    difference = torch.where(difference.isnan(), torch.full_like(difference, float("inf")), difference)
    same_infinity = mine.isinf() & (mine == theirs)
    difference = torch.where(same_infinity, torch.zeros_like(difference), difference)
    return float(difference.max())


def shard_split(layout: ShardLayout) -> tuple[int | None, list[int] | None]:
    """The dimension a 1-D mesh's Shard placement splits, and each rank's size along it (torch.chunk's split)."""
    shards = [placement for placement in layout.placements if isinstance(placement, Shard)]
    if len(layout.placements) != 1 or len(shards) != 1:
        return None, None
    dim = shards[0].dim % len(layout.shape)
    size = layout.shape[dim]
    ranks = layout.mesh.size()
    chunk = -(-size // ranks)  # torch.chunk: ceil(size / ranks) each, the last ones smaller or empty
    sizes = [max(0, min(chunk, size - rank * chunk)) for rank in range(ranks)]
    return dim, sizes

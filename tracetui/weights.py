"""Where each ported weight came from: the weight-conversion check behind ``tracetui weights``.

For every tensor of the port's state dict (parameters and persistent buffers) the check finds
the original tensor its values came from, and how:

* ``same`` — the original tensor of the same name (after the rename map: a weight's name is its
  module's name plus ``.weight``, ``.bias``, ...), same values;
* ``renamed`` — the same values under another original name;
* ``transposed`` — the transpose of an original tensor (Linear ↔ GPT-2's Conv1D);
* ``slice`` — a block of rows or columns of an original tensor, transposed or not (q out of a
  fused qkv along dim 0, or a Conv1D-style chunk along dim 1), or a 1-D slice (a bias);
* ``assembled`` — row or column blocks of one or more original tensors put together: a fused
  projection built from separate ones, or the rows of one tensor in another order (RoPE
  permutations are that; so is a swap of q and k inside a fused weight);
* ``rearranged`` — the values of one original tensor in an order none of the above explains;
* ``missing`` — nothing in the original holds these values: probably never converted, still
  its random initialisation.

…and every original tensor that no ported tensor uses.

Matching is by value, so no map is needed. Values are compared exactly, after casting both
sides to the narrowest floating dtype present (a conversion copies values exactly; a cast from
float32 to float16 or bfloat16 is found because the original, cast the same way, gives the same
bits). Whole tensors are found by a hash of their bytes, transposes by the hash of the ported
tensor's transpose, slices and assemblies through a hash of every row and every column of the
2-D original tensors: the ported tensor's first row is looked up, and the run of rows that
follows is extended by comparing row hashes, then verified element by element.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch

from tracetui.pairing.rename_map import RenameMap

How = Literal["same", "renamed", "transposed", "slice", "assembled", "rearranged", "missing"]
HOWS: tuple[How, ...] = ("same", "renamed", "transposed", "slice", "assembled", "rearranged", "missing")
CANDIDATES_PER_ROW = 8  # a row value shared by more original rows than this (all zeros, say) is not looked up
SCHEMA = "tracetui.weights/1"


@dataclass
class Piece:
    """A block of an original tensor: rows (or columns) ``start:stop``, maybe transposed."""

    original: str
    axis: Literal["rows", "columns", "elements"]
    start: int
    stop: int
    transposed: bool = False

    def describe(self) -> str:
        text = f"{self.original} {self.axis} {self.start}:{self.stop}"
        return text + " transposed" if self.transposed else text


@dataclass
class TensorSource:
    """Where one ported tensor's values came from."""

    ported: str
    shape: tuple[int, ...]
    dtype: str
    how: How
    original: str | None = None  # the (main) original tensor
    detail: str = ""
    expected: str | None = None  # the original name the map (or an equal name) points to
    original_dtype: str | None = None
    pieces: list[Piece] = field(default_factory=list)
    # Set when the same tensor of the other layers comes from another original name: swapped
    # q and k in one layer look like this. A warning, not a problem (the values are accounted for).
    breaks_pattern: str | None = None

    @property
    def accounted_for(self) -> bool:
        return self.how != "missing"

    @property
    def from_unexpected_tensor(self) -> bool:
        """The map names an original tensor that exists, but the values came from another one."""
        if self.expected is None or self.how == "missing":
            return False
        sources = {piece.original for piece in self.pieces} or {self.original}
        return self.expected not in sources

    @property
    def cast(self) -> str | None:
        if self.original_dtype is None or self.original_dtype == self.dtype:
            return None
        return f"{self.original_dtype} → {self.dtype}"


@dataclass
class UnusedTensor:
    name: str
    shape: tuple[int, ...]
    same_values_as: str | None = None  # an original tensor that is used and holds the same values (tied)


@dataclass
class WeightReport:
    sources: list[TensorSource]
    unused: list[UnusedTensor]
    mapped: bool  # a rename map was given: a tensor taken from another name than the map's is a problem

    @property
    def problems(self) -> list[TensorSource]:
        return [source for source in self.sources if not source.accounted_for or (self.mapped and source.from_unexpected_tensor)]

    @property
    def complete(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(HOWS, 0)
        for source in self.sources:
            counts[source.how] += 1
        return counts


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
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def whole_key(tensor: torch.Tensor) -> tuple[tuple[int, ...], str, int]:
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
    by_whole: dict[tuple[tuple[int, ...], str, int], list[str]] = field(default_factory=lambda: defaultdict(list))
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


# -- finding a ported tensor's source ---------------------------------------------------------


def expected_original_names(original_names: list[str], rename_map: RenameMap | None) -> dict[str, str]:
    """Ported tensor name → the original tensor name the map (or an equal name) points to."""
    expected: dict[str, str] = {}
    for name in original_names:
        module, _, parameter = name.rpartition(".")
        renamed = name if rename_map is None else (f"{rename_map.apply(module)}.{parameter}" if module else rename_map.apply(name))
        expected.setdefault(renamed, name)
    return expected


class SourceFinder:
    def __init__(self, index: OriginalIndex, original_dtypes: dict[str, str], expected: dict[str, str], mapped: bool) -> None:
        self.index = index
        self.original_dtypes = original_dtypes
        self.expected = expected
        self.mapped = mapped
        self.used: set[str] = set()
        self.owners = {alias: owner for owner, names in index.aliases.items() for alias in names}

    def owner(self, name: str) -> str:
        """The indexed name of an original tensor (the first name of tied tensors)."""
        return self.owners.get(name, name)

    def choose(self, candidates: list[str], ported_name: str) -> str:
        """Among original tensors with the same values: the expected one, then an unused one with
        the same last name part (weight/bias), then any."""
        expected = self.expected.get(ported_name)
        names = [alias for candidate in candidates for alias in self.index.aliases[candidate]]
        if expected in names:
            return expected
        suffix = ported_name.rpartition(".")[2]

        def preference(name: str) -> tuple[bool, bool, float]:
            return (name not in self.used, name.rpartition(".")[2] == suffix, name_overlap(name, ported_name))

        return max(names, key=preference)

    def find(self, ported_name: str, tensor: torch.Tensor, ported_dtype: str) -> TensorSource:
        source = TensorSource(
            ported=ported_name,
            shape=tuple(tensor.shape),
            dtype=ported_dtype,
            how="missing",
            expected=self.expected.get(ported_name),
        )
        if source.expected is not None and self.owner(source.expected) not in self.index.tensors:
            source.expected = None
        found = self.find_whole(ported_name, tensor, source) or self.find_transposed(ported_name, tensor, source)
        if not found and tensor.dim() == 2 and tensor.numel():
            found = self.find_assembled(ported_name, tensor, source)
        if not found and tensor.dim() == 1 and tensor.numel():
            found = self.find_vector_pieces(tensor, source)
        if not found and tensor.numel():
            found = self.find_rearranged(ported_name, tensor, source)
        if found:
            for piece in source.pieces:
                self.used.add(piece.original)
            if source.original is not None:
                self.used.add(source.original)
                source.original_dtype = self.original_dtypes.get(source.original)
        return source

    def find_whole(self, ported_name: str, tensor: torch.Tensor, source: TensorSource) -> bool:
        candidates = self.verified(self.index.by_whole.get(whole_key(tensor), []), tensor)
        if not candidates:
            return False
        source.original = self.choose(candidates, ported_name)
        source.how = "same" if source.original == ported_name or source.original == source.expected else "renamed"
        if source.how == "renamed" and source.expected is not None:
            pointer = "the map points to" if self.mapped else "the original has a tensor of this name,"
            source.detail = f"{pointer} {source.expected}, which holds other values"
        return True

    def find_transposed(self, ported_name: str, tensor: torch.Tensor, source: TensorSource) -> bool:
        if tensor.dim() != 2 or tensor.shape[0] == 1 or tensor.shape[1] == 1:
            return False
        transposed = tensor.t().contiguous()
        candidates = self.verified(self.index.by_whole.get(whole_key(transposed), []), transposed)
        if not candidates:
            return False
        source.original = self.choose(candidates, ported_name)
        source.how = "transposed"
        return True

    def verified(self, candidates: list[str], tensor: torch.Tensor) -> list[str]:
        return [name for name in candidates if torch.equal(self.index.tensors[name], tensor)]

    def find_assembled(self, ported_name: str, tensor: torch.Tensor, source: TensorSource) -> bool:
        """Row (or column) blocks of original 2-D tensors that make up this 2-D tensor."""
        self.index.build_line_index()
        assert self.index.by_row is not None and self.index.by_column is not None
        line_hashes: dict[str, list[int]] = {}

        def lines_of_ported(which: str) -> list[int]:
            if which not in line_hashes:
                line_hashes[which] = row_hashes(tensor if which == "rows" else tensor.t().contiguous())
            return line_hashes[which]

        # (the ported tensor's lines, the original lines they are looked up in, axis, transposed)
        layouts = (
            ("rows", self.index.by_row, self.index.rows_of, "rows", False),
            ("columns", self.index.by_column, self.index.columns_of, "columns", False),
            ("columns", self.index.by_row, self.index.rows_of, "rows", True),
            ("rows", self.index.by_column, self.index.columns_of, "columns", True),
        )
        expected_owner = self.owner(source.expected) if source.expected else None
        for ported_lines, line_index, lines_of, axis, transposed in layouts:
            lines = lines_of_ported(ported_lines)
            pieces = cover(lines, line_index, lines_of, prefer=expected_owner)
            if pieces is None:
                continue
            pieces = [Piece(self.piece_name(name, source.expected), axis, start, stop, transposed) for name, start, stop in pieces]
            if not self.verify_pieces(tensor, pieces):
                continue
            source.pieces = pieces
            source.original = pieces[0].original
            whole_of_one = len({piece.original for piece in pieces}) == 1 and sum(piece.stop - piece.start for piece in pieces) == len(
                lines
            )
            if len(pieces) == 1:
                source.how = "slice"
                source.detail = pieces[0].describe().removeprefix(pieces[0].original + " ")
            else:
                source.how = "assembled"
                if whole_of_one and self.line_count(pieces[0]) == len(lines):
                    source.detail = f"{axis} in another order ({len(pieces)} blocks)" + (", transposed" if transposed else "")
                else:
                    source.detail = " + ".join(piece.describe() for piece in pieces[:3]) + (" + …" if len(pieces) > 3 else "")
            return True
        return False

    def piece_name(self, owner: str, expected: str | None) -> str:
        """An original tensor's name as the report shows it: the expected one among tied names."""
        return expected if expected is not None and expected in self.index.aliases[owner] else owner

    def line_count(self, piece: Piece) -> int:
        tensor = self.index.tensors[self.owner(piece.original)]
        return tensor.shape[0] if piece.axis == "rows" else tensor.shape[1]

    def verify_pieces(self, tensor: torch.Tensor, pieces: list[Piece]) -> bool:
        blocks = []
        for piece in pieces:
            original = self.index.tensors[self.owner(piece.original)]
            block = original[piece.start : piece.stop] if piece.axis == "rows" else original[:, piece.start : piece.stop]
            blocks.append(block)
        # rows blocks stack along dim 0 of the original layout, column blocks along dim 1
        dimension = 0 if pieces[0].axis == "rows" else 1
        try:
            assembled = torch.cat(blocks, dim=dimension)
        except RuntimeError:
            return False
        if pieces[0].transposed:
            assembled = assembled.t()
        return tuple(assembled.shape) == tuple(tensor.shape) and torch.equal(assembled, tensor)

    def find_vector_pieces(self, tensor: torch.Tensor, source: TensorSource) -> bool:
        """A 1-D tensor made of runs of 1-D original tensors: a bias sliced out of a fused bias, or fused."""
        vectors = {name: original for name, original in self.index.tensors.items() if original.dim() == 1 and original.numel()}
        if not vectors:
            return False
        expected_owner = self.owner(source.expected) if source.expected else None
        pieces: list[Piece] = []
        position = 0
        while position < tensor.numel():
            best: tuple[int, str, int] | None = None  # (run length, name, start)
            for name, original in sorted(vectors.items(), key=lambda item: item[0] != expected_owner):
                starts = torch.nonzero(original == tensor[position]).reshape(-1)[:CANDIDATES_PER_ROW]
                for start in starts.tolist():
                    length = run_length(original[start:], tensor[position:])
                    if best is None or length > best[0]:
                        best = (length, name, start)
            if best is None or best[0] == 0:
                return False
            length, name, start = best
            pieces.append(Piece(name, "elements", start, start + length))
            position += length
        if len(pieces) == 1 and pieces[0].stop - pieces[0].start == self.index.tensors[pieces[0].original].numel():
            return False  # the whole tensor: find_whole would have found it
        source.pieces = pieces
        source.original = pieces[0].original
        source.how = "slice" if len(pieces) == 1 else "assembled"
        source.detail = " + ".join(piece.describe() for piece in pieces[:3]) + (" + …" if len(pieces) > 3 else "")
        if len(pieces) == 1:
            source.detail = pieces[0].describe().removeprefix(pieces[0].original + " ")
        return True

    def find_rearranged(self, ported_name: str, tensor: torch.Tensor, source: TensorSource) -> bool:
        candidates = self.index.with_same_values(tensor)
        if not candidates:
            return False
        source.original = self.choose(candidates, ported_name)
        source.how = "rearranged"
        source.detail = "the same values in another order"
        return True


def run_length(original: torch.Tensor, ported: torch.Tensor) -> int:
    """How many leading elements the two 1-D tensors share."""
    length = min(original.numel(), ported.numel())
    differs = torch.nonzero(original[:length] != ported[:length]).reshape(-1)
    return int(differs[0]) if differs.numel() else length


def cover(
    lines: list[int],
    line_index: dict[int, list[tuple[str, int]]],
    lines_of: dict[str, list[int]],
    prefer: str | None,
) -> list[tuple[str, int, int]] | None:
    """Cover the ported tensor's lines with runs of consecutive original lines, longest run first."""
    pieces: list[tuple[str, int, int]] = []
    position = 0
    while position < len(lines):
        best: tuple[int, bool, str, int] | None = None
        for name, start in line_index.get(lines[position], []):
            original_lines = lines_of[name]
            length = 0
            while (
                position + length < len(lines)
                and start + length < len(original_lines)
                and original_lines[start + length] == lines[position + length]
            ):
                length += 1
            candidate = (length, name == prefer, name, start)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:
            return None
        length, _, name, start = best
        pieces.append((name, start, start + length))
        position += length
    return pieces


def name_overlap(first: str, second: str) -> float:
    """How alike two tensor names are, by their words and the usual synonyms (see tracetui.pairing.names)."""
    from tracetui.pairing.names import component_concepts

    def concepts(name: str) -> frozenset[str]:
        return frozenset().union(*(component_concepts(part) for part in name.split(".") if part))

    first_concepts, second_concepts = concepts(first), concepts(second)
    return len(first_concepts & second_concepts) / max(1, len(first_concepts | second_concepts))


def check_weights(
    original_state: Mapping[str, torch.Tensor],
    ported_state: Mapping[str, torch.Tensor],
    rename_map: RenameMap | None = None,
) -> WeightReport:
    """For every ported tensor, where its values came from; and the original tensors left unused."""
    dtype = common_dtype([*original_state.values(), *ported_state.values()])
    index = build_original_index(original_state, dtype)
    original_dtypes = {name: str(tensor.dtype).removeprefix("torch.") for name, tensor in original_state.items()}
    finder = SourceFinder(index, original_dtypes, expected_original_names(list(original_state), rename_map), rename_map is not None)
    sources = []
    for name, tensor in ported_state.items():
        sources.append(finder.find(name, canonical(tensor, dtype), str(tensor.dtype).removeprefix("torch.")))
    used_owners = {finder.owner(name) for name in finder.used}
    unused = []
    value_owner: dict[tuple[tuple[int, ...], str, int], str] = {}
    for owner in used_owners:
        value_owner.setdefault(whole_key(index.tensors[owner]), owner)
    for owner, names in index.aliases.items():
        if owner in used_owners:
            continue
        twin = value_owner.get(whole_key(index.tensors[owner]))
        for name in names:
            unused.append(UnusedTensor(name, tuple(original_state[name].shape), same_values_as=twin))
    mark_pattern_breaks(sources)
    return WeightReport(sources=sources, unused=unused, mapped=rename_map is not None)


def layer_numbers(name: str) -> list[str]:
    return [part for part in name.split(".") if part.isdigit()]


def mark_pattern_breaks(sources: list[TensorSource]) -> None:
    """Flag a tensor whose layer takes it from another original name than most layers do."""
    from tracetui.pairing.names import template_of

    def layered(source: TensorSource) -> bool:
        return (
            source.original is not None
            and bool(layer_numbers(source.ported))
            and layer_numbers(source.ported) == layer_numbers(source.original)
        )

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for source in sources:
        if layered(source):
            assert source.original is not None
            counts[template_of(source.ported)][template_of(source.original)] += 1
    for source in sources:
        if not layered(source):
            continue
        assert source.original is not None
        templates = counts[template_of(source.ported)]
        usual, usual_count = max(templates.items(), key=lambda item: item[1])
        if template_of(source.original) != usual and usual_count >= 2 and usual_count > templates[template_of(source.original)]:
            source.breaks_pattern = f"the other layers take it from {usual}"


def state_with_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict: parameters and persistent buffers, as a conversion script sees them."""
    return dict(model.state_dict())


def report_document(report: WeightReport) -> dict[str, object]:
    return {
        "schema": SCHEMA,
        "verdict": "complete" if report.complete else "incomplete",
        "counts": report.counts(),
        "ported": [
            {
                "name": source.ported,
                "shape": list(source.shape),
                "dtype": source.dtype,
                "how": source.how,
                "original": source.original,
                "detail": source.detail or None,
                "expected": source.expected,
                "cast": source.cast,
                "pieces": [
                    {
                        "original": piece.original,
                        "axis": piece.axis,
                        "start": piece.start,
                        "stop": piece.stop,
                        "transposed": piece.transposed,
                    }
                    for piece in source.pieces
                ],
                "problem": source in report.problems,
                "breaks_pattern": source.breaks_pattern,
            }
            for source in report.sources
        ],
        "unused_original": [
            {"name": tensor.name, "shape": list(tensor.shape), "same_values_as": tensor.same_values_as} for tensor in report.unused
        ],
    }

"""Finding where each ported tensor's values came from in the original state dict.

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

import torch

from tracetui.pairing.rename_map import RenameMap
from tracetui.weights.index import (
    CANDIDATES_PER_ROW,
    OriginalIndex,
    WholeKey,
    build_original_index,
    canonical,
    common_dtype,
    row_hashes,
    whole_key,
)
from tracetui.weights.report import Axis, Piece, TensorSource, UnusedTensor, WeightReport, same_layer_template

# How a ported 2-D tensor's lines are looked up: which of its lines ("rows" or "columns"), the
# original line index and line hashes they are looked up in, the axis of the original blocks, transposed.
Layout = tuple[str, dict[int, list[tuple[str, int]]], dict[str, list[int]], Axis, bool]


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
        layouts: tuple[Layout, ...] = (
            ("rows", self.index.by_row, self.index.rows_of, "rows", False),
            ("columns", self.index.by_column, self.index.columns_of, "columns", False),
            ("columns", self.index.by_row, self.index.rows_of, "rows", True),
            ("rows", self.index.by_column, self.index.columns_of, "columns", True),
        )
        expected_owner = self.owner(source.expected) if source.expected else None
        for ported_lines, line_index, lines_of, axis, transposed in layouts:
            lines = lines_of_ported(ported_lines)
            runs = cover(lines, line_index, lines_of, prefer=expected_owner)
            if runs is None:
                continue
            pieces = [Piece(self.piece_name(name, source.expected), axis, start, stop, transposed) for name, start, stop in runs]
            if not self.verify_pieces(tensor, pieces):
                continue
            self.describe_blocks(source, pieces, len(lines))
            return True
        return False

    def describe_blocks(self, source: TensorSource, pieces: list[Piece], line_count: int) -> None:
        """Fill in ``source`` from the blocks that make it up: one is a slice, several an assembly."""
        source.pieces = pieces
        source.original = pieces[0].original
        if len(pieces) == 1:
            source.how = "slice"
            source.detail = pieces[0].describe().removeprefix(pieces[0].original + " ")
            return
        source.how = "assembled"
        one_original = len({piece.original for piece in pieces}) == 1
        whole_of_one = one_original and sum(piece.stop - piece.start for piece in pieces) == line_count
        if whole_of_one and self.line_count(pieces[0]) == line_count:  # one tensor's lines, reordered (a RoPE permutation)
            first = pieces[0]
            source.detail = f"{first.axis} in another order ({len(pieces)} blocks)" + (", transposed" if first.transposed else "")
        else:
            source.detail = " + ".join(piece.describe() for piece in pieces[:3]) + (" + …" if len(pieces) > 3 else "")

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
    value_owner: dict[WholeKey, str] = {}
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


def mark_pattern_breaks(sources: list[TensorSource]) -> None:
    """Flag a tensor whose layer takes it from another original name than most layers do, or takes
    it as it is where most layers transpose it (a Dense kernel copied into a Linear weight), or the reverse."""
    from tracetui.pairing.names import template_of

    def usage(source: TensorSource) -> tuple[str, bool] | None:
        template = same_layer_template(source.original, source.ported)
        return None if template is None else (template, source.how == "transposed")

    counts: dict[str, dict[tuple[str, bool], int]] = defaultdict(lambda: defaultdict(int))
    for source in sources:
        used = usage(source)
        if used is not None:
            counts[template_of(source.ported)][used] += 1
    for source in sources:
        used = usage(source)
        if used is None:
            continue
        usages = counts[template_of(source.ported)]
        (usual_template, usually_transposed), usual_count = max(usages.items(), key=lambda item: item[1])
        if used == (usual_template, usually_transposed) or usual_count < 2 or usual_count <= usages[used]:
            continue
        if used[0] != usual_template:
            source.breaks_pattern = f"the other layers take it from {usual_template}"
        else:
            source.breaks_pattern = f"the other layers take it {'transposed' if usually_transposed else 'untransposed'}"
    mark_untransposed_kernels(sources)


def mark_untransposed_kernels(sources: list[TensorSource]) -> None:
    """Flag a Flax/Keras Dense kernel (``…kernel``, stored (in, out)) copied as it is into a matrix
    where the port's other kernels are all transposed (a torch Linear weight is (out, in)): a square
    kernel copied so has every value in place but each row and column exchanged. With only two
    layers, the layer pattern above cannot say which of the two is the odd one; the model's other
    kernels can."""
    kernels = [
        source
        for source in sources
        if source.original is not None and source.original.endswith("kernel") and len(source.shape) == 2
        and source.how in ("renamed", "same", "transposed")
    ]
    transposed = sum(source.how == "transposed" for source in kernels)
    untransposed = len(kernels) - transposed
    if transposed < 3 or untransposed * 3 > transposed:  # a clear majority only
        return
    for source in kernels:
        if source.how != "transposed" and source.breaks_pattern is None:
            source.breaks_pattern = f"copied as it is, where the port's other {transposed} Dense kernels are transposed"


def state_with_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict: parameters and persistent buffers, as a conversion script sees them."""
    return dict(model.state_dict())

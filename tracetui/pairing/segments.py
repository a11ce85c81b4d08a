"""The stretches of calls that automatic pairing searches one at a time.

Pairs made by name or by the rename map keep their order on both sides, so the calls between
two of them can only pair with each other: each such stretch is a :class:`Segment`, searched on
its own. The search is quadratic in a segment's size, so a very long one is cut further where a
call's output values occur once on each side, and failing that, into equal slices.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

import numpy as np

from tracetui.pairing.calls import CallFacts
from tracetui.pairing.names import PASS_THROUGH_FAMILIES
from tracetui.pairing.scoring import PairScorer
from tracetui.pairing.values import ValueSketch, agree_elementwise
from tracetui.trace import Trace

MAX_BLOCK_CELLS = 4_000_000  # candidate pairs searched at once; bigger stretches are cut


@dataclass
class Segment:
    """A stretch of calls between two fixed pairs, paired on its own."""

    original: list[int]
    ported: list[int]


def ordered_anchors(fixed: dict[int, int]) -> list[tuple[int, int]]:
    """The longest chain of fixed pairs whose order agrees on both sides (they cut the search)."""
    pairs = sorted(fixed.items())
    if not pairs:
        return []
    # Longest increasing subsequence of the ported indices, O(n log n).
    tails: list[int] = []
    tail_positions: list[int] = []
    previous = [-1] * len(pairs)
    for position, (_, ported_index) in enumerate(pairs):
        slot = bisect.bisect_left(tails, ported_index)
        if slot == len(tails):
            tails.append(ported_index)
            tail_positions.append(position)
        else:
            tails[slot] = ported_index
            tail_positions[slot] = position
        previous[position] = tail_positions[slot - 1] if slot > 0 else -1
    chain = []
    position = tail_positions[-1] if tail_positions else -1
    while position >= 0:
        chain.append(pairs[position])
        position = previous[position]
    chain.reverse()
    return chain


def segments_between(original: Trace, ported: Trace, fixed: dict[int, int]) -> list[Segment]:
    fixed_ported = set(fixed.values())
    anchors = [(-1, -1), *ordered_anchors(fixed), (len(original.records), len(ported.records))]
    segments = []
    for (original_start, ported_start), (original_end, ported_end) in itertools.pairwise(anchors):
        original_indices = [
            index for index in range(original_start + 1, original_end) if index not in fixed and original.records[index].kind == "module"
        ]
        ported_indices = [
            index for index in range(ported_start + 1, ported_end) if index not in fixed_ported and ported.records[index].kind == "module"
        ]
        if original_indices and ported_indices:
            segments.append(Segment(original_indices, ported_indices))
    return segments


def split_large_segments(segments: list[Segment], scorer: PairScorer) -> list[Segment]:
    """Blocks small enough for the quadratic search: big stretches are cut first where a call's
    output values appear once on each side (they pair up), then, failing that, in proportion."""
    blocks: list[Segment] = []
    for segment in segments:
        if len(segment.original) * len(segment.ported) <= MAX_BLOCK_CELLS:
            blocks.append(segment)
            continue
        for piece in cut_at_unique_values(segment, scorer):
            if len(piece.original) * len(piece.ported) <= MAX_BLOCK_CELLS:
                blocks.append(piece)
            else:
                blocks.extend(proportional_pieces(piece))
    return blocks


def value_key(sketch: ValueSketch, index: int, shape: tuple[int, ...] | None, atol: float) -> tuple[object, ...] | None:
    if index not in sketch.samples or shape is None:
        return None
    return (shape, tuple(np.round(sketch.samples[index] / (10 * atol)).astype(np.int64).tolist()))


def cut_at_unique_values(segment: Segment, scorer: PairScorer) -> list[Segment]:
    """The segment cut at the computations whose output values occur once on each side and agree:
    those pair with each other, so nothing pairs across them."""

    def unique_keys(indices: list[int], facts: list[CallFacts], sketch: ValueSketch) -> dict[tuple[object, ...], int]:
        seen: dict[tuple[object, ...], int] = {}
        repeated: set[tuple[object, ...]] = set()
        for index in indices:
            fact = facts[index]
            if not fact.is_op or fact.family in PASS_THROUGH_FAMILIES:
                continue
            key = value_key(sketch, index, fact.output_shape, scorer.atol)
            if key is None:
                continue
            if key in seen:
                repeated.add(key)
            seen[key] = index
        return {key: index for key, index in seen.items() if key not in repeated}

    original_keys = unique_keys(segment.original, scorer.original, scorer.original_outputs)
    ported_keys = unique_keys(segment.ported, scorer.ported, scorer.ported_outputs)
    matches = {}
    for key, original_index in original_keys.items():
        ported_index = ported_keys.get(key)
        if ported_index is None:
            continue
        original, ported = scorer.original[original_index], scorer.ported[ported_index]
        if original.family != ported.family or original.output is None or ported.output is None:
            continue
        if agree_elementwise(original.output, ported.output, scorer.atol):
            matches[original_index] = ported_index
    cuts = ordered_anchors(matches)
    if not cuts:
        return [segment]
    pieces = []
    original_from = ported_from = 0  # positions in segment.original / segment.ported
    for original_cut, ported_cut in [*cuts, (math.inf, math.inf)]:
        original_to = bisect.bisect_left(segment.original, original_cut)
        ported_to = bisect.bisect_left(segment.ported, ported_cut)
        if original_to > original_from and ported_to > ported_from:
            pieces.append(Segment(segment.original[original_from:original_to], segment.ported[ported_from:ported_to]))
        if original_cut != math.inf:
            pieces.append(Segment([int(original_cut)], [int(ported_cut)]))
        original_from, ported_from = original_to + 1, ported_to + 1
    return pieces


def proportional_pieces(segment: Segment) -> list[Segment]:
    """The last resort for a huge stretch with nothing to cut it at: equal slices of both sides."""
    count = math.ceil(len(segment.original) * len(segment.ported) / MAX_BLOCK_CELLS)
    pieces = []
    for piece in range(count):
        original_part = segment.original[piece * len(segment.original) // count : (piece + 1) * len(segment.original) // count]
        ported_part = segment.ported[piece * len(segment.ported) // count : (piece + 1) * len(segment.ported) // count]
        if original_part and ported_part:
            pieces.append(Segment(original_part, ported_part))
    return pieces

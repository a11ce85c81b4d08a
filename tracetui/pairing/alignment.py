"""Alignment: which call of the ported model corresponds to which call of the original.

:func:`align` is the one entry point. It pairs calls by qualified name and call index after the
rename map (``map`` pairs, or ``name`` when the names are equal) and taps by name; then, unless
``infer=False``, it pairs the calls left over by their structure, kind, names and values
(``inferred`` pairs, see :mod:`tracetui.pairing.search`). Every pair says how it was made and
how sure it is, and an alignment can be amended by hand (:meth:`Alignment.with_manual_pair`,
:meth:`Alignment.without_pair`) and turned into a rename map
(:mod:`tracetui.pairing.map_writer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from tracetui.pairing.rename_map import RenameMap
from tracetui.pairing.search import infer_pairs
from tracetui.sides import SIDES, Side, pick
from tracetui.trace import CallRecord, Trace

PairingMethod = Literal["name", "map", "inferred", "manual", "tap", "none"]
PAIRED_METHODS: tuple[PairingMethod, ...] = ("name", "map", "inferred", "manual", "tap")


@dataclass
class Pair:
    """One row of the side-by-side view: an original call, a ported call, or both."""

    original: int | None  # record index in the original trace
    ported: int | None  # record index in the ported trace
    method: PairingMethod
    confidence: float = 1.0


@dataclass
class Alignment:
    original: Trace
    ported: Trace
    pairs: list[Pair] = field(default_factory=list)  # in call order, unmatched calls in place
    rename_map: RenameMap | None = None
    # Why some calls were left unpaired although they looked like a counterpart's, keyed by
    # (side, record index): e.g. "its outputs hold q_proj's values in another order".
    unpaired_reasons: dict[tuple[Side, int], str] = field(default_factory=dict)

    def paired(self) -> list[Pair]:
        """The pairs that have both calls, in the order of the rows."""
        return [pair for pair in self.pairs if pair.original is not None and pair.ported is not None]

    def partner_of_original(self, original_index: int) -> int | None:
        return next((pair.ported for pair in self.pairs if pair.original == original_index), None)

    def partner_of_ported(self, ported_index: int) -> int | None:
        return next((pair.original for pair in self.pairs if pair.ported == ported_index), None)

    def with_manual_pair(self, original_index: int, ported_index: int) -> Alignment:
        """A copy where these two calls are paired by hand; pairs either call had are undone."""
        if not 0 <= original_index < len(self.original.records) or not 0 <= ported_index < len(self.ported.records):
            raise IndexError(f"no call {original_index} in the original or no call {ported_index} in the port")
        kept = [pair for pair in self.paired() if pair.original != original_index and pair.ported != ported_index]
        kept.append(Pair(original=original_index, ported=ported_index, method="manual", confidence=1.0))
        return layout(self.original, self.ported, kept, self.rename_map, self.unpaired_reasons)

    def without_pair(self, original_index: int | None = None, ported_index: int | None = None) -> Alignment:
        """A copy where the pair holding this original call (or this ported call) is undone."""
        kept = [
            pair
            for pair in self.paired()
            if not (original_index is not None and pair.original == original_index)
            and not (ported_index is not None and pair.ported == ported_index)
        ]
        return layout(self.original, self.ported, kept, self.rename_map, self.unpaired_reasons)


def pairing_key(record: CallRecord, rename_map: RenameMap | None) -> tuple[str, str, int]:
    """What an original call must equal on the ported side: kind, (renamed) name, call index."""
    if record.kind == "tap" or rename_map is None:
        return (record.kind, record.name, record.call)
    return (record.kind, rename_map.apply(record.name), record.call)


def pairs_by_name(original: Trace, ported: Trace, rename_map: RenameMap | None) -> list[Pair]:
    """Calls whose (renamed) name and call index are equal; taps by name."""
    ported_by_key = {pairing_key(record, None): record.index for record in ported.records}
    pairs: list[Pair] = []
    taken: set[int] = set()
    for record in original.records:
        ported_index = ported_by_key.get(pairing_key(record, rename_map))
        # A map that sends two original names to one ported name pairs only the first.
        if ported_index is None or ported_index in taken:
            continue
        taken.add(ported_index)
        method: PairingMethod
        if record.kind == "tap":
            method = "tap"
        elif ported.records[ported_index].name == record.name:
            method = "name"
        else:
            method = "map"
        pairs.append(Pair(original=record.index, ported=ported_index, method=method))
    return pairs


def align(
    original: Trace,
    ported: Trace,
    rename_map: RenameMap | None = None,
    *,
    infer: bool = True,
    atol: float = 1e-3,
) -> Alignment:
    """Pair the calls of two traces: by (renamed) name first, then by inference for the rest.

    ``infer=False`` keeps only the name/map/tap pairs. ``atol`` is the tolerance within which
    two recorded values count as the same evidence for a pair.
    """
    pairs = pairs_by_name(original, ported, rename_map)
    reasons: dict[tuple[Side, int], str] = {}
    if infer:
        fixed = {pair.original: pair.ported for pair in pairs if pair.original is not None and pair.ported is not None}
        inference = infer_pairs(original, ported, fixed, atol=atol)
        for inferred in inference.pairs:
            pairs.append(Pair(original=inferred.original, ported=inferred.ported, method="inferred", confidence=inferred.confidence))
        reasons = inference.unpaired_reasons
    return layout(original, ported, pairs, rename_map, reasons)


def layout(
    original: Trace,
    ported: Trace,
    paired: list[Pair],
    rename_map: RenameMap | None,
    unpaired_reasons: dict[tuple[Side, int], str] | None = None,
) -> Alignment:
    """Rows in the original's call order, each unmatched ported call just before the next pair
    whose ported call comes after it."""
    alignment = Alignment(original=original, ported=ported, rename_map=rename_map)
    pairs_by_original = {pair.original: pair for pair in paired if pair.original is not None and pair.ported is not None}
    paired_ported = {pair.ported for pair in pairs_by_original.values()}
    emitted_ported: set[int] = set()
    next_ported = 0  # ported calls before this one are already placed

    def place_unmatched_ported(before: int) -> None:
        nonlocal next_ported
        while next_ported < before:
            if next_ported not in emitted_ported and next_ported not in paired_ported:
                alignment.pairs.append(Pair(original=None, ported=next_ported, method="none", confidence=0.0))
                emitted_ported.add(next_ported)
            next_ported += 1

    for record in original.records:
        pair = pairs_by_original.get(record.index)
        if pair is None:
            alignment.pairs.append(Pair(original=record.index, ported=None, method="none", confidence=0.0))
            continue
        assert pair.ported is not None
        place_unmatched_ported(pair.ported)
        alignment.pairs.append(replace(pair))
        emitted_ported.add(pair.ported)
    place_unmatched_ported(len(ported.records))
    paired_indices = {side: {pick(pair, side) for pair in pairs_by_original.values()} for side in SIDES}
    alignment.unpaired_reasons = {
        (side, index): reason for (side, index), reason in (unpaired_reasons or {}).items() if index not in paired_indices[side]
    }
    return alignment

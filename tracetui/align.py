"""Alignment: which call of the ported model corresponds to which call of the original.

:func:`align` is the one entry point; today it pairs by qualified name and call index after
the rename map. Every pair says how it was made, so inferred pairings can join later without
changing the consumers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tracetui.rename import RenameMap
from tracetui.trace import CallRecord, Trace

PairingMethod = Literal["name", "map", "tap", "none"]


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


def pairing_key(record: CallRecord, rename_map: RenameMap | None) -> tuple[str, str, int]:
    """What an original call must equal on the ported side: kind, (renamed) name, call index."""
    if record.kind == "tap" or rename_map is None:
        return (record.kind, record.name, record.call)
    return (record.kind, rename_map.apply(record.name), record.call)


def align(original: Trace, ported: Trace, rename_map: RenameMap | None = None) -> Alignment:
    """Pair calls by qualified name and call index, after renaming the original's names."""
    ported_by_key = {pairing_key(record, None): record.index for record in ported.records}
    alignment = Alignment(original=original, ported=ported, rename_map=rename_map)
    emitted_ported: set[int] = set()
    next_ported = 0  # ported calls before this one are already placed

    def place_unmatched_ported(before: int) -> None:
        nonlocal next_ported
        while next_ported < before:
            if next_ported not in emitted_ported and next_ported not in paired_ported:
                alignment.pairs.append(Pair(original=None, ported=next_ported, method="none", confidence=0.0))
                emitted_ported.add(next_ported)
            next_ported += 1

    pairs_by_original: dict[int, int] = {}
    paired_ported: set[int] = set()
    for record in original.records:
        ported_index = ported_by_key.get(pairing_key(record, rename_map))
        # A map that sends two original names to one ported name pairs only the first.
        if ported_index is not None and ported_index not in paired_ported:
            pairs_by_original[record.index] = ported_index
            paired_ported.add(ported_index)

    for record in original.records:
        ported_index = pairs_by_original.get(record.index)
        if ported_index is None:
            alignment.pairs.append(Pair(original=record.index, ported=None, method="none", confidence=0.0))
            continue
        place_unmatched_ported(ported_index)
        method: PairingMethod
        if record.kind == "tap":
            method = "tap"
        elif ported.records[ported_index].name == record.name:
            method = "name"
        else:
            method = "map"
        alignment.pairs.append(Pair(original=record.index, ported=ported_index, method=method))
        emitted_ported.add(ported_index)
    place_unmatched_ported(len(ported.records))
    return alignment

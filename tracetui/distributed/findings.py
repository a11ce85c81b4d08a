"""What a comparison says about a port recorded on several ranks: the rank a culprit's difference
lives on, the values that differed between ranks, and what could not be done across processes.

Applied to every diagnosis of a distributed port (:func:`tracetui.compare.judge`), so the
report, the JSON and the interface say the same, at any tolerance.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from tracetui.classify import Tolerance
from tracetui.diagnose import Diagnosis
from tracetui.distributed.info import DistributedInfo, GatheredLeaf, RankDisagreement
from tracetui.rows import Row

NOTED_DISAGREEMENTS = 5  # listed one by one in the notes; the JSON has every one


def annotate_diagnosis(diagnosis: Diagnosis, info: DistributedInfo, tolerance: Tolerance) -> Diagnosis:
    """Each culprit's reason names the ranks whose shard breaks the tolerance; the notes list the
    rank disagreements beyond it and say how the port was run."""
    reasons = dict(diagnosis.reasons)
    for culprit in diagnosis.culprits:
        ranks = culprit_ranks(culprit, info, tolerance)
        if ranks:
            reasons[culprit.index] = reasons[culprit.index] + "; " + rank_sentence(ranks, info)
    notes = distributed_notes(info, tolerance, found_by_descent=bool(diagnosis.culprits))
    return replace(diagnosis, reasons=reasons, notes=[*diagnosis.notes, *notes])


def rank_sentence(ranks: list[RankShare], info: DistributedInfo) -> str:
    shares = " and ".join(f"rank {share.rank}'s" for share in ranks)
    positions = ", ".join(f"positions {share.start}-{share.stop - 1}" for share in ranks)
    if len(ranks) == info.world_size:
        return f"every rank's shard of its output (split {info.world_size} ways along dimension {ranks[0].dim}) breaks the tolerance"
    return (
        f"only {shares} shard of its output ({positions} of dimension {ranks[0].dim}, split {info.world_size} ways) breaks the "
        "tolerance: look at that rank's part of the weights (how it was split or loaded)"
    )


class RankShare:
    """One rank's slice of a gathered output that holds elements beyond the tolerance."""

    def __init__(self, rank: int, dim: int, start: int, stop: int) -> None:
        self.rank, self.dim, self.start, self.stop = rank, dim, start, stop


def culprit_ranks(row: Row, info: DistributedInfo, tolerance: Tolerance) -> list[RankShare]:
    """The ranks whose shard of the culprit's gathered output holds elements beyond the tolerance."""
    if row.ported is None or row.original is None:
        return []
    for gathered in info.gathered_outputs(row.ported.index):
        shares = shares_beyond_tolerance(row, gathered, tolerance)
        if shares:
            return shares
    return []


def shares_beyond_tolerance(row: Row, gathered: GatheredLeaf, tolerance: Tolerance) -> list[RankShare]:
    if gathered.dim is None or gathered.rank_sizes is None:
        return []
    pair = next((pair for pair in row.outputs if pair.ported is not None and pair.ported.name == gathered.leaf), None)
    if pair is None or pair.original is None or pair.ported is None:
        return []
    original, ported = pair.original.tensor, pair.ported.tensor
    if original is None or ported is None or original.shape != ported.shape:
        return []
    reference = original.to(torch.float64)
    beyond = (ported.to(torch.float64) - reference).abs() > tolerance.atol + tolerance.rtol * reference.abs()
    other_dims = [dim for dim in range(beyond.dim()) if dim != gathered.dim]
    along = beyond.any(dim=other_dims) if other_dims else beyond
    shares = []
    start = 0
    for rank, size in enumerate(gathered.rank_sizes):
        if size and bool(along[start : start + size].any()):
            shares.append(RankShare(rank, gathered.dim, start, start + size))
        start += size
    return shares


def disagreements_beyond(info: DistributedInfo, tolerance: Tolerance) -> list[RankDisagreement]:
    """The rank disagreements larger than atol (rank 0's value is the reference)."""
    return [disagreement for disagreement in info.disagreements if not disagreement.max_abs_diff <= tolerance.atol]


def distributed_notes(info: DistributedInfo, tolerance: Tolerance, found_by_descent: bool) -> list[str]:
    ran = (
        f"the port ran on {info.world_size} processes ({info.backend}); its trace is rank 0's, with {len(info.gathered)} "
        "sharded inputs/outputs gathered into full tensors"
    )
    if found_by_descent:
        ran += (
            "; the port was not run again with each module fed the original's inputs (that needs the port's model in "
            "this process), so the first culprit is found by descent"
        )
    notes = [ran]
    beyond = disagreements_beyond(info, tolerance)
    for disagreement in beyond[:NOTED_DISAGREEMENTS]:
        notes.append(disagreement.describe() + ": a value every rank should hold alike")
    if len(beyond) > NOTED_DISAGREEMENTS:
        more = len(beyond) - NOTED_DISAGREEMENTS
        notes.append(f"… and {more} more rank disagreements (all in the JSON report's distributed.rank_disagreements)")
    return notes


def report_entry(info: DistributedInfo, tolerance: Tolerance) -> dict[str, object]:
    """The JSON report's ``distributed`` object."""
    document = info.to_document()
    return {
        "world_size": info.world_size,
        "backend": info.backend,
        "gathered": document["gathered"],
        "rank_disagreements": [
            entry | {"within_tolerance": disagreement.max_abs_diff <= tolerance.atol, "message": disagreement.describe()}
            for entry, disagreement in zip(document["disagreements"], info.disagreements, strict=True)
        ],
    }

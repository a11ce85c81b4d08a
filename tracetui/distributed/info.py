"""What a trace recorded on several ranks says about them: which leaves were gathered from
shards, and where a value that should be the same on every rank was not."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GatheredLeaf:
    """A leaf recorded as the full tensor assembled from every rank's part of it."""

    record: int  # the record's index in the trace
    part: str  # "inputs" or "outputs"
    leaf: str  # the leaf's name, e.g. "output"
    placements: str  # the DTensor placements it was gathered by, e.g. "(Shard(dim=2),)"
    # The sharded dimension (of the full tensor) and each rank's size along it; None when the
    # value was not split along one dimension (a Partial sum, a replicated DTensor).
    dim: int | None = None
    rank_sizes: list[int] | None = None
    how: str = "dtensor"  # "dtensor": a DTensor leaf; "local shard": a plain tensor holding one rank's shard

    def rank_of(self, position: int) -> int | None:
        """The rank whose shard holds this position along :attr:`dim`."""
        if self.rank_sizes is None:
            return None
        start = 0
        for rank, size in enumerate(self.rank_sizes):
            if start <= position < start + size:
                return rank
            start += size
        return None


@dataclass(frozen=True)
class RankDisagreement:
    """A value that should be the same on every rank (a plain tensor or a replicated DTensor) was not."""

    record: int
    name: str  # the module's name
    call: int
    part: str
    leaf: str
    rank: int
    max_abs_diff: float  # against rank 0's value; inf when the shapes differ
    detail: str = ""

    def describe(self) -> str:
        module = self.name or "(root)"
        difference = f"max |Δ| {self.max_abs_diff:.3g}" if math.isfinite(self.max_abs_diff) else self.detail or "another shape"
        where = self.leaf if self.part == "outputs" else f"input {self.leaf}"
        return f"rank {self.rank} disagrees with rank 0 at {module} ({where}, {difference})"


@dataclass
class DistributedInfo:
    """How a trace was recorded across ranks: rank 0's trace, with these notes on the others."""

    world_size: int
    backend: str
    gathered: list[GatheredLeaf] = field(default_factory=list)
    disagreements: list[RankDisagreement] = field(default_factory=list)

    def to_document(self) -> dict[str, Any]:
        return {
            "world_size": self.world_size,
            "backend": self.backend,
            "gathered": [asdict(leaf) for leaf in self.gathered],
            "disagreements": [
                asdict(disagreement) | {"max_abs_diff": disagreement.max_abs_diff if math.isfinite(disagreement.max_abs_diff) else None}
                for disagreement in self.disagreements
            ],
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> DistributedInfo:
        return cls(
            world_size=int(document["world_size"]),
            backend=str(document["backend"]),
            gathered=[GatheredLeaf(**entry) for entry in document["gathered"]],
            disagreements=[
                RankDisagreement(**entry | {"max_abs_diff": math.inf if entry["max_abs_diff"] is None else float(entry["max_abs_diff"])})
                for entry in document["disagreements"]
            ],
        )

    def gathered_outputs(self, record: int) -> list[GatheredLeaf]:
        return [leaf for leaf in self.gathered if leaf.record == record and leaf.part == "outputs"]

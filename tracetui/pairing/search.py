"""Infer which call of the port corresponds to which call of the original when their names differ.

:func:`tracetui.pairing.alignment.align` pairs calls by (renamed) name first; :func:`infer_pairs`
pairs the rest. The problem is an *ordered tree mapping*: both traces are trees of calls in
execution order, and a pairing must keep that order and that nesting (a call's nearest paired
ancestor pairs with its partner's nearest paired ancestor), while wrappers that exist on one
side only are skipped. Within that frame every candidate pair gets a score from independent
evidence (kind, shape, names, values, consensus: see :mod:`tracetui.pairing.scoring`).

The search: a weighted longest common subsequence of the two call sequences (each stretch
between two name/map pairs on its own, a very long stretch cut where a value occurs once on
each side: :mod:`tracetui.pairing.segments`), then repair of the nesting — pairs that break it
are forbidden and the subsequence recomputed — then a second round with the consensus added.
Last, leaf calls that run in another order among their siblings are paired when their outputs
agree with each other only. Calls left unpaired because their values are another's in another
order get a reason, which the alignment keeps for the report and the written map.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tracetui.pairing.scoring import (
    CONSENSUS_MARGIN,
    CONSENSUS_MIN_SUPPORT,
    SUPPORT_INPUT_AGREES,
    SUPPORT_OUTPUT_AGREES,
    SUPPORT_UNCONFIRMED,
    Consensus,
    PairScorer,
    confidence_of,
)
from tracetui.pairing.segments import segments_between, split_large_segments
from tracetui.sides import Side
from tracetui.trace import Trace

REPAIR_ROUNDS = 8  # searches that forbid the pairs breaking the nesting, before they are just dropped


def weighted_common_subsequence(scores: np.ndarray) -> list[tuple[int, int]]:
    """The order-keeping set of (row, column) pairs with the largest total positive score."""
    rows, columns = scores.shape
    if rows == 0 or columns == 0:
        return []
    table = np.zeros((rows + 1, columns + 1))
    for row in range(1, rows + 1):
        previous = table[row - 1]
        # Either row is left out (previous[j]) or paired with column j (previous[j-1] + score);
        # a running maximum along the row then lets columns be left out.
        best = np.maximum(previous[1:], previous[:-1] + scores[row - 1])
        table[row, 1:] = np.maximum.accumulate(best)
    pairs = []
    row, column = rows, columns
    while row > 0 and column > 0:
        value = table[row, column]
        if value == table[row - 1, column]:
            row -= 1
        elif value == table[row, column - 1]:
            column -= 1
        else:
            pairs.append((row - 1, column - 1))
            row -= 1
            column -= 1
    pairs.reverse()
    return pairs


def nearest_paired_ancestor(trace: Trace, index: int, paired: dict[int, int]) -> int | None:
    parent = trace.records[index].parent
    while parent is not None and parent not in paired:
        parent = trace.records[parent].parent
    return parent


def nesting_violations(original: Trace, ported: Trace, partner: dict[int, int]) -> list[list[int]]:
    """Pairs that break the nesting, each listed with the pairs it contradicts (original indices).

    With order kept, a pairing keeps the nesting exactly when every pair's nearest paired
    ancestors are paired with each other.
    """
    partner_back = {ported_index: original_index for original_index, ported_index in partner.items()}
    violations = []
    for original_index, ported_index in partner.items():
        original_ancestor = nearest_paired_ancestor(original, original_index, partner)
        ported_ancestor = nearest_paired_ancestor(ported, ported_index, partner_back)
        if original_ancestor is None and ported_ancestor is None:
            continue
        if original_ancestor is not None and partner[original_ancestor] == ported_ancestor:
            continue
        involved = [original_index]
        if original_ancestor is not None:
            involved.append(original_ancestor)
        if ported_ancestor is not None:
            involved.append(partner_back[ported_ancestor])
        violations.append(involved)
    return violations


@dataclass
class InferredPair:
    original: int
    ported: int
    score: float

    @property
    def confidence(self) -> float:
        return confidence_of(self.score)


@dataclass
class Inference:
    """The pairs found, and for some calls left unpaired, why (keyed by side and record index)."""

    pairs: list[InferredPair] = field(default_factory=list)
    unpaired_reasons: dict[tuple[Side, int], str] = field(default_factory=dict)


class PairSearch:
    """One search: the rounds of subsequence, repair and consensus over all segments."""

    def __init__(self, original: Trace, ported: Trace, fixed: dict[int, int], atol: float) -> None:
        self.original_trace = original
        self.ported_trace = ported
        self.fixed = dict(fixed)
        segments = segments_between(original, ported, self.fixed)
        original_needed = {index for segment in segments for index in segment.original}
        ported_needed = {index for segment in segments for index in segment.ported}
        self.scorer = PairScorer(original, ported, atol, original_needed, ported_needed)
        self.segments = split_large_segments(segments, self.scorer)
        for segment in self.segments:
            self.scorer.relate(segment.original, segment.ported)

    def run(self) -> Inference:
        if not self.segments:
            return Inference()
        first_round = self.search(consensus=None)
        consensus = self.consensus(first_round)
        pairs = self.search(consensus=consensus)
        pairs += self.crossing_pairs(pairs)
        return Inference(pairs=pairs, unpaired_reasons=self.unpaired_reasons(pairs, consensus))

    # -- the rounds of subsequence and repair

    def search(self, consensus: Consensus | None) -> list[InferredPair]:
        """The best order-keeping pairs that also keep the nesting: pairs that break it are
        forbidden and the search run again, up to :data:`REPAIR_ROUNDS` times."""
        forbidden: set[tuple[int, int]] = set()
        for _ in range(REPAIR_ROUNDS):
            inferred = self.subsequence_pairs(consensus, forbidden)
            conflicts = self.nesting_conflicts(inferred)
            if not conflicts:
                return list(inferred.values())
            forbidden.update((index, inferred[index].ported) for index in self.choose_removals(conflicts, inferred))
        # Out of rounds: drop what still breaks the nesting, without searching again.
        inferred = self.subsequence_pairs(consensus, forbidden)
        while conflicts := self.nesting_conflicts(inferred):
            for index in self.choose_removals(conflicts, inferred):
                del inferred[index]
        return list(inferred.values())

    def subsequence_pairs(self, consensus: Consensus | None, forbidden: set[tuple[int, int]]) -> dict[int, InferredPair]:
        """Each segment's weighted common subsequence, keyed by original index; positive scores only."""
        inferred: dict[int, InferredPair] = {}
        for segment in self.segments:
            scores = self.scorer.score_matrix(segment.original, segment.ported, consensus, forbidden)
            for row, column in weighted_common_subsequence(scores):
                score = float(scores[row, column])
                if score > 0:
                    inferred[segment.original[row]] = InferredPair(segment.original[row], segment.ported[column], score)
        return inferred

    def nesting_conflicts(self, inferred: dict[int, InferredPair]) -> list[list[int]]:
        """The inferred pairs (original indices) in each conflict with the nesting; fixed pairs never go."""
        partner = {**self.fixed, **{pair.original: pair.ported for pair in inferred.values()}}
        violations = nesting_violations(self.original_trace, self.ported_trace, partner)
        removable = [[index for index in involved if index in inferred] for involved in violations]
        return [involved for involved in removable if involved]

    @staticmethod
    def choose_removals(removable: list[list[int]], inferred: dict[int, InferredPair]) -> set[int]:
        """From each conflict, the pair in most conflicts (then the weakest) goes."""
        blame: dict[int, int] = defaultdict(int)
        for involved in removable:
            for index in involved:
                blame[index] += 1
        chosen: set[int] = set()
        for involved in removable:
            if chosen.intersection(involved):
                continue
            chosen.add(max(involved, key=lambda index: (blame[index], -inferred[index].score)))
        return chosen

    # -- consensus between the rounds

    def consensus(self, first_round: list[InferredPair]) -> Consensus:
        """Template pairs supported by values in most of their instances; vetoes likewise."""
        consensus = Consensus()
        by_original: dict[str, list[tuple[float, str]]] = defaultdict(list)
        by_ported: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for (original_template, ported_template), amount in self.template_support(first_round).items():
            by_original[original_template].append((amount, ported_template))
            by_ported[ported_template].append((amount, original_template))
        for source, target in ((by_original, consensus.preferred), (by_ported, consensus.preferred_back)):
            for template, candidates in source.items():
                candidates.sort(reverse=True)
                best_amount, best = candidates[0]
                runner_up = candidates[1][0] if len(candidates) > 1 else 0.0
                if best_amount >= CONSENSUS_MIN_SUPPORT and best_amount >= CONSENSUS_MARGIN * runner_up:
                    target[template] = best
        consensus.vetoed = self.vetoed_templates()
        return consensus

    def template_support(self, first_round: list[InferredPair]) -> dict[tuple[str, str], float]:
        """(original template, ported template) → how far the pairs made in the same layer confirm it."""
        support: dict[tuple[str, str], float] = defaultdict(float)
        relations = self.scorer.relations
        pairs = [*self.fixed.items(), *((pair.original, pair.ported) for pair in first_round)]
        for original_index, ported_index in pairs:
            original, ported = self.scorer.original[original_index], self.scorer.ported[ported_index]
            if original.record.kind != "module" or original.indices != ported.indices:
                continue
            if (original_index, ported_index) in relations.output_agrees:
                weight = SUPPORT_OUTPUT_AGREES
            elif (original_index, ported_index) in relations.input_agrees:
                weight = SUPPORT_INPUT_AGREES
            else:
                weight = SUPPORT_UNCONFIRMED
            support[original.template, ported.template] += weight
        return support

    def vetoed_templates(self) -> set[tuple[str, str]]:
        """Template pairs whose outputs hold each other's values in another order in at least as
        many layers as they agree in."""
        relations = self.scorer.relations
        permuted: dict[tuple[str, str], int] = defaultdict(int)
        agreeing: dict[tuple[str, str], int] = defaultdict(int)
        for original_index, ported_index in relations.output_permuted:
            original, ported = self.scorer.original[original_index], self.scorer.ported[ported_index]
            if original.indices == ported.indices:
                permuted[original.template, ported.template] += 1
        for original_index, ported_index in relations.output_agrees:
            original, ported = self.scorer.original[original_index], self.scorer.ported[ported_index]
            if original.indices == ported.indices:
                agreeing[original.template, ported.template] += 1
        return {templates for templates, count in permuted.items() if count >= agreeing[templates]}

    # -- after the rounds

    def crossing_pairs(self, pairs: list[InferredPair]) -> list[InferredPair]:
        """Leaf calls run in another order among their siblings (position embedding before token
        embedding): the subsequence keeps only one order, so pair the rest when their outputs
        agree, each with exactly one unpaired call, under paired parents."""
        partner = {**self.fixed, **{pair.original: pair.ported for pair in pairs}}
        partner_back = {ported_index: original_index for original_index, ported_index in partner.items()}
        agrees = self.scorer.relations.output_agrees.by_original
        unpaired_original = [
            index for segment in self.segments for index in segment.original if index not in partner and self.scorer.original[index].is_leaf
        ]
        unpaired_ported = {
            index
            for segment in self.segments
            for index in segment.ported
            if index not in partner_back and self.scorer.ported[index].is_leaf
        }
        claimed: dict[int, list[int]] = defaultdict(list)
        for original_index in unpaired_original:
            for ported_index in agrees.get(original_index, ()):
                if ported_index in unpaired_ported:
                    claimed[ported_index].append(original_index)
        crossing = []
        for ported_index, original_indices in claimed.items():
            if len(original_indices) != 1:
                continue
            original_index = original_indices[0]
            if sum(1 for other in agrees.get(original_index, ()) if other in unpaired_ported) != 1:
                continue
            original_parent = nearest_paired_ancestor(self.original_trace, original_index, partner)
            ported_parent = nearest_paired_ancestor(self.ported_trace, ported_index, partner_back)
            if original_parent is None or partner.get(original_parent) != ported_parent:
                continue
            score = float(self.scorer.score_matrix([original_index], [ported_index])[0, 0])
            if score > 0:
                crossing.append(InferredPair(original_index, ported_index, score))
        return crossing

    def unpaired_reasons(self, pairs: list[InferredPair], consensus: Consensus) -> dict[tuple[Side, int], str]:
        """Why a call that looked like another one's counterpart was left unpaired."""
        partner = {**self.fixed, **{pair.original: pair.ported for pair in pairs}}
        paired_ported = set(partner.values())
        reasons: dict[tuple[Side, int], str] = {}
        for original_index, ported_index in self.scorer.relations.output_permuted:
            if original_index in partner or ported_index in paired_ported:
                continue
            original_name = self.original_trace.records[original_index].display_name
            ported_name = self.ported_trace.records[ported_index].display_name
            reasons.setdefault(
                ("original", original_index),
                f"its outputs are {ported_name}'s values in another order (a layout change, such as permuted rows): not compared",
            )
            reasons.setdefault(
                ("ported", ported_index),
                f"its outputs are {original_name}'s values in another order (a layout change, such as permuted rows): not compared",
            )
        for segment in self.segments:
            for original_index in segment.original:
                if original_index in partner or ("original", original_index) in reasons:
                    continue
                template = self.scorer.original[original_index].template
                vetoed = [ported for original, ported in consensus.vetoed if original == template]
                if vetoed:
                    reasons[("original", original_index)] = (
                        f"in other layers its outputs are {vetoed[0]}'s values in another order: not compared"
                    )
        return reasons


def infer_pairs(original: Trace, ported: Trace, fixed: dict[int, int], atol: float = 1e-3) -> Inference:
    """Pair the calls ``fixed`` (original index → ported index) leaves unpaired."""
    if not segments_between(original, ported, fixed):
        return Inference()  # every call is paired by name already, or one side has nothing left
    return PairSearch(original, ported, fixed, atol).run()

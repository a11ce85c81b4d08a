"""The evidence for pairing an original call with a ported call, weighed into one score.

Every candidate pair gets a score from independent evidence:

* kind — Linear pairs with Linear (or GPT-2's Conv1D), norm with norm, an activation with an
  activation; containers with containers, and a container whose output *is* the output of one
  of its calls (BERT's ``attention`` ends in a LayerNorm, a port's ``attn`` in a Linear) only
  with a container that ends in the same kind of call;
* the main output's shape up to size-1 dimensions (a pair the comparison could not measure is
  never made);
* names — word tokens with the usual synonyms (h/layers/blocks, attn/self_attn, ln/norm,
  wte/embed_tokens, query/q, c_fc/fc_in/up_proj, ...), layer indices, class names;
* values — the main input and main output agreeing element-wise with the candidate's. This
  is strong evidence *for* a pair but its absence is none *against* one: a bugged module's
  outputs differ, and it must still be paired, or the culprit is lost. Outputs that hold the
  same values in another order (the sorted values agree, element by element they do not: a
  RoPE row permutation, a fused projection with another row order) veto the pair, since
  comparing them would report a false divergence;
* consensus — repeated blocks pair the same way: a pairing of name templates
  (``transformer.h.#.attn.c_proj`` ↔ ``model.layers.#.self_attn.o_proj``) confirmed by values in
  the layers that agree carries the layer where a bug makes the values differ, and outvotes a
  coincidence of values there (swapped q/k weights). A template pair vetoed in most layers is
  vetoed in all (the consensus itself is taken in :mod:`tracetui.pairing.search`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from tracetui.layouts import layouts_fit
from tracetui.pairing.calls import CallFacts, describe_calls
from tracetui.pairing.names import PASS_THROUGH_FAMILIES, class_concepts, jaccard
from tracetui.pairing.values import PairSet, SketchCache, ValueRelations, ValueSketch, agree_elementwise, sketch_of, sorted_values
from tracetui.trace import Trace

# -- scoring weights ------------------------------------------------------------------------
# A pair is made only when its score is positive; BASE makes "same kind, same shape" alone
# too weak, so a pair needs some evidence of its own (a name, agreeing values, a consensus).
BASE = -1.0
LAST_NAME_WEIGHT = 2.0
PATH_NAME_WEIGHT = 0.5
CLASS_WORDS_WEIGHT = 0.5
SAME_CLASS = 1.0
SAME_FAMILY = 0.75
OTHER_FAMILY = -1.0
UNKNOWN_FAMILY = -0.5
LEAF_WITH_CONTAINER = -1.0
SAME_INDEX = 1.0
OTHER_INDEX = -1.5
OUTPUT_AGREES = 3.0
INPUT_AGREES = 1.5
SAME_PRODUCER = 1.0
ONE_SIDED_PRODUCER = -2.0
CONSENSUS_BONUS = 3.0
CONSENSUS_PENALTY = -3.0
VETO = -1e9

# -- consensus and confidence ----------------------------------------------------------------
# In the first round, each pair made in a layer supports its pair of name templates by how far
# its values confirm it: its outputs agree, only its inputs agree, or neither (kind and names).
SUPPORT_OUTPUT_AGREES = 1.0
SUPPORT_INPUT_AGREES = 0.5
SUPPORT_UNCONFIRMED = 0.25
# A template pair becomes the consensus with this much support (two layers whose outputs
# agree, say), and at least this many times the support of the template's next best partner.
CONSENSUS_MIN_SUPPORT = 1.5
CONSENSUS_MARGIN = 2.0
# A score maps to a confidence of 1 - exp(-score / CONFIDENCE_SCALE), kept within these bounds.
CONFIDENCE_SCALE = 3.0
CONFIDENCE_FLOOR = 0.05
CONFIDENCE_CEILING = 0.99


def confidence_of(score: float) -> float:
    """A score mapped to 0..1: a pair confirmed by its values and its name lands near 0.95."""
    return round(max(CONFIDENCE_FLOOR, min(CONFIDENCE_CEILING, 1.0 - math.exp(-max(score, 0.0) / CONFIDENCE_SCALE))), 2)


# -- the scorer ------------------------------------------------------------------------------


@dataclass
class Consensus:
    """How name templates paired in a first round: support for each template pair."""

    preferred: dict[str, str] = field(default_factory=dict)  # original template -> ported template
    preferred_back: dict[str, str] = field(default_factory=dict)
    vetoed: set[tuple[str, str]] = field(default_factory=set)


def kind_key(fact: CallFacts) -> tuple[object, ...]:
    """What :meth:`PairScorer.kind_score` looks at: equal keys score alike."""
    return (
        fact.record.kind,
        fact.output_shape,
        fact.is_leaf,
        fact.family,
        fact.is_op,
        fact.producer_family,
        fact.last_concepts,
        fact.path_concepts,
        fact.record.class_name,
    )


def kind_code_array(facts: list[CallFacts], codes: dict[tuple[object, ...], int]) -> tuple[np.ndarray, dict[int, CallFacts]]:
    """Each call's kind code, and one call of each code to score it by."""
    examples: dict[int, CallFacts] = {}
    array = np.empty(len(facts), dtype=np.int64)
    for fact in facts:
        code = codes.setdefault(kind_key(fact), len(codes))
        examples.setdefault(code, fact)
        array[fact.record.index] = code
    return array, examples


class PairScorer:
    """Scores candidate (original call, ported call) pairs; see the module docstring."""

    def __init__(self, original: Trace, ported: Trace, atol: float, original_needed: set[int], ported_needed: set[int]) -> None:
        """``*_needed``: the calls that may be paired; only theirs are summarised."""
        self.original = describe_calls(original, original_needed)
        self.ported = describe_calls(ported, ported_needed)
        self.atol = atol
        self.original_outputs = ValueSketch()
        self.ported_outputs = ValueSketch()
        self.original_inputs = ValueSketch()
        self.ported_inputs = ValueSketch()
        summaries: SketchCache = {}
        for index in original_needed:
            sketch_of(self.original[index].output, index, self.original_outputs, summaries)
            sketch_of(self.original[index].input, index, self.original_inputs, summaries)
        for index in ported_needed:
            sketch_of(self.ported[index].output, index, self.ported_outputs, summaries)
            sketch_of(self.ported[index].input, index, self.ported_inputs, summaries)
        self.relations = ValueRelations()
        self._kind_scores: dict[tuple[int, int], float] = {}
        kind_codes: dict[tuple[object, ...], int] = {}
        self.original_kind_codes, self.original_kind_examples = kind_code_array(self.original, kind_codes)
        self.ported_kind_codes, self.ported_kind_examples = kind_code_array(self.ported, kind_codes)
        place_codes: dict[tuple[int, ...], int] = {(): 0}
        self.original_index_codes = np.array([place_codes.setdefault(fact.indices, len(place_codes)) for fact in self.original])
        self.ported_index_codes = np.array([place_codes.setdefault(fact.indices, len(place_codes)) for fact in self.ported])

    # value relations, computed for a block of candidates at once
    def relate(self, original_indices: list[int], ported_indices: list[int]) -> None:
        self._relate_side(original_indices, ported_indices, outputs=True)
        self._relate_side(original_indices, ported_indices, outputs=False)

    def _relate_side(self, original_indices: list[int], ported_indices: list[int], outputs: bool) -> None:
        original_sketch = self.original_outputs if outputs else self.original_inputs
        ported_sketch = self.ported_outputs if outputs else self.ported_inputs
        groups: dict[tuple[int, ...], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
        for index in original_indices:
            fact = self.original[index]
            shape = fact.output_shape if outputs else fact.input_shape
            if shape is not None and index in original_sketch.samples:
                groups[shape][0].append(index)
        for index in ported_indices:
            fact = self.ported[index]
            shape = fact.output_shape if outputs else fact.input_shape
            if shape is not None and shape in groups and index in ported_sketch.samples:
                groups[shape][1].append(index)
        for original_group, ported_group in groups.values():
            if not original_group or not ported_group:
                continue
            first = np.stack([original_sketch.samples[index] for index in original_group])
            second = np.stack([ported_sketch.samples[index] for index in ported_group])
            # Chunks keep the (rows x columns x samples) difference array small.
            rows_per_chunk = max(1, 2_000_000 // max(1, len(ported_group) * first.shape[1]))
            for start in range(0, len(original_group), rows_per_chunk):
                chunk = first[start : start + rows_per_chunk]
                close = np.abs(chunk[:, None, :] - second[None, :, :]).max(axis=-1) <= self.atol
                for row, column in zip(*np.nonzero(close), strict=True):
                    self._confirm(original_group[start + row], ported_group[column], outputs)
            if outputs:
                self._find_permutations(original_group, ported_group)

    def _confirm(self, original_index: int, ported_index: int, outputs: bool) -> None:
        original_fact, ported_fact = self.original[original_index], self.ported[ported_index]
        first = original_fact.output if outputs else original_fact.input
        second = ported_fact.output if outputs else ported_fact.input
        assert first is not None and second is not None
        if agree_elementwise(first, second, self.atol):
            (self.relations.output_agrees if outputs else self.relations.input_agrees).add((original_index, ported_index))

    def _find_permutations(self, original_group: list[int], ported_group: list[int]) -> None:
        original_sketch, ported_sketch = self.original_outputs, self.ported_outputs
        # Necessary conditions only (sorted values within atol have extremes and means within
        # atol); the loose margin covers the rounding of the means.
        tolerance = self.atol * 1.001 + 1e-9
        minimum = np.array([ported_sketch.minimum[index] for index in ported_group])
        maximum = np.array([ported_sketch.maximum[index] for index in ported_group])
        mean = np.array([ported_sketch.mean[index] for index in ported_group])
        for original_index in original_group:
            possible = (
                (np.abs(minimum - original_sketch.minimum[original_index]) <= tolerance)
                & (np.abs(maximum - original_sketch.maximum[original_index]) <= tolerance)
                & (np.abs(mean - original_sketch.mean[original_index]) <= tolerance + 1e-6 * abs(original_sketch.mean[original_index]))
            )
            for column in np.nonzero(possible)[0]:
                ported_index = ported_group[column]
                if (original_index, ported_index) in self.relations.output_agrees:
                    continue
                first_output = self.original[original_index].output
                second_output = self.ported[ported_index].output
                assert first_output is not None and second_output is not None
                first = sorted_values(first_output, original_index, original_sketch)
                second = sorted_values(second_output, ported_index, ported_sketch)
                if agree_elementwise(first, second, self.atol):
                    self.relations.output_permuted.add((original_index, ported_index))

    # structural score of one pair, before values and consensus
    def kind_score(self, original: CallFacts, ported: CallFacts) -> float:
        """Everything but layer indices, values and consensus: depends only on :func:`kind_key`."""
        if original.record.kind != "module" or ported.record.kind != "module":
            return VETO
        if (original.output_shape is None) != (ported.output_shape is None):
            return VETO
        if original.output_shape is not None and original.output_shape != ported.output_shape:
            assert ported.output_shape is not None
            if not layouts_fit(original.output_shape, ported.output_shape):  # (batch, seq, heads, head_dim) ↔ (batch, seq, hidden)
                return VETO
        score = BASE
        family_score = self.family_score(original, ported)
        if family_score <= VETO:
            return VETO
        score += family_score
        if original.is_leaf != ported.is_leaf:
            score += LEAF_WITH_CONTAINER
        if not original.is_leaf and not ported.is_leaf:
            if original.producer_family is not None and ported.producer_family is not None:
                if original.producer_family == ported.producer_family:
                    score += SAME_PRODUCER
                elif "unknown" not in (original.producer_family, ported.producer_family):
                    return VETO
            elif (original.producer_family is None) != (ported.producer_family is None):
                score += ONE_SIDED_PRODUCER
        score += LAST_NAME_WEIGHT * jaccard(original.last_concepts, ported.last_concepts)
        score += PATH_NAME_WEIGHT * jaccard(original.path_concepts, ported.path_concepts)
        if original.record.class_name == ported.record.class_name:
            score += SAME_CLASS
        else:
            score += CLASS_WORDS_WEIGHT * jaccard(class_concepts(original.record.class_name), class_concepts(ported.record.class_name))
        return score

    def family_score(self, original: CallFacts, ported: CallFacts) -> float:
        if original.is_op and ported.is_op:
            if original.family == ported.family:
                return SAME_FAMILY
            if "identity" in (original.family, ported.family):
                # An nn.Identity pairs with dropout as a no-op does; with any other computation it
                # may stand where the other side has one (a norm the port skips): names and position
                # decide, and the bug then lands on it.
                return SAME_FAMILY if {original.family, ported.family} <= PASS_THROUGH_FAMILIES else UNKNOWN_FAMILY
            if "unknown" in (original.family, ported.family):
                return UNKNOWN_FAMILY
            return VETO
        if original.is_op != ported.is_op:
            op = original if original.is_op else ported
            return UNKNOWN_FAMILY if op.family == "unknown" else VETO
        if original.family == ported.family and original.family != "other":
            return SAME_FAMILY
        if "other" in (original.family, ported.family):
            return 0.0
        return OTHER_FAMILY

    def score_matrix(
        self,
        original_indices: list[int],
        ported_indices: list[int],
        consensus: Consensus | None = None,
        forbidden: set[tuple[int, int]] | frozenset[tuple[int, int]] = frozenset(),
    ) -> np.ndarray:
        """Scores of every (original, ported) pair of a block; VETO where a pair must not be made.

        Computed per distinct kind of call and per distinct template, then spread over the
        block with numpy, so that a block of a thousand calls a side costs milliseconds.
        """
        original_positions = np.asarray(original_indices)
        ported_positions = np.asarray(ported_indices)
        original_kinds, original_inverse = np.unique(self.original_kind_codes[original_positions], return_inverse=True)
        ported_kinds, ported_inverse = np.unique(self.ported_kind_codes[ported_positions], return_inverse=True)
        table = np.empty((len(original_kinds), len(ported_kinds)))
        for row, original_kind in enumerate(original_kinds):
            for column, ported_kind in enumerate(ported_kinds):
                table[row, column] = self.kind_score_of_codes(int(original_kind), int(ported_kind))
        scores = table[original_inverse[:, None], ported_inverse[None, :]]

        original_places = self.original_index_codes[original_positions][:, None]
        ported_places = self.ported_index_codes[ported_positions][None, :]
        same_place = original_places == ported_places
        both_indexed = (original_places != 0) & (ported_places != 0)
        scores = scores + np.where(both_indexed, np.where(same_place, SAME_INDEX, OTHER_INDEX), 0.0)

        row_of = {index: row for row, index in enumerate(original_indices)}
        column_of = {index: column for column, index in enumerate(ported_indices)}

        def cells(pairs: PairSet | Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
            rows, columns = [], []
            if isinstance(pairs, PairSet):
                lookup = pairs.by_original
                pairs = [
                    (original_index, ported_index) for original_index in original_indices for ported_index in lookup.get(original_index, ())
                ]
            for original_index, ported_index in pairs:
                if original_index in row_of and ported_index in column_of:
                    rows.append(row_of[original_index])
                    columns.append(column_of[ported_index])
            return rows, columns

        rows, columns = cells(self.relations.output_agrees)
        scores[rows, columns] += OUTPUT_AGREES
        rows, columns = cells(self.relations.input_agrees)
        scores[rows, columns] += INPUT_AGREES
        if consensus is not None:
            scores += self.consensus_matrix(original_indices, ported_indices, consensus, same_place)
        scores[scores <= VETO / 2] = VETO
        for pairs in (self.relations.output_permuted, forbidden):
            rows, columns = cells(pairs)
            scores[rows, columns] = VETO
        return scores

    def kind_score_of_codes(self, original_code: int, ported_code: int) -> float:
        key = (original_code, ported_code)
        if key not in self._kind_scores:
            self._kind_scores[key] = self.kind_score(self.original_kind_examples[original_code], self.ported_kind_examples[ported_code])
        return self._kind_scores[key]

    def consensus_matrix(
        self, original_indices: list[int], ported_indices: list[int], consensus: Consensus, same_place: np.ndarray
    ) -> np.ndarray:
        original_templates = [self.original[index].template for index in original_indices]
        ported_templates = [self.ported[index].template for index in ported_indices]
        unique_original = sorted(set(original_templates))
        unique_ported = sorted(set(ported_templates))
        original_code = {template: code for code, template in enumerate(unique_original)}
        ported_code = {template: code for code, template in enumerate(unique_ported)}
        bonus = np.zeros((len(unique_original), len(unique_ported)))
        penalty = np.zeros_like(bonus)
        for row, original_template in enumerate(unique_original):
            preferred = consensus.preferred.get(original_template)
            for column, ported_template in enumerate(unique_ported):
                if (original_template, ported_template) in consensus.vetoed:
                    penalty[row, column] = VETO
                    continue
                preferred_back = consensus.preferred_back.get(ported_template)
                if preferred == ported_template or preferred_back == original_template:
                    bonus[row, column] = CONSENSUS_BONUS
                if preferred is not None and preferred != ported_template:
                    penalty[row, column] += CONSENSUS_PENALTY
                if preferred_back is not None and preferred_back != original_template:
                    penalty[row, column] += CONSENSUS_PENALTY
        rows = np.array([original_code[template] for template in original_templates])[:, None]
        columns = np.array([ported_code[template] for template in ported_templates])[None, :]
        # The bonus needs the same layer: template pairs say nothing about which layer goes where.
        return penalty[rows, columns] + np.where(same_place, bonus[rows, columns], 0.0)

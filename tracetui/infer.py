"""Infer which call of the port corresponds to which call of the original when their names differ.

:func:`tracetui.align.align` pairs calls by (renamed) name first; :func:`infer_pairs` pairs the
rest. The problem is an *ordered tree mapping*: both traces are trees of calls in execution
order, and a pairing must keep that order and that nesting (a call's nearest paired ancestor
pairs with its partner's nearest paired ancestor), while wrappers that exist on one side only
are skipped. Within that frame every candidate pair gets a score from independent evidence:

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
  vetoed in all.

The search: a weighted longest common subsequence of the two call sequences (each stretch
between two name/map pairs on its own, a very long stretch cut where a value occurs once on
each side), then repair of the nesting — pairs that break it are forbidden and the subsequence
recomputed — then a second round with the consensus added. Last, leaf calls that run in
another order among their siblings are paired when their outputs agree with each other only.
Calls left unpaired because their values are another's in another order get a reason, which
the alignment keeps for the report and the written map.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch

from tracetui.trace import CallRecord, Leaf, Trace

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

SAMPLE_SIZE = 32
CHUNK = 1 << 22  # elements compared at once
SMALL = 1 << 16  # tensors up to this many elements are summarised with numpy
MAX_BLOCK_CELLS = 4_000_000  # candidate pairs searched at once; bigger stretches are cut
REPAIR_ROUNDS = 8

# -- names -----------------------------------------------------------------------------------
# concept: the aliases that name it. A whole name component is looked up first
# ("post_attention_layernorm"), then its words ("post", "attention", "layernorm").
CONCEPT_ALIASES: dict[str, str] = {
    "layers": "h layer layers block blocks blk resblocks transformer_blocks decoder_layers encoder_layers",
    "attention": "attn attention attentions self_attn selfattn self_attention selfattention mha msa sa self mixer",
    "mlp": "mlp ffn feed_forward feedforward ff ffw",
    "norm": (
        "ln norm layernorm layer_norm rmsnorm rms_norm lnf ln_f norm_f final_norm final_layernorm final_layer_norm "
        "ln_final ln_1 ln_2 ln1 ln2 norm1 norm2 input_layernorm post_attention_layernorm attention_norm attn_norm "
        "ffn_norm mlp_norm bn batchnorm groupnorm gn"
    ),
    "norm_attention": "ln_1 ln1 norm1 input_layernorm attention_norm attn_norm pre_attention_layernorm ln_attn",
    "norm_mlp": "ln_2 ln2 norm2 post_attention_layernorm ffn_norm mlp_norm pre_feedforward_layernorm ln_mlp",
    "final": "f final lnf ln_f norm_f final_norm final_layernorm final_layer_norm ln_final",
    "embed": (
        "embed embeds embedding embeddings emb embd wte wpe tok_embeddings word_embeddings position_embeddings "
        "token_type_embeddings embed_tokens embed_positions token_embedding positional_embedding pos_emb pos_embed tok_emb"
    ),
    "token": "tok token tokens word words wte vocab embed_tokens tok_embeddings word_embeddings token_embedding tok_emb",
    "position": "pos position positions positional wpe position_embeddings embed_positions positional_embedding pos_emb pos_embed",
    "segment": "token_type token_types tokentype segment segments token_type_embeddings type",
    "q": "q query queries wq q_proj to_q q_lin",
    "k": "k key keys wk k_proj to_k k_lin",
    "v": "v value values wv v_proj to_v v_lin",
    "o": "o o_proj out out_proj wo c_proj to_out out_lin proj dense output",
    "qkv": "qkv c_attn wqkv query_key_value in_proj qkv_proj to_qkv",
    "up": "up up_proj fc1 fc_in c_fc w1 w3 wi wi_0 wi_1 dense_h_to_4h intermediate lin1 w_in",
    "gate": "gate gate_proj w1 w3 wi_0",
    "down": "down down_proj fc2 fc_out c_proj w2 wo dense_4h_to_h lin2 w_out dense output",
    "activation": ("act act_fn activation activation_fn gelu silu relu swish nonlinearity intermediate_act_fn act_layer tanh sigmoid"),
    "head": "head lm_head output classifier logits score out_head",
    "dropout": "drop dropout attn_dropout resid_dropout attn_drop proj_drop hidden_dropout embd_drop drop_path",
    "pool": "pooler pool pooling",
    "rotary": "rotary rotary_emb rope freqs freqs_cis rotary_embedding rotary_pos_emb",
}
FILLER_WORDS = frozenset({"fn", "c", "module", "mod", "op", "layer"})


def _alias_table() -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = defaultdict(set)
    for concept, aliases in CONCEPT_ALIASES.items():
        for alias in aliases.split():
            table[alias].add(concept)
    return {alias: frozenset(concepts) for alias, concepts in table.items()}


ALIASES = _alias_table()
CAMEL_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
DIGIT_BOUNDARY = re.compile(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")


@cache
def component_concepts(component: str) -> frozenset[str]:
    """The concepts one dotted name component stands for: ``self_attn`` → {attention}."""
    lowered = component.lower()
    if lowered in ALIASES:
        return ALIASES[lowered]
    spaced = DIGIT_BOUNDARY.sub("_", CAMEL_BOUNDARY.sub("_", component)).lower()
    words = [word for word in spaced.split("_") if word]
    concepts: set[str] = set()
    position = 0
    while position < len(words):
        if position + 1 < len(words):
            pair = next(
                (
                    joined
                    for joined in (words[position] + words[position + 1], f"{words[position]}_{words[position + 1]}")
                    if joined in ALIASES
                ),
                None,
            )
            if pair is not None:
                concepts |= ALIASES[pair]
                position += 2
                continue
        word = words[position]
        position += 1
        if word.isdigit():
            concepts.add("#" + word)
        elif word in ALIASES:
            concepts |= ALIASES[word]
        elif word not in FILLER_WORDS:
            concepts.add(word)
    return frozenset(concepts)


def name_parts(name: str) -> tuple[str, tuple[str, ...], tuple[int, ...]]:
    """(last non-numeric component, the other non-numeric components, the numeric ones)."""
    components = name.split(".") if name else []
    words = [component for component in components if not component.isdigit()]
    indices = tuple(int(component) for component in components if component.isdigit())
    last = words[-1] if words else ""
    return last, tuple(words[:-1]), indices


def template_of(name: str) -> str:
    """The name with every numeric component replaced by ``#``: the same module in every layer."""
    return ".".join("#" if component.isdigit() else component for component in name.split("."))


def jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)


@cache
def class_concepts(class_name: str) -> frozenset[str]:
    concepts = set(component_concepts(class_name))
    return frozenset(concept for concept in concepts if not concept.startswith("#"))


# -- kinds of modules ------------------------------------------------------------------------
ACTIVATION_CLASSES = frozenset(
    {
        "gelu", "silu", "relu", "tanh", "sigmoid", "mish", "elu", "leakyrelu", "softplus", "hardswish", "hardtanh", "prelu",
        "relu6", "selu", "celu", "glu", "quickgelu", "newgelu", "gelutanh", "swish", "logsigmoid", "hardsigmoid", "softsign",
        "tanhshrink", "fastgelu",
    }
)  # fmt: skip
OP_FAMILIES = frozenset({"linear", "conv", "embedding", "norm", "activation", "dropout", "rotary", "pool", "softmax", "reshape"})


def op_family(class_name: str) -> str | None:
    """The kind of computation a leaf module of this class does, when the class is a known one."""
    if class_name == "Conv1D":  # transformers' GPT-2 Conv1D is a Linear with a transposed weight
        return "linear"
    lowered = class_name.lower()
    if "rotary" in lowered or "rope" in lowered:
        return "rotary"
    if "dropout" in lowered or lowered in ("identity", "droppath"):
        return "dropout"
    if "embedding" in lowered:
        return "embedding"
    if "norm" in lowered:
        return "norm"
    if lowered.endswith("linear") or lowered in ("dense",):
        return "linear"
    if re.fullmatch(r"(lazy)?conv(transpose)?[123]d", lowered):
        return "conv"
    if "pool" in lowered:
        return "pool"
    if "softmax" in lowered:
        return "softmax"
    if lowered in ("flatten", "unflatten"):
        return "reshape"
    if lowered in ACTIVATION_CLASSES or lowered.endswith("activation") or "gelu" in lowered:
        return "activation"
    return None


def structural_family(class_name: str) -> str:
    """The role of a container module, guessed from its class name."""
    lowered = class_name.lower()
    if "attention" in lowered or "attn" in lowered:
        return "attention"
    if any(word in lowered for word in ("mlp", "feedforward", "ffn", "intermediate")):
        return "mlp"
    if "block" in lowered or ("layer" in lowered and "norm" not in lowered):
        return "block"
    if "embed" in lowered:
        return "embedding"
    if "pool" in lowered:
        return "pool"
    return "other"


# -- facts about each call -------------------------------------------------------------------


@dataclass
class CallFacts:
    """What the scorer needs to know about one recorded call."""

    record: CallRecord
    is_leaf: bool
    family: str
    is_op: bool  # a leaf whose family is a computation (linear, norm, ...) or unknown
    last_concepts: frozenset[str]
    path_concepts: frozenset[str]
    indices: tuple[int, ...]
    template: str
    output: torch.Tensor | None  # main output, flattened
    output_shape: tuple[int, ...] | None  # up to size-1 dimensions
    input: torch.Tensor | None  # main input, flattened
    input_shape: tuple[int, ...] | None
    producer_family: str | None = None  # for a container: the kind of call whose output it returns
    subtree_end: int = 0  # index of the last call nested in this one (itself when none)


def main_leaf(leaves: Iterable[Leaf]) -> Leaf | None:
    """The first tensor leaf, whether its values were kept or only its statistics."""
    return next((leaf for leaf in leaves if leaf.is_tensor), None)


def squeezed_shape(leaf: Leaf | None) -> tuple[int, ...] | None:
    if leaf is None or leaf.shape is None:
        return None
    return tuple(size for size in leaf.shape if size != 1)


def flat(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None:
        return None
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.reshape(-1)


def describe_calls(trace: Trace, needed: set[int] | None = None) -> list[CallFacts]:
    """Facts about every call; the costly ones (producers) only for the ``needed`` calls."""
    records = trace.records
    has_children = [False] * len(records)
    for record in records:
        if record.parent is not None and record.kind == "module":
            has_children[record.parent] = True
    facts: list[CallFacts] = []
    for record in records:
        is_leaf = not has_children[record.index]
        known_op = op_family(record.class_name) if is_leaf else None
        if known_op is not None:
            family, is_op = known_op, True
        else:
            family = structural_family(record.class_name)
            is_op = is_leaf and family == "other"
            if is_op:
                family = "unknown"
        last, path, indices = name_parts(record.name)
        path_concepts = frozenset().union(*(component_concepts(part) for part in path)) if path else frozenset()
        output = main_leaf(record.outputs)
        main_input = main_leaf(record.inputs)
        facts.append(
            CallFacts(
                record=record,
                is_leaf=is_leaf,
                family=family,
                is_op=is_op,
                last_concepts=component_concepts(last) if last else frozenset({"root"}),
                path_concepts=path_concepts,
                indices=indices,
                template=template_of(record.name),
                output=flat(None if output is None else output.tensor),
                output_shape=squeezed_shape(output),
                input=flat(None if main_input is None else main_input.tensor),
                input_shape=squeezed_shape(main_input),
                subtree_end=record.index,
            )
        )
    for record in reversed(records):
        if record.parent is not None:
            parent = facts[record.parent]
            parent.subtree_end = max(parent.subtree_end, facts[record.index].subtree_end)
    for fact in facts:
        if not fact.is_leaf and (needed is None or fact.record.index in needed):
            fact.producer_family = producer_family(fact, facts)
    return facts


def producer_family(container: CallFacts, facts: list[CallFacts]) -> str | None:
    """The family of the earliest nested computation whose output *is* the container's output.

    BERT's ``attention`` returns what its LayerNorm made; a port's ``attn`` what its output
    projection made. Identity-like calls (dropout in eval mode) are looked through.
    """
    output = container.output
    if output is None:
        return None
    for index in range(container.record.index + 1, container.subtree_end + 1):
        candidate = facts[index]
        if not candidate.is_leaf or candidate.family == "dropout" or candidate.output is None:
            continue
        same_size = candidate.output.numel() == output.numel() and candidate.output.dtype == output.dtype
        if same_size and (candidate.output is output or torch.equal(candidate.output, output)):
            return candidate.family
    return None


# -- value relations -------------------------------------------------------------------------


def sample_positions(numel: int) -> torch.Tensor:
    if numel <= SAMPLE_SIZE:
        return torch.arange(numel)
    return torch.linspace(0, numel - 1, SAMPLE_SIZE).round().long()


def comparable(tensor: torch.Tensor) -> torch.Tensor:
    values = tensor.to(torch.float64)
    return torch.nan_to_num(values, nan=1e300, posinf=1e301, neginf=-1e301)


def small_array(tensor: torch.Tensor) -> np.ndarray | None:
    """A numpy view of a small tensor: numpy is much quicker than torch on a few hundred values."""
    if tensor.numel() > SMALL or tensor.device.type != "cpu":
        return None
    if tensor.dtype in (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.int8, torch.int16):
        return tensor.detach().numpy()
    return tensor.detach().to(torch.float64 if tensor.is_floating_point() or tensor.dtype == torch.bool else torch.int64).numpy()


def comparable_array(array: np.ndarray) -> np.ndarray:
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=1e300, posinf=1e301, neginf=-1e301)
    return values


def agree_elementwise(first: torch.Tensor, second: torch.Tensor, atol: float) -> bool:
    """Two flat tensors of one size agree within ``atol`` everywhere (NaN with NaN), in float64,
    a chunk at a time so that a large output is never copied whole."""
    first_array, second_array = small_array(first), small_array(second)
    if first_array is not None and second_array is not None:
        return bool((np.abs(comparable_array(first_array) - comparable_array(second_array)) <= atol).all())
    for start in range(0, first.numel(), CHUNK):
        difference = comparable(first[start : start + CHUNK]) - comparable(second[start : start + CHUNK])
        if not bool((difference.abs() <= atol).all()):
            return False
    return True


@dataclass
class ValueSketch:
    """Per-call summaries of one trace's main outputs (or inputs), to compare many pairs at once."""

    samples: dict[int, np.ndarray] = field(default_factory=dict)
    minimum: dict[int, float] = field(default_factory=dict)
    maximum: dict[int, float] = field(default_factory=dict)
    mean: dict[int, float] = field(default_factory=dict)
    sorted_values: dict[int, torch.Tensor] = field(default_factory=dict)


# The same recorded tensor is often one call's output and the next one's input: its summary is
# kept by (address, size, dtype), which only views of the very same values share.
SketchCache = dict[tuple[int, int, torch.dtype], tuple[np.ndarray, float, float, float]]


def sketch_of(tensor: torch.Tensor | None, index: int, sketch: ValueSketch, summaries: SketchCache) -> None:
    """Values at a few fixed positions (equal tensors have equal samples), smallest, largest and
    mean (equal for the same values in any order). NaN makes the last three NaN: never equal."""
    if tensor is None or tensor.numel() == 0:
        return
    key = (tensor.data_ptr(), tensor.numel(), tensor.dtype)
    if key in summaries:
        sketch.samples[index], sketch.minimum[index], sketch.maximum[index], sketch.mean[index] = summaries[key]
        return
    positions = sample_positions(tensor.numel())
    array = small_array(tensor)
    if array is not None:
        samples = comparable_array(array[positions.numpy()])
        minimum, maximum, mean = float(array.min()), float(array.max()), float(array.mean(dtype=np.float64))
    else:
        samples = comparable(tensor[positions]).numpy()
        values = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor
        minimum, maximum = float(values.min()), float(values.max())
        total = sum(float(values[start : start + CHUNK].sum(dtype=torch.float64)) for start in range(0, values.numel(), CHUNK))
        mean = total / values.numel()
    sketch.samples[index], sketch.minimum[index], sketch.maximum[index], sketch.mean[index] = samples, minimum, maximum, mean
    summaries[key] = (samples, minimum, maximum, mean)


def sorted_values(tensor: torch.Tensor, index: int, sketch: ValueSketch) -> torch.Tensor:
    if index not in sketch.sorted_values:
        values = tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.to(torch.float32)
        sketch.sorted_values[index] = values.sort().values
    return sketch.sorted_values[index]


class PairSet:
    """A set of (original index, ported index) pairs, looked up by original index."""

    def __init__(self) -> None:
        self.by_original: dict[int, set[int]] = defaultdict(set)

    def add(self, pair: tuple[int, int]) -> None:
        self.by_original[pair[0]].add(pair[1])

    def __contains__(self, pair: object) -> bool:
        assert isinstance(pair, tuple)
        return pair[1] in self.by_original.get(pair[0], ())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for original_index, ported_indices in self.by_original.items():
            for ported_index in ported_indices:
                yield original_index, ported_index


@dataclass
class ValueRelations:
    """Which candidate pairs agree element-wise, and which hold the same values in another order."""

    output_agrees: PairSet = field(default_factory=PairSet)
    output_permuted: PairSet = field(default_factory=PairSet)
    input_agrees: PairSet = field(default_factory=PairSet)


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


# -- the search ------------------------------------------------------------------------------


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
    def unique_keys(indices: list[int], facts: list[CallFacts], sketch: ValueSketch) -> dict[tuple[object, ...], int]:
        seen: dict[tuple[object, ...], int] = {}
        repeated: set[tuple[object, ...]] = set()
        for index in indices:
            fact = facts[index]
            if not fact.is_op or fact.family == "dropout":
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
        comparable_outputs = original.family == ported.family and original.output is not None and ported.output is not None
        if comparable_outputs and agree_elementwise(original.output, ported.output, scorer.atol):
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


@dataclass
class Inference:
    """The pairs found, and for some calls left unpaired, why (keyed by ("original"|"ported", index))."""

    pairs: list[InferredPair] = field(default_factory=list)
    unpaired_reasons: dict[tuple[str, int], str] = field(default_factory=dict)


@dataclass
class InferredPair:
    original: int
    ported: int
    score: float

    @property
    def confidence(self) -> float:
        return confidence_of(self.score)


def confidence_of(score: float) -> float:
    """A score mapped to 0..1: a pair confirmed by its values and its name lands near 0.95."""
    return round(max(0.05, min(0.99, 1.0 - math.exp(-max(score, 0.0) / 3.0))), 2)


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

    def unpaired_reasons(self, pairs: list[InferredPair], consensus: Consensus) -> dict[tuple[str, int], str]:
        """Why a call that looked like another one's counterpart was left unpaired."""
        partner = {**self.fixed, **{pair.original: pair.ported for pair in pairs}}
        paired_ported = set(partner.values())
        reasons: dict[tuple[str, int], str] = {}
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

    def search(self, consensus: Consensus | None) -> list[InferredPair]:
        forbidden: set[tuple[int, int]] = set()
        matrices = {}
        for round_number in range(REPAIR_ROUNDS + 1):
            inferred: dict[int, InferredPair] = {}
            for position, segment in enumerate(self.segments):
                scores = self.scorer.score_matrix(segment.original, segment.ported, consensus, forbidden)
                matrices[position] = scores
                for row, column in weighted_common_subsequence(scores):
                    score = float(scores[row, column])
                    if score > 0:
                        inferred[segment.original[row]] = InferredPair(segment.original[row], segment.ported[column], score)
            partner = {**self.fixed, **{pair.original: pair.ported for pair in inferred.values()}}
            violations = nesting_violations(self.original_trace, self.ported_trace, partner)
            removable = [[index for index in involved if index in inferred] for involved in violations]
            removable = [involved for involved in removable if involved]
            if not removable:
                return list(inferred.values())
            to_remove = self.choose_removals(removable, inferred)
            if round_number == REPAIR_ROUNDS:
                # Out of rounds: drop what still breaks the nesting, without searching again.
                while removable:
                    for index in to_remove:
                        inferred.pop(index, None)
                    partner = {**self.fixed, **{pair.original: pair.ported for pair in inferred.values()}}
                    violations = nesting_violations(self.original_trace, self.ported_trace, partner)
                    removable = [[index for index in involved if index in inferred] for involved in violations]
                    removable = [involved for involved in removable if involved]
                    to_remove = self.choose_removals(removable, inferred)
                return list(inferred.values())
            forbidden.update((index, inferred[index].ported) for index in to_remove)
        return []

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

    def consensus(self, first_round: list[InferredPair]) -> Consensus:
        """Template pairs supported by values in most of their instances; vetoes likewise."""
        support: dict[tuple[str, str], float] = defaultdict(float)
        relations = self.scorer.relations
        pairs = [*self.fixed.items(), *((pair.original, pair.ported) for pair in first_round)]
        for original_index, ported_index in pairs:
            original, ported = self.scorer.original[original_index], self.scorer.ported[ported_index]
            if original.record.kind != "module" or original.indices != ported.indices:
                continue
            if (original_index, ported_index) in relations.output_agrees:
                weight = 1.0
            elif (original_index, ported_index) in relations.input_agrees:
                weight = 0.5
            else:
                weight = 0.25
            support[original.template, ported.template] += weight
        consensus = Consensus()
        by_original: dict[str, list[tuple[float, str]]] = defaultdict(list)
        by_ported: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for (original_template, ported_template), amount in support.items():
            by_original[original_template].append((amount, ported_template))
            by_ported[ported_template].append((amount, original_template))
        for source, target in ((by_original, consensus.preferred), (by_ported, consensus.preferred_back)):
            for template, candidates in source.items():
                candidates.sort(reverse=True)
                best_amount, best = candidates[0]
                runner_up = candidates[1][0] if len(candidates) > 1 else 0.0
                if best_amount >= 1.5 and best_amount >= 2 * runner_up:
                    target[template] = best
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
        consensus.vetoed = {templates for templates, count in permuted.items() if count >= agreeing[templates]}
        return consensus


def infer_pairs(original: Trace, ported: Trace, fixed: dict[int, int], atol: float = 1e-3) -> Inference:
    """Pair the calls ``fixed`` (original index → ported index) leaves unpaired."""
    if not segments_between(original, ported, fixed):
        return Inference()  # every call is paired by name already, or one side has nothing left
    return PairSearch(original, ported, fixed, atol).run()

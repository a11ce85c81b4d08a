"""The project's name vocabulary: what module names and class names say about a module.

Names of one model rarely equal the other's (``transformer.h.3.attn`` against
``model.layers.3.self_attn``), but they use the same few words for the same few things. This
module turns a name into *concepts* through the usual synonyms, a name into its *template*
(the same module in every layer), and a class name into the kind of computation it does.
Automatic pairing (:mod:`tracetui.pairing.scoring`), the written rename map
(:mod:`tracetui.pairing.map_writer`) and ``tracetui weights`` all read names this way.
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cache

# -- module names ----------------------------------------------------------------------------
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


INDEX_SUFFIX = re.compile(r"(?P<word>[A-Za-z][A-Za-z0-9_]*?)_(?P<index>\d+)")


@cache
def split_component(component: str, last: bool) -> tuple[str, str | None]:
    """(word, layer index) of one name component: ``3`` → ("", "3"); Flax's ``h_3`` → ("h", "3")
    when it is a layer (a path component, or a word such as ``h``/``layer``/``block``), not a
    numbered module such as GPT-2's ``ln_1``; anything else → (component, None)."""
    if component.isdigit():
        return "", component
    match = INDEX_SUFFIX.fullmatch(component)
    if match is not None and (not last or "layers" in component_concepts(match["word"])):
        return match["word"], match["index"]
    return component, None


def indexed_components(name: str) -> list[tuple[str, str | None]]:
    components = name.split(".") if name else []
    return [split_component(component, position == len(components) - 1) for position, component in enumerate(components)]


def name_parts(name: str) -> tuple[str, tuple[str, ...], tuple[int, ...]]:
    """(last non-numeric component, the other non-numeric components, the numeric ones)."""
    parts = indexed_components(name)
    words = [word for word, _ in parts if word]
    indices = tuple(int(index) for _, index in parts if index is not None)
    last = words[-1] if words else ""
    return last, tuple(words[:-1]), indices


def template_of(name: str) -> str:
    """The name with every layer index replaced by ``#`` (``h.#``, Flax's ``h_#``): the same module in every layer."""
    return ".".join(word if index is None else f"{word}_#" if word else "#" for word, index in indexed_components(name))


def jaccard(first: frozenset[str], second: frozenset[str]) -> float:
    if not first or not second:
        return 0.0
    return len(first & second) / len(first | second)


@cache
def class_concepts(class_name: str) -> frozenset[str]:
    concepts = set(component_concepts(class_name))
    return frozenset(concept for concept in concepts if not concept.startswith("#"))


# -- class names: kinds of modules -----------------------------------------------------------
ACTIVATION_CLASSES = frozenset(
    {
        "gelu", "silu", "relu", "tanh", "sigmoid", "mish", "elu", "leakyrelu", "softplus", "hardswish", "hardtanh", "prelu",
        "relu6", "selu", "celu", "glu", "quickgelu", "newgelu", "gelutanh", "swish", "logsigmoid", "hardsigmoid", "softsign",
        "tanhshrink", "fastgelu",
    }
)  # fmt: skip
OP_FAMILIES = frozenset(
    {"linear", "conv", "embedding", "norm", "activation", "dropout", "identity", "rotary", "pool", "softmax", "reshape"}
)
PASS_THROUGH_FAMILIES = frozenset({"dropout", "identity"})  # hand their input on in eval mode


def op_family(class_name: str) -> str | None:
    """The kind of computation a leaf module of this class does, when the class is a known one."""
    if class_name == "Conv1D":  # transformers' GPT-2 Conv1D is a Linear with a transposed weight
        return "linear"
    lowered = class_name.lower()
    if "rotary" in lowered or "rope" in lowered:
        return "rotary"
    if lowered == "identity":  # a no-op, or a stand-in for a module the port leaves out
        return "identity"
    if "dropout" in lowered or lowered == "droppath":
        return "dropout"
    if "embedding" in lowered or lowered == "embed":  # Flax's Embed
        return "embedding"
    if "norm" in lowered:  # Flax's LayerNorm/RMSNorm, Keras's LayerNormalization
        return "norm"
    if lowered.endswith(("linear", "dense", "densegeneral")) or lowered in ("einsum", "einsumdense"):  # Flax/Keras projections
        return "linear"
    if re.fullmatch(r"(lazy)?conv(transpose)?([123]d)?(transpose)?", lowered):  # torch's Conv2d, Flax's Conv, Keras's Conv2D
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

"""A compact port of `original.py` (HF-style BERT): flat blocks, fused-kernel attention, typed output.

Differences from the original that a comparison has to see through:
  * names: `embed.tokens`, `encoder.blocks.N.attn.{q,k,v,out}`, `norm1`, `ffn.{up,act,down}`,
    `norm2` instead of `embeddings.word_embeddings`, `encoder.layer.N.attention.self.query`, ...
    (see `map.toml`);
  * residual + LayerNorm are written inline in the block instead of living in
    `BertSelfOutput` / `BertOutput`, so those wrappers have no counterpart here;
  * attention runs through `F.scaled_dot_product_attention` and the additive mask is passed
    down as `attention_mask=` keyword;
  * the output is an `EncoderOutput` dataclass rather than a tuple.

`build()` builds the original with its fixed seed and converts its `state_dict()` into this
layout, so the clean port reproduces the original's outputs to float rounding.

Planted bugs for the tracetui demo: set `TRACETUI_DEMO_BUG` to one of the names in `BUGS`,
or to several separated by commas (`TRACETUI_DEMO_BUG=norm_eps,pooler_activation`) to plant them all.
`BUGS` names the ported module each bug lives in (the innermost one `map.toml` pairs with a
module of the original):

  dropout            attention passes dropout_p=0.1 to scaled_dot_product_attention without
                     checking self.training, so dropout stays on after eval(); the attention
                     module has no counterpart in the original, so the innermost paired module
                     around it is the block; the first block to run is block 0
  norm_eps           block 1's norm2 is built with eps=1e-1 instead of the original's 1e-12
  swapped_qk         the conversion swaps block 2's query and key weights (a rename-table typo)
  pooler_activation  the pooler forgets the tanh after its dense layer
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

BUG_ENV_VAR = "TRACETUI_DEMO_BUG"

# planted bug name -> ported qualified name of the innermost paired module that contains it
BUGS: dict[str, str] = {
    "dropout": "encoder.blocks.0",
    "norm_eps": "encoder.blocks.1.norm2",
    "swapped_qk": "encoder.blocks.2.attn.q",
    "pooler_activation": "pooler",
}


def resolve_bugs(bug: str | None = None) -> frozenset[str]:
    """The planted bugs to switch on: `bug` if given, else `$TRACETUI_DEMO_BUG`, a comma-separated
    list of names in `BUGS`; empty for a clean port."""
    if bug is None:
        bug = os.environ.get(BUG_ENV_VAR, "")
    names = frozenset(name.strip() for name in bug.split(",") if name.strip())
    for name in sorted(names):
        if name not in BUGS:
            raise ValueError(f"unknown {BUG_ENV_VAR}={name!r}; valid names: {', '.join(BUGS)} (or empty for the clean port)")
    return names


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int
    dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    max_len: int
    num_segments: int
    norm_eps: float
    dropout: float
    attention_dropout: float
    planted_bugs: frozenset[str] = frozenset()  # demo only, see BUGS

    @classmethod
    def from_bert(cls, bert_config: object, planted_bugs: frozenset[str] = frozenset()) -> EncoderConfig:
        assert bert_config.hidden_act == "gelu", "this port only implements exact GELU"
        return cls(
            vocab_size=bert_config.vocab_size,
            dim=bert_config.hidden_size,
            depth=bert_config.num_hidden_layers,
            num_heads=bert_config.num_attention_heads,
            mlp_dim=bert_config.intermediate_size,
            max_len=bert_config.max_position_embeddings,
            num_segments=bert_config.type_vocab_size,
            norm_eps=bert_config.layer_norm_eps,
            dropout=bert_config.hidden_dropout_prob,
            attention_dropout=bert_config.attention_probs_dropout_prob,
            planted_bugs=planted_bugs,
        )


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (batch, seq, dim)
    pooler_output: torch.Tensor  # (batch, dim)


class Embedding(nn.Module):
    """Token + segment + learned position embeddings, normalised."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.tokens = nn.Embedding(config.vocab_size, config.dim)
        self.positions = nn.Embedding(config.max_len, config.dim)
        self.segments = nn.Embedding(config.num_segments, config.dim)
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.dropout = config.dropout
        self.register_buffer("position_ids", torch.arange(config.max_len).unsqueeze(0), persistent=False)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        position_ids = self.position_ids[:, : input_ids.shape[1]]
        embeddings = self.tokens(input_ids) + self.segments(token_type_ids) + self.positions(position_ids)
        embeddings = self.norm(embeddings)
        return F.dropout(embeddings, p=self.dropout, training=self.training)


class MultiHeadAttention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.num_heads
        self.head_dim = config.dim // config.num_heads
        self.attention_dropout = config.attention_dropout
        self.q = nn.Linear(config.dim, config.dim)
        self.k = nn.Linear(config.dim, config.dim)
        self.v = nn.Linear(config.dim, config.dim)
        self.out = nn.Linear(config.dim, config.dim)

    def split_heads(self, projected: torch.Tensor) -> torch.Tensor:
        """(batch, seq, dim) -> (batch, heads, seq, head_dim)"""
        return projected.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        query = self.split_heads(self.q(hidden_states))
        key = self.split_heads(self.k(hidden_states))
        value = self.split_heads(self.v(hidden_states))

        dropout_p = self.attention_dropout if self.training else 0.0
        if "dropout" in self.config.planted_bugs:
            dropout_p = self.attention_dropout  # PLANTED BUG: the kernel does not know about eval()
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout_p)

        context = context.transpose(1, 2).flatten(2)  # (batch, seq, dim)
        return self.out(context)


class FeedForward(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.dim, config.mlp_dim)
        self.act = nn.GELU()
        self.down = nn.Linear(config.mlp_dim, config.dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(hidden_states)))


class EncoderBlock(nn.Module):
    """Post-norm block, as in BERT: norm(x + attn(x)), then norm(x + ffn(x))."""

    def __init__(self, config: EncoderConfig, block_idx: int) -> None:
        super().__init__()
        self.dropout = config.dropout
        self.attn = MultiHeadAttention(config)
        self.norm1 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.ffn = FeedForward(config)
        norm2_eps = config.norm_eps
        if "norm_eps" in config.planted_bugs and block_idx == 1:
            norm2_eps = 1e-1  # PLANTED BUG: block 1's norm2 eps 1e-1 instead of 1e-12
        self.norm2 = nn.LayerNorm(config.dim, eps=norm2_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        attn_output = self.attn(hidden_states, attention_mask=attention_mask)
        hidden_states = self.norm1(hidden_states + F.dropout(attn_output, p=self.dropout, training=self.training))

        ffn_output = self.ffn(hidden_states)
        hidden_states = self.norm2(hidden_states + F.dropout(ffn_output, p=self.dropout, training=self.training))
        return hidden_states


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([EncoderBlock(config, block_idx) for block_idx in range(config.depth)])

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states, attention_mask=attention_mask)
        return hidden_states


class Pooler(nn.Module):
    """tanh(dense(first token)), the sentence vector BERT's NSP head was trained on."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.dim, config.dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        pooled = self.dense(hidden_states[:, 0])
        if "pooler_activation" in self.config.planted_bugs:
            return pooled  # PLANTED BUG: the tanh is missing
        return torch.tanh(pooled)


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, seq) 1 = token / 0 = padding -> (batch, 1, 1, seq) bias: 0 to attend, dtype-min to ignore."""
    ignore = ~attention_mask.bool()[:, None, None, :]
    return torch.zeros(ignore.shape, dtype=dtype, device=attention_mask.device).masked_fill(
        ignore, torch.finfo(dtype).min
    )


class TextEncoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = Embedding(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)

        hidden_states = self.embed(input_ids, token_type_ids)
        mask = additive_attention_mask(attention_mask, hidden_states.dtype)
        hidden_states = self.encoder(hidden_states, attention_mask=mask)
        return EncoderOutput(last_hidden_state=hidden_states, pooler_output=self.pooler(hidden_states))


# --------------------------------------------------------------------------- conversion

# (original substring, port substring), applied to every key in this order; keys without a
# match (the pooler) keep their name. `.attention.output.*` must be renamed before `.output.*`.
BERT_KEY_RENAMES: list[tuple[str, str]] = [
    ("embeddings.word_embeddings.", "embed.tokens."),
    ("embeddings.position_embeddings.", "embed.positions."),
    ("embeddings.token_type_embeddings.", "embed.segments."),
    ("embeddings.LayerNorm.", "embed.norm."),
    ("encoder.layer.", "encoder.blocks."),
    (".attention.self.query.", ".attn.q."),
    (".attention.self.key.", ".attn.k."),
    (".attention.self.value.", ".attn.v."),
    (".attention.output.dense.", ".attn.out."),
    (".attention.output.LayerNorm.", ".norm1."),
    (".intermediate.dense.", ".ffn.up."),
    (".output.dense.", ".ffn.down."),
    (".output.LayerNorm.", ".norm2."),
]


def rename_key(original_key: str) -> str:
    for old, new in BERT_KEY_RENAMES:
        original_key = original_key.replace(old, new)
    return original_key


def convert_bert_state_dict(original_state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename every key of a BERT checkpoint to this port's layout (pure renames; shapes are unchanged)."""
    converted: dict[str, torch.Tensor] = {}
    for original_key, tensor in original_state_dict.items():
        new_key = rename_key(original_key)
        if new_key in converted:
            raise KeyError(f"two original keys map to {new_key!r}")
        converted[new_key] = tensor.clone()
    return converted


def load_converted(model: TextEncoder, converted: Mapping[str, torch.Tensor]) -> None:
    """Strict load that names what is wrong: original keys nothing uses, port weights nothing fills."""
    expected = set(model.state_dict())
    unused = sorted(set(converted) - expected)
    unfilled = sorted(expected - set(converted))
    if unused or unfilled:
        raise KeyError(f"conversion mismatch: unused converted keys {unused}, unfilled port keys {unfilled}")
    model.load_state_dict(converted, strict=True)


def load_original_module() -> ModuleType:
    """Import the sibling original.py under a name of its own, so two demos never share a `original` module."""
    module_name = "_tracetui_demo_bert_original"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name("original.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def build(bug: str | None = None) -> tuple[TextEncoder, dict[str, torch.Tensor]]:
    """tracetui entry point: the port, loaded with the original's converted weights, and the same inputs.

    `bug`: the planted bugs, comma-separated (see `resolve_bugs`); `$TRACETUI_DEMO_BUG` if None.
    """
    bugs = resolve_bugs(bug)
    original = load_original_module()
    original_model, inputs = original.build()

    with torch.random.fork_rng(devices=[]):  # the init is overwritten below; keep the caller's RNG as it was
        model = TextEncoder(EncoderConfig.from_bert(original_model.config, planted_bugs=bugs))
    converted = convert_bert_state_dict(original_model.state_dict())
    if "swapped_qk" in bugs:
        # PLANTED BUG: as if the rename table mapped block 2's `query` to `k` and `key` to `q`
        for param_name in ("weight", "bias"):
            query_key, key_key = f"encoder.blocks.2.attn.q.{param_name}", f"encoder.blocks.2.attn.k.{param_name}"
            converted[query_key], converted[key_key] = converted[key_key], converted[query_key]
    load_converted(model, converted)
    return model, inputs

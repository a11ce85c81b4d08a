"""A library-style port of `original.py` (nanoGPT) in the manner of a transformers model file.

Differences from the original that a comparison has to see through:
  * names: `model.embed_tokens`, `model.layers.N.self_attn.q_proj`, ... instead of
    `transformer.wte`, `transformer.h.N.attn.c_attn`, ... (see `map.toml`);
  * the fused qkv projection `c_attn` is split into `q_proj` / `k_proj` / `v_proj`;
  * the causal mask is built once as an additive mask and passed down as `attention_mask=`;
  * the output is a `CausalLMOutput` (dataclass with key access) rather than a bare tensor.

`build()` builds the original with its fixed seed and converts its `state_dict()` into this
layout, so the clean port reproduces the original's logits to float rounding.

Planted bugs for the tracetui demo: set `TRACETUI_DEMO_BUG` to one of the names in `BUGS`,
or to several separated by commas (`TRACETUI_DEMO_BUG=activation,norm_eps`) to plant them all.
Each bug lives in exactly one module of this file; `BUGS` names that module (its ported
qualified name, which `map.toml` pairs with a module of the original):

  activation          layer 1's MLP activation is SiLU instead of tanh-GELU
  attention_scale     every attention scales scores by 1/head_dim instead of 1/sqrt(head_dim);
                      the first one to run, layer 0's, is where the outputs first part
  missing_residual    layer 2 drops the residual connection around its MLP
  unconverted_weight  layer 1's o_proj.weight is missed by the conversion and keeps its
                      random init (loaded with strict=False, as a hurried port might)
  norm_eps            the final norm is built with eps=1e-1 instead of the original's 1e-5
  q_sliced_wrong      layer 3's q_proj.weight is sliced from c_attn at k's offset (rows n:2n
                      instead of 0:n), so q and k share their weights
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

BUG_ENV_VAR = "TRACETUI_DEMO_BUG"

# planted bug name -> ported qualified name of the innermost paired module that contains it
BUGS: dict[str, str] = {
    "activation": "model.layers.1.mlp.act_fn",
    "attention_scale": "model.layers.0.self_attn",
    "missing_residual": "model.layers.2",
    "unconverted_weight": "model.layers.1.self_attn.o_proj",
    "norm_eps": "model.norm",
    "q_sliced_wrong": "model.layers.3.self_attn",
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


# --------------------------------------------------------------------------- configuration


@dataclass
class GptConfig:
    vocab_size: int = 96
    max_position_embeddings: int = 32
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-5
    attention_dropout: float = 0.0
    attention_bias: bool = True
    tie_word_embeddings: bool = True
    initializer_range: float = 0.02
    planted_bugs: frozenset[str] = frozenset()  # demo only, see BUGS

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


ACT2FN: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
}


# --------------------------------------------------------------------------- outputs


class ModelOutput(Mapping[str, torch.Tensor]):
    """Base for output dataclasses: attribute access plus dict access to the fields that are set."""

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._set_field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._set_field_names())

    def _set_field_names(self) -> list[str]:
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]

    def __len__(self) -> int:
        return sum(1 for _ in self)


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor


@dataclass
class CausalLMOutput(ModelOutput):
    logits: torch.Tensor


# --------------------------------------------------------------------------- modules


def create_causal_mask(
    attention_mask: torch.Tensor | None, seq_length: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive mask (batch or 1, 1, query, key): 0 where attending is allowed, dtype-min elsewhere."""
    min_value = torch.finfo(dtype).min
    allowed = torch.ones(seq_length, seq_length, dtype=torch.bool, device=device).tril()[None, None]
    if attention_mask is not None:  # (batch, key) padding mask, 1 = real token
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, min_value)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention over (batch, heads, seq, head_dim); returns (batch, seq, heads, head_dim)."""
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value)
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


class GptAttention(nn.Module):
    """Multi-headed causal self-attention with separate q/k/v projections."""

    def __init__(self, config: GptConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.attention_dropout = config.attention_dropout
        self.scaling = self.head_dim**-0.5
        if "attention_scale" in config.planted_bugs:
            self.scaling = self.head_dim**-1.0  # PLANTED BUG: 1/d instead of 1/sqrt(d)

        hidden_size = config.hidden_size
        projection_size = config.num_attention_heads * self.head_dim
        self.q_proj = nn.Linear(hidden_size, projection_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(hidden_size, projection_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(hidden_size, projection_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(projection_size, hidden_size, bias=config.attention_bias)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        attn_output, _attn_weights = eager_attention_forward(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            scaling=self.scaling,
            dropout=0.0 if not self.training else self.attention_dropout,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class GptMLP(nn.Module):
    def __init__(self, config: GptConfig, layer_idx: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, config.intermediate_size)
        hidden_act = config.hidden_act
        if "activation" in config.planted_bugs and layer_idx == 1:
            hidden_act = "silu"  # PLANTED BUG: wrong activation in layer 1
        self.act_fn = ACT2FN[hidden_act]()
        self.fc_out = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc_in(hidden_states)
        hidden_states = self.act_fn(hidden_states)
        hidden_states = self.fc_out(hidden_states)
        return hidden_states


class GptDecoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GptConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = GptAttention(config, layer_idx)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GptMLP(config, layer_idx)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, attention_mask=attention_mask)
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        if "missing_residual" in self.config.planted_bugs and self.layer_idx == 2:
            return hidden_states  # PLANTED BUG: layer 2 forgets `residual + hidden_states`
        hidden_states = residual + hidden_states
        return hidden_states


class GptModel(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(
            [GptDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        norm_eps = config.layer_norm_eps
        if "norm_eps" in config.planted_bugs:
            norm_eps = 1e-1  # PLANTED BUG: final norm eps 1e-1 instead of 1e-5
        self.norm = nn.LayerNorm(config.hidden_size, eps=norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> BaseModelOutput:
        batch_size, seq_length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(seq_length, device=input_ids.device).unsqueeze(0)

        inputs_embeds = self.embed_tokens(input_ids)
        position_embeds = self.embed_positions(position_ids)
        hidden_states = inputs_embeds + position_embeds

        causal_mask = create_causal_mask(attention_mask, seq_length, hidden_states.dtype, hidden_states.device)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(hidden_states, attention_mask=causal_mask)

        hidden_states = self.norm(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)


class GptForCausalLM(nn.Module):
    def __init__(self, config: GptConfig) -> None:
        super().__init__()
        self.config = config
        self.model = GptModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        outputs = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids)
        logits = self.lm_head(outputs.last_hidden_state)
        return CausalLMOutput(logits=logits)


# --------------------------------------------------------------------------- conversion

# nanoGPT key -> port key, matched with re.fullmatch; c_attn is handled separately (it is split)
NANOGPT_KEY_RENAMES: list[tuple[str, str]] = [
    (r"transformer\.wte\.weight", r"model.embed_tokens.weight"),
    (r"transformer\.wpe\.weight", r"model.embed_positions.weight"),
    (r"transformer\.h\.(\d+)\.ln_1\.(weight|bias)", r"model.layers.\1.input_layernorm.\2"),
    (r"transformer\.h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"model.layers.\1.self_attn.o_proj.\2"),
    (r"transformer\.h\.(\d+)\.ln_2\.(weight|bias)", r"model.layers.\1.post_attention_layernorm.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"model.layers.\1.mlp.fc_in.\2"),
    (r"transformer\.h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"model.layers.\1.mlp.fc_out.\2"),
    (r"transformer\.ln_f\.(weight|bias)", r"model.norm.\1"),
    (r"lm_head\.weight", r"lm_head.weight"),
]
FUSED_QKV_KEY = re.compile(r"transformer\.h\.(\d+)\.attn\.c_attn\.(weight|bias)")


def convert_nanogpt_state_dict(
    original_state_dict: Mapping[str, torch.Tensor], planted_bugs: frozenset[str] = frozenset()
) -> dict[str, torch.Tensor]:
    """Rename nanoGPT keys to this port's layout and split each fused qkv projection in three.

    Raises KeyError on any original key it has no rule for, so nothing is silently dropped.
    """
    converted: dict[str, torch.Tensor] = {}
    unconverted: list[str] = []
    for original_key, tensor in original_state_dict.items():
        fused_match = FUSED_QKV_KEY.fullmatch(original_key)
        if fused_match is not None:
            layer_idx, param_name = fused_match.groups()
            # c_attn(x).split(n_embd, dim=-1) yields q, k, v: the rows of the fused weight, in order
            parts = list(tensor.chunk(3, dim=0))
            if "q_sliced_wrong" in planted_bugs and layer_idx == "3" and param_name == "weight":
                parts[0] = parts[1]  # PLANTED BUG: q's rows sliced at k's offset
            for projection, part in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                converted[f"model.layers.{layer_idx}.self_attn.{projection}.{param_name}"] = part.clone()
            continue
        for pattern, replacement in NANOGPT_KEY_RENAMES:
            if re.fullmatch(pattern, original_key):
                converted[re.sub(pattern, replacement, original_key)] = tensor.clone()
                break
        else:
            unconverted.append(original_key)
    if unconverted:
        raise KeyError(f"no conversion rule for original keys: {unconverted}")
    return converted


def config_from_nanogpt(original_config: object, planted_bugs: frozenset[str] = frozenset()) -> GptConfig:
    """Translate a nanoGPT `GPTConfig` into this port's config."""
    return GptConfig(
        vocab_size=original_config.vocab_size,
        max_position_embeddings=original_config.block_size,
        hidden_size=original_config.n_embd,
        intermediate_size=4 * original_config.n_embd,
        num_hidden_layers=original_config.n_layer,
        num_attention_heads=original_config.n_head,
        attention_bias=original_config.bias,
        attention_dropout=original_config.dropout,
        layer_norm_eps=1e-5,  # nanoGPT uses nn.LayerNorm's default
        planted_bugs=planted_bugs,
    )


def load_original_module() -> ModuleType:
    """Import the sibling original.py under a name of its own, so two demos never share a `original` module."""
    module_name = "_tracetui_demo_gpt_original"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name("original.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def build(bug: str | None = None) -> tuple[GptForCausalLM, torch.Tensor]:
    """tracetui entry point: the port, loaded with the original's converted weights, and the same input.

    `bug`: the planted bugs, comma-separated (see `resolve_bugs`); `$TRACETUI_DEMO_BUG` if None.
    """
    bugs = resolve_bugs(bug)
    original = load_original_module()
    original_model, input_ids = original.build()

    config = config_from_nanogpt(original_model.config, planted_bugs=bugs)
    with torch.random.fork_rng(devices=[]):  # fixed init for anything the conversion leaves alone
        torch.manual_seed(original.SEED)
        model = GptForCausalLM(config)

    state_dict = convert_nanogpt_state_dict(original_model.state_dict(), bugs)
    if "unconverted_weight" in bugs:
        # PLANTED BUG: the conversion misses one tensor and the load is not strict, so it keeps its random init
        del state_dict["model.layers.1.self_attn.o_proj.weight"]
        load_result = model.load_state_dict(state_dict, strict=False)
        assert load_result.missing_keys == ["model.layers.1.self_attn.o_proj.weight"], load_result
    else:
        model.load_state_dict(state_dict, strict=True)
    return model, input_ids

"""A PyTorch port of the Flax GPT in `original.py`, in the manner of a transformers model file.

Differences from the original that a comparison has to see through:
  * names: `model.layers.N.self_attn.q_proj`, `model.layers.N.mlp.fc_in`, `model.norm` ...
    instead of Flax's `h_N.attn.query`, `h_N.mlp.fc`, `ln_f` (see `map.toml`);
  * Flax `Dense` kernels are (in, out); `nn.Linear` weights are (out, in): the conversion in
    `build()` transposes every kernel;
  * the GELU is a module here (`act_fn`), inline in the original; dropout is `eval()`'s business.

Planted bugs: set `TRACETUI_DEMO_BUG` to one of the names in `BUGS`, or to several separated
by commas. `BUGS` names the ported module each one should be blamed on:

  norm_eps               the final norm is built with eps=1e-1 instead of 1e-5
  activation             layer 1's MLP activation is SiLU instead of tanh-GELU
  attention_scale        layer 0's attention scales scores by 1/head_dim instead of 1/sqrt(head_dim)
  kernel_not_transposed  layer 1's o_proj weight is copied from the Dense kernel without `.T`
  qk_swapped             the conversion swaps layer 0's query and key kernels
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy
import torch
from torch import nn

BUG_ENV_VAR = "TRACETUI_DEMO_BUG"

BUGS: dict[str, str] = {
    "norm_eps": "model.norm",
    "activation": "model.layers.1.mlp.act_fn",
    "attention_scale": "model.layers.0.self_attn",
    "kernel_not_transposed": "model.layers.1.self_attn.o_proj",
    "qk_swapped": "model.layers.0.self_attn.q_proj",
}


def resolve_bugs(bug: str | None = None) -> frozenset[str]:
    """The planted bugs to switch on: `bug` if given, else `$TRACETUI_DEMO_BUG` (comma-separated); empty: the clean port."""
    if bug is None:
        bug = os.environ.get(BUG_ENV_VAR, "")
    names = frozenset(name.strip() for name in bug.split(",") if name.strip())
    for name in sorted(names):
        if name not in BUGS:
            raise ValueError(f"unknown {BUG_ENV_VAR}={name!r}; valid names: {', '.join(BUGS)} (or empty for the clean port)")
    return names


@dataclass
class GptConfig:
    vocab_size: int = 96
    max_position_embeddings: int = 32
    hidden_size: int = 64
    num_attention_heads: int = 4
    num_hidden_layers: int = 2
    layer_norm_eps: float = 1e-5


class GptAttention(nn.Module):
    def __init__(self, config: GptConfig, scale_by_head_dim: bool = False) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = 1.0 / self.head_dim if scale_by_head_dim else 1.0 / math.sqrt(self.head_dim)
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden_states.shape
        shape = (batch, length, self.num_heads, self.head_dim)
        query_states = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        scores = query_states @ key_states.transpose(-1, -2) * self.scaling
        causal_mask = torch.ones(length, length, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~causal_mask, torch.finfo(scores.dtype).min)
        attention_weights = scores.softmax(dim=-1)
        attended = (attention_weights @ value_states).transpose(1, 2).reshape(batch, length, width)
        return self.o_proj(attended)


class GptMLP(nn.Module):
    def __init__(self, config: GptConfig, use_silu: bool = False) -> None:
        super().__init__()
        self.fc_in = nn.Linear(config.hidden_size, 4 * config.hidden_size)
        self.act_fn = nn.SiLU() if use_silu else nn.GELU(approximate="tanh")
        self.fc_out = nn.Linear(4 * config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act_fn(self.fc_in(hidden_states)))


class GptDecoderLayer(nn.Module):
    def __init__(self, config: GptConfig, layer_index: int, bugs: frozenset[str]) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = GptAttention(config, scale_by_head_dim="attention_scale" in bugs and layer_index == 0)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = GptMLP(config, use_silu="activation" in bugs and layer_index == 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class GptModel(nn.Module):
    def __init__(self, config: GptConfig, bugs: frozenset[str]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(GptDecoderLayer(config, index, bugs) for index in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-1 if "norm_eps" in bugs else config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        hidden_states = self.embed_tokens(input_ids) + self.embed_positions(positions)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return self.norm(hidden_states)


class GptForCausalLM(nn.Module):
    def __init__(self, config: GptConfig, bugs: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.model = GptModel(config, bugs)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))


def load_original() -> ModuleType:
    """Import original.py from this folder under a name of its own (the comparison imports it too)."""
    name = "_flax_gpt_original"
    if name not in sys.modules:
        specification = importlib.util.spec_from_file_location(name, Path(__file__).with_name("original.py"))
        assert specification is not None and specification.loader is not None
        module = importlib.util.module_from_spec(specification)
        sys.modules[name] = module
        specification.loader.exec_module(module)
    return sys.modules[name]


def to_torch(array: object) -> torch.Tensor:
    return torch.from_numpy(numpy.array(array, dtype=numpy.float32))


def convert_flax_params(params: dict, config: GptConfig, bugs: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The Flax params tree as this model's state dict: kernels transposed, LayerNorm `scale` → `weight`."""
    def dense(flax_dense: dict, transpose: bool = True) -> dict[str, torch.Tensor]:
        kernel = to_torch(flax_dense["kernel"])
        converted = {"weight": kernel.T.contiguous() if transpose else kernel}
        if "bias" in flax_dense:
            converted["bias"] = to_torch(flax_dense["bias"])
        return converted

    def norm(flax_norm: dict) -> dict[str, torch.Tensor]:
        return {"weight": to_torch(flax_norm["scale"]), "bias": to_torch(flax_norm["bias"])}

    state: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": to_torch(params["wte"]["embedding"]),
        "model.embed_positions.weight": to_torch(params["wpe"]["embedding"]),
        **{f"model.norm.{key}": value for key, value in norm(params["ln_f"]).items()},
        **{f"lm_head.{key}": value for key, value in dense(params["lm_head"]).items()},
    }
    for index in range(config.num_hidden_layers):
        block = params[f"h_{index}"]
        query, key = ("key", "query") if "qk_swapped" in bugs and index == 0 else ("query", "key")
        parts = {
            "input_layernorm": norm(block["ln_1"]),
            "post_attention_layernorm": norm(block["ln_2"]),
            "self_attn.q_proj": dense(block["attn"][query]),
            "self_attn.k_proj": dense(block["attn"][key]),
            "self_attn.v_proj": dense(block["attn"]["value"]),
            "self_attn.o_proj": dense(block["attn"]["out"], transpose=not ("kernel_not_transposed" in bugs and index == 1)),
            "mlp.fc_in": dense(block["mlp"]["fc"]),
            "mlp.fc_out": dense(block["mlp"]["proj"]),
        }
        for prefix, tensors in parts.items():
            for key_name, value in tensors.items():
                state[f"model.layers.{index}.{prefix}.{key_name}"] = value
    return state


def build():
    bugs = resolve_bugs()
    config = GptConfig()
    _, variables, input_ids = load_original().build_model()
    model = GptForCausalLM(config, bugs)
    model.load_state_dict(convert_flax_params(variables["params"], config, bugs), strict=True)
    return model.eval(), torch.from_numpy(numpy.array(input_ids)).long()

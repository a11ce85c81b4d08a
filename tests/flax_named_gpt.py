"""A PyTorch GPT written the way a Flax original is, for the cross-framework tests.

Its modules carry Flax's names and classes (``h_0.attn.query``: a ``DenseGeneral`` whose output is
(batch, seq, heads, head_dim); ``Dense`` kernels stored [in, out]; ``Embed``, ``LayerNorm``,
``MultiHeadDotProductAttention``, ``MlpBlock``; the activation a function, not a module), exactly
as tracetui names a recorded Flax model. Its weights are the demo GPT's (demos/gpt), read back
from the port's layout, so ``demos/gpt/ported.py`` is its port: the same numbers in another layout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

DEMO_PORT = Path(__file__).resolve().parents[1] / "demos" / "gpt" / "ported.py"


class Embed(nn.Module):
    def __init__(self, num_embeddings: int, features: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_embeddings, features))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding[ids]

    def attend(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states @ self.embedding.t()


class Dense(nn.Module):
    """Flax's Dense: kernel [in, out]."""

    def __init__(self, in_features: int, features: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(in_features, features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs @ self.kernel + self.bias


class DenseGeneral(nn.Module):
    """Flax's DenseGeneral: features split into (heads, head_dim), or (heads, head_dim) contracted back."""

    def __init__(self, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...], contract_heads: bool) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(kernel_shape))
        self.bias = nn.Parameter(torch.zeros(bias_shape))
        self.contract_heads = contract_heads

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.contract_heads:
            return torch.einsum("bshd,hdf->bsf", inputs, self.kernel) + self.bias
        return torch.einsum("bsf,fhd->bshd", inputs, self.kernel) + self.bias


class LayerNorm(nn.Module):
    def __init__(self, features: int, epsilon: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.epsilon = epsilon

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(inputs, inputs.shape[-1:], self.scale, self.bias, self.epsilon)


class MultiHeadDotProductAttention(nn.Module):
    def __init__(self, features: int, num_heads: int) -> None:
        super().__init__()
        head_dim = features // num_heads
        self.query = DenseGeneral((features, num_heads, head_dim), (num_heads, head_dim), contract_heads=False)
        self.key = DenseGeneral((features, num_heads, head_dim), (num_heads, head_dim), contract_heads=False)
        self.value = DenseGeneral((features, num_heads, head_dim), (num_heads, head_dim), contract_heads=False)
        self.out = DenseGeneral((num_heads, head_dim, features), (features,), contract_heads=True)
        self.head_dim = head_dim

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        query, key, value = self.query(inputs), self.key(inputs), self.value(inputs)  # (batch, seq, heads, head_dim)
        weights = torch.einsum("bqhd,bkhd->bhqk", query / self.head_dim**0.5, key)
        length = inputs.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        weights = weights.masked_fill(~causal, torch.finfo(weights.dtype).min).softmax(dim=-1)
        return self.out(torch.einsum("bhqk,bkhd->bqhd", weights, value))


class MlpBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.c_fc = Dense(features, 4 * features)
        self.c_proj = Dense(4 * features, features)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.c_proj(nn.functional.gelu(self.c_fc(inputs), approximate="tanh"))  # flax.linen.gelu: a function


class Block(nn.Module):
    def __init__(self, features: int, num_heads: int, epsilon: float) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(features, epsilon)
        self.attn = MultiHeadDotProductAttention(features, num_heads)
        self.ln_2 = LayerNorm(features, epsilon)
        self.mlp = MlpBlock(features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.ln_1(hidden_states))
        return hidden_states + self.mlp(self.ln_2(hidden_states))


class FlaxGPT(nn.Module):
    def __init__(self, vocab_size: int, positions: int, features: int, layers: int, num_heads: int, epsilon: float) -> None:
        super().__init__()
        self.wte = Embed(vocab_size, features)
        self.wpe = Embed(positions, features)
        self.layer_count = layers
        for layer in range(layers):
            self.add_module(f"h_{layer}", Block(features, num_heads, epsilon))
        self.ln_f = LayerNorm(features, epsilon)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))[None]
        for layer in range(self.layer_count):
            hidden_states = getattr(self, f"h_{layer}")(hidden_states)
        return self.wte.attend(self.ln_f(hidden_states))


def load_demo_port() -> ModuleType:
    name = "_tracetui_flax_named_gpt_port"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEMO_PORT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def flax_state_from_port(port_state: dict[str, torch.Tensor], num_heads: int) -> dict[str, torch.Tensor]:
    """The port's weights in the Flax original's layout: kernels [in, out], q/k/v split into heads."""
    state: dict[str, torch.Tensor] = {"wte.embedding": port_state["model.embed_tokens.weight"]}
    state["wpe.embedding"] = port_state["model.embed_positions.weight"]
    state["ln_f.scale"], state["ln_f.bias"] = port_state["model.norm.weight"], port_state["model.norm.bias"]
    layer = 0
    while f"model.layers.{layer}.self_attn.q_proj.weight" in port_state:
        source, target = f"model.layers.{layer}", f"h_{layer}"
        for ours, theirs in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            state[f"{target}.{ours}.scale"] = port_state[f"{source}.{theirs}.weight"]
            state[f"{target}.{ours}.bias"] = port_state[f"{source}.{theirs}.bias"]
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            weight = port_state[f"{source}.self_attn.{theirs}.weight"]
            state[f"{target}.attn.{ours}.kernel"] = weight.t().reshape(weight.shape[1], num_heads, -1)
            state[f"{target}.attn.{ours}.bias"] = port_state[f"{source}.self_attn.{theirs}.bias"].reshape(num_heads, -1)
        out_weight = port_state[f"{source}.self_attn.o_proj.weight"]
        state[f"{target}.attn.out.kernel"] = out_weight.t().reshape(num_heads, -1, out_weight.shape[0])
        state[f"{target}.attn.out.bias"] = port_state[f"{source}.self_attn.o_proj.bias"]
        for ours, theirs in (("c_fc", "fc_in"), ("c_proj", "fc_out")):
            state[f"{target}.mlp.{ours}.kernel"] = port_state[f"{source}.mlp.{theirs}.weight"].t()
            state[f"{target}.mlp.{ours}.bias"] = port_state[f"{source}.mlp.{theirs}.bias"]
        layer += 1
    return {name: tensor.contiguous().clone() for name, tensor in state.items()}


def build_pair(bug: str = "") -> tuple[tuple[FlaxGPT, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    """(the Flax-style original, its input), (the demo port with ``bug`` planted, its input)."""
    demo_port = load_demo_port()
    clean_port, input_ids = demo_port.build("")
    config = clean_port.config
    original = FlaxGPT(
        config.vocab_size, config.max_position_embeddings, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, 1e-5
    )
    original.load_state_dict(flax_state_from_port(clean_port.state_dict(), config.num_attention_heads))
    port, _ = demo_port.build(bug)
    return (original.eval(), input_ids), (port.eval(), input_ids)

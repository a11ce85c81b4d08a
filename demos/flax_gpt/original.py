"""A small GPT written in Flax linen, research style: the original of `ported.py`.

Random weights from a fixed PRNGKey, nothing downloaded. Submodules are named by Flax:
`h_0.attn.query`, `h_0.mlp.fc`, `ln_f` ... (the module path joined with "."); the GELU and
the attention arithmetic are written inline, as research code does.

tracetui convention for a Flax original: `build()` returns the pair (module, variables) — or a
bound module, `module.bind(variables)` — and the inputs. Dropout is switched off by the inputs
themselves (`deterministic=True` is one of the keyword arguments), and the model runs un-jitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 96
    block_size: int = 32
    n_embd: int = 64
    n_head: int = 4
    n_layer: int = 2
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1


class CausalSelfAttention(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array, deterministic: bool) -> jax.Array:
        batch, length, width = hidden_states.shape
        heads = self.config.n_head
        head_dim = width // heads
        query = nn.Dense(width, name="query")(hidden_states)
        key = nn.Dense(width, name="key")(hidden_states)
        value = nn.Dense(width, name="value")(hidden_states)
        # (batch, length, width) -> (batch, heads, length, head_dim)
        query, key, value = (
            tensor.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3) for tensor in (query, key, value)
        )
        scores = query @ key.transpose(0, 1, 3, 2) * (1.0 / math.sqrt(head_dim))
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        weights = nn.Dropout(self.config.dropout)(weights, deterministic=deterministic)
        attended = (weights @ value).transpose(0, 2, 1, 3).reshape(batch, length, width)
        return nn.Dense(width, name="out")(attended)


class MLP(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array, deterministic: bool) -> jax.Array:
        hidden_states = nn.Dense(4 * self.config.n_embd, name="fc")(hidden_states)
        hidden_states = nn.gelu(hidden_states, approximate=True)
        hidden_states = nn.Dense(self.config.n_embd, name="proj")(hidden_states)
        return nn.Dropout(self.config.dropout)(hidden_states, deterministic=deterministic)


class Block(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, hidden_states: jax.Array, deterministic: bool) -> jax.Array:
        eps = self.config.layer_norm_eps
        hidden_states = hidden_states + CausalSelfAttention(self.config, name="attn")(
            nn.LayerNorm(epsilon=eps, name="ln_1")(hidden_states), deterministic
        )
        return hidden_states + MLP(self.config, name="mlp")(nn.LayerNorm(epsilon=eps, name="ln_2")(hidden_states), deterministic)


class GPT(nn.Module):
    config: GPTConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, deterministic: bool = False) -> jax.Array:
        config = self.config
        positions = jnp.arange(input_ids.shape[1])[None, :]
        hidden_states = nn.Embed(config.vocab_size, config.n_embd, name="wte")(input_ids)
        hidden_states = hidden_states + nn.Embed(config.block_size, config.n_embd, name="wpe")(positions)
        for index in range(config.n_layer):
            hidden_states = Block(config, name=f"h_{index}")(hidden_states, deterministic)
        hidden_states = nn.LayerNorm(epsilon=config.layer_norm_eps, name="ln_f")(hidden_states)
        return nn.Dense(config.vocab_size, use_bias=False, name="lm_head")(hidden_states)


def build_model() -> tuple[GPT, dict, jax.Array]:
    """The model, its variables (from PRNGKey(0)) and a fixed batch of token ids."""
    model = GPT(GPTConfig())
    input_ids = jnp.array([[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26]], dtype=jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), input_ids, deterministic=True)
    return model, variables, input_ids


def build():
    model, variables, input_ids = build_model()
    return (model, variables), {"input_ids": input_ids, "deterministic": True}

"""A small GPT in the research style of nanoGPT: one file, fused qkv, explicit attention math.

This is the *original* side of the demo pair. `ported.py` is a library-style port of
the same network, and converts this model's `state_dict()` into its own layout.

Module names follow nanoGPT / GPT-2: `transformer.wte`, `transformer.wpe`,
`transformer.h.N.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.act, mlp.c_proj}`,
`transformer.ln_f`, `lm_head`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 1337


@dataclass
class GPTConfig:
    block_size: int = 32
    vocab_size: int = 96
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.1
    bias: bool = True
    # nanoGPT uses 0.02; at width 64 that leaves random activations tiny, which would hide
    # planted bugs behind the 1e-3 comparison tolerance. 1/sqrt(n_embd) keeps them O(1).
    init_std: float = 0.125


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # lower-triangular causal mask; not a learned weight, so it stays out of the checkpoint
        causal_mask = torch.tril(torch.ones(config.block_size, config.block_size))
        self.register_buffer(
            "bias", causal_mask.view(1, 1, config.block_size, config.block_size), persistent=False
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch_size, seq_len, n_embd = hidden.size()
        head_dim = n_embd // self.n_head

        queries, keys, values = self.c_attn(hidden).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        queries = queries.view(batch_size, seq_len, self.n_head, head_dim).transpose(1, 2)
        keys = keys.view(batch_size, seq_len, self.n_head, head_dim).transpose(1, 2)
        values = values.view(batch_size, seq_len, self.n_head, head_dim).transpose(1, 2)

        # causal self-attention: (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
        scores = (queries @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
        scores = scores.masked_fill(self.bias[:, :, :seq_len, :seq_len] == 0, float("-inf"))
        weights = F.softmax(scores, dim=-1)
        weights = self.attn_dropout(weights)
        attended = weights @ values  # (B, nh, T, hs)
        # re-assemble all head outputs side by side
        attended = attended.transpose(1, 2).contiguous().view(batch_size, seq_len, n_embd)

        return self.resid_dropout(self.c_proj(attended))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU(approximate="tanh")  # GPT-2's "gelu_new"
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.c_fc(hidden)
        hidden = self.act(hidden)
        hidden = self.c_proj(hidden)
        return self.dropout(hidden)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attn(self.ln_1(hidden))
        hidden = hidden + self.mlp(self.ln_2(hidden))
        return hidden


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # weight tying: https://paperswithcode.com/method/weight-tying
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # scaled init of the residual projections, per GPT-2
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(param, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, vocab_size), for every position."""
        batch_size, seq_len = token_ids.size()
        assert seq_len <= self.config.block_size, f"sequence of {seq_len} > block size {self.config.block_size}"
        positions = torch.arange(0, seq_len, dtype=torch.long, device=token_ids.device).unsqueeze(0)  # (1, T)

        token_embeddings = self.transformer.wte(token_ids)  # (B, T, C)
        position_embeddings = self.transformer.wpe(positions)  # (1, T, C)
        hidden = self.transformer.drop(token_embeddings + position_embeddings)
        for block in self.transformer.h:
            hidden = block(hidden)
        hidden = self.transformer.ln_f(hidden)
        return self.lm_head(hidden)


def make_pretend_pretrained(model: nn.Module, generator: torch.Generator) -> None:
    """Give biases and LayerNorm affines non-trivial values, like a trained checkpoint has.

    A fresh init has every bias at 0 and every LayerNorm at (1, 0), so a conversion that
    swapped ln_1 with ln_2, or dropped a bias, would still match; this makes it show.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


def build() -> tuple[GPT, torch.Tensor]:
    """tracetui entry point: a randomly initialised GPT (same weights every call) and its input."""
    # Seed privately so the weights do not depend on, and do not disturb, the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = GPT(GPTConfig())
    make_pretend_pretrained(model, torch.Generator().manual_seed(SEED))
    input_ids = torch.tensor([[0, 4, 5, 2, 3, 7, 9, 11, 42, 17, 8, 64]])
    return model, input_ids

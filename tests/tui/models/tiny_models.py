"""A tiny GPT-like network twice: the research original and a library-style port of it.

The port renames every module (``h.N.attn`` → ``layers.N.self_attn`` ...), adds a dropout the
original does not have (an unmatched row), and divides the attention scores by ``head_dim``
instead of ``sqrt(head_dim)`` — the planted bug, which makes ``layers.0.self_attn`` the culprit.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

VOCABULARY = 32
WIDTH = 16
HEADS = 2
LAYERS = 3
SEED = 7
INPUT_IDS = torch.tensor([[0, 4, 5, 2, 3, 7, 9]])
# ORIGINAL name -> PORTED name, the way a conversion script's rename_keys reads.
RENAME_RULES = [
    [r"^wte$", "embed_tokens"],
    [r"^h\.(\d+)\.ln_1$", r"layers.\1.input_layernorm"],
    [r"^h\.(\d+)\.ln_2$", r"layers.\1.post_attention_layernorm"],
    [r"^h\.(\d+)\.attn\.c_q$", r"layers.\1.self_attn.q_proj"],
    [r"^h\.(\d+)\.attn\.c_k$", r"layers.\1.self_attn.k_proj"],
    [r"^h\.(\d+)\.attn\.c_v$", r"layers.\1.self_attn.v_proj"],
    [r"^h\.(\d+)\.attn\.c_proj$", r"layers.\1.self_attn.o_proj"],
    [r"^h\.(\d+)\.attn$", r"layers.\1.self_attn"],
    [r"^h\.(\d+)\.mlp\.c_fc$", r"layers.\1.mlp.up_proj"],
    [r"^h\.(\d+)\.mlp\.gelu$", r"layers.\1.mlp.act_fn"],
    [r"^h\.(\d+)\.mlp\.c_proj$", r"layers.\1.mlp.down_proj"],
    [r"^h\.(\d+)\.mlp$", r"layers.\1.mlp"],
    [r"^h\.(\d+)$", r"layers.\1"],
    [r"^ln_f$", "norm"],
]


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    batch, length, width = query.shape
    head_dim = width // heads

    def split(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.view(batch, length, heads, head_dim).transpose(1, 2)

    scores = split(query) @ split(key).transpose(-2, -1) * scale
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    weights = scores.softmax(dim=-1)
    return (weights @ split(value)).transpose(1, 2).reshape(batch, length, width)


# -- the original ------------------------------------------------------------------------


class OriginalAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_q = nn.Linear(WIDTH, WIDTH)
        self.c_k = nn.Linear(WIDTH, WIDTH)
        self.c_v = nn.Linear(WIDTH, WIDTH)
        self.c_proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / math.sqrt(WIDTH // HEADS)
        return self.c_proj(attention(self.c_q(x), self.c_k(x), self.c_v(x), HEADS, scale))


class OriginalMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_fc = nn.Linear(WIDTH, 4 * WIDTH)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class OriginalBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH)
        self.attn = OriginalAttention()
        self.ln_2 = nn.LayerNorm(WIDTH)
        self.mlp = OriginalMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class OriginalGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(VOCABULARY, WIDTH)
        self.h = nn.ModuleList([OriginalBlock() for _ in range(LAYERS)])
        self.ln_f = nn.LayerNorm(WIDTH)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx)
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.wte.weight.t()


# -- the port ----------------------------------------------------------------------------


class PortedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(WIDTH, WIDTH)
        self.k_proj = nn.Linear(WIDTH, WIDTH)
        self.v_proj = nn.Linear(WIDTH, WIDTH)
        self.o_proj = nn.Linear(WIDTH, WIDTH)
        self.head_dim = WIDTH // HEADS

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / self.head_dim  # the bug: should be head_dim ** -0.5
        attended = attention(self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states), HEADS, scale)
        return self.o_proj(attended)


class PortedMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(WIDTH, 4 * WIDTH)
        self.act_fn = nn.GELU()
        self.down_proj = nn.Linear(4 * WIDTH, WIDTH)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.act_fn(self.up_proj(hidden_states))))


class PortedDecoderLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(WIDTH)
        self.self_attn = PortedAttention()
        self.post_attention_layernorm = nn.LayerNorm(WIDTH)
        self.mlp = PortedMLP()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.input_layernorm(hidden_states))
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class PortedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCABULARY, WIDTH)
        self.layers = nn.ModuleList([PortedDecoderLayer() for _ in range(LAYERS)])
        self.norm = nn.LayerNorm(WIDTH)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        hidden_states = self.norm(hidden_states)
        return hidden_states @ self.embed_tokens.weight.t()


def make_original() -> OriginalGPT:
    torch.manual_seed(SEED)
    model = OriginalGPT()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def convert(original: OriginalGPT) -> PortedModel:
    """The weight conversion: rename the original's keys into the port's layout."""
    import re

    ported = PortedModel()
    state = {}
    for key, value in original.state_dict().items():
        module_name, _, parameter = key.rpartition(".")
        for pattern, replacement in RENAME_RULES:
            module_name = re.sub(pattern, replacement, module_name)
        state[f"{module_name}.{parameter}"] = value
    ported.load_state_dict(state)
    return ported.eval()

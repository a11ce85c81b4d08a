"""A port that nests and splits differently from its original, as transformers ports often do.

The original fuses q, k and v in one ``c_attn`` and has an ``attn_dropout``; the port wraps
everything in ``model`` (one level deeper), splits the projection in ``q_proj``/``k_proj``/
``v_proj``, has no dropout, and gathers the feed-forward layers the original calls from its
block into an ``mlp`` with an activation module of its own. So the list has one-sided rows at several depths on each side.
Built with ``(model, inputs)`` pairs by the tests, not as scripts.
"""

from __future__ import annotations

import torch
import torch.nn as nn

WIDTH = 4
# The original's names to the port's; c_attn, attn_dropout, q/k/v_proj and model stay unpaired.
RENAME_MAP = [
    [r"^blocks\.(\d+)$", r"model.layers.\1"],
    [r"^blocks\.(\d+)\.attn$", r"model.layers.\1.self_attn"],
    [r"^blocks\.(\d+)\.attn\.c_proj$", r"model.layers.\1.self_attn.o_proj"],
    [r"^blocks\.(\d+)\.c_fc$", r"model.layers.\1.mlp.up_proj"],
    [r"^blocks\.(\d+)\.c_proj$", r"model.layers.\1.mlp.down_proj"],
]


class FusedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH)
        self.attn_dropout = nn.Dropout(0.0)
        self.c_proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        query, key, value = self.c_attn(hidden_states).split(WIDTH, dim=-1)
        return self.c_proj(self.attn_dropout(query * key) + value)


class SplitAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(WIDTH, WIDTH)
        self.k_proj = nn.Linear(WIDTH, WIDTH)
        self.v_proj = nn.Linear(WIDTH, WIDTH)
        self.o_proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.o_proj(self.q_proj(hidden_states) * self.k_proj(hidden_states) + self.v_proj(hidden_states))


class OriginalBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = FusedAttention()
        self.c_fc = nn.Linear(WIDTH, 2 * WIDTH)
        self.c_proj = nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(hidden_states)
        return hidden_states + self.c_proj(nn.functional.gelu(self.c_fc(hidden_states)))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up_proj = nn.Linear(WIDTH, 2 * WIDTH)
        self.act_fn = nn.GELU()
        self.down_proj = nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class PortedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = SplitAttention()
        self.mlp = MLP()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(hidden_states)
        return hidden_states + self.mlp(hidden_states)


class Original(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([OriginalBlock() for _ in range(2)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states


class PortedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([PortedLayer() for _ in range(2)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class Ported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = PortedModel()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.model(hidden_states)


def build_pair() -> tuple[tuple[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(5)
    original = Original().eval()
    ported = Ported().eval()
    inputs = torch.randn(1, 3, WIDTH)
    return (original, inputs), (ported, inputs.clone())

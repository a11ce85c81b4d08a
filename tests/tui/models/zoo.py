"""A model whose port shows every kind of mark: shape, dtype and NaN/Inf mismatches, unmatched calls.

Four independent branches see the same input; only the port differs, one way per branch.
Built with ``(model, inputs)`` pairs by the tests, not as scripts.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Same(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class Truncate(nn.Module):
    """The port keeps one column fewer: a shape mismatch."""

    def __init__(self, ported: bool) -> None:
        super().__init__()
        self.ported = ported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :5] if self.ported else x


class Widen(nn.Module):
    """The port returns float64: the same values in another dtype."""

    def __init__(self, ported: bool) -> None:
        super().__init__()
        self.ported = ported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() if self.ported else x


class Logarithm(nn.Module):
    """The port takes the log of possibly negative numbers: NaN where the original has numbers."""

    def __init__(self, ported: bool) -> None:
        super().__init__()
        self.ported = ported

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.log() if self.ported else x.abs().log()


class Zoo(nn.Module):
    def __init__(self, ported: bool) -> None:
        super().__init__()
        self.same = Same()
        self.shape = Truncate(ported)
        self.dtype = Widen(ported)
        self.nan = Logarithm(ported)
        if ported:
            self.extra = nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = (self.same(x), self.shape(x), self.dtype(x), self.nan(x))
        if hasattr(self, "extra"):
            outputs = outputs + (self.extra(x),)
        return outputs


def build_pair() -> tuple[tuple[nn.Module, torch.Tensor], tuple[nn.Module, torch.Tensor]]:
    torch.manual_seed(3)
    original = Zoo(ported=False).eval()
    ported = Zoo(ported=True).eval()
    ported.same.load_state_dict(original.same.state_dict())
    inputs = torch.randn(2, 6)
    return (original, inputs), (ported, inputs.clone())

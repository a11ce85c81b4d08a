"""Research original: Karpathy's nanoGPT (vendored ``model.py``), tiny and randomly initialised.

``make_model()`` and ``make_inputs()`` are shared with ``ported.py`` so both sides start from
the same weights and the same token ids.
"""

from __future__ import annotations

import torch

from model import GPT, GPTConfig

SEED = 1234
CONFIG = GPTConfig(n_layer=3, n_head=4, n_embd=64, block_size=32, vocab_size=101, dropout=0.0, bias=True)
SEQUENCE_LENGTH = 12


def make_model() -> GPT:
    torch.manual_seed(SEED)
    model = GPT(CONFIG)
    as_if_trained(model)
    return model.eval()


def as_if_trained(model: torch.nn.Module) -> None:
    """Give parameters trained-looking values, deterministically.

    A freshly initialised GPT has unit LayerNorm gains, zero biases and std-0.02 matrices, which
    hides conversion bugs that drop or swap them and makes attention nearly uniform. Matrices get
    std 1/sqrt(fan_in), gains 1 ± 0.2, biases ± 0.1; embeddings keep nanoGPT's own init.
    """
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Embedding):
                continue
            if parameter.ndim == 2:
                parameter.copy_(noise / parameter.shape[1] ** 0.5)
            elif name.endswith("weight"):  # LayerNorm gain
                parameter.copy_(1.0 + 0.2 * noise)
            else:
                parameter.copy_(0.1 * noise)


def make_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(0, CONFIG.vocab_size, (1, SEQUENCE_LENGTH), generator=generator)


def build() -> tuple[GPT, dict[str, torch.Tensor]]:
    ids = make_inputs()
    # With targets nanoGPT computes logits for every position (without, only the last one);
    # the loss it adds is ignored. -1 is its ignore_index.
    targets = torch.cat([ids[:, 1:], torch.full((1, 1), -1)], dim=1)
    return make_model(), {"idx": ids, "targets": targets}

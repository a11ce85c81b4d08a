"""Research original: Karpathy's llama2.c (vendored ``model.py``), tiny and randomly initialised.

``make_model()`` and ``make_inputs()`` are shared with ``ported.py`` so both sides start from
the same weights and the same token ids.
"""

from __future__ import annotations

import torch

from model import ModelArgs, Transformer

SEED = 1234
ARGS = ModelArgs(
    dim=64,
    n_layers=3,
    n_heads=4,
    n_kv_heads=2,  # grouped-query attention: 2 query heads per key/value head
    vocab_size=101,
    multiple_of=32,  # FeedForward hidden size: 32 * ceil(int(2 * 4 * 64 / 3) / 32) = 192
    norm_eps=1e-5,
    max_seq_len=32,
    dropout=0.0,
)
SEQUENCE_LENGTH = 12


def make_model() -> Transformer:
    torch.manual_seed(SEED)
    model = Transformer(ARGS)
    as_if_trained(model)
    return model.eval()


def as_if_trained(model: torch.nn.Module) -> None:
    """Give parameters trained-looking values, deterministically.

    A freshly initialised llama2.c model has unit RMSNorm gains and std-0.02 matrices, which
    hides conversion bugs that swap norms and makes attention nearly uniform. Matrices get std
    1/sqrt(fan_in), gains 1 ± 0.2; the (tied) embedding keeps llama2.c's own init.
    """
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            if isinstance(model.get_submodule(name.rsplit(".", 1)[0]), torch.nn.Embedding):
                continue
            if parameter.ndim == 2:
                parameter.copy_(noise / parameter.shape[1] ** 0.5)
            else:  # RMSNorm gain
                parameter.copy_(1.0 + 0.2 * noise)


def make_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(0, ARGS.vocab_size, (1, SEQUENCE_LENGTH), generator=generator)


def build() -> tuple[Transformer, dict[str, torch.Tensor]]:
    ids = make_inputs()
    # With targets llama2.c computes logits for every position (without, only the last one);
    # the loss goes to model.last_loss and is ignored. -1 is its ignore_index.
    targets = torch.cat([ids[:, 1:], torch.full((1, 1), -1)], dim=1)
    return make_model(), {"tokens": ids, "targets": targets}

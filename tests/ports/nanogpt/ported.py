"""Port of nanoGPT to ``transformers.GPT2LMHeadModel``, converting the state dict the way
nanoGPT's own ``GPT.from_pretrained`` does, in reverse (Linear -> Conv1D transposes).

``TRACETUI_PORT_BUG=<name>`` plants one realistic conversion bug (``<name>,<name>,...`` plants
several); ``BUGS`` maps each name to the ported module that ground truth
(tests/ports/ground_truth.py) shows diverging first when it is planted alone: the innermost,
earliest paired call whose inputs still agree and whose outputs do not.
"""

from __future__ import annotations

import os

import torch
from original import CONFIG, make_inputs, make_model
from transformers import GPT2Config, GPT2LMHeadModel

BUGS: dict[str, str] = {
    # The transposed-key list forgot attn.c_proj: square (64x64), so it loads silently.
    "attn_c_proj_not_transposed": "transformer.h.0.attn.c_proj",
    # q and k slices of layer 1's fused c_attn weight/bias swapped.
    "qk_swapped_layer1": "transformer.h.1.attn.c_attn",
    # layer_norm_epsilon copied from a BERT config (1e-12) instead of nanoGPT's hard-coded 1e-5.
    "layer_norm_epsilon_wrong": "transformer.h.0.ln_1",
    # Layer 2's attn.c_proj.bias left at HF's init (zeros) instead of copied.
    "attn_c_proj_bias_missing_layer2": "transformer.h.2.attn.c_proj",
    # Config says n_head=8, nanoGPT has 4: same shapes, different split into heads.
    # c_attn still agrees; the attention inside transformer.h.0.attn does not.
    "n_head_wrong": "transformer.h.0.attn",
    # tie_word_embeddings=False and lm_head.weight never copied (left at HF's random init).
    "lm_head_untied_unconverted": "lm_head",
}

def planted_bugs() -> frozenset[str]:
    """The names in ``$TRACETUI_PORT_BUG`` (comma-separated; empty for the clean port), each checked against BUGS."""
    names = frozenset(name.strip() for name in os.environ.get("TRACETUI_PORT_BUG", "").split(",") if name.strip())
    for name in sorted(names):
        if name not in BUGS:
            raise ValueError(f"unknown TRACETUI_PORT_BUG {name!r}; known: {sorted(BUGS)}")
    return names


TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def gpt2_config(bugs: frozenset[str]) -> GPT2Config:
    return GPT2Config(
        vocab_size=CONFIG.vocab_size,
        n_positions=CONFIG.block_size,
        n_embd=CONFIG.n_embd,
        n_layer=CONFIG.n_layer,
        n_head=8 if "n_head_wrong" in bugs else CONFIG.n_head,
        activation_function="gelu",  # nanoGPT's nn.GELU() is exact; GPT2Config's default is gelu_new
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-12 if "layer_norm_epsilon_wrong" in bugs else 1e-5,
        tie_word_embeddings="lm_head_untied_unconverted" not in bugs,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )


def convert(nano_state: dict[str, torch.Tensor], bugs: frozenset[str]) -> dict[str, torch.Tensor]:
    transposed = tuple(k for k in TRANSPOSED if not ("attn_c_proj_not_transposed" in bugs and k == "attn.c_proj.weight"))
    hf_state: dict[str, torch.Tensor] = {}
    for key, value in nano_state.items():
        if key.endswith(".attn.bias"):  # nanoGPT's causal-mask buffer (only without flash attention)
            continue
        hf_state[key] = value.t().contiguous() if key.endswith(transposed) else value.clone()
    if "qk_swapped_layer1" in bugs:
        for suffix in ("weight", "bias"):
            key = f"transformer.h.1.attn.c_attn.{suffix}"
            q, k, v = hf_state[key].split(CONFIG.n_embd, dim=-1)
            hf_state[key] = torch.cat([k, q, v], dim=-1)
    if "attn_c_proj_bias_missing_layer2" in bugs:
        hf_state["transformer.h.2.attn.c_proj.bias"] = torch.zeros(CONFIG.n_embd)
    if "lm_head_untied_unconverted" in bugs:
        del hf_state["lm_head.weight"]
    return hf_state


def build() -> tuple[GPT2LMHeadModel, dict[str, object]]:
    bugs = planted_bugs()
    original = make_model()
    model = GPT2LMHeadModel(gpt2_config(bugs))
    missing, unexpected = model.load_state_dict(convert(original.state_dict(), bugs), strict=False)
    expected_missing = ["lm_head.weight"] if "lm_head_untied_unconverted" in bugs else []
    if sorted(missing) != expected_missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    return model.eval(), {"input_ids": make_inputs(), "use_cache": False, "return_dict": False}

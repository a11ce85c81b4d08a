"""Port of llama2.c to ``transformers.LlamaForCausalLM``.

The conversion renames the state dict and permutes the rows of wq/wk: llama2.c rotates
interleaved (even, odd) pairs of each head (complex-number RoPE), HF rotates the two halves
of each head (rotate_half). ``permute`` is the one in transformers'
``convert_llama_weights_to_hf.py`` (llama2.c's export.py holds its inverse).

``TRACETUI_PORT_BUG=<name>`` plants one realistic conversion bug (``<name>,<name>,...`` plants
several); ``BUGS`` maps each name to the ported module that ground truth
(tests/ports/ground_truth.py) shows diverging first when it is planted alone: the innermost,
earliest paired call whose inputs still agree and whose outputs do not.

llama2.c's TransformerBlock calls ``self.attention.forward(...)`` and
``self.feed_forward.forward(...)`` directly, so module hooks never see those two: on the
original side they do not exist as calls, and ``self_attn``/``mlp`` have no partner. A bug whose
first effect is inside the attention therefore surfaces at the decoder layer.
"""

from __future__ import annotations

import os

import torch
from original import ARGS, make_inputs, make_model
from transformers import LlamaConfig, LlamaForCausalLM

BUGS: dict[str, str] = {
    # wq/wk copied without the RoPE row permutation (q/k projections are deliberately unpaired,
    # see map.toml; self_attn has no recorded partner), so the decoder layer is the culprit.
    "qk_not_permuted": "model.layers.0",
    # wk permuted with n_heads (4) instead of n_kv_heads (2): a classic GQA conversion slip.
    "k_permuted_with_n_heads": "model.layers.0",
    # rms_norm_eps left at LlamaConfig's default 1e-6; llama2.c uses norm_eps=1e-5.
    "rms_norm_eps_wrong": "model.layers.0.input_layernorm",
    # w1 (gate) and w3 (up) swapped in layer 1.
    "gate_up_swapped_layer1": "model.layers.1.mlp.gate_proj",
    # rope_theta 500000 (a Llama 3 config) instead of llama2.c's 10000. cos/sin come from
    # model.rotary_emb, which has no partner; the first paired call that consumes them is the
    # decoder layer (self_attn has no recorded partner either).
    "rope_theta_wrong": "model.layers.0",
    # tie_word_embeddings=False and output.weight never copied: lm_head keeps HF's random init.
    "lm_head_unconverted": "lm_head",
}


def planted_bugs() -> frozenset[str]:
    """The names in ``$TRACETUI_PORT_BUG`` (comma-separated; empty for the clean port), each checked against BUGS."""
    names = frozenset(name.strip() for name in os.environ.get("TRACETUI_PORT_BUG", "").split(",") if name.strip())
    for name in sorted(names):
        if name not in BUGS:
            raise ValueError(f"unknown TRACETUI_PORT_BUG {name!r}; known: {sorted(BUGS)}")
    return names


def permute(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, columns = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def llama_config(bugs: frozenset[str], intermediate_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=ARGS.vocab_size,
        hidden_size=ARGS.dim,
        intermediate_size=intermediate_size,
        num_hidden_layers=ARGS.n_layers,
        num_attention_heads=ARGS.n_heads,
        num_key_value_heads=ARGS.n_kv_heads,
        max_position_embeddings=ARGS.max_seq_len,
        rms_norm_eps=1e-6 if "rms_norm_eps_wrong" in bugs else ARGS.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0 if "rope_theta_wrong" in bugs else 10000.0},
        tie_word_embeddings="lm_head_unconverted" not in bugs,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )


def convert(state: dict[str, torch.Tensor], bugs: frozenset[str]) -> dict[str, torch.Tensor]:
    n_heads, n_kv_heads = ARGS.n_heads, ARGS.n_kv_heads
    if "k_permuted_with_n_heads" in bugs:
        n_kv_heads = n_heads
    rope_rows = (lambda w, _heads: w) if "qk_not_permuted" in bugs else permute
    hf: dict[str, torch.Tensor] = {"model.embed_tokens.weight": state["tok_embeddings.weight"]}
    for i in range(ARGS.n_layers):
        old, new = f"layers.{i}.", f"model.layers.{i}."
        gate, up = ("w3", "w1") if "gate_up_swapped_layer1" in bugs and i == 1 else ("w1", "w3")
        hf |= {
            new + "self_attn.q_proj.weight": rope_rows(state[old + "attention.wq.weight"], n_heads),
            new + "self_attn.k_proj.weight": rope_rows(state[old + "attention.wk.weight"], n_kv_heads),
            new + "self_attn.v_proj.weight": state[old + "attention.wv.weight"],
            new + "self_attn.o_proj.weight": state[old + "attention.wo.weight"],
            new + "mlp.gate_proj.weight": state[old + f"feed_forward.{gate}.weight"],
            new + "mlp.up_proj.weight": state[old + f"feed_forward.{up}.weight"],
            new + "mlp.down_proj.weight": state[old + "feed_forward.w2.weight"],
            new + "input_layernorm.weight": state[old + "attention_norm.weight"],
            new + "post_attention_layernorm.weight": state[old + "ffn_norm.weight"],
        }
    hf["model.norm.weight"] = state["norm.weight"]
    if "lm_head_unconverted" not in bugs:
        hf["lm_head.weight"] = state["output.weight"]  # tied to embed_tokens, as in llama2.c
    return {key: value.clone() for key, value in hf.items()}


def build() -> tuple[LlamaForCausalLM, dict[str, object]]:
    bugs = planted_bugs()
    original = make_model()
    intermediate_size = original.layers[0].feed_forward.w1.out_features
    model = LlamaForCausalLM(llama_config(bugs, intermediate_size))
    missing, unexpected = model.load_state_dict(convert(original.state_dict(), bugs), strict=False)
    expected_missing = ["lm_head.weight"] if "lm_head_unconverted" in bugs else []
    if sorted(missing) != expected_missing or unexpected:
        raise RuntimeError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    return model.eval(), {"input_ids": make_inputs(), "use_cache": False, "return_dict": False}

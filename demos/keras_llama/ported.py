"""A transformers `LlamaForCausalLM` port of the Keras Llama in `original.py`.

Differences from the original that a comparison has to see through:
  * names: `model.layers.N.self_attn.q_proj`, `model.layers.N.mlp.gate_proj`, `model.norm` ...
    instead of Keras's `decoder_block_N.attention.query`, `decoder_block_N.ffw.gate_dense`,
    `final_norm` (see `map.toml`);
  * Keras `Dense` kernels are (in, out); `nn.Linear` weights are (out, in): the conversion in
    `build()` transposes every kernel;
  * the rotary embedding is a module of its own (`model.rotary_emb`), computed inline in the
    original; the SiLU is a module (`act_fn`).

Planted bugs: set `TRACETUI_DEMO_BUG` to one of the names in `BUGS`, or to several separated
by commas. `BUGS` names the ported module each one should be blamed on:

  norm_eps               the final norm's eps is 1e-1 instead of 1e-6
  activation             layer 1's MLP activation is GELU instead of SiLU
  attention_scale        layer 0's attention scales scores by 1/head_dim instead of 1/sqrt(head_dim)
  kernel_not_transposed  layer 1's o_proj weight is copied from the Dense kernel without `.T`
  qk_swapped             the conversion swaps layer 0's query and key kernels
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy
import torch
from transformers import LlamaConfig, LlamaForCausalLM

BUG_ENV_VAR = "TRACETUI_DEMO_BUG"

BUGS: dict[str, str] = {
    "norm_eps": "model.norm",
    # act_fn's output meets up_proj's in the MLP's own `*`: the innermost paired module owning it is the MLP.
    "activation": "model.layers.1.mlp",
    "attention_scale": "model.layers.0.self_attn",
    "kernel_not_transposed": "model.layers.1.self_attn.o_proj",
    "qk_swapped": "model.layers.0.self_attn.q_proj",
}


def resolve_bugs(bug: str | None = None) -> frozenset[str]:
    """The planted bugs to switch on: `bug` if given, else `$TRACETUI_DEMO_BUG` (comma-separated); empty: the clean port."""
    if bug is None:
        bug = os.environ.get(BUG_ENV_VAR, "")
    names = frozenset(name.strip() for name in bug.split(",") if name.strip())
    for name in sorted(names):
        if name not in BUGS:
            raise ValueError(f"unknown {BUG_ENV_VAR}={name!r}; valid names: {', '.join(BUGS)} (or empty for the clean port)")
    return names


def load_original() -> ModuleType:
    """Import original.py from this folder under a name of its own (the comparison imports it too)."""
    name = "_keras_llama_original"
    if name not in sys.modules:
        specification = importlib.util.spec_from_file_location(name, Path(__file__).with_name("original.py"))
        assert specification is not None and specification.loader is not None
        module = importlib.util.module_from_spec(specification)
        sys.modules[name] = module
        specification.loader.exec_module(module)
    return sys.modules[name]


def llama_config(original: ModuleType) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=original.VOCAB_SIZE,
        hidden_size=original.HIDDEN_SIZE,
        intermediate_size=original.INTERMEDIATE_SIZE,
        num_hidden_layers=original.NUM_LAYERS,
        num_attention_heads=original.NUM_HEADS,
        num_key_value_heads=original.NUM_HEADS,
        rms_norm_eps=original.RMS_NORM_EPS,
        rope_theta=original.ROPE_THETA,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )


def to_torch(variable: object) -> torch.Tensor:
    """A Keras variable's values as a float32 torch tensor."""
    return torch.from_numpy(numpy.array(variable.numpy(), dtype=numpy.float32))  # type: ignore[attr-defined]


def convert_keras_weights(keras_model: object, config: LlamaConfig, bugs: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The Keras model's weights as a LlamaForCausalLM state dict: Dense kernels transposed."""
    def kernel(dense: object, transpose: bool = True) -> torch.Tensor:
        weight = to_torch(dense.kernel)  # type: ignore[attr-defined]
        return weight.T.contiguous() if transpose else weight

    state = {
        "model.embed_tokens.weight": to_torch(keras_model.token_embedding.embeddings),  # type: ignore[attr-defined]
        "model.norm.weight": to_torch(keras_model.final_norm.scale),  # type: ignore[attr-defined]
        "lm_head.weight": kernel(keras_model.lm_head),  # type: ignore[attr-defined]
    }
    for index, block in enumerate(keras_model.decoder_blocks):  # type: ignore[attr-defined]
        attention, feed_forward = block.attention, block.ffw
        query, key = (attention.key, attention.query) if "qk_swapped" in bugs and index == 0 else (attention.query, attention.key)
        prefix = f"model.layers.{index}"
        state |= {
            f"{prefix}.input_layernorm.weight": to_torch(block.pre_attention_norm.scale),
            f"{prefix}.post_attention_layernorm.weight": to_torch(block.pre_ffw_norm.scale),
            f"{prefix}.self_attn.q_proj.weight": kernel(query),
            f"{prefix}.self_attn.k_proj.weight": kernel(key),
            f"{prefix}.self_attn.v_proj.weight": kernel(attention.value),
            f"{prefix}.self_attn.o_proj.weight": kernel(
                attention.attention_output, transpose=not ("kernel_not_transposed" in bugs and index == 1)
            ),
            f"{prefix}.mlp.gate_proj.weight": kernel(feed_forward.gate_dense),
            f"{prefix}.mlp.up_proj.weight": kernel(feed_forward.up_dense),
            f"{prefix}.mlp.down_proj.weight": kernel(feed_forward.down_dense),
        }
    return state


def build():
    bugs = resolve_bugs()
    original = load_original()
    keras_model, token_ids = original.build_model()
    config = llama_config(original)
    model = LlamaForCausalLM(config)
    model.load_state_dict(convert_keras_weights(keras_model, config, bugs), strict=True)
    if "norm_eps" in bugs:
        model.model.norm.variance_epsilon = 1e-1
    if "activation" in bugs:
        model.model.layers[1].mlp.act_fn = torch.nn.GELU()
    if "attention_scale" in bugs:
        model.model.layers[0].self_attn.scaling = 1.0 / model.model.layers[0].self_attn.head_dim
    return model.eval(), torch.from_numpy(token_ids).long()


def forward(model: LlamaForCausalLM, input_ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=input_ids, use_cache=False).logits

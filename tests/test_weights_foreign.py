"""The weights check with a Flax or Keras original: its weights read by path, a port's transposed kernels found."""

from __future__ import annotations

import os
from pathlib import Path

# The cross-framework tests never skip: jax and flax are in the test extra.
import flax.linen as linen  # noqa: E402
import flax.serialization as serialization  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np
import pytest
import torch

from tracetui.cli import main
from tracetui.errors import ScriptError
from tracetui.weights import check_weights
from tracetui.weights.foreign import named_arrays

HIDDEN = 8
LAYERS = 3


class Block(linen.Module):
    """A Flax decoder block: a fused qkv projection, an output projection, an MLP."""

    @linen.compact
    def __call__(self, hidden_states: jax.Array) -> jax.Array:
        qkv = linen.Dense(3 * HIDDEN, name="c_attn")(linen.LayerNorm(name="ln_1")(hidden_states))
        hidden_states = hidden_states + linen.Dense(HIDDEN, name="c_proj")(qkv[..., :HIDDEN])
        return hidden_states + linen.Dense(HIDDEN, name="fc_out")(linen.gelu(linen.Dense(4 * HIDDEN, name="fc_in")(hidden_states)))


class FlaxDecoder(linen.Module):
    @linen.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        hidden_states = linen.Embed(20, HIDDEN, name="wte")(input_ids)
        for layer in range(LAYERS):
            hidden_states = Block(name=f"h_{layer}")(hidden_states)
        return hidden_states


def flax_variables() -> dict:
    """The decoder's variables, every one random (Flax starts biases at zero: all alike, no source to find)."""
    variables = FlaxDecoder().init(jax.random.PRNGKey(0), jnp.zeros((1, 4), dtype=jnp.int32))
    leaves, structure = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree_util.tree_unflatten(structure, [jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves, strict=True)])


def converted_port(variables: dict, untransposed: str | None = None) -> dict[str, torch.Tensor]:
    """The torch state dict a conversion script writes: Dense kernels transposed, c_attn split into q, k, v.

    ``untransposed``: one ported weight copied from its kernel without the transpose (the planted bug).
    """
    params = {name: torch.from_numpy(np.asarray(array).copy()) for name, array in named_arrays(variables).items()}
    port = {"embed_tokens.weight": params["wte.embedding"]}
    for layer in range(LAYERS):
        source, target = f"h_{layer}", f"layers.{layer}"
        port[f"{target}.norm.weight"] = params[f"{source}.ln_1.scale"]
        port[f"{target}.norm.bias"] = params[f"{source}.ln_1.bias"]
        for block, name in enumerate(("q_proj", "k_proj", "v_proj")):
            port[f"{target}.attn.{name}.weight"] = params[f"{source}.c_attn.kernel"][:, block * HIDDEN : (block + 1) * HIDDEN].t()
            port[f"{target}.attn.{name}.bias"] = params[f"{source}.c_attn.bias"][block * HIDDEN : (block + 1) * HIDDEN]
        for flax_name, torch_name in (("c_proj", "attn.o_proj"), ("fc_in", "mlp.up"), ("fc_out", "mlp.down")):
            port[f"{target}.{torch_name}.weight"] = params[f"{source}.{flax_name}.kernel"].t()
            port[f"{target}.{torch_name}.bias"] = params[f"{source}.{flax_name}.bias"]
    if untransposed is not None:
        port[untransposed] = port[untransposed].t()
    return {name: tensor.contiguous().clone() for name, tensor in port.items()}


def test_flax_tree_names_drop_the_params_collection_and_keep_the_others() -> None:
    batch_norm = linen.BatchNorm(use_running_average=True)
    variables = batch_norm.init(jax.random.PRNGKey(0), jnp.ones((2, 3)))
    named = named_arrays(variables)
    assert set(named) == {"bias", "scale", "batch_stats.mean", "batch_stats.var"}
    assert all(isinstance(tensor, torch.Tensor) and tensor.device.type == "cpu" for tensor in named.values())
    decoder_names = named_arrays(flax_variables())
    assert "h_1.c_attn.kernel" in decoder_names and decoder_names["h_1.c_attn.kernel"].shape == (HIDDEN, 3 * HIDDEN)


def test_a_bound_linen_module_gives_its_variables_in_bfloat16_too() -> None:
    variables = jax.tree_util.tree_map(lambda array: array.astype(jnp.bfloat16), flax_variables())
    named = named_arrays(FlaxDecoder().bind(variables))
    kernel = named["h_0.fc_in.kernel"]
    assert kernel.dtype == torch.bfloat16
    expected = np.array(variables["params"]["h_0"]["fc_in"]["kernel"].astype(jnp.float32))
    assert torch.equal(kernel.float(), torch.from_numpy(expected))
    with pytest.raises(ValueError, match="unbound Flax linen module"):
        named_arrays(FlaxDecoder())


def test_nnx_module_weights_are_named_by_attribute_path_without_rng_state() -> None:
    from flax import nnx

    class Mlp(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.up = nnx.Linear(3, 4, rngs=rngs)
            self.norm = nnx.BatchNorm(4, rngs=rngs)
            self.dropout = nnx.Dropout(0.1, rngs=rngs)

    model = Mlp(nnx.Rngs(0))
    named = named_arrays(model)
    assert set(named) == {"up.kernel", "up.bias", "norm.scale", "norm.bias", "norm.mean", "norm.var"}
    assert torch.equal(named["up.kernel"], torch.from_numpy(np.asarray(model.up.kernel.get_value())))


def test_keras_model_weights_are_named_by_variable_path() -> None:
    if os.environ.get("KERAS_BACKEND", "jax") not in ("jax", "torch"):
        pytest.skip("needs KERAS_BACKEND jax or torch")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    inputs = keras.Input((3,))
    outputs = keras.layers.LayerNormalization(name="norm")(keras.layers.Dense(4, name="dense")(inputs))
    model = keras.Model(inputs, outputs)
    named = named_arrays(model)
    assert set(named) == {"dense.kernel", "dense.bias", "norm.gamma", "norm.beta"}
    assert torch.equal(named["dense.kernel"], torch.from_numpy(np.asarray(model.get_layer("dense").kernel.numpy())))


def test_transposed_kernels_and_split_qkv_are_found_and_an_untransposed_kernel_is_reported() -> None:
    variables = flax_variables()
    report = check_weights(named_arrays(variables), converted_port(variables, untransposed="layers.1.attn.o_proj.weight"))
    found = {source.ported: source for source in report.sources}
    assert (found["layers.0.attn.o_proj.weight"].how, found["layers.0.attn.o_proj.weight"].original) == ("transposed", "h_0.c_proj.kernel")
    assert (found["layers.1.mlp.up.weight"].how, found["layers.1.mlp.up.weight"].original) == ("transposed", "h_1.fc_in.kernel")
    key = found["layers.1.attn.k_proj.weight"]
    assert key.how == "slice" and key.pieces[0].original == "h_1.c_attn.kernel"
    assert found["layers.1.attn.k_proj.bias"].how == "slice"
    bug = found["layers.1.attn.o_proj.weight"]
    assert bug.original == "h_1.c_proj.kernel" and bug.how != "transposed"
    assert bug.breaks_pattern is not None and "transposed" in bug.breaks_pattern
    assert all(source.breaks_pattern is None for name, source in found.items() if name != "layers.1.attn.o_proj.weight")


def test_weights_command_reads_msgpack_and_npz_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    variables = flax_variables()
    msgpack = tmp_path / "flax_model.msgpack"
    msgpack.write_bytes(serialization.to_bytes(variables))
    npz = tmp_path / "flax_model.npz"
    np.savez(npz, **{f"params/{name.replace('.', '/')}": np.asarray(tensor) for name, tensor in named_arrays(variables).items()})
    ported = tmp_path / "ported.safetensors"
    from safetensors.torch import save_file

    save_file(converted_port(variables, untransposed="layers.1.attn.o_proj.weight"), str(ported))
    for original in (msgpack, npz):
        assert main(["weights", str(original), str(ported), "--json", str(tmp_path / "weights.json")]) == 0
        printed = capsys.readouterr().out
        assert "h_#.c_proj.kernel" in printed and "transposed" in printed
        assert "layers.1.attn.o_proj.weight" in printed and "the other layers take it transposed" in printed
        assert "copied into a Linear weight" in printed


def test_a_script_model_that_is_not_a_torch_module_is_read_through_named_arrays() -> None:
    from tracetui.cli.weights import script_model_state

    variables = flax_variables()
    state = script_model_state("flax_original.py", FlaxDecoder().bind(variables))
    assert state.keys() == named_arrays(variables).keys()
    with pytest.raises(ScriptError, match="flax_original.py: .*not a Flax variables tree"):
        script_model_state("flax_original.py", object())


def test_a_damaged_msgpack_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "broken.msgpack"
    damaged.write_bytes(b"\x00\x01 not msgpack")
    assert main(["weights", str(damaged), str(damaged)]) == 2
    assert "not a Flax msgpack checkpoint" in capsys.readouterr().err


DEMOS = Path(__file__).parent.parent / "demos"


def test_a_demo_kernel_copied_untransposed_in_one_of_two_layers_is_flagged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With two layers, the layer pattern cannot tell which one is odd: the model's other Dense kernels can."""
    arguments = ["weights", str(DEMOS / "flax_gpt" / "original.py"), str(DEMOS / "flax_gpt" / "ported.py")]
    assert main(arguments) == 0
    assert "warning" not in capsys.readouterr().out
    monkeypatch.setenv("TRACETUI_DEMO_BUG", "kernel_not_transposed")
    assert main(arguments) == 0  # every value is accounted for: a warning, not a missing tensor
    output = " ".join(capsys.readouterr().out.split())
    assert "untransposed?): model.layers.1.self_attn.o_proj.weight" in output
    assert "Dense kernels are transposed" in output

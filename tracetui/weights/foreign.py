"""The weights of a Flax or Keras original as named CPU torch tensors, for the weights check.

A Flax variables tree (or checkpoint), a bound linen module, an NNX module and a Keras model all
hold their weights under paths; ``named_arrays`` joins each path with ``.`` the way the trace names
the modules (``h_0.attn.query`` for Flax, ``decoder_layer.dense`` for Keras), so that a rename map
written for ``compare`` names the weights too. No framework is imported here unless the object
passed in comes from it (importing keras would fix its backend before the script could choose one).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

PARAMS_COLLECTION = "params"  # Flax's collection of trainable parameters: its name is left out of the weight names


class ForeignWeightsError(ValueError):
    """The object holds no weights this module knows how to read."""


def named_arrays(model: Any) -> dict[str, torch.Tensor]:
    """Every weight of a Flax variables tree / bound linen module / NNX module / Keras model, by name.

    Flax trees: the path joined with ``.``, without the leading ``params`` collection name
    (``params.h_0.attn.query.kernel`` → ``h_0.attn.query.kernel``), other collections kept
    (``batch_stats.BatchNorm_0.mean``). NNX: the attribute path (RNG state left out). Keras: each
    variable's ``path`` with ``/`` turned into ``.``. Values are CPU torch tensors in their own
    dtype (bfloat16 kept).
    """
    if isinstance(model, Mapping):
        return tree_arrays(model)
    if is_linen_module(model):
        if getattr(model, "scope", None) is None:
            raise ForeignWeightsError(
                f"{type(model).__name__} is an unbound Flax linen module: it holds no weights. "
                "Pass module.bind(variables) or the variables."
            )
        return tree_arrays(model.variables)
    if is_nnx_module(model):
        return nnx_arrays(model)
    if is_keras_object(model):
        return {variable.path.replace("/", "."): to_torch(variable.numpy()) for variable in model.weights}
    raise ForeignWeightsError(
        f"{type(model).__name__} is not a Flax variables tree, linen module, NNX module or Keras model: no weights to read."
    )


def tree_arrays(tree: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A nested mapping of arrays (a Flax variables or params tree) flattened to dotted names."""
    named: dict[str, torch.Tensor] = {}
    for path, leaf in tree_leaves(tree, ()):
        named[weight_name(".".join(path))] = to_torch(leaf)
    return named


def weight_name(path: str) -> str:
    """A dotted Flax path without its leading ``params`` collection (other collections keep theirs)."""
    return path.removeprefix(f"{PARAMS_COLLECTION}.")


def tree_leaves(tree: Mapping[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in tree.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from tree_leaves(value, path)
        else:
            yield path, value


def nnx_arrays(model: Any) -> dict[str, torch.Tensor]:
    from flax import nnx

    named: dict[str, torch.Tensor] = {}
    for path, variable in nnx.state(model).flat_state():
        if isinstance(variable, nnx.RngState):  # random keys and counters: not weights
            continue
        named[".".join(str(part) for part in path)] = to_torch(variable.get_value())
    return named


def to_torch(array: Any) -> torch.Tensor:
    """A CPU torch tensor with the array's values and dtype (numpy has no bfloat16: ml_dtypes' is read bitwise)."""
    values = np.array(array, copy=True, order="C")  # writable and owned: torch.from_numpy shares its memory
    if values.dtype.name == "bfloat16":
        return torch.from_numpy(values.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(values)


def is_linen_module(model: object) -> bool:
    linen = sys.modules.get("flax.linen")
    return linen is not None and isinstance(model, linen.Module)


def is_nnx_module(model: object) -> bool:
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)


def is_keras_object(model: object) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.layers.Layer)

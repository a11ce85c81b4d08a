"""Which framework a model belongs to, read from its class hierarchy's module names.

Nothing is imported here: a framework the script did not import is not in play, and
importing keras before the script does would lock it to its default backend.
"""

from __future__ import annotations

from typing import Any

FRAMEWORKS = ("flax.linen", "flax.nnx", "keras")

ACCEPTED_MODELS = (
    "a torch.nn.Module, a bound Flax linen module (`model.bind(variables)`) or a pair (module, variables), "
    "a Flax NNX module, or a Keras 3 model or layer"
)


def detect_framework(model: Any) -> str | None:
    """``"flax.linen"``, ``"flax.nnx"``, ``"keras"`` or None (PyTorch, or nothing tracetui records).

    A Keras layer on the torch backend is also a ``torch.nn.Module``: it counts as Keras, so its
    layers are named by their Keras paths. A pair ``(linen module, variables)`` counts as linen.
    """
    if isinstance(model, tuple) and len(model) == 2 and framework_of_class(type(model[0])) == "flax.linen":
        return "flax.linen"
    return framework_of_class(type(model))


def framework_of_class(cls: type) -> str | None:
    modules = [getattr(base, "__module__", "") or "" for base in cls.__mro__]
    if any(is_under(module, "keras") for module in modules):
        return "keras"
    if any(is_under(module, "flax.nnx") for module in modules):
        return "flax.nnx"
    if any(is_under(module, "flax.linen") for module in modules):
        return "flax.linen"
    return None


def is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")

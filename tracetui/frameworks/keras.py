"""Keras 3 originals (any backend): every layer call, named by the layer's Keras path.

``Layer.__call__`` is wrapped for the run (and put back in a ``finally``), so layers made
during the call are seen too. A layer is named by ``layer.path`` with ``/`` turned into ``.``
and the root model's own path taken off (``block.dense``; the root ``""``); a layer without a
path is named after the enclosing call and its own name. The model is called with
``training=False`` (Keras's inference mode) unless the script's inputs say otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracetui.frameworks.foreign import CallWatch, method_signature

__all__ = ["call_model", "module_function", "prepare", "watched"]


def prepare(model: Any, path: Path | str) -> Any:
    return model


def call_model(model: Any, inputs: Any) -> Any:
    """Tensor → one argument, tuple → positional, dict → keywords; ``training=False`` unless given."""
    if isinstance(inputs, dict):
        return model(**{"training": False, **inputs})
    if isinstance(inputs, tuple):
        return model(*inputs, training=False)
    return model(inputs, training=False)


def layer_base_class(model: Any) -> type:
    for cls in type(model).__mro__:
        if cls.__name__ == "Layer" and "__call__" in cls.__dict__ and cls.__module__.startswith("keras"):
            return cls
    raise TypeError(f"{type(model).__name__} is not a Keras layer")


def relative_name(path: str, root_path: str) -> str:
    if path == root_path:
        return ""
    if root_path and path.startswith(root_path + "/"):
        path = path[len(root_path) + 1 :]
    return path.replace("/", ".")


@contextmanager
def watched(model: Any, watch: CallWatch) -> Iterator[None]:
    layer_class = layer_base_class(model)
    original = layer_class.__dict__["__call__"]
    root_path = getattr(model, "path", None) or ""

    def watched_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        path = getattr(self, "path", None)
        name = "" if self is model else None if not path else relative_name(path, root_path)
        signature = method_signature(type(self), "call")
        return watch(self, name, str(getattr(self, "name", type(self).__name__)), signature,
                     lambda *a, **k: original(self, *a, **k), args, kwargs)

    setattr(layer_class, "__call__", watched_call)  # noqa: B010  (put back in the finally)
    try:
        yield
    finally:
        setattr(layer_class, "__call__", original)  # noqa: B010


def module_function(module: Any) -> Callable[..., Any]:
    """The function whose first line the debugger stops at: the layer class's own ``call``."""
    return type(module).call

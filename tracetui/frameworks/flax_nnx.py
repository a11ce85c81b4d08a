"""Flax NNX originals: every submodule's ``__call__``, named by its attribute path.

NNX modules are plain Python objects, so their classes' ``__call__`` is wrapped for the run
(and put back in a ``finally``); a call is recorded when its module is in the model's tree,
named by the path ``iter_modules`` gives (``layers.0.linear``; the root ``""``). A module made
during the call is named after the enclosing call and its class.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracetui.frameworks.foreign import CallWatch, call_model, method_signature

__all__ = ["call_model", "module_function", "prepare", "watched"]

_MISSING = object()


def prepare(model: Any, path: Path | str) -> Any:
    return model


def module_paths(model: Any) -> dict[int, tuple[Any, str]]:
    from flax import nnx

    iterate = getattr(nnx, "iter_modules", None)
    pairs = iterate(model) if iterate is not None else model.iter_modules()
    return {id(module): (module, ".".join(str(part) for part in path)) for path, module in pairs}


@contextmanager
def watched(model: Any, watch: CallWatch) -> Iterator[None]:
    names = module_paths(model)  # the modules are held here: their ids stay theirs for the run
    classes = list(dict.fromkeys(type(module) for module, _ in names.values()))
    restored: list[tuple[type, Any]] = []

    def wrapped(inherited: Callable[..., Any]) -> Callable[..., Any]:
        def watched_call(self: Any, *args: Any, **kwargs: Any) -> Any:
            known = names.get(id(self))
            name = known[1] if known is not None and known[0] is self else None
            signature = method_signature(type(self), "__call__")
            return watch(self, name, type(self).__name__, signature, lambda *a, **k: inherited(self, *a, **k), args, kwargs)

        setattr(watched_call, "__wrapped__", inherited)  # noqa: B010  (module_function unwraps it)
        return watched_call

    try:
        for cls in classes:
            restored.append((cls, cls.__dict__.get("__call__", _MISSING)))
            cls.__call__ = wrapped(cls.__call__)
        yield
    finally:
        for cls, original in reversed(restored):
            if original is _MISSING:
                delattr(cls, "__call__")
            else:
                cls.__call__ = original


def module_function(module: Any) -> Callable[..., Any]:
    """The function whose first line the debugger stops at: the module class's own ``__call__``."""
    function = type(module).__call__
    return getattr(function, "__wrapped__", function)

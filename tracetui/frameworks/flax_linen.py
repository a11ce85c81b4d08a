"""Flax linen originals: every submodule's ``__call__``, seen through ``flax.linen.intercept_methods``.

A module is named by its scope path joined with ``.`` (``h_0.attn.query``; the root ``""``),
the names linen itself gives (``setup`` attribute names, ``name=``, or ``Dense_0`` in compact
modules). Only ``__call__`` is recorded; other methods (``Embed.attend``) run inside it unseen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracetui.errors import ScriptError
from tracetui.frameworks.foreign import CallWatch, call_model, method_signature

__all__ = ["call_model", "module_function", "prepare", "watched"]


def prepare(model: Any, path: Path | str) -> Any:
    """A bound module: the pair ``(module, variables)`` is bound; an unbound module is refused."""
    if isinstance(model, tuple):
        module, variables = model
        return module.bind(variables)
    if getattr(model, "scope", None) is None:
        raise ScriptError(
            f"{path}: build() returned an unbound Flax module ({type(model).__name__}), which has no parameters to run with. "
            "Return `model.bind(variables)` or the pair `(model, variables)` as the model."
        )
    return model


def module_name(module: Any) -> str:
    return ".".join(str(part) for part in module.scope.path)


@contextmanager
def watched(model: Any, watch: CallWatch) -> Iterator[None]:
    import flax.linen

    def interceptor(next_function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], context: Any) -> Any:
        module = context.module
        if context.method_name != "__call__" or getattr(module, "scope", None) is None:
            return next_function(*args, **kwargs)
        signature = method_signature(type(module), "__call__")
        return watch(module, module_name(module), type(module).__name__, signature, next_function, args, kwargs)

    with flax.linen.intercept_methods(interceptor):
        yield


def module_function(module: Any) -> Callable[..., Any]:
    """The function whose first line the debugger stops at: the module class's own ``__call__``."""
    return type(module).__call__

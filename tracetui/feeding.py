"""Feed one module call the original's recorded inputs, during a forward pass of the port.

Shared by the component tests (:mod:`tracetui.components`), which check what the call returns,
and by the fix search (:mod:`tracetui.fixes`), which keeps the fed arguments to call the module
again under each hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from tracetui.flatten import name_arguments, replace_arguments, tensor_leaves
from tracetui.isolate import fitted

Arguments = tuple[tuple[Any, ...], dict[str, Any]]


def fed_arguments(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], originals: Mapping[str, torch.Tensor]
) -> Arguments:
    """The call's arguments with each tensor leaf that has an original value (by leaf name, as
    :func:`name_arguments` gives it) replaced by that value, fitted to the live tensor; leaves
    without one, or whose original cannot stand in for them, stay the port's own."""
    replacements = {}
    for path, value in tensor_leaves(name_arguments(module, args, kwargs)):
        if path in originals:
            replacement = fitted(originals[path], value)
            if replacement is not None:
                replacements[path] = replacement
    return replace_arguments(module, args, kwargs, replacements)


class CallReturned(BaseException):
    """Ends the forward pass once the call of interest is done (a BaseException, so that model
    code catching ``Exception`` lets it through)."""


@contextmanager
def on_call(
    module: torch.nn.Module,
    call: int,
    before: Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any]], Arguments | None],
    after: Callable[[torch.nn.Module, Any], None] | None = None,
) -> Iterator[None]:
    """While inside, ``before`` runs as the pre-hook of ``module``'s ``call``-th call (its
    return value replaces the arguments, as a forward pre-hook's does) and ``after`` sees what
    that call returned. The hooks are removed on the way out, whatever happened."""
    calls_started = [0]

    def pre_hook(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arguments | None:
        calls_started[0] += 1
        return before(hooked, args, kwargs) if calls_started[0] - 1 == call else None

    def post_hook(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if after is not None and calls_started[0] - 1 == call:
            after(hooked, output)

    handles = [module.register_forward_pre_hook(pre_hook, with_kwargs=True), module.register_forward_hook(post_hook, with_kwargs=True)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

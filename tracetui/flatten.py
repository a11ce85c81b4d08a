"""Flatten a call's arguments and results into named leaves.

Models pass tensors nested in tuples, lists, dicts, dataclasses, namedtuples and transformers'
``ModelOutput``; the comparison wants a flat list of ``(name, value)`` pairs such as
``("position_embeddings.0", cos)`` or ``("output.logits", logits)``.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch

MAXIMUM_NESTING = 8
SCALAR_TYPES = (bool, int, float, complex, str, bytes, type(None))


def flatten(value: Any, prefix: str, nesting: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, leaf)`` for every tensor and scalar inside ``value``, depth first, in order."""
    if isinstance(value, torch.Tensor) or isinstance(value, SCALAR_TYPES) or nesting >= MAXIMUM_NESTING:
        yield prefix, value
    elif isinstance(value, dict):
        # dict covers OrderedDict and transformers' ModelOutput, whose items() skips None fields.
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}", nesting + 1)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):
        for key in value._fields:
            yield from flatten(getattr(value, key), f"{prefix}.{key}", nesting + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for dataclass_field in dataclasses.fields(value):
            yield from flatten(getattr(value, dataclass_field.name), f"{prefix}.{dataclass_field.name}", nesting + 1)
    elif isinstance(value, (tuple, list)):
        for position, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{position}", nesting + 1)
    else:
        yield prefix, value


_signatures: dict[Callable[..., Any], inspect.Signature | None] = {}


def forward_signature(module: torch.nn.Module) -> inspect.Signature | None:
    forward = module.forward
    function = getattr(forward, "__func__", forward)
    if function not in _signatures:
        try:
            _signatures[function] = inspect.signature(forward)
        except (TypeError, ValueError):
            _signatures[function] = None
    return _signatures[function]


def name_arguments(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Name positional arguments by the forward's parameters, so ``f(x)`` and ``f(hidden_states=x)`` agree.

    Falls back to ``args.N`` when the signature cannot bind the call.
    """
    signature = forward_signature(module)
    bound = None
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            bound = None
    if bound is None:
        return [(f"args.{position}", value) for position, value in enumerate(args)] + list(kwargs.items())
    named: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = bound.signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            named.extend((f"{name}.{position}", item) for position, item in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            named.extend(value.items())
        else:
            named.append((name, value))
    return named

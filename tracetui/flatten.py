"""Flatten a call's arguments and results into named leaves.

Models pass tensors nested in tuples, lists, dicts, dataclasses, namedtuples and transformers'
``ModelOutput``; the comparison wants a flat list of ``(name, value)`` pairs such as
``("position_embeddings.0", cos)`` or ``("output.logits", logits)``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import torch

MAXIMUM_NESTING = 8
SCALAR_TYPES = (bool, int, float, complex, str, bytes, type(None))


def flatten(value: Any, prefix: str, nesting: int = 0) -> Iterator[tuple[str, Any]]:
    """Yield ``(path, leaf)`` for every tensor and scalar inside ``value``, depth first, in order."""
    if isinstance(value, (torch.Tensor, *SCALAR_TYPES)) or nesting >= MAXIMUM_NESTING:
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


def tensor_leaves(named_values: list[tuple[str, Any]]) -> Iterator[tuple[str, torch.Tensor]]:
    """``(path, tensor)`` for every tensor inside named values (a call's arguments, or its output)."""
    for name, value in named_values:
        for path, item in flatten(value, name):
            if isinstance(item, torch.Tensor):
                yield path, item


def bind_arguments(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> inspect.BoundArguments | None:
    """The call bound to the forward's parameters; None when the signature is unknown or does not fit."""
    signature = forward_signature(module)
    if signature is None:
        return None
    try:
        return signature.bind(*args, **kwargs)
    except TypeError:
        return None


def name_arguments(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Name positional arguments by the forward's parameters, so ``f(x)`` and ``f(hidden_states=x)`` agree.

    Falls back to ``args.N`` when the signature cannot bind the call.
    """
    bound = bind_arguments(module, args, kwargs)
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


# -- the inverse: put other tensors at named leaves ---------------------------------------------


def replace_leaves(value: Any, prefix: str, replacements: dict[str, torch.Tensor], nesting: int = 0) -> Any:
    """``value`` with the tensor at each path of ``replacements`` (paths as :func:`flatten`
    names them) replaced; containers that hold no replaced leaf are returned as they are, and
    the others are copied in their own type (tuples, lists, dicts, namedtuples, dataclasses and
    transformers' ``ModelOutput``), never changed in place: the model may hold them."""
    if isinstance(value, torch.Tensor):
        return replacements.get(prefix, value)
    if isinstance(value, SCALAR_TYPES) or nesting >= MAXIMUM_NESTING or not replacements:
        return value
    if isinstance(value, dict):
        changed = {key: replace_leaves(item, f"{prefix}.{key}", replacements, nesting + 1) for key, item in value.items()}
        if all(changed[key] is item for key, item in value.items()):
            return value
        copied = copy.copy(value)  # keeps the dict's own type (OrderedDict, ModelOutput, ...)
        for key, item in changed.items():
            copied[key] = item
        return copied
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        items = [replace_leaves(getattr(value, key), f"{prefix}.{key}", replacements, nesting + 1) for key in value._fields]
        return value if all(new is getattr(value, key) for new, key in zip(items, value._fields, strict=True)) else type(value)(*items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [dataclass_field.name for dataclass_field in dataclasses.fields(value)]
        new_values = {name: replace_leaves(getattr(value, name), f"{prefix}.{name}", replacements, nesting + 1) for name in names}
        if all(new_values[name] is getattr(value, name) for name in names):
            return value
        copied_instance = copy.copy(value)
        for name, item in new_values.items():
            object.__setattr__(copied_instance, name, item)  # frozen dataclasses too
        return copied_instance
    if isinstance(value, (tuple, list)):
        items = [replace_leaves(item, f"{prefix}.{position}", replacements, nesting + 1) for position, item in enumerate(value)]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return type(value)(items) if type(value) in (tuple, list) else copy_sequence(value, items)
    return value


def copy_sequence(value: tuple[Any, ...] | list[Any], items: list[Any]) -> Any:
    """A tuple or list subclass rebuilt with other items (its constructor may take them otherwise)."""
    try:
        return type(value)(items)
    except TypeError:
        return tuple(items) if isinstance(value, tuple) else list(items)


POSITIONAL_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def replace_arguments(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], replacements: dict[str, torch.Tensor]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A call's ``args`` and ``kwargs`` with the tensors at the leaf names :func:`name_arguments`
    gives (and :func:`flatten` extends) replaced. Positional arguments stay positional and
    keywords keywords: a decorated forward may read some of them from its ``**kwargs``."""
    positional_names = [f"args.{position}" for position in range(len(args))]
    bound = bind_arguments(module, args, kwargs)
    if bound is not None:
        parameters = bound.signature.parameters.values()
        positional = [parameter.name for parameter in parameters if parameter.kind in POSITIONAL_KINDS]
        variadic = next((parameter.name for parameter in parameters if parameter.kind is inspect.Parameter.VAR_POSITIONAL), None)
        for position in range(len(args)):
            if position < len(positional):
                positional_names[position] = positional[position]
            elif variadic is not None:
                positional_names[position] = f"{variadic}.{position - len(positional)}"
    new_args = tuple(replace_leaves(value, name, replacements) for name, value in zip(positional_names, args, strict=True))
    return new_args, {name: replace_leaves(value, name, replacements) for name, value in kwargs.items()}

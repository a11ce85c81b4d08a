"""Reversible changes to a live module: the building blocks of every hypothesis.

Each function makes one change and returns the function that undoes it. The fix search applies
a patch, calls the culprit once, and undoes it in a ``finally``: the user's model is the same
afterwards, and nothing is ever written to the user's files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Undo = Callable[[], None]
MISSING = object()


@dataclass(frozen=True)
class Patch:
    """One hypothesis: what it changes (``apply`` does it and returns its undo) and how to say so."""

    kind: str  # "activation", "eps", "scale", "rope_permutation", "layout", "swap", "residual", "weight"
    detail: str  # the value tried: "silu", "1e-05", "0.25", "a.weight <- b.weight"
    description: str  # one line for the user: "replacing SiLU by GELU in model.layers.1.mlp.act_fn"
    apply: Callable[[], Undo]


def set_attribute(owner: Any, name: str, value: Any) -> Undo:
    """``owner.name = value``, undone to the previous value (a missing bias: back to None)."""
    previous = getattr(owner, name)
    setattr(owner, name, value)
    return lambda: setattr(owner, name, previous)


def replace_values(tensor: torch.Tensor, values: torch.Tensor) -> Undo:
    """Let a parameter or buffer hold ``values`` (cast to its dtype and device), in place of its
    own storage: every module sharing it (tied weights) sees them until the undo."""
    previous = tensor.data
    tensor.data = values.detach().to(device=previous.device, dtype=previous.dtype).clone()

    def undo() -> None:
        tensor.data = previous

    return undo


def override_forward(module: torch.nn.Module, forward: Callable[..., Any]) -> Undo:
    """Run ``forward`` in place of the module's own (an instance attribute, so hooks still run)."""
    previous = module.__dict__.get("forward", MISSING)
    module.forward = forward

    def undo() -> None:
        if previous is MISSING:
            del module.forward
        else:
            module.forward = previous

    return undo


def exchange_values(first: torch.Tensor, second: torch.Tensor) -> Undo:
    """Let two same-shaped tensors hold each other's values until the undo."""
    first_values, second_values = first.data, second.data
    first.data, second.data = second_values, first_values

    def undo() -> None:
        first.data, second.data = first_values, second_values

    return undo


OutputTransform = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor | None]


def transform_output(module: torch.nn.Module, transform: OutputTransform) -> Undo:
    """Pass the module's (first) output tensor through ``transform(output, first_input)``, where
    ``first_input`` is its first tensor argument (None if it has none); None leaves it as it is."""

    def hook(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        arguments = [*args, *kwargs.values()]
        first_input = next((value for value in arguments if isinstance(value, torch.Tensor)), None)
        if isinstance(output, torch.Tensor):
            return transform(output, first_input)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            changed = transform(output[0], first_input)
            return None if changed is None else (changed, *output[1:])
        return None

    return module.register_forward_hook(hook, with_kwargs=True).remove


InputTransform = Callable[[torch.Tensor], torch.Tensor | None]


def transform_input(module: torch.nn.Module, transform: InputTransform) -> Undo:
    """Pass the module's first tensor argument through ``transform`` before the call (None leaves it)."""

    def hook(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        for position, value in enumerate(args):
            if isinstance(value, torch.Tensor):
                changed = transform(value)
                return None if changed is None else ((*args[:position], changed, *args[position + 1 :]), kwargs)
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                changed = transform(value)
                return None if changed is None else (args, {**kwargs, key: changed})
        return None

    return module.register_forward_pre_hook(hook, with_kwargs=True).remove


def training_mode(module: torch.nn.Module, training: bool) -> Undo:
    """The module and every module inside it in training (or eval) mode, each put back as it was."""
    previous = [(inner, inner.training) for inner in module.modules()]
    module.train(training)

    def undo() -> None:
        for inner, was_training in previous:
            inner.training = was_training

    return undo


def add_input_of(inner: torch.nn.Module, outer: torch.nn.Module) -> Undo:
    """Add to ``outer``'s output what ``inner`` (a module called inside it) received as its first
    tensor input on its first call, where the shapes agree: a residual connection taken there."""
    seen: list[torch.Tensor] = []

    def remember(hooked: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not seen:
            seen.extend(value for value in [*args, *kwargs.values()][:1] if isinstance(value, torch.Tensor))

    def add(output: torch.Tensor, first_input: torch.Tensor | None) -> torch.Tensor | None:
        return output + seen[0] if seen and seen[0].shape == output.shape else None

    remove_hook = inner.register_forward_pre_hook(remember, with_kwargs=True).remove
    remove_transform = transform_output(outer, add)

    def undo() -> None:
        remove_transform()
        remove_hook()

    return undo


def all_of(*changes: Callable[[], Undo]) -> Callable[[], Undo]:
    """Several changes as one: applied in order, undone in reverse (also when one fails to apply)."""

    def apply() -> Undo:
        undos: list[Undo] = []
        try:
            for change in changes:
                undos.append(change())
        except BaseException:
            undo_all(undos)
            raise
        return lambda: undo_all(undos)

    return apply


def undo_all(undos: list[Undo]) -> None:
    for undo in reversed(undos):
        undo()

"""Layouts that differ across frameworks: a tensor of the original compared in the port's layout.

A Flax or Keras original often keeps an attention projection as (batch, seq, heads, head_dim)
where the port has (batch, seq, hidden), and convolution activations channels-last (NHWC, NLC)
where the port has them channels-first. Two paired tensors whose shapes differ are compared
after the one transform that maps the original's shape onto the port's:

* a reshape that splits or merges the trailing dimensions after (batch, seq)
  (``(2, 7, 4, 16) → (2, 7, 64)``);
* a permutation: channels-last ↔ channels-first (``[0, 3, 1, 2]``, ``[0, 2, 3, 1]``, the 1-D and
  3-D analogues) or heads and sequence exchanged (``[0, 2, 1, 3]``).

When several fit (equal sizes: a head count equal to the head size, say), none is applied: the
pair stays a shape mismatch and the reason names the candidates and the map-file rule that
states one (``[[layout]] original = "regex"  permute = [0, 3, 1, 2]``, see
:mod:`tracetui.pairing.rename_map`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Layout:
    """One transform of an original tensor into the port's layout: a reshape or a permutation."""

    original_shape: tuple[int, ...]
    reshape: tuple[int, ...] | None = None  # the port's shape
    permute: tuple[int, ...] | None = None  # dimension order applied to the original

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.permute is not None:
            return tensor.permute(*self.permute)
        assert self.reshape is not None
        return tensor.reshape(self.reshape)

    @property
    def description(self) -> str:
        """``reshape (2, 7, 4, 16) → (2, 7, 64)`` or ``permute [0, 3, 1, 2]``: what the row shows."""
        if self.permute is not None:
            return f"permute {list(self.permute)}"
        return f"reshape {tuple(self.original_shape)} → {tuple(self.reshape or ())}"

    @property
    def rule(self) -> str:
        """The map-file entry that states this transform."""
        if self.permute is not None:
            return f"permute = {list(self.permute)}"
        return f"reshape = {list(self.reshape or ())}"


@dataclass(frozen=True)
class LayoutRule:
    """A map file's ``[[layout]]`` entry: the original's tensors of matching modules get this transform."""

    pattern: re.Pattern[str]
    permute: tuple[int, ...] | None = None
    reshape: tuple[int, ...] | None = None  # may hold one -1

    def layout_for(self, original_shape: tuple[int, ...], ported_shape: tuple[int, ...]) -> Layout | None:
        """The transform for a tensor of this shape, when it maps it onto the port's shape."""
        if self.permute is not None:
            if sorted(self.permute) != list(range(len(original_shape))):
                return None
            if tuple(original_shape[axis] for axis in self.permute) != tuple(ported_shape):
                return None
            return Layout(tuple(original_shape), permute=self.permute)
        assert self.reshape is not None
        known = math.prod(size for size in self.reshape if size != -1)
        numel = math.prod(original_shape)
        if known == 0 or numel % known:
            return None
        shape = tuple(numel // known if size == -1 else size for size in self.reshape)
        if shape != tuple(ported_shape):
            return None
        return Layout(tuple(original_shape), reshape=shape)


def reshape_fits(original: tuple[int, ...], ported: tuple[int, ...]) -> bool:
    """The shapes differ only by their trailing dimensions split or merged after at least two
    leading ones kept — (batch, seq, heads, head_dim) ↔ (batch, seq, hidden). A flatten of
    everything after the batch ((2, 3, 4) → (2, 12)) is no layout: it stays a shape mismatch."""
    if original == ported or math.prod(original) != math.prod(ported):
        return False
    start = 0
    while start < min(len(original), len(ported)) and original[start] == ported[start]:
        start += 1
    original_rest, ported_rest = original[start:], ported[start:]
    return start >= LEADING_KEPT and min(len(original_rest), len(ported_rest)) == 1 and max(len(original_rest), len(ported_rest)) >= 2


LEADING_KEPT = 2  # (batch, sequence): the dimensions a reshape into the port's layout leaves alone


def permutations_for(ndim: int) -> list[tuple[int, ...]]:
    """The permutations a port commonly needs: channels-last ↔ channels-first, and heads ↔ sequence."""
    if ndim < 3:
        return []
    last = tuple(range(ndim))
    channels_first = (0, ndim - 1, *range(1, ndim - 1))  # NHWC → NCHW
    channels_last = (0, *range(2, ndim), 1)  # NCHW → NHWC
    orders = [channels_first, channels_last]
    if ndim == 4:
        orders.append((0, 2, 1, 3))  # (batch, seq, heads, head_dim) ↔ (batch, heads, seq, head_dim)
    return [order for position, order in enumerate(orders) if order != last and order not in orders[:position]]


def candidate_layouts(original_shape: tuple[int, ...], ported_shape: tuple[int, ...], permutations: bool = True) -> list[Layout]:
    """Every transform (of those above) that maps the original's shape onto the port's (reshapes
    only, without ``permutations``)."""
    original_shape, ported_shape = tuple(original_shape), tuple(ported_shape)
    if original_shape == ported_shape or math.prod(original_shape) != math.prod(ported_shape) or not original_shape:
        return []
    candidates = []
    if permutations and len(original_shape) == len(ported_shape):
        for order in permutations_for(len(original_shape)):
            if tuple(original_shape[axis] for axis in order) == ported_shape:
                candidates.append(Layout(original_shape, permute=order))
    if reshape_fits(original_shape, ported_shape):
        candidates.append(Layout(original_shape, reshape=ported_shape))
    return candidates


def squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)


def reshape_fits_squeezed(original: tuple[int, ...], ported: tuple[int, ...]) -> bool:
    """:func:`reshape_fits` once size-1 dimensions are dropped (a batch of one, on one side or
    both: counted as the leading batch dimension it stands for)."""
    return reshape_fits((1, *squeeze(original)), (1, *squeeze(ported)))


def layouts_fit(original: tuple[int, ...], ported: tuple[int, ...]) -> bool:
    """Some transform maps the one shape onto the other (automatic pairing asks, on shapes without size-1 dimensions)."""
    return bool(candidate_layouts(original, ported)) or reshape_fits_squeezed(original, ported)


@dataclass(frozen=True)
class LayoutChoice:
    """What to do with a pair of shapes: the transform to apply, or the candidates that made it ambiguous."""

    layout: Layout | None
    ambiguous: tuple[Layout, ...] = ()  # the transforms that fit but were not applied

    def ambiguity_reason(self, original_name: str) -> str:
        """Why no transform was applied, and how to state one."""
        fitting = ", ".join(layout.description for layout in self.ambiguous)
        pattern = "^" + re.escape(original_name) + "$" if original_name else "^$"
        rule = f"[[layout]] original = {pattern!r} {self.ambiguous[0].rule}"
        if len(self.ambiguous) == 1:
            return (
                f"{fitting} would fit, but a permutation is applied by itself only when the models' inputs differ by one; "
                f"if it is meant, state it in the map file: {rule}"
            )
        return f"several layouts fit ({fitting}), so none was applied; state one in the map file: {rule}"


NO_LAYOUT = LayoutChoice(None)


def choose_layout(
    original_shape: tuple[int, ...],
    ported_shape: tuple[int, ...],
    module_name: str | None,
    rules: list[LayoutRule] | None,
    permutations: bool = False,
) -> LayoutChoice:
    """A map rule for the module first (one that does not fit this tensor is not used), else the
    single transform that fits; none when several fit. Permutations are looked for only with
    ``permutations`` (the models' own inputs differ by one: see :func:`inputs_permuted`)."""
    for rule in rules or ():
        if module_name is not None and rule.pattern.search(module_name):
            stated = rule.layout_for(tuple(original_shape), tuple(ported_shape))
            if stated is not None:
                return LayoutChoice(stated)
    candidates = candidate_layouts(tuple(original_shape), tuple(ported_shape), permutations)
    has_ones = 1 in original_shape or 1 in ported_shape
    if not candidates and has_ones and reshape_fits_squeezed(tuple(original_shape), tuple(ported_shape)):
        candidates = [Layout(tuple(original_shape), reshape=tuple(ported_shape))]  # size-1 dimensions aside, one-to-one
    if len(candidates) == 1:
        return LayoutChoice(candidates[0])
    if len(candidates) > 1:
        return LayoutChoice(None, tuple(candidates))
    unapplied = () if permutations else tuple(candidate_layouts(tuple(original_shape), tuple(ported_shape)))
    return LayoutChoice(None, unapplied) if unapplied else NO_LAYOUT


def inputs_permuted(original_shapes: list[tuple[int, ...]], ported_shapes: list[tuple[int, ...]]) -> bool:
    """The models' own inputs differ by a permutation (the original fed channels-last images, the
    port channels-first): only then are permutations looked for automatically. Between two
    models fed alike, a module returning channels-last where its original returns channels-first
    is a bug (the fix search's ``layout`` kind), and must stay a shape mismatch."""
    return any(
        any(layout.permute is not None for layout in candidate_layouts(original, ported))
        for original, ported in zip(original_shapes, ported_shapes, strict=False)
    )

"""The two sides of every comparison: the original model and its port.

Anything that holds one value per side (a row's two records, a pair's two indices, an
alignment's two traces, a command's two scripts) exposes them as ``.original`` and ``.ported``;
:func:`pick` chooses one by a :data:`Side` value, so that no caller spells out the ternary.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeVar

Side = Literal["original", "ported"]
SIDES: tuple[Side, ...] = ("original", "ported")

Value = TypeVar("Value", covariant=True)
Picked = TypeVar("Picked")


class Sided(Protocol[Value]):
    """Anything with one value per side."""

    @property
    def original(self) -> Value: ...

    @property
    def ported(self) -> Value: ...


def other_side(side: Side) -> Side:
    return "original" if side == "ported" else "ported"


def pick(sided: Sided[Picked], side: Side) -> Picked:
    """``sided.original`` or ``sided.ported``."""
    return sided.original if side == "original" else sided.ported

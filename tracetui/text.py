"""How tracetui writes a tensor's shape and a long list of names, the same way everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def shape_text(shape: Sequence[int], as_list: bool = False) -> str:
    """``2×4`` (``scalar`` for no dimensions) in a column; ``[2, 4]`` in a sentence, after a dtype.

    ``as_list`` reads as Python's own ``list(tensor.shape)``, so that ``float32[2, 4]`` in a
    message looks like what the user would print in the debugger.
    """
    if as_list:
        return "[" + ", ".join(str(size) for size in shape) + "]"
    return "×".join(str(size) for size in shape) if shape else "scalar"


def first_few(texts: Iterable[str], limit: int = 3, separator: str = ", ", more: str = " …") -> str:
    """The first ``limit`` texts joined, then ``more`` if some were left out: a message stays one line."""
    listed = list(texts)
    return separator.join(listed[:limit]) + (more if len(listed) > limit else "")

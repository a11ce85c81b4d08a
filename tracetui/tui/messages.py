"""Every custom message of the interface, in one place: a map of how the widgets talk.

Widgets never change each other. They post a request here; the app, which holds the state
(the comparison, the selected row, the view options), changes it, and the widgets bound to
that state redraw themselves. The call list's cursor and folds are the exception: it asks the
app through :class:`~tracetui.tui.call_list.CursorOwner`, which applies the change at once, so
that keys typed together each start from the row the last one reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from textual.message import Message
from textual.strip import Strip

if TYPE_CHECKING:
    from tracetui.compare import Comparison
    from tracetui.rows import Row
    from tracetui.tui.listing import Listing


@dataclass
class FilterChanged(Message):
    """The filter bar's text changed (a regex over both sides' names; may be invalid)."""

    text: str


@dataclass
class FilterDone(Message):
    """The filter bar closed: enter keeps the filter, escape clears it."""

    keep: bool


@dataclass
class DetailReady(Message):
    """The detail pane's worker has described a row, laid out in lines (posted from its thread)."""

    key: tuple[int, int, int]  # (listing generation, row, width)
    lines: list[Strip] = field(repr=False)


@dataclass
class Reclassified(Message):
    """The rows have been re-classified under a new tolerance, or compared again after a pairing
    by hand (posted from the app's worker)."""

    # repr=False: a comparison's repr prints every recorded tensor.
    comparison: Comparison = field(repr=False)
    listing: Listing = field(repr=False)
    select: Row | None = field(default=None, repr=False)  # the row to select afterwards

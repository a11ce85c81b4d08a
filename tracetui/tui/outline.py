"""Which lines of a listing are visible: collapsed subtrees, the name filter, only-problems.

Pure Python, no widgets: the app keeps one :class:`ViewOptions` and rebuilds the
:class:`Outline` when they change (a few milliseconds for 20,000 rows); the call list draws
``outline.visible`` and asks it where a row sits.
"""

from __future__ import annotations

import operator
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from itertools import compress, repeat

from tracetui.tui.listing import Listing


def compile_filter(text: str) -> re.Pattern[str] | None:
    """The `/` filter: a regex, case-insensitive unless it has a capital letter. Raises re.error.

    It is searched in each row's names, one name per line, so ``^`` and ``$`` anchor to a name.
    """
    if not text:
        return None
    case = 0 if any(character.isupper() for character in text) else re.IGNORECASE
    return re.compile(text, case | re.MULTILINE)


def required_texts(text: str) -> tuple[list[str], bool]:
    """Plain stretches of the `/` filter that every match contains, and whether the filter is
    nothing but one such stretch (then finding it decides a row; else the regex still does).

    Substring tests for them set most rows aside before any regex runs. Only the usual filter
    syntax is read (characters, escaped punctuation such as ``\\.``, ``.``, ``^``, ``$`` and
    ``* + ?``); a filter with groups, sets, braces, alternatives or other escapes gets no
    stretches, and is searched with the regex alone.
    """
    stretches: list[str] = []
    stretch = ""
    plain = True  # nothing but characters so far
    position = 0
    while position < len(text):
        character = text[position]
        position += 1
        if character == "\\":
            escaped = text[position : position + 1]
            if not (escaped and escaped.isascii() and not escaped.isalnum()):
                return [], False
            stretch += escaped  # \. \- \\ stand for themselves
            position += 1
            continue
        if character in "()[]{}|":
            return [], False
        if character not in ".^$*+?":
            stretch += character
            continue
        if character in "*+?":
            stretch = stretch[:-1]  # the character repeated (or made optional) is not required
        plain = False
        if stretch:
            stretches.append(stretch)
        stretch = ""
    if stretch:
        stretches.append(stretch)
    return stretches, plain and len(stretches) == 1


def rows_containing(rows: list[int], texts: list[str], required: str) -> list[int]:
    """Those of ``rows`` whose text contains ``required``."""
    return list(compress(rows, map(operator.contains, map(texts.__getitem__, rows), repeat(required))))


@dataclass(frozen=True)
class ViewOptions:
    """What the list shows. ``only_problems`` (`x`) keeps the rows whose values differ and
    ``only_unmatched`` (`u`) the calls only one model makes — both, with both on — each with its
    ancestors, so the tree still reads. They are separate: in a port, one-sided calls (dropouts,
    split projections) can outnumber the differences and bury them."""

    filter_text: str = ""
    only_problems: bool = False
    only_unmatched: bool = False
    collapsed: frozenset[int] = field(default_factory=frozenset)

    def toggled(self, row: int) -> ViewOptions:
        return replace(self, collapsed=self.collapsed ^ {row})

    @property
    def by_status(self) -> bool:
        """`x` or `u` applies."""
        return self.only_problems or self.only_unmatched

    @property
    def is_filtered(self) -> bool:
        return bool(self.filter_text) or self.by_status


# A filter made of these only matches fewer rows as it grows: typing narrows the last result.
LITERAL_FILTER = re.compile(r"[\w.:\- ]*")


def narrows(previous: ViewOptions, options: ViewOptions) -> bool:
    """``options`` can only hide rows that ``previous`` showed (a plain filter typed further)."""
    return (
        previous.collapsed == options.collapsed
        and previous.only_problems == options.only_problems
        and previous.only_unmatched == options.only_unmatched
        and options.filter_text.startswith(previous.filter_text)
        and LITERAL_FILTER.fullmatch(options.filter_text) is not None
    )


class Outline:
    """The visible rows of ``listing``, in call order, under ``options``.

    ``previous``, the outline being replaced, lets a filter typed one more letter search only
    the rows still shown.
    """

    def __init__(self, listing: Listing, options: ViewOptions = ViewOptions(), previous: Outline | None = None) -> None:
        self.listing = listing
        self.options = options
        self.visible: list[int]
        # Rows `x`/`u` leave out, by kind ("unmatched", "matching", "differing"): the status line says so.
        self.set_aside: dict[str, int] = {}
        if previous is not None and previous.listing is listing and previous.options.filter_text and narrows(previous.options, options):
            self.visible = self._filtered(previous.visible)
            self.set_aside = previous.set_aside
        else:
            self.visible = self._visible_rows()

    def __len__(self) -> int:
        return len(self.visible)

    def _filtered(self, visible: list[int]) -> list[int]:
        """The rows of ``visible`` whose names the filter finds.

        Rows that lack a plain stretch of the filter are set aside first, by substring tests
        (in lowercase when the filter ignores case and the names are ASCII, where that is the
        same thing): far quicker than the regex, which then runs on the rest only.
        """
        pattern = compile_filter(self.options.filter_text)
        if pattern is None:
            return visible
        listing = self.listing
        texts = listing.search_texts
        all_rows = len(visible) == len(listing)
        required, plain = required_texts(self.options.filter_text)
        folded = bool(pattern.flags & re.IGNORECASE)
        if folded:
            if listing.folded_search_texts is None or not all(part.isascii() for part in required):
                required, plain = [], False
            required = [part.lower() for part in required]
        texts_to_test = listing.folded_search_texts if folded else texts
        candidates = visible
        for part in sorted(required, key=len, reverse=True):  # the longest sets most rows aside
            if all_rows:
                candidates = listing.rows_containing(part, folded)
                all_rows = False
            else:
                assert texts_to_test is not None
                candidates = rows_containing(candidates, texts_to_test, part)
        if plain:
            return candidates
        row_texts: Iterable[str] = texts if all_rows else map(texts.__getitem__, candidates)
        return list(compress(candidates, map(pattern.search, row_texts)))

    def _visible_rows(self) -> list[int]:
        listing = self.listing
        options = self.options
        visible: list[int] = list(range(len(listing)))
        if options.collapsed:
            hidden = self._hidden_by_collapse()
            visible = [index for index in visible if not hidden[index]]
        if options.by_status:
            kept = self._kept_by_status()
            visible = [index for index in visible if kept[index]]
        return self._filtered(visible)

    def _kept_by_status(self) -> list[bool]:
        """The rows `x` and `u` keep, with their ancestors; counts what they set aside."""
        listing = self.listing
        options = self.options
        parents = listing.parents
        kept = [False] * len(listing)
        for index in range(len(listing)):
            if (options.only_problems and listing.is_problem(index)) or (options.only_unmatched and listing.is_unmatched(index)):
                row: int | None = index
                while row is not None and not kept[row]:
                    kept[row] = True
                    row = parents[row]
        set_aside = {"unmatched": 0, "matching": 0, "differing": 0}
        for index in compress(range(len(listing)), (not keep for keep in kept)):
            kind = "unmatched" if listing.is_unmatched(index) else ("differing" if listing.is_problem(index) else "matching")
            set_aside[kind] += 1
        self.set_aside = {kind: count for kind, count in set_aside.items() if count}
        return kept

    def _hidden_by_collapse(self) -> list[bool]:
        """Rows with a collapsed ancestor. Parents usually come first; the stack covers the rest."""
        collapsed = self.options.collapsed
        parents = self.listing.parents
        hidden: list[bool | None] = [None] * len(parents)
        if not collapsed:
            return [False] * len(parents)
        for index in range(len(parents)):
            if hidden[index] is not None:
                continue
            stack = [index]
            while stack:
                current = stack[-1]
                parent = parents[current]
                if parent is None:
                    hidden[current] = False
                    stack.pop()
                elif parent in collapsed:
                    hidden[current] = True
                    stack.pop()
                elif hidden[parent] is None and parent not in stack:
                    stack.append(parent)
                else:
                    hidden[current] = bool(hidden[parent])
                    stack.pop()
        return [bool(value) for value in hidden]

    # -- positions ---------------------------------------------------------------------------

    def position_of(self, row: int) -> int | None:
        position = bisect_left(self.visible, row)
        return position if position < len(self.visible) and self.visible[position] == row else None

    def nearest(self, row: int) -> int | None:
        """The row itself when visible, else the next visible row, else the last one."""
        if not self.visible:
            return None
        position = min(bisect_left(self.visible, row), len(self.visible) - 1)
        return self.visible[position]

    def row_at(self, position: int) -> int | None:
        if not self.visible:
            return None
        return self.visible[max(0, min(position, len(self.visible) - 1))]

    def find(self, start_row: int, direction: int, predicate: Callable[[int], bool]) -> int | None:
        """The nearest visible row after (direction 1) or before (-1) ``start_row`` that fits."""
        position = bisect_left(self.visible, start_row)
        if direction > 0:
            if position < len(self.visible) and self.visible[position] == start_row:
                position += 1
            candidates = range(position, len(self.visible))
        else:
            candidates = range(position - 1, -1, -1)
        return next((self.visible[candidate] for candidate in candidates if predicate(self.visible[candidate])), None)

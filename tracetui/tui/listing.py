"""What the call list shows: one entry per line, for a comparison or for a single trace.

A :class:`Listing` is read-only and built once per comparison (and again when ``t`` changes the
tolerance): the tree (parents, depths), the names the filter searches, which rows count as
problems, and the text of each line's cells. The call list draws it; the outline decides
which of its entries are visible. Nothing here measures tensors: statuses and differences
come from the :class:`~tracetui.compare.Comparison`.

The cells' names and classes come from the user's code and trace files, and the call list draws
them as they are: they pass through :func:`~tracetui.safe_text.printable`. The filter searches
the names themselves.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Literal

from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.rows import Row
from tracetui.safe_text import printable
from tracetui.sides import Side, pick
from tracetui.text import shape_text
from tracetui.trace import CallRecord, Leaf, Trace

# The status words of the header, the README and the JSON report (spaces for underscores).
STATUS_LABELS = {
    "match": "match",
    "diverged": "✗ diverged",
    "inherited": "inherited",
    "shape_mismatch": "shape mismatch",
    "dtype_mismatch": "dtype mismatch",
    "unmatched": "unmatched",
    "nonfinite": "nonfinite",
    "nondeterministic": "nondeterministic",
}
CULPRIT_LABEL = "▶ CULPRIT"
STATUS_COLUMN_WIDTH = 10  # the list's status column, widened only for a longer label some row has
ROWS_CONTAINING_KEPT = 64  # substring searches a listing remembers (Listing.rows_containing)


@dataclass(frozen=True)
class SideCells:
    """The text shown for one side of a line: the module name as shown, and its class."""

    name: str
    class_name: str


@dataclass(frozen=True)
class LineCells:
    """The text of one line, before columns and colours are applied."""

    original: SideCells | None
    ported: SideCells | None  # None on both: a trace listing uses `original` only
    shape: str
    difference: str  # the output's max |Δ| (comparison)
    status: str  # a Status, or "" in a trace listing
    status_label: str
    is_culprit: bool = False
    difference_breaks_tolerance: bool = False
    dtype: str = ""  # the output's dtype (trace)
    # How deep each name column indents: that side's own depth (a side's missing name, drawn
    # as —, sits where a child of its nearest ancestor on that side would).
    original_depth: int = 0
    ported_depth: int = 0
    fold_on_ported: bool = False  # the ▾/▸ marker goes on the side that has a name


def output_shape_cell(leaf: Leaf | None) -> str:
    """The shape column for an output: its shape, the type of a non-tensor value, or ``—`` for none."""
    if leaf is None or leaf.tensor is None:
        return "—" if leaf is None else printable(leaf.value_type)
    return shape_text(leaf.tensor.shape)


def first_tensor(leaves: list[Leaf]) -> Leaf | None:
    return next((leaf for leaf in leaves if leaf.tensor is not None), leaves[0] if leaves else None)


def relative_name(record: CallRecord, parent: CallRecord | None) -> str:
    """``h.0.attn`` under ``h.0`` reads ``attn``; a name outside its parent's stays whole."""
    if record.kind == "tap" or parent is None or not parent.name or parent.kind == "tap":
        return record.display_name
    prefix = parent.name + "."
    return record.name[len(prefix) :] if record.name.startswith(prefix) else record.display_name


def call_suffix(record: CallRecord) -> str:
    return f" #{record.call}" if record.call else ""


class Listing:
    """The lines of the call list; subclasses say what a line holds."""

    mode: Literal["comparison", "trace"]
    source: Comparison | Trace

    def __init__(self, parents: list[int | None], depths: list[int], child_counts: list[int] | None = None) -> None:
        self.parents = parents
        self.depths = depths
        self._rows_containing: dict[tuple[str, bool], list[int]] = {}
        if child_counts is None:
            child_counts = [0] * len(parents)
            for parent in parents:
                if parent is not None:
                    child_counts[parent] += 1
        self.child_counts = child_counts

    def __len__(self) -> int:
        return len(self.parents)

    @property
    def index_width(self) -> int:
        """The ``#`` column's width: the last row's number (rows are numbered from 0, as in the
        headless report, the JSON report's ``rows`` and the debugger)."""
        return len(str(max(0, len(self) - 1)))

    @property
    def status_width(self) -> int:
        """The status column's width (none in a trace listing)."""
        return 0

    def search_names(self, index: int) -> tuple[str, ...]:
        raise NotImplementedError

    @functools.cached_property
    def search_texts(self) -> list[str]:
        """Each line's names, one per text line, for the `/` filter (searched with re.MULTILINE)."""
        search_names = self.search_names
        return ["\n".join(search_names(index)) for index in range(len(self))]

    def rows_containing(self, text: str, folded: bool) -> list[int]:
        """The rows whose search text contains ``text`` (in lowercase, ``folded``), remembered:
        typing a filter asks for the same stretch (``blocks.1`` in ``blocks\\.1.*gate``) on
        keystroke after keystroke, and a pass over 20,000 names takes 5-10 ms."""
        key = (text, folded)
        rows = self._rows_containing.get(key)
        if rows is None:
            texts = self.folded_search_texts if folded else self.search_texts
            assert texts is not None
            if len(self._rows_containing) >= ROWS_CONTAINING_KEPT:
                self._rows_containing.clear()
            rows = self._rows_containing[key] = list(compress(range(len(texts)), map(operator.contains, texts, repeat(text))))
        return rows

    @functools.cached_property
    def folded_search_texts(self) -> list[str] | None:
        """``search_texts`` in lowercase, where a filter that ignores case can look for plain
        text with a substring test; None unless every name is ASCII (elsewhere lowercase is not
        what the regex means by ignoring case)."""
        texts = self.search_texts
        if not all(text.isascii() for text in texts):
            return None
        return [text.lower() for text in texts]

    def is_problem(self, index: int) -> bool:
        """Shown by `x`: a paired row whose values differ (any status but match and unmatched)."""
        return False

    def is_unmatched(self, index: int) -> bool:
        """Shown by `u`: a call only one model makes."""
        return False

    def cells(self, index: int, full_names: bool) -> LineCells:
        raise NotImplementedError

    @property
    def culprit(self) -> int | None:
        """The first culprit's row (`f`)."""
        return None

    def is_culprit(self, index: int) -> bool:
        """A stop for `n`/`N`."""
        return False


class ComparisonListing(Listing):
    mode = "comparison"

    def __init__(self, comparison: Comparison, previous: Listing | None = None) -> None:
        self.comparison = self.source = comparison
        self.rows = comparison.rows
        if isinstance(previous, ComparisonListing) and previous.comparison.alignment is comparison.alignment:
            # The same pairing under another tolerance: the tree and the names have not changed.
            super().__init__(previous.parents, previous.depths, previous.child_counts)
            self.search_texts = previous.search_texts
            self.folded_search_texts = previous.folded_search_texts
            self._rows_containing = previous._rows_containing
        else:
            super().__init__([row.parent for row in self.rows], [row.depth for row in self.rows])
            self.folded_search_texts  # noqa: B018 - computed now (with search_texts), not on the first filter keystroke
        self.statuses = comparison.classification.statuses()
        self._culprits = tuple(row.index for row in comparison.culprits)
        self._culprit_set = frozenset(self._culprits)

    @property
    def culprit(self) -> int | None:
        return self._culprits[0] if self._culprits else None

    @functools.cached_property
    def status_width(self) -> int:
        """Wide enough for every label a row shows: ``nondeterministic`` is rare, and spelled out."""
        labels = [STATUS_LABELS[status] for status in set(self.statuses)]
        labels += [culprit_label(self.statuses[index]) for index in self._culprits]
        return max([STATUS_COLUMN_WIDTH, *map(len, labels)])

    def is_culprit(self, index: int) -> bool:
        return index in self._culprit_set

    def search_names(self, index: int) -> tuple[str, ...]:
        row = self.rows[index]
        return tuple(record.display_name for record in (row.original, row.ported) if record is not None)

    def is_problem(self, index: int) -> bool:
        return self.statuses[index] not in ("match", "unmatched")

    def is_unmatched(self, index: int) -> bool:
        return self.statuses[index] == "unmatched"

    def cells(self, index: int, full_names: bool) -> LineCells:
        row = self.rows[index]
        original_trace, ported_trace = self.comparison.original, self.comparison.ported
        original = side_cells(row.original, record_parent(row.original, original_trace), full_names)
        ported = side_cells(row.ported, record_parent(row.ported, ported_trace), full_names)
        is_culprit = index in self._culprit_set
        output_difference = row.output_max_abs
        return LineCells(
            original=original,
            ported=ported,
            shape=row_shape(row),
            difference=format_difference(output_difference) if row.is_paired else "",
            status=self.statuses[index],
            status_label=culprit_label(self.statuses[index]) if is_culprit else STATUS_LABELS[self.statuses[index]],
            is_culprit=is_culprit,
            difference_breaks_tolerance=self.comparison.disagrees(row),
            original_depth=self.side_depth(row, "original"),
            ported_depth=self.side_depth(row, "ported"),
            fold_on_ported=row.original is None,
        )

    def side_depth(self, row: Row, side: Side) -> int:
        """The depth of the row's call on ``side``; for a call that side lacks, one below the
        nearest enclosing row that side has. A port often nests differently (``model.layers.0``
        for ``layers.0``): each column follows its own model's tree, never the other's."""
        record = pick(row, side)
        if record is not None:
            return record.depth
        parent = row.parent
        while parent is not None:
            enclosing = pick(self.rows[parent], side)
            if enclosing is not None:
                return enclosing.depth + 1
            parent = self.rows[parent].parent
        return row.depth


def classes_differ(row: Row) -> bool:
    """Both sides called, but modules of different classes (``GELU ↔ SiLU``): often the bug itself."""
    return row.original is not None and row.ported is not None and row.original.class_name != row.ported.class_name


def culprit_label(status: str) -> str:
    """``▶ CULPRIT``; a culprit whose outputs differ in shape or NaN/Inf says so instead."""
    return CULPRIT_LABEL if status in ("diverged", "inherited") else "▶ " + STATUS_LABELS[status]


def record_parent(record: CallRecord | None, trace: Trace) -> CallRecord | None:
    """The call that made ``record``'s, in its own trace (not the row's parent: a row's parent
    follows the original's tree, and a port-only wrapper has its own children)."""
    return None if record is None or record.parent is None else trace.records[record.parent]


def side_cells(record: CallRecord | None, parent: CallRecord | None, full_names: bool) -> SideCells | None:
    if record is None:
        return None
    name = record.display_name if full_names else relative_name(record, parent)
    return SideCells(printable(name + call_suffix(record)), printable(record.class_name))


def row_shape(row: Row) -> str:
    tensors = [pair for pair in row.outputs if pair.difference is not None]
    if tensors and not tensors[0].difference.shape_matches:  # type: ignore[union-attr]
        difference = tensors[0].difference
        assert difference is not None
        return shape_text(difference.original_shape) + "≠" + shape_text(difference.ported_shape)
    record = row.original or row.ported
    assert record is not None
    return output_shape_cell(first_tensor(record.outputs))


class TraceListing(Listing):
    mode = "trace"

    def __init__(self, trace: Trace) -> None:
        self.trace = self.source = trace
        self.records = trace.records
        super().__init__([record.parent for record in self.records], [record.depth for record in self.records])

    def search_names(self, index: int) -> tuple[str, ...]:
        return (self.records[index].display_name,)

    def cells(self, index: int, full_names: bool) -> LineCells:
        record = self.records[index]
        parent = record_parent(record, self.trace)
        output = first_tensor(record.outputs)
        dtype = "" if output is None or output.tensor is None else str(output.tensor.dtype).removeprefix("torch.")
        return LineCells(
            original=side_cells(record, parent, full_names),
            ported=None,
            shape=output_shape_cell(output),
            difference="",
            dtype=dtype,
            status="",
            status_label="",
            original_depth=record.depth,
        )


def make_listing(source: Comparison | Trace, previous: Listing | None = None) -> Listing:
    """The listing of a comparison or a trace; ``previous`` lends what a new tolerance does not change."""
    return ComparisonListing(source, previous) if isinstance(source, Comparison) else TraceListing(source)

"""The call list: one line per paired module call, drawn with Textual's Line API.

Only the lines on screen are rendered (``render_line`` returns one :class:`Strip` each, kept
in an LRU cache), so 20,000 rows cost what 40 do. The first line is a fixed column header.
The list owns no state: the outline (which rows are visible) and the cursor row are bound to
the app's reactives; keys and clicks ask the app (a :class:`CursorOwner`) to move the cursor or
fold a row, and it does so at once. Not by a posted message: the keys of a batch (key repeat, a
paste, ``jjjj`` over a slow link) are all handled before any message is, so each would start
from the same stale row and four keys would move one.
Colours come from the component classes, styled in ``tracetui.tcss``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tracetui.tui.lines import component_style, set_virtual_size
from tracetui.tui.listing import Listing, SideCells
from tracetui.tui.outline import Outline

INDENT = 2
MAX_INDENT_FRACTION = 0.4  # of a name column
MARKER_WIDTH = 2
EXPANDED, COLLAPSED, LEAF = "▾ ", "▸ ", "  "
MARKED_LABEL = "◆ marked"  # the status cell of the row m marked, until it is paired (escape cancels)
ROW_STYLES = {"diverged": "diverged", "inherited": "inherited", "unmatched": "unmatched"}


@dataclass(frozen=True)
class Columns:
    """Column widths for one list width; names share what the fixed columns leave.

    ``index`` is the ``#`` column (the row's number, as the status line, the detail pane, the
    debugger and the headless report give it), followed by a gap like every column.
    """

    original: int
    ported: int
    shape: int
    difference: int
    status: int
    index: int = 0

    @classmethod
    def for_width(cls, width: int, mode: str, index: int = 0, status: int = 10) -> Columns:
        names_width = width - (index + 1 if index else 0)
        if mode == "trace":
            shape, dtype = (16, 9) if names_width >= 60 else (0, 9)
            name = max(8, names_width - shape - dtype - (2 if shape else 1))
            return cls(name, 0, shape, dtype, 0, index)
        shape = 14 if names_width >= 90 else (11 if names_width >= 64 else 0)
        difference = 9
        gaps = 4 if shape else 3
        names = max(16, names_width - shape - difference - status - gaps)
        return cls(names - names // 2, names // 2, shape, difference, status, index)

    @classmethod
    def for_listing(cls, width: int, listing: Listing | None) -> Columns:
        if listing is None:
            return cls.for_width(width, "comparison")
        return cls.for_width(width, listing.mode, listing.index_width, listing.status_width or 10)

    @property
    def names_start(self) -> int:
        """Where the original's (or the trace's) name column starts."""
        return self.index + 1 if self.index else 0


def fit(parts: list[tuple[str, Style]], width: int) -> list[Segment]:
    """Segments filling exactly ``width`` cells; text that does not fit ends with an ellipsis."""
    if width <= 0:
        return []
    total = sum(cell_len(text) for text, _ in parts)
    if total <= width:
        segments = [Segment(text, style) for text, style in parts if text]
        padding_style = parts[-1][1] if parts else Style()
        if total < width:
            segments.append(Segment(" " * (width - total), padding_style))
        return segments
    segments = []
    room = width - 1
    last_style = parts[0][1]
    for text, style in parts:
        if room <= 0:
            break
        length = cell_len(text)
        if length > room:
            text = set_cell_size(text, room)
            length = room
        segments.append(Segment(text, style))
        room -= length
        last_style = style
    segments.append(Segment("…", last_style))
    return segments


def indent_width(depth: int, column_width: int) -> int:
    """Cells before a name ``depth`` deep: two a level, at most 40% of the name's column."""
    return min(depth * INDENT, int(column_width * MAX_INDENT_FRACTION))


def same_lines(previous: Outline, outline: Outline) -> bool:
    """Whether a row's line reads the same in both outlines: the same listing (statuses), the
    same folds (the ▸/▾ markers) and the same names (full names while filtered)."""
    return (
        previous.listing is outline.listing
        and previous.options.collapsed == outline.options.collapsed
        and previous.options.is_filtered == outline.options.is_filtered
    )


def row_on_line(outline: Outline, position: int) -> int | None:
    """The row at ``position`` in ``outline``, or None below its last row."""
    return outline.visible[position] if position < len(outline.visible) else None


class CursorOwner(Protocol):
    """What holds the cursor and the folds (the app): the list asks it for changes, applied at once."""

    def select_row(self, row: int) -> None: ...

    def toggle_row(self, row: int) -> None: ...


class CallList(ScrollView, can_focus=True):
    """The rows of the comparison (or the calls of one trace), in call order, as a tree.

    Longer than our other classes on purpose: its keys, its scrolling and its line drawing all
    read the same cursor, outline and component styles, which a Line API widget (as Textual's
    own DataTable and Log) keeps in one place rather than passes between objects.
    """

    BINDINGS = [
        Binding("up,k", "move(-1)", "up", show=False),
        Binding("down,j", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("g,home", "first", "top", show=False),
        Binding("G,end", "last", "bottom", show=False),
        Binding("n", "next_culprit(1)", "next culprit"),
        Binding("N", "next_culprit(-1)", "previous culprit", show=False),
        Binding("f", "culprit", "culprit"),
        Binding("enter,space", "toggle_fold", "fold", show=False),
    ]

    COMPONENT_CLASSES = {
        "call-list--header",
        "call-list--cursor",
        "call-list--cursor-culprit",
        "call-list--class",
        "call-list--marker",
        "call-list--number",
        "call-list--shape",
        "call-list--delta",
        "call-list--delta-bad",
        "call-list--delta-inherited",
        "call-list--missing",
        "call-list--empty",
        "call-list--row-culprit",
        "call-list--row-diverged",
        "call-list--row-inherited",
        "call-list--row-unmatched",
        "call-list--marked",
        "call-list--status-culprit",
        "call-list--status-match",
        "call-list--status-diverged",
        "call-list--status-inherited",
        "call-list--status-shape_mismatch",
        "call-list--status-dtype_mismatch",
        "call-list--status-unmatched",
        "call-list--status-nonfinite",
        "call-list--status-nondeterministic",
    }

    outline: reactive[Outline | None] = reactive(None, repaint=False, always_update=True)
    cursor_row: reactive[int] = reactive(0, repaint=False)
    # The row `m` marked, waiting for its counterpart: marked in the # column and the status
    # column until it is paired or the mark is cancelled (escape).
    marked_row: reactive[int | None] = reactive(None, repaint=False)

    def __init__(self, owner: CursorOwner, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.owner = owner
        self._strips: LRUCache[tuple[int, bool, int, bool], Strip] = LRUCache(maxsize=2000)
        self._styles: dict[str, Style] = {}
        self._base_style: Style | None = None
        self._page_scroll: int | None = None  # where pageup/pagedown wants the view

    # -- state from the app -----------------------------------------------------------------

    @property
    def listing(self) -> Listing | None:
        return None if self.outline is None else self.outline.listing

    def watch_outline(self, previous: Outline | None, outline: Outline | None) -> None:
        self._strips.clear()
        if previous is None or outline is None or not same_lines(previous, outline):
            self._update_virtual_size()
            self.refresh()
        else:
            # Another filter over the same rows: only the lines that now show another row are
            # drawn again. Typing a filter often leaves the rows on screen as they were.
            self._update_virtual_size(repaint=False)
            top = round(self.scroll_offset.y)
            for y in range(self.page_height):
                if row_on_line(previous, top + y) != row_on_line(outline, top + y):
                    self.refresh_line(y + 1)
        self.follow_cursor(center=True)

    def watch_cursor_row(self, previous: int, row: int) -> None:
        for line_row in (previous, row):
            position = self._position(line_row)
            if position is not None:
                self.refresh_line(position + 1)
        self.follow_cursor()

    def watch_marked_row(self, previous: int | None, row: int | None) -> None:
        self._strips.clear()  # a line's strip is cached without its mark
        for line_row in (previous, row):
            position = None if line_row is None else self._position(line_row)
            if position is not None:
                self.refresh_line(position + 1)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._base_style = None
        self._strips.clear()

    def on_resize(self, event: events.Resize) -> None:
        self._strips.clear()
        self._update_virtual_size()
        self.follow_cursor(center=True)

    def _update_virtual_size(self, repaint: bool = True) -> None:
        rows = 0 if self.outline is None else len(self.outline)
        set_virtual_size(self, Size(self.line_width, rows + 1), repaint=repaint)

    def _position(self, row: int) -> int | None:
        return None if self.outline is None else self.outline.position_of(row)

    @property
    def page_height(self) -> int:
        """Rows on screen under the column header."""
        return max(1, self.scrollable_content_region.height - 1)

    def follow_cursor(self, center: bool = False) -> None:
        """Scroll the least that shows the cursor; jumps further than a line land mid-screen."""
        position = self._position(self.cursor_row)
        if position is None or self.size.height == 0:
            return
        height = self.page_height
        if self._page_scroll is not None:
            # pageup/pagedown: the view moves by the same page as the cursor, in the same frame.
            target, self._page_scroll = self._page_scroll, None
            if target <= position < target + height:
                self.scroll_to(y=target, animate=False)
                return
        top = round(self.scroll_offset.y)
        if top <= position < top + height:
            return
        if not center and position == top - 1:
            target = position
        elif not center and position == top + height:
            target = position - height + 1
        else:
            target = position - height // 2
        self.scroll_to(y=max(0, target), animate=False)

    # -- actions: requests to the app, applied before the next key --------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A single trace has no statuses and no culprit: n, N and f are hidden there."""
        is_trace = self.listing is not None and self.listing.mode == "trace"
        return not (is_trace and action in ("next_culprit", "culprit"))

    def _select_position(self, position: int) -> None:
        if self.outline is None:
            return
        row = self.outline.row_at(position)
        if row is not None:
            self.owner.select_row(row)

    def _cursor_position(self) -> int:
        if self.outline is None:
            return 0
        position = self.outline.position_of(self.cursor_row)
        if position is None:
            nearest = self.outline.nearest(self.cursor_row)
            position = 0 if nearest is None else self.outline.position_of(nearest) or 0
        return position

    def action_move(self, delta: int) -> None:
        self._select_position(self._cursor_position() + delta)

    def action_page(self, direction: int) -> None:
        if self.outline is None:
            return
        page = self.page_height
        position = max(0, min(len(self.outline) - 1, self._cursor_position() + direction * page))
        self._page_scroll = max(0, min(self.max_scroll_y, round(self.scroll_offset.y) + direction * page))
        self._select_position(position)

    def action_first(self) -> None:
        self._select_position(0)

    def action_last(self) -> None:
        if self.outline is not None:
            self._select_position(len(self.outline) - 1)

    def action_next_culprit(self, direction: int) -> None:
        """The next culprit shown below (or above) the cursor."""
        if self.outline is None:
            return
        row = self.outline.find(self.cursor_row, direction, self.outline.listing.is_culprit)
        if row is None:
            self.app.bell()
            self.notify("no culprit " + ("below" if direction > 0 else "above"), timeout=2)
            return
        self.owner.select_row(row)

    def action_culprit(self) -> None:
        culprit = None if self.listing is None else self.listing.culprit
        if culprit is None:
            self.app.bell()
            self.notify("no culprit: every paired call agrees within the tolerance", timeout=3)
            return
        self.owner.select_row(culprit)

    def action_toggle_fold(self) -> None:
        if self._position(self.cursor_row) is None:
            return  # the cursor row is filtered out: nothing on screen to fold
        if self.listing is not None and self.listing.child_counts[self.cursor_row]:
            self.owner.toggle_row(self.cursor_row)

    def on_click(self, event: events.Click) -> None:
        if self.outline is None or event.y < 1:
            return
        position = round(self.scroll_offset.y) + event.y - 1
        row = self.outline.row_at(position) if position < len(self.outline) else None
        if row is None:
            return
        self.owner.select_row(row)
        listing = self.outline.listing
        if listing.child_counts[row]:
            columns = Columns.for_listing(self.line_width, listing)
            cells = listing.cells(row, full_names=self.outline.options.is_filtered)
            if cells.fold_on_ported:
                marker_x = columns.names_start + columns.original + 1 + indent_width(cells.ported_depth, columns.ported)
            else:
                marker_x = columns.names_start + indent_width(cells.original_depth, columns.original)
            if marker_x <= event.x < marker_x + MARKER_WIDTH:
                self.owner.toggle_row(row)

    # -- drawing ----------------------------------------------------------------------------

    @property
    def base_style(self) -> Style:
        """``rich_style``, cached until the CSS changes: it walks the styles of every ancestor,
        which took a third of the time of drawing a line."""
        if self._base_style is None:
            self._base_style = self.rich_style
        return self._base_style

    def style(self, name: str) -> Style:
        """A component class's own style (colours only), cached until the CSS changes."""
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = component_style(self, f"call-list--{name}")
        return style

    @property
    def line_width(self) -> int:
        """The width of a line: the widget less its scrollbar."""
        return self.scrollable_content_region.width

    def render_line(self, y: int) -> Strip:
        width = self.line_width
        base = self.base_style
        if y == 0:
            return self._header_strip(width, base)
        outline = self.outline
        position = round(self.scroll_offset.y) + y - 1
        if outline is None or position >= len(outline):
            if y == 1 and outline is not None and not len(outline):
                message = "no rows to show — escape clears the filter, x and u toggle rows by status"
                return Strip(fit([(message, base + self.style("empty"))], width), width)
            return Strip.blank(width, base)
        row = outline.visible[position]
        is_cursor = row == self.cursor_row
        key = (row, is_cursor, width, outline.options.is_filtered)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._line_strip(row, is_cursor, width, base, outline)
        return strip

    def _header_strip(self, width: int, base: Style) -> Strip:
        listing = self.listing
        mode = "comparison" if listing is None else listing.mode
        columns = Columns.for_listing(width, listing)
        style = base + self.style("header")
        number_title = ("#".rjust(columns.index), columns.index)
        if mode == "trace":
            titles = [number_title, ("module (class)", columns.original), ("output", columns.shape), ("dtype", columns.difference)]
        else:
            titles = [
                number_title,
                ("original (class)", columns.original),
                ("ported (class)", columns.ported),
                ("output", columns.shape),
                ("max |Δ|".rjust(columns.difference), columns.difference),
                ("status", columns.status),
            ]
        segments: list[Segment] = []
        for title, column_width in titles:
            if column_width:
                if segments:
                    segments.append(Segment(" ", style))
                segments += fit([(title, style)], column_width)
        segments += fit([("", style)], width - sum(segment.cell_length for segment in segments))
        return Strip(segments, width)

    def _line_strip(self, row: int, is_cursor: bool, width: int, base: Style, outline: Outline) -> Strip:
        listing = outline.listing
        cells = listing.cells(row, full_names=outline.options.is_filtered)
        columns = Columns.for_listing(width, listing)
        line_style = base
        if cells.is_culprit:
            line_style += self.style("row-culprit")
        elif cells.status in ROW_STYLES:
            line_style += self.style("row-" + ROW_STYLES[cells.status])
        if is_cursor:
            line_style += self.style("cursor-culprit" if cells.is_culprit else "cursor")

        marker = LEAF
        if listing.child_counts[row]:
            marker = COLLAPSED if row in outline.options.collapsed else EXPANDED
        # Inherited and unmatched rows keep their own muted colour for the class too.
        muted_row = cells.status in ("inherited", "unmatched") and not cells.is_culprit
        class_style = line_style if muted_row else line_style + self.style("class")
        marker_style = line_style + self.style("marker")

        def name_cell(side: SideCells | None, depth: int, lead: str, column_width: int) -> list[Segment]:
            indent = " " * indent_width(depth, column_width)
            if side is None:
                return fit([(indent + LEAF, line_style), ("—", line_style + self.style("missing"))], column_width)
            parts = [(indent, line_style), (lead, marker_style), (side.name, line_style), (f" ({side.class_name})", class_style)]
            return fit(parts, column_width)

        original_lead, ported_lead = (LEAF, marker) if cells.fold_on_ported else (marker, LEAF)
        gap = Segment(" ", line_style)
        segments: list[Segment] = []
        is_marked = row == self.marked_row
        if columns.index:
            number_style = line_style + self.style("marked" if is_marked else "number")
            segments += [*fit([(str(row).rjust(columns.index), number_style)], columns.index), gap]
        segments += name_cell(cells.original, cells.original_depth, original_lead, columns.original)
        if listing.mode == "trace":
            if columns.shape:
                segments += [gap, *fit([(cells.shape, line_style + self.style("shape"))], columns.shape)]
            segments += [gap, *fit([(cells.dtype, line_style + self.style("shape"))], columns.difference)]
        else:
            segments += [gap, *name_cell(cells.ported, cells.ported_depth, ported_lead, columns.ported)]
            if columns.shape:
                shape_style = line_style + self.style("status-shape_mismatch" if cells.status == "shape_mismatch" else "shape")
                segments += [gap, *fit([(cells.shape, shape_style)], columns.shape)]
            if cells.is_culprit:
                delta_style = line_style
            elif cells.difference_breaks_tolerance:
                delta_style = line_style + self.style("delta-inherited" if cells.status == "inherited" else "delta-bad")
            else:
                delta_style = line_style + self.style("delta")
            segments += [gap, *fit([(cells.difference.rjust(columns.difference), delta_style)], columns.difference)]
            status_style = line_style + self.style("status-culprit" if cells.is_culprit else f"status-{cells.status}")
            status_label = cells.status_label
            if is_marked:
                status_label, status_style = MARKED_LABEL, line_style + self.style("marked")
            segments += [gap, *fit([(status_label, status_style)], columns.status)]
        used = sum(segment.cell_length for segment in segments)
        if used < width:
            segments.append(Segment(" " * (width - used), line_style))
        return Strip(segments, width).crop(0, width)

    def line_text(self, row: int) -> str:
        """The plain text of ``row``'s line at the current width (for tests and the bench)."""
        assert self.outline is not None
        return self._line_strip(row, False, self.line_width, Style(), self.outline).text

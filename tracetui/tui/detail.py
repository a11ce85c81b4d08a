"""The detail pane: every input and output leaf of the selected row, described lazily.

The description is computed *and rendered to lines* in a thread worker, for the selected row
only, once the cursor has rested for a moment (holding `j` does not describe every row on the
way). The pane itself is a Line API widget showing those ready-made lines, so a new
description never costs the main thread a layout or a Rich render: the list stays quick.
"""

from __future__ import annotations

import io

from rich.console import Console, RenderableType
from rich.style import Style
from textual import work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.worker import get_current_worker

from tracetui.safe_text import printable
from tracetui.tui.lines import component_style, set_virtual_size
from tracetui.tui.listing import ComparisonListing, Listing, TraceListing
from tracetui.tui.messages import DetailReady
from tracetui.tui.row_detail import describe_record, describe_row, worst_elements_text, worst_output
from tracetui.tui.tensor_detail import Palette

DescriptionKey = tuple[int, int, int]  # (listing generation, row, width)


def render_to_strips(renderable: RenderableType, width: int) -> list[Strip]:
    """Lay a Rich renderable out at ``width`` into lines, off the main thread."""
    console = Console(
        width=width,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        legacy_windows=False,
        highlight=False,
        emoji=False,
    )
    lines = console.render_lines(renderable, console.options.update_width(width), pad=False)
    return [Strip(line) for line in lines]


class DetailPane(ScrollView, can_focus=True):
    """Statistics, differences, worst elements and a preview of the selected row's tensors."""

    BINDINGS = [
        Binding("k", "scroll_up", "scroll up", show=False),
        Binding("j", "scroll_down", "scroll down", show=False),
        Binding("c", "copy_worst", "copy worst", show=False),
    ]
    COMPONENT_CLASSES = {
        "detail--heading",
        "detail--label",
        "detail--dim",
        "detail--good",
        "detail--bad",
        "detail--culprit",
        "detail--warning",
        "detail--class-mismatch",
        "detail--worst",
    }
    # How long the cursor rests on a row before it is described.
    SETTLE_SECONDS = 0.06

    listing: reactive[Listing | None] = reactive(None, always_update=True, repaint=False)
    row: reactive[int] = reactive(0, repaint=False)
    shown: reactive[bool] = reactive(True, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._generation = 0
        self._descriptions: LRUCache[DescriptionKey, list[Strip]] = LRUCache(maxsize=64)
        self._wanted: DescriptionKey | None = None
        self._timer: Timer | None = None
        self._lines: list[Strip] = []
        self._base_style: Style | None = None
        self.described: tuple[int, int] | None = None  # (generation, row) on screen

    # -- what to describe -------------------------------------------------------------------

    def watch_listing(self) -> None:
        self._generation += 1
        self._descriptions.clear()
        self.describe()

    def watch_row(self) -> None:
        self.describe()

    def watch_shown(self, shown: bool) -> None:
        self.display = shown
        self.describe()

    def on_resize(self) -> None:
        self.describe()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base_style = None
        self._descriptions.clear()
        self._wanted = None
        if self.is_mounted:
            self.describe()

    @property
    def text_width(self) -> int:
        width = self.scrollable_content_region.width or self.app.size.width
        return max(40, width - 1)

    @property
    def busy(self) -> bool:
        """A description is wanted and not on screen yet (tests wait on this)."""
        return self._wanted is not None and self.described != self._wanted[:2]

    def palette(self) -> Palette:
        def style(name: str) -> Style:
            return component_style(self, f"detail--{name}")

        return Palette(
            heading=style("heading"),
            label=style("label"),
            dim=style("dim"),
            good=style("good"),
            bad=style("bad"),
            culprit=style("culprit"),
            warning=style("warning"),
            class_mismatch=style("class-mismatch"),
            worst=style("worst"),
        )

    def describe(self) -> None:
        """Show the selected row's description: from the cache, or soon from a worker."""
        listing = self.listing
        if not self.shown or listing is None or not self.is_mounted or not 0 <= self.row < len(listing):
            return
        key = (self._generation, self.row, self.text_width)
        if key == self._wanted:
            return
        self._wanted = key
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        cached = self._descriptions.get(key)
        if cached is not None:
            self._show(key, cached)
            return
        self._timer = self.set_timer(self.SETTLE_SECONDS, lambda: self._start(key, listing))

    def _start(self, key: DescriptionKey, listing: Listing) -> None:
        self._timer = None
        if key == self._wanted:
            self._describe_in_thread(key, listing, self.palette())

    @work(thread=True, exclusive=True, group="detail", description="describe the selected row")
    def _describe_in_thread(self, key: DescriptionKey, listing: Listing, palette: Palette) -> None:
        _, row, width = key
        if isinstance(listing, ComparisonListing):
            renderable = describe_row(listing.comparison, listing.rows[row], width, palette)
        else:
            assert isinstance(listing, TraceListing)
            renderable = describe_record(listing.records[row], width, palette)
        if get_current_worker().is_cancelled:
            return
        self.post_message(DetailReady(key, render_to_strips(renderable, width)))

    def on_detail_ready(self, message: DetailReady) -> None:
        self._descriptions[message.key] = message.lines
        if message.key == self._wanted:
            self._show(message.key, message.lines)

    def _show(self, key: DescriptionKey, lines: list[Strip]) -> None:
        self._lines = lines
        self.described = (key[0], key[1])
        set_virtual_size(self, Size(max((line.cell_length for line in lines), default=0), len(lines)))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    # -- the clipboard ----------------------------------------------------------------------

    def action_copy_worst(self) -> None:
        """c here: the selected row's worst output elements (index, original, ported, Δ), to paste."""
        listing = self.listing
        if not isinstance(listing, ComparisonListing):
            self.app.action_copy_names()  # type: ignore[attr-defined]  # a single trace has no Δ
            return
        row = listing.rows[self.row]
        pair = worst_output(row)
        if pair is None:
            self.notify("nothing to copy: no element of this row differs", timeout=3)
            return
        self.app.copy_to_clipboard(worst_elements_text(row, pair))
        self.notify(f"copied the worst elements of #{row.index} {printable(row.label)} {printable(pair.name)}", timeout=3, markup=False)

    # -- drawing ----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        if self._base_style is None:  # rich_style walks every ancestor's styles: once per CSS change
            self._base_style = self.rich_style
        base = self._base_style
        index = scroll_y + y
        if index >= len(self._lines):
            return Strip.blank(width, base)
        return self._lines[index].apply_style(base).crop_extend(scroll_x, scroll_x + width, base)

    def plain_text(self) -> str:
        """What the pane shows, as plain text (for tests)."""
        return "\n".join(line.text.rstrip() for line in self._lines)

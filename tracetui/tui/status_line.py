"""The line under the call list: where the cursor is and which filters apply — and, after `/`,
the filter being typed.

One line that edits in place, rather than an ``Input`` shown over it: typing then redraws one
line of the screen instead of laying out the whole screen on every key.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.reactive import reactive
from textual.widget import Widget

from tracetui.safe_text import printable
from tracetui.sides import Side
from tracetui.tui.lines import component_style
from tracetui.tui.messages import FilterChanged, FilterDone
from tracetui.tui.outline import Outline

FILTER_HINT = "  regex over both sides' names · enter keeps · escape clears"


class StatusLine(Widget, can_focus=False):
    """``row #4 · 42 rows · filter /mlp/ · b debugs ported (s switches)``; after `/`, ``/mlp▏`` with the filter applied as you type.

    On a narrow line the parts shorten (``/mlp/``, ``8 hidden``, ``b: ported``), then the last
    ones are left out whole: a count is never cut.

    A row is named by its number (``#4``), the one the list's ``#`` column, the detail pane, the
    debugger and the headless report show, whatever folds and filters hide above it.
    """

    BINDINGS = [
        Binding("enter", "done(True)", "keep filter", show=False),
        Binding("escape", "done(False)", "clear filter", show=False),
        Binding("backspace", "delete(1)", "delete", show=False),
        Binding("ctrl+w", "delete_word", "delete word", show=False),
        Binding("ctrl+u", "delete(-1)", "delete all", show=False),
    ]
    COMPONENT_CLASSES = {
        "status-line--error",
        "status-line--prompt",
        "status-line--cursor",
        "status-line--hint",
        "status-line--filter",
        "status-line--side",
        "status-line--side-original",
    }

    outline: reactive[Outline | None] = reactive(None, always_update=True)
    row: reactive[int] = reactive(0)
    debug_side: reactive[Side] = reactive("ported")  # the model b and B re-run (a comparison only)
    editing: reactive[bool] = reactive(False)
    # Typing does not redraw the line by itself: the app, applying the filter, does (a new
    # outline, or the invalid mark), so that the line and the filtered list appear in one frame.
    text: reactive[str] = reactive("", repaint=False)
    # Why the text typed is not a regex (the app, compiling it, says): shown instead of the hint.
    filter_error: reactive[str] = reactive("", repaint=False)

    # -- editing ----------------------------------------------------------------------------

    def start(self, text: str) -> None:
        """Edit the filter, starting from ``text``."""
        self.text = text
        self.editing = True
        self.focus()

    def stop(self) -> None:
        self.editing = False
        self.show_invalid("")

    def show_invalid(self, error: str) -> None:
        """Say why the filter typed is not a regex (``""``: it is); the list keeps the last valid one."""
        self.filter_error = error
        self.set_class(bool(error), "-invalid")

    def watch_editing(self, editing: bool) -> None:
        self.can_focus = editing  # out of the tab order unless a filter is being typed
        self.set_class(editing, "-editing")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.editing

    def _set_text(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.post_message(FilterChanged(text))

    def action_done(self, keep: bool) -> None:
        self.post_message(FilterDone(keep=keep))

    def action_delete(self, count: int) -> None:
        self._set_text("" if count < 0 else self.text[:-count])

    def action_delete_word(self) -> None:
        stripped = self.text.rstrip()
        cut = max(stripped.rfind(separator) for separator in " ./") + 1
        self._set_text(stripped[:cut])

    async def _on_key(self, event: events.Key) -> None:
        if self.editing and event.is_printable and event.character:
            event.stop()
            event.prevent_default()
            self._set_text(self.text + event.character)

    def _on_paste(self, event: events.Paste) -> None:
        if self.editing and event.text:
            event.stop()
            self._set_text(self.text + event.text.splitlines()[0])

    def on_blur(self) -> None:
        if self.editing:  # clicked away: keep what was typed
            self.post_message(FilterDone(keep=True))

    # -- drawing ----------------------------------------------------------------------------

    def render(self) -> Text:
        if self.editing:
            line = Text("/", component_style(self, "status-line--prompt"), no_wrap=True, overflow="ellipsis")
            line.append(printable(self.text))  # typed, or pasted from anywhere
            line.append(" ", component_style(self, "status-line--cursor"))
            if self.filter_error:
                error_style = component_style(self, "status-line--error")
                line.append(f"  invalid regex: {printable(self.filter_error)} · showing the last valid filter", error_style)
            else:
                line.append(FILTER_HINT, component_style(self, "status-line--hint"))
            return line
        return self.status()

    def status(self) -> Text:
        """The parts that apply, each in full or, when the line is too narrow, in short; parts that
        still do not fit are left out whole (``…``): a count is never cut. The side b debugs stays."""
        outline = self.outline
        if outline is None:
            return Text(no_wrap=True, overflow="ellipsis")
        total = len(outline.listing)
        parts: list[tuple[Text, Text]] = []  # (in full, in short)
        if outline.position_of(self.row) is not None:
            parts.append(same(Text(f"row #{self.row}")))
        parts.append(same(Text(f"{total} rows" if len(outline) == total else f"{len(outline)} of {total} rows")))
        options = outline.options
        filter_style = component_style(self, "status-line--filter")
        if options.filter_text:
            shown_filter = Text(f"/{printable(options.filter_text)}/", filter_style)
            parts.append((Text.assemble("filter ", shown_filter, " (escape clears)"), shown_filter))
        if options.by_status:
            parts.append(
                (
                    Text(by_status_label(options.only_problems, options.only_unmatched), filter_style),
                    Text(by_status_label(options.only_problems, options.only_unmatched, short=True), filter_style),
                )
            )
            if outline.set_aside:
                parts.append((Text("hidden: " + hidden_rows(outline.set_aside)), Text(f"{sum(outline.set_aside.values())} hidden")))
        if options.collapsed:
            parts.append(same(Text(f"{len(options.collapsed)} folded")))
        end = None
        if outline.listing.mode == "comparison":
            # Always on screen, whatever precedes it: b on the wrong side re-runs the wrong model,
            # which can take minutes.
            side_style = component_style(self, "status-line--side-original" if self.debug_side == "original" else "status-line--side")
            end = (
                Text.assemble("b debugs ", (self.debug_side, side_style), " (s switches)"),
                Text.assemble("b: ", (self.debug_side, side_style)),
            )
        return fit_parts(parts, end, self.content_region.width)


def same(text: Text) -> tuple[Text, Text]:
    """A part with no shorter form."""
    return (text, text)


SEPARATOR = " · "


def fit_parts(parts: list[tuple[Text, Text]], end: tuple[Text, Text] | None, width: int) -> Text:
    """The parts joined by `` · `` within ``width`` (0: no limit), ``end`` last.

    In turn: every part in full; the parts in short, from the last; ``end`` in short; then the
    last parts left out whole, ``…`` in their place. A part is never cut in the middle, so a count
    shows whole or not at all; only a line too narrow for the first parts is ellipsized."""

    def joined(chosen: list[Text], left_out: bool, last: Text | None) -> Text:
        line = Text(no_wrap=True, overflow="ellipsis")
        for position, part in enumerate(chosen):
            if position:
                line.append(SEPARATOR)
            line.append_text(part)
        if left_out:
            line.append(SEPARATOR + "…")
        if last is not None:
            line.append(SEPARATOR)
            line.append_text(last)
        return line

    chosen = [full for full, _ in parts]
    last = None if end is None else end[0]
    line = joined(chosen, False, last)
    if not width or line.cell_len <= width:
        return line
    for position in reversed(range(len(parts))):
        chosen[position] = parts[position][1]
        line = joined(chosen, False, last)
        if line.cell_len <= width:
            return line
    if end is not None:
        last = end[1]
        line = joined(chosen, False, last)
        if line.cell_len <= width:
            return line
    while len(chosen) > 1:
        chosen.pop()
        line = joined(chosen, True, last)
        if line.cell_len <= width:
            return line
    line.truncate(width, overflow="ellipsis")
    return line


def by_status_label(only_problems: bool, only_unmatched: bool, short: bool = False) -> str:
    """What `x` and `u` keep: ``only rows that differ``, ``only unmatched rows``, or both
    (``short``: ``x differing``, ``u unmatched``, ``x+u``)."""
    if short:
        return "x+u" if only_problems and only_unmatched else ("x differing" if only_problems else "u unmatched")
    kept = ["rows that differ"] * only_problems + ["unmatched rows"] * only_unmatched
    return "only " + " and ".join(kept)


def hidden_rows(set_aside: dict[str, int]) -> str:
    """``3 unmatched (u shows), 5 matching``: what `x` or `u` leaves out, and the key that shows it."""
    keys = {"unmatched": " (u shows)", "differing": " (x shows)"}
    return ", ".join(f"{count} {kind}{keys.get(kind, '')}" for kind, count in set_aside.items())

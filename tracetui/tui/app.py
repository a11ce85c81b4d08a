"""The app: the one place that holds the interface's state.

State (reactive attributes of :class:`TracetuiApp`):

- ``source``: the :class:`Comparison` (replaced by ``t`` with the comparison re-classified
  under the new tolerance), or the :class:`Trace` for ``tracetui show``;
- ``listing``: the lines derived from it (:mod:`tracetui.tui.listing`);
- ``view``: the view options (filter text, only-problems, folded rows);
- ``outline``: the visible rows, derived from ``listing`` and ``view``;
- ``selected_row``: the row under the cursor (an index into ``comparison.rows``): the first
  culprit when the app opens on a comparison that has one, else the first row;
- ``show_detail``: whether the detail pane is shown;
- ``debug_side``: the model ``b`` and ``B`` re-run (``s`` switches it; the status line shows it);
- ``marked_row``: the unmatched row ``m`` marked, until it is paired or escape cancels it.

Widgets are bound to these (``data_bind``) and redraw when they change; they ask for changes
with the messages of :mod:`tracetui.tui.messages`, handled here, except the call list's cursor
and folds, which it changes through :meth:`TracetuiApp.select_row` and
:meth:`TracetuiApp.toggle_row`: at once, so that each key of a batch starts from the last one's row.
"""

from __future__ import annotations

import asyncio
import gc
import re
import signal
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import FrameType

from textual import work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import get_current_worker

from tracetui.classify import Tolerance, judged_from_figures
from tracetui.compare import Comparison, compare_alignment
from tracetui.debugger import debug_call, describe_outcome
from tracetui.errors import TracetuiError
from tracetui.interruption import (
    INTERRUPTED_EXIT_STATUS,
    INTERRUPTING_SIGNALS,
    heeded_signals,
    in_main_thread,
    interruption_for,
    silence_hung_up_terminal,
    terminal_output_streams,
)
from tracetui.pairing.alignment import Alignment
from tracetui.rows import Row
from tracetui.safe_text import printable
from tracetui.sides import Side, other_side, pick
from tracetui.trace import CallRecord, Trace
from tracetui.tui import saving
from tracetui.tui.call_list import CallList
from tracetui.tui.commands import ActionCommands
from tracetui.tui.detail import DetailPane
from tracetui.tui.dialogs import HelpScreen, PathDialog, ToleranceDialog
from tracetui.tui.header import ComparisonHeader
from tracetui.tui.key_footer import KeyFooter
from tracetui.tui.listing import Listing, make_listing
from tracetui.tui.messages import FilterChanged, FilterDone, Reclassified
from tracetui.tui.outline import Outline, ViewOptions, compile_filter
from tracetui.tui.status_line import StatusLine

# Off for a single trace (``tracetui show``): it has no tolerance, statuses or other side.
COMPARISON_ACTIONS = frozenset(
    ("tolerance", "only_problems", "only_unmatched", "break_selected", "break_culprit", "switch_side")
    + ("pair_by_hand", "write_map", "save_report")
)
SWITCH_SIDE_KEY = "s (switch side)"  # how the debugger's messages name the way to the other side


class TracetuiApp(App[None]):
    """Browse a comparison (``tracetui compare``) or one model's trace (``tracetui show``)."""

    CSS_PATH = Path(__file__).with_name("tracetui.tcss")
    TITLE = "tracetui"
    COMMANDS = App.COMMANDS | {ActionCommands}
    AUTO_FOCUS = "CallList"

    BINDINGS = [
        Binding("m", "pair_by_hand", "pair", show=False),
        Binding("w", "write_map", "write map", show=False),
        Binding("b", "break_selected", "debug here"),
        Binding("B", "break_culprit", "debug culprit", show=False),
        Binding("s", "switch_side", "side", show=False),
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("c", "copy_names", "copy", show=False),
        Binding("S", "save_screenshot", "screenshot", show=False),
        Binding("R", "save_report", "save report", show=False),
        Binding("x", "only_problems", "problems"),
        Binding("u", "only_unmatched", "unmatched", show=False),
        Binding("t", "tolerance", "tolerance"),
        Binding("d", "toggle_detail", "detail"),
    ]

    # repaint=False: the app itself draws nothing; the widgets bound to these redraw what changed.
    source: reactive[Comparison | Trace] = reactive(None, always_update=True, init=False, repaint=False)  # type: ignore[arg-type]
    listing: reactive[Listing] = reactive(None, always_update=True, init=False, repaint=False)  # type: ignore[arg-type]
    view: reactive[ViewOptions] = reactive(ViewOptions, init=False, repaint=False)
    outline: reactive[Outline] = reactive(None, always_update=True, init=False, repaint=False)  # type: ignore[arg-type]
    selected_row: reactive[int] = reactive(0, init=False, repaint=False)
    show_detail: reactive[bool] = reactive(True, init=False, repaint=False)
    debug_side: reactive[Side] = reactive("ported", init=False, repaint=False)
    # The unmatched row marked by m, waiting for its counterpart (the next m).
    marked_row: reactive[int | None] = reactive(None, init=False, repaint=False)

    def __init__(
        self,
        source: Comparison | Trace,
        *,
        freeze_garbage_collector: bool = False,
        exit_on_signals: bool = False,
        theme: str | None = None,
    ) -> None:
        super().__init__()
        if theme is not None:
            self.theme = theme  # textual-dark (the default) or textual-light; ctrl+p → Theme switches
        self.freeze_garbage_collector = freeze_garbage_collector
        self.exit_on_signals = exit_on_signals
        self.ending_signal: int | None = None  # SIGINT, SIGTERM or SIGHUP, when one ended the app
        self.signal_loop: asyncio.AbstractEventLoop | None = None  # the loop signals are handed to
        self.terminal_streams: list[int] = []  # stdout and stderr, if they were a terminal at the start
        listing = make_listing(source)
        self.set_reactive(TracetuiApp.source, source)
        self.set_reactive(TracetuiApp.listing, listing)
        self.set_reactive(TracetuiApp.outline, Outline(listing, ViewOptions()))
        if listing.culprit is not None:
            # Open on the answer: the culprit selected (the list centres it) and described.
            self.set_reactive(TracetuiApp.selected_row, listing.culprit)

    # -- convenience for callers and tests --------------------------------------------------

    @property
    def comparison(self) -> Comparison | None:
        return self.source if isinstance(self.source, Comparison) else None

    @property
    def is_comparison(self) -> bool:
        return isinstance(self.source, Comparison)

    @property
    def visible_rows(self) -> list[int]:
        return self.outline.visible

    # -- layout -----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ComparisonHeader(id="header").data_bind(TracetuiApp.source)
        with Vertical(id="rows-pane"):
            yield CallList(self, id="calls").data_bind(TracetuiApp.outline, TracetuiApp.marked_row, cursor_row=TracetuiApp.selected_row)
            yield StatusLine(id="status").data_bind(TracetuiApp.outline, TracetuiApp.debug_side, row=TracetuiApp.selected_row)
        yield DetailPane(id="detail").data_bind(TracetuiApp.listing, row=TracetuiApp.selected_row, shown=TracetuiApp.show_detail)
        yield KeyFooter(id="footer")

    def on_load(self) -> None:
        if self.exit_on_signals and in_main_thread():
            # From before the terminal is taken until it is given back, a signal ends the app the
            # way q does: raised through the event loop, it would leave the alternate screen, the
            # mouse tracking and the hidden cursor behind.
            self.signal_loop = asyncio.get_running_loop()
            self.terminal_streams = terminal_output_streams()
            for signal_number in heeded_signals(INTERRUPTING_SIGNALS):
                signal.signal(signal_number, self.signal_received)

    def signal_received(self, signal_number: int, frame: FrameType | None) -> None:
        """Hand the signal to the event loop (this runs between two bytecodes, maybe in the loop's own).

        A plain handler rather than ``loop.add_signal_handler``, which would run only in the loop:
        after a hangup the closed terminal must be silenced at once, before Textual's SIGCONT
        handler (the kernel sends SIGCONT right after SIGHUP) starts drawing on it again.
        """
        silence_hung_up_terminal(self.terminal_streams)
        if self.signal_loop is None or self.signal_loop.is_closed():
            raise interruption_for(signal_number)  # the app has gone: as without it
        self.signal_loop.call_soon_threadsafe(self.exit_on_signal, signal_number)

    def exit_on_signal(self, signal_number: int) -> None:
        """`kill -TERM`, a closed terminal or `kill -INT`: quit as q does, so Textual restores the terminal."""
        self.ending_signal = signal_number
        self.exit(return_code=INTERRUPTED_EXIT_STATUS)

    def on_ready(self) -> None:
        if self.freeze_garbage_collector:
            # Everything made so far (the recorded traces, the widgets) lives until the app
            # quits. Frozen, the collector no longer walks it: a full collection over the
            # objects of a 20,000-call comparison takes 0.1-0.3 s, a stall in the middle of a key.
            gc.freeze()
            # And full collections become ten times rarer: each one is a stall.
            young, middle, old = gc.get_threshold()
            gc.set_threshold(young, middle, old * 10)

    # -- derived state ----------------------------------------------------------------------

    def watch_source(self, source: Comparison | Trace) -> None:
        if self.listing.source is not source:
            self.listing = make_listing(source, self.listing)

    def watch_listing(self, listing: Listing) -> None:
        self.outline = Outline(listing, self.view)

    def watch_view(self, view: ViewOptions) -> None:
        self.outline = Outline(self.listing, view, previous=self.outline)

    def watch_outline(self, outline: Outline) -> None:
        if outline.position_of(self.selected_row) is None:
            nearest = outline.nearest(self.selected_row)
            if nearest is not None:
                self.selected_row = nearest

    # -- requests from the widgets ----------------------------------------------------------

    def select_row(self, row: int) -> None:
        """Put the cursor on ``row``, unfolding or unfiltering what hides it."""
        self.reveal(row)
        self.selected_row = row

    def toggle_row(self, row: int) -> None:
        """Fold ``row``'s subtree, or unfold it."""
        self.view = self.view.toggled(row)

    def on_filter_changed(self, message: FilterChanged) -> None:
        status_line = self.query_one(StatusLine)
        status_line.refresh()  # the text typed so far: the line leaves redrawing it to this handler
        try:
            compile_filter(message.text)
        except re.error as error:
            status_line.show_invalid(str(error))  # and the list keeps the last valid filter
            return
        status_line.show_invalid("")
        self.view = replace(self.view, filter_text=message.text)

    def on_filter_done(self, message: FilterDone) -> None:
        if not message.keep:
            self.view = replace(self.view, filter_text="")
        self.close_filter_line()

    def reveal(self, row: int) -> None:
        """Unfold the row's ancestors, and drop filters that hide it (f to a filtered-out culprit)."""
        if self.outline.position_of(row) is not None:
            return
        view = self.view
        ancestors = set()
        parent = self.listing.parents[row]
        while parent is not None:
            ancestors.add(parent)
            parent = self.listing.parents[parent]
        if view.collapsed & ancestors:
            view = replace(view, collapsed=view.collapsed - ancestors)
        if Outline(self.listing, view).position_of(row) is None and view.is_filtered:
            view = replace(view, filter_text="", only_problems=False, only_unmatched=False)
            self.close_filter_line()
            self.notify("filters cleared to show the row", timeout=3)
        self.view = view

    # -- app-wide keys ----------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """A single trace has no tolerance, statuses or other side: t, x, u, b, B, s, m, w and R are off there."""
        return self.is_comparison or action not in COMPARISON_ACTIONS

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's own commands (the theme, quit, …) but its screenshot, which S replaces (it asks
        where, and writes whole), and its keys panel, which ? replaces."""
        for command in super().get_system_commands(screen):
            if command.title not in ("Screenshot", "Keys"):
                yield command

    # -- pairing by hand --------------------------------------------------------------------

    def action_pair_by_hand(self) -> None:
        """m on a paired row unpairs it; m on an unmatched row marks it, m on its counterpart pairs them.

        The toasts name calls in full, with their row and call number: a model has many ``dropout``s."""
        comparison = self.comparison
        if comparison is None:
            return
        row = comparison.rows[self.selected_row]
        if row.original is not None and row.ported is not None:
            self.marked_row = None
            self.realign(comparison.alignment.without_pair(original_index=row.original.index), ("original", row.original.index))
            self.notify(f"unpaired #{row.index} {printable(row.label)}", timeout=3, markup=False)
            return
        marked = None if self.marked_row is None else comparison.rows[self.marked_row]
        if marked is None or marked is row:
            self.marked_row = None if marked is row else row.index
            side: Side = "original" if row.original is not None else "ported"
            if self.marked_row is not None:
                marked_text = (
                    f"marked #{row.index} {printable(row.label)} ({side} only): press m on its {other_side(side)} counterpart, "
                    "escape cancels"
                )
                self.notify(marked_text, timeout=5, markup=False)
            else:
                self.notify(f"mark on #{row.index} cancelled", timeout=3, markup=False)
            return
        original = marked.original or row.original
        ported = marked.ported or row.ported
        if original is None or ported is None:
            self.notify("both marked rows are on the same side: mark an original-only and a ported-only row", severity="warning")
            return
        self.marked_row = None
        self.realign(comparison.alignment.with_manual_pair(original.index, ported.index), ("original", original.index))
        paired_text = f"paired {printable(call_label(original))} ↔ {printable(call_label(ported))} by hand; w writes the rename map"
        self.notify(paired_text, timeout=5, markup=False)

    @work(thread=True, exclusive=True, group="tolerance", description="compare the new pairing")
    def realign(self, alignment: Alignment, keep_selected: tuple[Side, int]) -> None:
        """Compare again under the same tolerance with the amended pairing (no model is re-run)."""
        comparison = compare_alignment(alignment, self.comparison.tolerance if self.comparison else Tolerance())
        if not get_current_worker().is_cancelled:
            self.post_message(Reclassified(comparison, make_listing(comparison), select=comparison.row_of(*keep_selected)))

    def action_write_map(self) -> None:
        """Ask where (next to the ported script by default), then write the pairing as a rename map."""
        comparison = self.comparison
        if comparison is None:
            return

        def write(path: Path, shown: str) -> list[Path]:
            return saving.write_map(comparison, path, shown)

        def written(paths: list[Path] | None) -> None:
            if paths:
                shown = saving.shown_path(paths[0])
                self.notify(f"wrote {printable(shown)}: pass --map {printable(shown)} next time", timeout=6, markup=False)

        title = "Write the pairing as a rename map (for --map)"
        self.push_screen(PathDialog(title, saving.default_map_path(comparison), lambda path: [path], write), written)

    def action_save_screenshot(self) -> None:
        """The screen as the user saw it when pressing S (not the dialog that asks where), as SVG."""
        svg = self.export_screenshot()

        def write(path: Path, shown: str) -> list[Path]:
            return saving.write_screenshot(svg, path, shown)

        self.push_screen(PathDialog("Save a screenshot (SVG)", saving.SCREENSHOT_FILE_NAME, lambda path: [path], write), self.say_written)

    def action_save_report(self) -> None:
        """The headless report as text, and the JSON report beside it."""
        comparison = self.comparison
        if comparison is None:
            return

        def write(path: Path, shown: str) -> list[Path]:
            return saving.write_report_files(comparison, path, shown)

        title = "Save the report (text here, JSON beside it)"
        self.push_screen(PathDialog(title, saving.REPORT_FILE_NAME, saving.report_paths, write), self.say_written)

    def say_written(self, paths: list[Path] | None) -> None:
        if paths:
            self.notify("wrote " + " and ".join(printable(saving.shown_path(path)) for path in paths), timeout=6, markup=False)

    # -- the clipboard ----------------------------------------------------------------------

    def action_copy_names(self) -> None:
        """Both sides' full names (one, for an unmatched row), as in the filter and --break-at."""
        source = self.source
        if isinstance(source, Comparison):
            row = source.rows[self.selected_row]
            text = " ↔ ".join(call_label(record) for record in (row.original, row.ported) if record is not None)
        else:
            text = call_label(source.records[self.selected_row])
        self.copy_to_clipboard(text)
        self.notify(f"copied {printable(text)}", timeout=3, markup=False)

    # -- the debugger -----------------------------------------------------------------------

    def action_switch_side(self) -> None:
        """The status line shows the side from now on; the toast only says it changed."""
        self.debug_side = other_side(self.debug_side)
        self.notify(f"b and B now re-run the {self.debug_side} model", timeout=3)

    def action_break_selected(self) -> None:
        comparison = self.comparison
        if comparison is not None:
            self.break_in(comparison, comparison.rows[self.selected_row])

    def action_break_culprit(self) -> None:
        comparison = self.comparison
        if comparison is None:
            return
        if comparison.culprit is None:
            self.notify("no culprit: every paired call agrees, nothing to break at", severity="warning")
            return
        self.selected_row = comparison.culprit.index
        self.reveal(comparison.culprit.index)
        self.break_in(comparison, comparison.culprit)

    def break_in(self, comparison: Comparison, row: Row) -> None:
        """Suspend the interface, re-run one side in ipdb at this row's call, then come back here."""
        side = self.debug_side
        if pick(row, side) is None:
            self.notify(f"{printable(row.label)} has no {side} call: press s to switch to the other side", severity="warning", markup=False)
            return
        message, severity = "", "information"
        with self.suspend():
            try:
                outcome = debug_call(comparison, row, side, switch_side=SWITCH_SIDE_KEY)
                message = describe_outcome(outcome, row, side)
            except TracetuiError as error:
                message, severity = error.message, "error"
        # The outcome names the module; an error quotes paths, names, the script's exception.
        self.notify(printable(message, multiline=True), severity=severity, timeout=6, markup=False)  # type: ignore[arg-type]

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        self.query_one(StatusLine).start(self.view.filter_text)

    def close_filter_line(self) -> None:
        status_line = self.query_one(StatusLine)
        status_line.stop()
        self.query_one(CallList).focus()

    def action_clear_filter(self) -> None:
        """Escape: cancels a pending m mark first, else clears the filter."""
        if self.marked_row is not None:
            self.notify(f"mark on #{self.marked_row} cancelled", timeout=3, markup=False)
            self.marked_row = None
            return
        if self.view.filter_text:
            self.view = replace(self.view, filter_text="")

    def action_only_problems(self) -> None:
        self.view = replace(self.view, only_problems=not self.view.only_problems)

    def action_only_unmatched(self) -> None:
        self.view = replace(self.view, only_unmatched=not self.view.only_unmatched)

    def action_toggle_detail(self) -> None:
        self.show_detail = not self.show_detail
        if not self.show_detail:
            self.query_one(CallList).focus()

    def action_tolerance(self) -> None:
        comparison = self.comparison
        if comparison is not None:
            self.push_screen(ToleranceDialog(comparison.tolerance, apply=self.apply_tolerance))

    def apply_tolerance(self, tolerance: Tolerance) -> None:
        comparison = self.comparison
        if comparison is None or tolerance == comparison.tolerance:
            return
        if not judged_from_figures(tolerance):
            self.reclassify(comparison, tolerance)
            return
        # Without rtol, each row's figures decide its status: 20,000 rows take milliseconds, so
        # they are re-classified before the dialog's closing is drawn, and the screen goes
        # straight to the new statuses.
        self.workers.cancel_group(self, "tolerance")  # an older tolerance must not land after this one
        reclassified = comparison.with_tolerance(tolerance)
        self.show_comparison(reclassified, make_listing(reclassified, self.listing))

    # An explicit description: Textual would otherwise repr() the arguments — the whole comparison.
    @work(thread=True, exclusive=True, group="tolerance", description="re-classify the rows")
    def reclassify(self, comparison: Comparison, tolerance: Tolerance) -> None:
        """``with_tolerance`` re-classifies every row (no model is re-run); with an rtol, leaves
        beyond atol have their elements counted, which can take seconds: hence a thread."""
        reclassified = comparison.with_tolerance(tolerance)
        if not get_current_worker().is_cancelled:
            self.post_message(Reclassified(reclassified, make_listing(reclassified, self.listing)))

    def on_reclassified(self, message: Reclassified) -> None:
        self.show_comparison(message.comparison, message.listing, message.select)

    def show_comparison(self, comparison: Comparison, listing: Listing, select: Row | None = None) -> None:
        """Replace the comparison on screen (and select ``select``)."""
        self.listing = listing
        self.source = comparison
        if select is not None:
            self.reveal(select.index)
            self.selected_row = select.index


def call_label(record: CallRecord) -> str:
    """A call's full name, with its call number when the module runs more than once: unique in its model."""
    return record.display_name + (f" (call {record.call})" if record.call else "")

"""The header: the verdict, both scripts, the tolerance, the precision, the culprit with its input and output Δ."""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePath

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label

from tracetui.classify import STATUSES
from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.precision import Precision, describe_precision, half_precision_note, notes_with_precision, rounding_match_label
from tracetui.safe_text import printable
from tracetui.trace import Trace
from tracetui.tui.listing import classes_differ


def short_sources(original: str, ported: str) -> tuple[str, str]:
    """Both scripts' paths without the folders they share (``models/a.py``, ``models/b.py`` read
    ``a.py``, ``b.py``); the full paths are in the labels' tooltips."""
    original_parts, ported_parts = PurePath(original).parts, PurePath(ported).parts
    shared = 0
    while shared < min(len(original_parts), len(ported_parts)) - 1 and original_parts[shared] == ported_parts[shared]:
        shared += 1
    return str(PurePath(*original_parts[shared:])), str(PurePath(*ported_parts[shared:]))


def label_width(label: Label, text: str) -> int:
    """Cells ``label`` takes in a line when it shows ``text`` whole: text, padding and margins."""
    margin, padding = label.styles.margin, label.styles.padding
    return cell_len(text) + padding.left + padding.right + margin.left + margin.right


class ComparisonHeader(Vertical):
    """Lines: verdict and sources; the culprit; why; how many rows of each status; a note.

    Without a culprit the second line is left out and the third says why there is none. On a
    narrow terminal a line keeps the parts that fit whole, in order, and ends with ``…`` for the
    rest: a figure is shown in full or not at all (``atol 0.0`` for 0.001 misleads; a missing
    one is only missing). The why-line and the note wrap. The
    labels of a comparison are made once, with every one that may be needed, and then updated
    in place when the comparison changes (``t``): making and laying out twenty new labels cost
    more than the rest of re-classifying 20,000 rows.

    The labels show their text as it is (``markup=False``), control characters escaped: the
    scripts' paths, the culprit's name and the reason come from the user's code and trace files.
    """

    source: reactive[Comparison | Trace | None] = reactive(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._precision: tuple[Trace, Trace, Precision] | None = None
        self._shown: Comparison | Trace | None = None  # what the labels were made for
        self._labels: dict[str, Label] = {}  # the labels that change with the comparison, by id
        self._texts: dict[str, str] = {}  # what they show
        self._hidden: set[str] = set()  # the labels this comparison leaves out (fit_lines keeps them out)
        self._culprit_line: Horizontal | None = None
        self._note_line: Horizontal | None = None
        # The parts of each line that fits to the width, in order; a group shows whole or not at
        # all (a figure with its key), and the line's "…" label stands for the groups left out.
        self._fitted_lines: list[tuple[list[list[Label]], Label]] = []

    def watch_source(self, source: Comparison | Trace | None) -> None:
        if isinstance(source, Comparison) and isinstance(self._shown, Comparison) and self.is_mounted:
            self.show_comparison(source)
        else:
            self.refresh(recompose=True)

    def precision(self, comparison: Comparison) -> Precision:
        """``describe_precision``, reading the traces' dtypes once: that takes a quarter of a
        second for 20,000 calls, and a new tolerance (``t``) changes only the note."""
        if self._precision is not None:
            original, ported, precision = self._precision
            if original is comparison.original and ported is comparison.ported:
                measured = comparison.rounding.measured  # judged against a floor: rounding needs no rtol
                note = None if measured else half_precision_note(precision.original_dtypes, precision.ported_dtypes, comparison.tolerance)
                return replace(precision, note=note)
        precision = describe_precision(comparison)
        self._precision = (comparison.original, comparison.ported, precision)
        return precision

    def compose(self) -> ComposeResult:
        source = self._shown = self.source
        if source is None:
            return
        if isinstance(source, Trace):
            yield from self.compose_trace(source)
            return
        comparison = source
        self._texts = {}
        labels = self._labels = {
            name: Label(id=name, classes=classes, markup=False)
            for name, classes in [
                ("original-source", "source"),
                ("ported-source", "source"),
                ("tolerance", "tolerance"),
                ("verdict", "verdict"),
                ("precision", "precision"),
                ("culprit", "culprit"),
                ("culprit-input", "delta -good"),
                ("culprit-output", "delta -bad"),
                ("culprit-class", "class-label"),
                ("culprit-count", "culprit-count"),  # "1 of 3 culprits", when there are more
                ("reason-key", "key"),  # "why", or "no culprit:" when the culprit line is left out
                ("reason", "reason"),
                ("row-count", "key"),
                *((f"count-{status}", f"count -{status}") for status in STATUSES),
                ("note", "note"),
            ]
        }
        self._culprit_line = Horizontal(id="culprit-line", classes="header-line")
        self._note_line = Horizontal(id="note-line", classes="header-line wrapped")
        self.show_comparison(comparison)
        # Most telling first: a narrow terminal leaves out the end of a line.
        first_line = [
            [Label("tracetui", classes="app-name"), labels["verdict"]],
            [labels["original-source"], Label("↔", classes="dim"), labels["ported-source"]],
            [labels["tolerance"]],
            [labels["precision"]],
        ]
        culprit_line = [
            [Label("culprit", classes="key"), labels["culprit"]],
            [Label("in |Δ|", classes="key"), labels["culprit-input"]],
            [Label("out |Δ|", classes="key"), labels["culprit-output"]],
            [labels["culprit-count"]],  # "1 of 3 culprits": before the classes, which a narrow line drops first
            [labels["culprit-class"]],
        ]
        counts_line = [[labels["row-count"]], *([labels[f"count-{status}"]] for status in STATUSES)]
        self._fitted_lines = []
        for container, groups in [
            (Horizontal(classes="header-line"), first_line),
            (self._culprit_line, culprit_line),
            (Horizontal(classes="header-line", id="counts"), counts_line),
        ]:
            more = Label("…", classes="more")
            self._fitted_lines.append((groups, more))
            with container:
                for group in groups:
                    yield from group
                yield more
            if container is self._culprit_line:
                with Horizontal(classes="header-line wrapped"):
                    yield labels["reason-key"]
                    yield labels["reason"]
        with self._note_line:
            yield labels["note"]

    def show_comparison(self, comparison: Comparison) -> None:
        """Update the labels to ``comparison``, and show only the ones it needs."""
        self._shown = comparison
        precision = self.precision(comparison)
        verdict = comparison.verdict
        counts = comparison.status_counts()

        original_source, ported_source = short_sources(str(comparison.original.source), str(comparison.ported.source))
        self.set_text("original-source", original_source)
        self.set_text("ported-source", ported_source)
        self._labels["original-source"].tooltip = printable(comparison.original.source)
        self._labels["ported-source"].tooltip = printable(comparison.ported.source)
        self.set_text("tolerance", str(comparison.tolerance))
        self.set_text("verdict", (rounding_match_label(comparison) if verdict == "match" else verdict).upper())
        self._labels["verdict"].set_class(verdict == "diverged", "-diverged")
        self._labels["verdict"].set_class(verdict == "match", "-match")
        self.set_text("precision", precision.mode_description)

        culprit = comparison.culprit
        assert self._culprit_line is not None
        self._culprit_line.display = culprit is not None
        self.set_text("culprit", "" if culprit is None else culprit.label)
        self.set_text("culprit-input", "" if culprit is None else format_difference(culprit.input_max_abs))
        self.set_text("culprit-output", "" if culprit is None else format_difference(culprit.output_max_abs))
        self.set_text("culprit-class", "" if culprit is None else culprit.class_label)
        self._labels["culprit-class"].set_class(culprit is not None and classes_differ(culprit), "-mismatch")
        count = len(comparison.culprits)
        self.set_text("culprit-count", f"1 of {count} culprits · n next", shown=count > 1)
        self.set_text("reason-key", "no culprit:" if culprit is None else "why")
        self.set_text("reason", comparison.reason)

        self.set_text("row-count", f"{len(comparison.rows)} rows:")
        for status in STATUSES:
            count = counts[status]
            self.set_text(f"count-{status}", f"{count} {status.replace('_', ' ')}" if count else "", shown=bool(count))
        notes = notes_with_precision(comparison, precision)
        self.set_text("note", f"note: {notes[0]}" if notes else "", shown=bool(notes))
        assert self._note_line is not None
        self._note_line.display = bool(notes)
        if self.is_mounted:
            self.fit_lines()

    def on_resize(self, event: events.Resize) -> None:
        self.fit_lines()

    def fit_lines(self) -> None:
        """Show on each line the groups of parts that fit whole, in order, and ``…`` for the rest.

        The first group of a line always shows (the verdict; the culprit's name, ellipsized by its
        label when it alone is wider than the line: a name, never a figure)."""
        width = self.content_region.width
        if not width:
            return
        for groups, more in self._fitted_lines:
            used = 0
            dropping = False
            for position, group in enumerate(groups):
                wanted = [label for label in group if self._wanted_shown(label)]
                group_width = sum(label_width(label, self._label_text(label)) for label in wanted)
                # Room for the "…" that will follow if a later group is left out.
                later_labels = [label for later in groups[position + 1 :] for label in later if self._wanted_shown(label)]
                rest = sum(label_width(label, self._label_text(label)) for label in later_labels)
                room = width - used - (0 if group_width + rest <= width - used else label_width(more, "…"))
                fits = not dropping and (position == 0 or group_width <= room)
                for label in group:
                    label.display = fits and label in wanted
                if position == 0 and wanted:
                    # Alone too wide (a long culprit name): its last label ends in an ellipsis.
                    last = wanted[-1]
                    overflow = max(0, group_width - room)
                    last.styles.max_width = max(1, cell_len(self._label_text(last)) - overflow) if overflow else None
                if fits:
                    used += group_width
                else:
                    dropping = dropping or bool(wanted)
            more.display = dropping

    def _wanted_shown(self, label: Label) -> bool:
        """Whether the comparison wants ``label`` shown (the culprit count only with several…)."""
        name = label.id
        return name not in self._labels or name not in self._hidden

    def _label_text(self, label: Label) -> str:
        return self._texts.get(label.id or "", str(label.content))

    def set_text(self, name: str, text: str, shown: bool = True) -> None:
        """Show ``text`` in the label (``shown``), or leave the label out."""
        text = printable(text)
        label = self._labels[name]
        if self._texts.get(name) != text:  # an update lays the header out again
            self._texts[name] = text
            label.update(text)
        label.display = shown
        if shown:
            self._hidden.discard(name)
        else:
            self._hidden.add(name)

    def compose_trace(self, trace: Trace) -> ComposeResult:
        with Horizontal(classes="header-line"):
            yield Label("tracetui show", classes="app-name")
            yield Label(printable(trace.source), classes="source", markup=False)
            yield Label(f"{len(trace)} calls", classes="tolerance")
        with Horizontal(classes="header-line"):
            yield Label("one model's trace: inputs and outputs of every call, no comparison", classes="dim")

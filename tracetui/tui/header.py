"""The header: both scripts, the tolerance, the verdict, the precision, the culprit with its input and output Δ."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label

from tracetui.classify import STATUSES
from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.precision import Precision, describe_precision, half_precision_note, notes_with_precision
from tracetui.safe_text import printable
from tracetui.trace import Trace
from tracetui.tui.listing import classes_differ


class ComparisonHeader(Vertical):
    """Four lines: sources and verdict; the culprit; why; how many rows of each status.

    Without a culprit the second line is left out and the third says why there is none. The
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
        self._culprit_line: Horizontal | None = None

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
                note = half_precision_note(precision.original_dtypes, precision.ported_dtypes, comparison.tolerance)
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
        self.show_comparison(comparison)
        with Horizontal(classes="header-line"):
            yield Label("tracetui", classes="app-name")
            yield labels["original-source"]
            yield Label("↔", classes="dim")
            yield labels["ported-source"]
            yield labels["tolerance"]
            yield labels["verdict"]
            # After the verdict: on a narrow terminal it is what gets cut, not the verdict.
            yield labels["precision"]
        with self._culprit_line:
            yield Label("culprit", classes="key")
            yield labels["culprit"]
            yield Label("in |Δ|", classes="key")
            yield labels["culprit-input"]
            yield Label("out |Δ|", classes="key")
            yield labels["culprit-output"]
            yield labels["culprit-class"]
            yield labels["culprit-count"]
        with Horizontal(classes="header-line"):
            yield labels["reason-key"]
            yield labels["reason"]
        with Horizontal(classes="header-line", id="counts"):
            yield labels["row-count"]
            for status in STATUSES:
                yield labels[f"count-{status}"]
            yield labels["note"]

    def show_comparison(self, comparison: Comparison) -> None:
        """Update the labels to ``comparison``, and show only the ones it needs."""
        self._shown = comparison
        precision = self.precision(comparison)
        verdict = comparison.verdict
        counts = comparison.status_counts()

        self.set_text("original-source", str(comparison.original.source))
        self.set_text("ported-source", str(comparison.ported.source))
        self.set_text("tolerance", str(comparison.tolerance))
        self.set_text("verdict", verdict.upper())
        self._labels["verdict"].set_class(verdict == "diverged", "-diverged")
        self._labels["verdict"].set_class(verdict == "match", "-match")
        self.set_text("precision", precision.short_description)

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

    def set_text(self, name: str, text: str, shown: bool = True) -> None:
        """Show ``text`` in the label (``shown``), or leave the label out."""
        text = printable(text)
        label = self._labels[name]
        if self._texts.get(name) != text:  # an update lays the header out again
            self._texts[name] = text
            label.update(text)
        label.display = shown

    def compose_trace(self, trace: Trace) -> ComposeResult:
        with Horizontal(classes="header-line"):
            yield Label("tracetui show", classes="app-name")
            yield Label(printable(trace.source), classes="source", markup=False)
            yield Label(f"{len(trace)} calls", classes="tolerance")
        with Horizontal(classes="header-line"):
            yield Label("one model's trace: inputs and outputs of every call, no comparison", classes="dim")

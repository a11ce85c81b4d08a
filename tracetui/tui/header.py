"""The header: both scripts, the tolerance, the verdict, the precision, the culprit with its input and output Δ."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Label

from tracetui.compare import STATUSES, Comparison, format_difference
from tracetui.precision import describe_precision, notes_with_precision
from tracetui.trace import Trace


class ComparisonHeader(Vertical):
    """Four lines: sources and verdict; the culprit; why; how many rows of each status."""

    source: reactive[Comparison | Trace | None] = reactive(None, recompose=True)

    def compose(self) -> ComposeResult:
        source = self.source
        if source is None:
            return
        if isinstance(source, Trace):
            yield from self.compose_trace(source)
            return
        comparison = source
        precision = describe_precision(comparison)
        with Horizontal(classes="header-line"):
            yield Label("tracetui", classes="app-name")
            yield Label(str(comparison.original.source), classes="source")
            yield Label("↔", classes="dim")
            yield Label(str(comparison.ported.source), classes="source")
            yield Label(str(comparison.tolerance), id="tolerance", classes="tolerance")
            yield Label(comparison.verdict.upper(), id="verdict", classes=f"verdict -{comparison.verdict}")
            # After the verdict: on a narrow terminal it is what gets cut, not the verdict.
            yield Label(precision.short_description, id="precision", classes="precision")
        culprit = comparison.culprit
        with Horizontal(classes="header-line"):
            if culprit is None:
                yield Label("no culprit:", classes="key")
                yield Label(comparison.reason, id="reason", classes="reason")
            else:
                yield Label("culprit", classes="key")
                yield Label(culprit.label, id="culprit", classes="culprit")
                yield Label("in |Δ|", classes="key")
                yield Label(format_difference(culprit.input_max_abs), id="culprit-input", classes="delta -good")
                yield Label("out |Δ|", classes="key")
                yield Label(format_difference(culprit.output_max_abs), id="culprit-output", classes="delta -bad")
                yield Label(comparison.culprit.class_label, classes="dim")
        if culprit is not None:
            with Horizontal(classes="header-line"):
                yield Label("why", classes="key")
                yield Label(comparison.reason, id="reason", classes="reason")
        counts = comparison.status_counts()
        with Horizontal(classes="header-line", id="counts"):
            yield Label(f"{len(comparison.rows)} rows:", classes="key")
            for status in STATUSES:
                if counts[status]:
                    yield Label(f"{counts[status]} {status.replace('_', ' ')}", classes=f"count -{status}")
            for note in notes_with_precision(comparison, precision)[:1]:
                yield Label(f"note: {note}", classes="note")

    def compose_trace(self, trace: Trace) -> ComposeResult:
        with Horizontal(classes="header-line"):
            yield Label("tracetui show", classes="app-name")
            yield Label(str(trace.source), classes="source")
            yield Label(f"{len(trace)} calls", classes="tolerance")
        with Horizontal(classes="header-line"):
            yield Label("one model's trace: inputs and outputs of every call, no comparison", classes="dim")

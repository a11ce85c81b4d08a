"""The screens over the list: the tolerance dialog (`t`), the path dialog (`w`, `S`, `R`) and the help screen (`?`)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from tracetui.classify import Tolerance
from tracetui.errors import TracetuiError
from tracetui.safe_text import printable
from tracetui.tui.listing import CULPRIT_LABEL, STATUS_LABELS


def parse_tolerance(atol_text: str, rtol_text: str) -> Tolerance:
    """Two non-negative numbers; raises ValueError with a sentence to show."""
    values = []
    for name, text in (("atol", atol_text), ("rtol", rtol_text)):
        try:
            value = float(text.strip() or "0")
        except ValueError:
            raise ValueError(f"{name} must be a number such as 1e-3 (got {text!r})") from None
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be zero or positive and finite (got {text})")
        values.append(value)
    return Tolerance(atol=values[0], rtol=values[1])


class ToleranceDialog(ModalScreen[Tolerance | None]):
    """atol and rtol; enter applies (the rows re-classify at once), escape cancels."""

    # enter is the dialog's own (priority) key rather than each field's submit message, which
    # travels up through three containers before it arrives here.
    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter", "apply", "apply", show=False, priority=True)]
    AUTO_FOCUS = "#atol"

    def __init__(self, tolerance: Tolerance, apply: Callable[[Tolerance], None]) -> None:
        super().__init__()
        self.tolerance = tolerance
        self.apply = apply

    def compose(self) -> ComposeResult:
        with Vertical(id="tolerance-dialog"):
            yield Label("Tolerance: |ported − original| ≤ atol + rtol·|original|", classes="dialog-title")
            with Horizontal(classes="field"):
                yield Label("atol", classes="field-name")
                yield Input(f"{self.tolerance.atol:g}", id="atol", compact=True)
            with Horizontal(classes="field"):
                yield Label("rtol", classes="field-name")
                yield Input(f"{self.tolerance.rtol:g}", id="rtol", compact=True)
            yield Label("", id="tolerance-error", markup=False)  # quotes what was typed (or pasted)
            yield Label("enter applies · tab next field · escape cancels", classes="dialog-hint")

    def action_apply(self) -> None:
        try:
            tolerance = parse_tolerance(self.query_one("#atol", Input).value, self.query_one("#rtol", Input).value)
        except ValueError as error:
            self.query_one("#tolerance-error", Label).update(printable(error))
            return
        # Applied before the dialog closes rather than after (a dismiss callback): the screen
        # underneath then takes in the new statuses and its new layout before it is drawn
        # again, and is drawn once instead of twice.
        self.apply(tolerance)
        self.dismiss(tolerance)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PathDialog(ModalScreen[list[Path] | None]):
    """Where to write a file: enter writes, escape cancels; an existing file is overwritten only
    after a second enter. A file that cannot be written is said here, and the dialog stays.

    ``targets`` gives the files a path stands for (the report writes two); ``write`` writes
    them and returns them, or raises a :class:`TracetuiError` whose message is shown.
    """

    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("enter", "write", "write", show=False, priority=True)]
    AUTO_FOCUS = "#path"

    def __init__(
        self,
        title: str,
        default: str,
        targets: Callable[[Path], list[Path]],
        write: Callable[[Path, str], list[Path]],
    ) -> None:
        super().__init__()
        self.title_text = title
        self.default = default
        self.targets = targets
        self.write = write
        self.confirmed: str | None = None  # the path whose overwriting the user confirmed (a second enter)

    def compose(self) -> ComposeResult:
        with Vertical(id="path-dialog"):
            yield Label(self.title_text, classes="dialog-title", markup=False)
            yield Input(self.default, id="path", compact=True)
            yield Label("", id="path-message", markup=False)  # quotes paths and the system's messages
            yield Label("enter writes · escape cancels · from the working folder", classes="dialog-hint")

    def say(self, text: str, warning: bool = False) -> None:
        message = self.query_one("#path-message", Label)
        message.update(printable(text, multiline=True))
        message.set_class(warning, "-warning")

    def action_write(self) -> None:
        from tracetui.tui.saving import given_path

        text = self.query_one("#path", Input).value
        if not text.strip():
            self.say("type a path")
            return
        path = given_path(text)
        # A folder in the way is not "overwritten": the write says what is wrong with it.
        existing = [target for target in self.targets(path) if os.path.lexists(target) and not os.path.isdir(target)]
        if existing and self.confirmed != text:
            names = " and ".join(target.name for target in existing)
            self.confirmed = text
            self.say(f"{names} already exists: enter again overwrites it, or change the path", warning=True)
            return
        try:
            written = self.write(path, text)
        except TracetuiError as error:  # a full disk, a read-only folder, a folder in the way
            self.confirmed = None
            self.say(error.message)
            return
        self.dismiss(written)

    def on_input_changed(self) -> None:
        if self.confirmed is not None:
            self.confirmed = None
            self.say("")

    def action_cancel(self) -> None:
        self.dismiss(None)


KEYS = [
    ("↑ ↓  j k", "move the cursor"),
    ("pgup pgdn", "a page up or down"),
    ("g G  home end", "first or last row"),
    ("n N", "next or previous culprit (every module wrong on its own)"),
    ("f", "jump to the culprit (the first call that introduces a difference)"),
    ("enter space", "fold or unfold the selected row's submodules (click ▸/▾ too)"),
    ("/", "filter rows by name: a regex over both sides' names; enter keeps it"),
    ("x", "only rows that differ (culprits, diverged, inherited, …) with their ancestors; x again shows all"),
    ("u", "only unmatched rows (calls one model makes), with their ancestors; with x, both"),
    ("t", "change atol / rtol: rows re-classify at once"),
    ("d", "show or hide the detail pane"),
    ("b", "debug: re-run the model and stop ipdb in the selected module's forward, on this call"),
    ("B", "debug: the same at the culprit"),
    ("s", "switch the side b and B re-run: ported (default) or original; the status line shows it"),
    ("m", "pair by hand: m on an original-only row, then m on its ported counterpart; m on a paired row unpairs it"),
    ("escape", "cancel a pending m mark (the ◆ marked row), else clear the filter"),
    ("w", "write the pairing as a rename map for --map next time (asks where: next to the ported script)"),
    ("c", "copy the selected row's names; in the detail pane, its worst output elements"),
    ("S", "save a screenshot of the screen (SVG)"),
    ("R", "save the report: text (as --no-tui --full) and JSON beside it (as --json)"),
    ("ctrl+p", "the command palette: every action by name, and the theme (light or dark)"),
    ("tab", "move focus between the list and the detail pane"),
    ("?", "this help"),
    ("q", "quit"),
]

LEGEND = [
    ("culprit", CULPRIT_LABEL, "inputs agree, outputs do not: the difference starts here"),
    ("diverged", STATUS_LABELS["diverged"], "inputs agree, outputs do not (an enclosing call of the culprit, or a later one)"),
    ("inherited", STATUS_LABELS["inherited"], "outputs differ because the inputs already did"),
    ("shape_mismatch", STATUS_LABELS["shape_mismatch"], "output shapes differ"),
    ("dtype_mismatch", STATUS_LABELS["dtype_mismatch"], "values agree, dtypes differ"),
    ("nonfinite", STATUS_LABELS["nonfinite"], "NaN or Inf where the other side has a number"),
    ("nondeterministic", STATUS_LABELS["nondeterministic"], "changes from one run of the same model to the next"),
    ("unmatched", STATUS_LABELS["unmatched"], "only one model makes this call (a --map rule may pair it)"),
    ("match", STATUS_LABELS["match"], "outputs agree within the tolerance"),
]


class HelpScreen(ModalScreen[None]):
    """Keys, colours, and what `n` stops at."""

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "close"),
    ]
    AUTO_FOCUS = "#help"

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Label("tracetui — keys", classes="dialog-title")
            for keys, meaning in KEYS:
                with Horizontal(classes="help-line"):
                    yield Label(keys, classes="help-key")
                    yield Label(meaning, classes="help-meaning")
            yield Label("status colours", classes="dialog-title legend-title")
            for status, label, meaning in LEGEND:
                with Horizontal(classes="help-line"):
                    yield Label(label, classes=f"help-status -{status}")
                    yield Label(meaning, classes="help-meaning")
            yield Static(
                "x keeps the rows that differ: diverged, inherited, shape mismatch, dtype mismatch, "
                "nonfinite and nondeterministic rows; unmatched rows have nothing to compare, and u shows them. "
                "In ipdb, `p ctx` shows both sides' recorded tensors for the call and `p ctx.diff(x)` "
                "compares a live tensor with the other side; c finishes the run, q abandons it — either way "
                "tracetui comes back where it was.",
                classes="help-note",
            )
            yield Label("escape, q or ? closes", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)

"""The command palette (ctrl+p): every action of the interface, found by typing part of its name.

Each command is a key's action, listed with the key and what it does, so that the palette
also teaches the keys. Actions the current view turns off (``t`` on a single trace) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tracetui.tui.call_list import CallList
from tracetui.tui.detail import DetailPane


@dataclass(frozen=True)
class PaletteCommand:
    """One action: its title in the palette, its key, what it does, and where it runs."""

    title: str
    key: str
    help: str
    action: str
    owner: type | None = None  # the widget whose action it is; None: the app's


PALETTE_COMMANDS = (
    PaletteCommand("Jump to the culprit", "f", "select the first culprit, the call that introduces a difference", "culprit", CallList),
    PaletteCommand("Next culprit", "n", "the next module wrong on its own, below the cursor", "next_culprit(1)", CallList),
    PaletteCommand("Previous culprit", "N", "the previous culprit, above the cursor", "next_culprit(-1)", CallList),
    PaletteCommand("Filter rows by name", "/", "a regex over both sides' names", "filter"),
    PaletteCommand("Only rows that differ", "x", "culprits, diverged, inherited, … rows; x again shows all", "only_problems"),
    PaletteCommand("Only unmatched rows", "u", "calls only one model makes", "only_unmatched"),
    PaletteCommand("Change the tolerance", "t", "atol and rtol: the rows re-classify at once", "tolerance"),
    PaletteCommand("Show or hide the detail pane", "d", "statistics, worst elements and a preview of the selected row", "toggle_detail"),
    PaletteCommand("Debug the selected call", "b", "re-run the model, stop ipdb in this module's forward on this call", "break_selected"),
    PaletteCommand("Debug the culprit", "B", "re-run the model and stop ipdb in the culprit's forward", "break_culprit"),
    PaletteCommand("Switch the side b debugs", "s", "ported (the default) or original", "switch_side"),
    PaletteCommand("Pair or unpair by hand", "m", "m on an original-only row, then on its ported counterpart", "pair_by_hand"),
    PaletteCommand("Write the rename map", "w", "the pairing as a map for --map next time", "write_map"),
    PaletteCommand("Copy the selected row's names", "c", "both sides' full names, to the clipboard", "copy_names"),
    PaletteCommand("Copy the worst elements", "c in the detail pane", "the selected row's worst output elements", "copy_worst", DetailPane),
    PaletteCommand("Save a screenshot", "S", "the screen as an SVG file", "save_screenshot"),
    PaletteCommand("Save the report", "R", "the headless report as text, and as JSON beside it", "save_report"),
    PaletteCommand("Help", "?", "every key and what the colours mean", "help"),
    PaletteCommand("Quit", "q", "and print a one-line summary with the command that re-runs it headless", "quit"),
)


class ActionCommands(Provider):
    """The interface's own actions, with their keys, for the command palette."""

    def available(self) -> list[PaletteCommand]:
        app = self.app
        commands = []
        for command in PALETTE_COMMANDS:
            name = command.action.split("(")[0]
            owner = app if command.owner is None else self.screen.query_one(command.owner)
            if owner.check_action(name, ()) is not False and hasattr(owner, f"action_{name}"):
                commands.append(command)
        return commands

    def run(self, command: PaletteCommand) -> None:
        owner = self.app if command.owner is None else self.screen.query_one(command.owner)
        self.app.call_later(self.app.run_action, command.action, owner)

    def label(self, command: PaletteCommand) -> str:
        return f"{command.title}  ({command.key})"

    async def discover(self) -> Hits:
        for command in self.available():
            yield DiscoveryHit(self.label(command), partial(self.run, command), help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self.available():
            label = self.label(command)
            score = max(matcher.match(label), matcher.match(command.help) * 0.5)
            if score > 0:
                yield Hit(score, matcher.highlight(label), partial(self.run, command), text=label, help=command.help)

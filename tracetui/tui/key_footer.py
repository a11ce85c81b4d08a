"""The footer: the keys that work here, on one line.

Textual's ``Footer`` rebuilds a widget per key (and lays out the screen) whenever the focus
moves; this draws the same line as text, so moving into the filter or a dialog costs a redraw.
Clicking a key presses it.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.screen import Screen
from textual.widget import Widget

from tracetui.tui.lines import component_style


class KeyFooter(Widget):
    """``n next Δ  f culprit  q quit  ? help …`` for the focused widget and the app."""

    COMPONENT_CLASSES = {"key-footer--key", "key-footer--description"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys: list[tuple[str, str, str]] = []  # (key, shown as, description)
        self._spans: list[tuple[int, int, str]] = []  # (first cell, last cell, key)

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self.bindings_changed)
        self.bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def bindings_changed(self, screen: Screen) -> None:
        keys = []
        seen_actions = set()
        for _, binding, enabled, _ in screen.active_bindings.values():
            if binding.show and enabled and binding.action not in seen_actions:
                seen_actions.add(binding.action)
                keys.append((binding.key.split(",")[0], self.app.get_key_display(binding), binding.description))
        if keys != self._keys:
            self._keys = keys
            self.refresh()

    def render(self) -> Text:
        key_style = component_style(self, "key-footer--key")
        description_style = component_style(self, "key-footer--description")
        line = Text(" ", no_wrap=True, overflow="ellipsis")
        self._spans = []
        for key, shown, description in self._keys:
            start = line.cell_len
            line.append(f"{shown}", key_style)
            line.append(f" {description}  ", description_style)
            self._spans.append((start, line.cell_len, key))
        return line

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._spans:
            if start <= event.x < end:
                self.run_worker(self.app.run_action(f"app.simulate_key({key!r})"))
                return

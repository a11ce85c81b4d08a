"""What the two Line API widgets (the call list and the detail pane) share."""

from __future__ import annotations

from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.widget import Widget


def set_virtual_size(view: ScrollView, size: Size, repaint: bool = True) -> None:
    """Change how far ``view`` scrolls, through Textual's public API only.

    Assigning ``virtual_size`` (as Textual's Log and Tree do) lays the screen out again, which
    updates the scrollbars, and repaints the whole view. ``repaint=False`` asks for the same
    layout without the repaint: the caller knows which lines changed and redraws only those.
    """
    if size == view.virtual_size:
        return
    if repaint:
        view.virtual_size = size
    else:
        view.set_reactive(Widget.virtual_size, size)
        view.refresh(layout=True, repaint=False)


def component_style(widget: Widget, name: str) -> Style:
    """What a component class sets, with colours resolved the way Textual draws them.

    A partial style keeps only what the class sets (so it can be layered: row, cursor, cell)
    but leaves colours such as ``$text-muted`` (white at 60%) or ``$primary 40%`` unblended,
    which Rich would draw opaque; the full style has them blended over the widget's background.
    """
    full = widget.get_component_rich_style(name)
    partial = widget.get_component_rich_style(name, partial=True)
    return Style(
        color=full.color if partial.color is not None else None,
        bgcolor=full.bgcolor if partial.bgcolor is not None else None,
        bold=partial.bold,
        dim=partial.dim,
        italic=partial.italic,
        underline=partial.underline,
        reverse=partial.reverse,
        strike=partial.strike,
    )

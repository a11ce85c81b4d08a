"""What the two Line API widgets (the call list and the detail pane) share."""

from __future__ import annotations

from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.widget import Widget


class LineView(ScrollView):
    """A Line API view that sets its own virtual size (:func:`set_virtual_size`)."""

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        # A layout passes a view without children its content region as virtual size; compared
        # with the view's own, that reads as a change on every layout of the screen, and both
        # scrollbars are drawn again (a few milliseconds each). Only a real change counts here.
        return super()._size_updated(size, self.virtual_size, container_size, layout)


def set_virtual_size(view: ScrollView, size: Size, repaint: bool = True) -> None:
    """Change how far ``view`` scrolls without a layout of the whole screen.

    Assigning ``virtual_size`` asks for a layout of every widget (about 15 ms here), although
    only this widget's scrollbars change. This does what Textual's own ``_size_updated`` does
    for a size known without layout: set the value quietly and update the scrollbars.
    ``repaint=False`` leaves redrawing the lines to the caller (it knows which changed).
    """
    if size == view.virtual_size:
        return
    view.set_reactive(Widget.virtual_size, size)
    if view.is_mounted and view.container_size:
        view._scroll_update(size)  # Textual's scrollbar update (used by Widget._size_updated)
    if repaint:
        view.refresh()


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

"""The Textual interface: browse a comparison row by row, or one model's trace.

``tracetui compare ORIG PORTED`` calls :func:`open_comparison`; ``tracetui show`` calls
:func:`open_trace`. Both run :class:`TracetuiApp`, which tests build directly.
"""

from __future__ import annotations

from tracetui.compare import Comparison
from tracetui.trace import Trace
from tracetui.tui.app import TracetuiApp

__all__ = ["TracetuiApp", "open_comparison", "open_trace"]


def open_comparison(comparison: Comparison) -> None:
    """Run the interface on a comparison until the user quits (q)."""
    TracetuiApp(comparison, freeze_garbage_collector=True).run()


def open_trace(trace: Trace) -> None:
    """Run the interface on one model's trace: the same list and detail pane, one side, no Δ."""
    TracetuiApp(trace, freeze_garbage_collector=True).run()

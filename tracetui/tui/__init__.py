"""The Textual interface: browse a comparison row by row, or one model's trace.

``tracetui compare ORIG PORTED`` calls :func:`open_comparison`; ``tracetui show`` calls
:func:`open_trace`. Both run :class:`TracetuiApp`, which tests build directly.
"""

from __future__ import annotations

from tracetui.compare import Comparison
from tracetui.errors import InternalError
from tracetui.interruption import INTERRUPTING_SIGNALS, interruption_for, restored_signal_handlers
from tracetui.trace import Trace
from tracetui.tui.app import TracetuiApp

__all__ = ["TracetuiApp", "open_comparison", "open_trace"]


def open_comparison(comparison: Comparison) -> None:
    """Run the interface on a comparison until the user quits (q).

    Raises KeyboardInterrupt if SIGINT, SIGTERM or SIGHUP ended it (see :func:`run_until_quit`).
    """
    run_until_quit(TracetuiApp(comparison, freeze_garbage_collector=True, exit_on_signals=True))


def open_trace(trace: Trace) -> None:
    """Run the interface on one model's trace: the same list and detail pane, one side, no Δ."""
    run_until_quit(TracetuiApp(trace, freeze_garbage_collector=True, exit_on_signals=True))


def run_until_quit(app: TracetuiApp) -> None:
    """Run ``app``; a signal that ended it is raised once the terminal is restored, as it would
    have been without the interface, so the command exits 130 like a headless one."""
    # The event loop sets the signals it handled to their defaults when it closes: the command
    # line's own handlers come back afterwards.
    with restored_signal_handlers(INTERRUPTING_SIGNALS):
        app.run()
    if app.ending_signal is not None:
        raise interruption_for(app.ending_signal)
    if app.return_code:  # Textual caught an exception and printed its traceback: never the verdict's 0 or 1
        raise InternalError(
            "the interface stopped on an error (its traceback is above). This is tracetui's failure, not your model's: "
            "please report it; `--no-tui` prints the report without the interface."
        )

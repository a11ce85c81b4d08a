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
from tracetui.tui.summary import quit_summary

__all__ = ["TracetuiApp", "open_comparison", "open_trace"]


def open_comparison(comparison: Comparison, *, theme: str | None = None, command: str | None = None) -> None:
    """Run the interface on a comparison until the user quits (q), then print one line: the
    verdict, the culprits and ``command``, the way to get the report without the interface.

    Raises KeyboardInterrupt if SIGINT, SIGTERM or SIGHUP ended it (see :func:`run_until_quit`).
    """
    app = TracetuiApp(comparison, freeze_garbage_collector=True, exit_on_signals=True, theme=theme)
    run_until_quit(app)
    print(quit_summary(app.comparison or comparison, command), flush=True)


def open_trace(trace: Trace, *, theme: str | None = None) -> None:
    """Run the interface on one model's trace: the same list and detail pane, one side, no Δ."""
    run_until_quit(TracetuiApp(trace, freeze_garbage_collector=True, exit_on_signals=True, theme=theme))


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

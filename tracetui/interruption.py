"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

Python's default for SIGTERM and SIGHUP ends the process on the spot: no ``finally`` runs, so
a ``--stream`` comparison leaves its temporary trace (gigabytes) in the temp directory, and
the interface leaves the terminal in its alternate screen with the cursor hidden. The command
line turns them into :class:`Terminated`, a :class:`KeyboardInterrupt` raised wherever the
main thread is, so every ``finally`` and ``with`` unwinds as on Ctrl-C and the command exits
130. In the interface, whose main thread runs Textual's event loop, they (and SIGINT, which
Textual does not see as a key) are handed to that loop instead, to quit the app as q does so
that Textual gives the terminal back (:class:`tracetui.tui.app.TracetuiApp`).

Only the command line installs these handlers: the Python API runs inside someone else's
program, whose signals are its own.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

# SIGHUP: the terminal was closed (or `kill -HUP`); Windows has no SIGHUP.
TERMINATING_SIGNALS: tuple[signal.Signals, ...] = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
INTERRUPTING_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, *TERMINATING_SIGNALS)
INTERRUPTED_EXIT_STATUS = 130  # the shells' 128 + SIGINT, for every one of them (the contract)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that the same cleanup runs."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def interruption_for(signal_number: int) -> KeyboardInterrupt:
    """The exception Ctrl-C (SIGINT) or a terminating signal would have raised."""
    return KeyboardInterrupt() if signal_number == signal.SIGINT else Terminated(signal_number)


def terminal_output_streams() -> list[int]:
    """The file descriptors of stdout and stderr that are a terminal now (to tell a hangup later)."""
    return [descriptor for descriptor in (1, 2) if os.isatty(descriptor)]


def silence_hung_up_terminal(terminal_streams: Iterable[int]) -> None:
    """Point at os.devnull the ``terminal_streams`` whose terminal was closed.

    After a hangup every write to the terminal fails (EIO), and one failing during the cleanup —
    the spinner stopping, Textual leaving its screen, "interrupted" — would end the command
    with a traceback, or leave it hung in Textual's writer thread. Nothing can be shown any
    more; the cleanup still has to run. A `kill -HUP` leaves a live terminal alone.
    """
    hung_up = [descriptor for descriptor in terminal_streams if not os.isatty(descriptor)]
    if not hung_up:
        return
    null_device = os.open(os.devnull, os.O_WRONLY)
    try:
        for descriptor in hung_up:
            os.dup2(null_device, descriptor)
    finally:
        os.close(null_device)


def in_main_thread() -> bool:
    """Python runs signal handlers in the main thread only, and lets only it install them."""
    return threading.current_thread() is threading.main_thread()


def heeded_signals(signals: Iterable[signal.Signals]) -> list[signal.Signals]:
    """The signals that are not ignored: `nohup` ignores SIGHUP, a shell's background job SIGINT, on purpose."""
    return [signal_number for signal_number in signals if signal.getsignal(signal_number) is not signal.SIG_IGN]


@contextmanager
def restored_signal_handlers(signals: Iterable[signal.Signals]) -> Iterator[None]:
    """Put the handlers of ``signals`` back as they were, whatever changed them meanwhile
    (an asyncio loop sets the ones it handled to their defaults when it closes)."""
    previous = {signal_number: signal.getsignal(signal_number) for signal_number in signals} if in_main_thread() else {}
    try:
        yield
    finally:
        for signal_number, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back from here
                signal.signal(signal_number, handler)


@contextmanager
def terminating_signals_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise :class:`Terminated` (for the command line)."""
    if not in_main_thread():
        yield
        return
    terminal_streams = terminal_output_streams()

    def raise_terminated(signal_number: int, frame: FrameType | None) -> None:
        silence_hung_up_terminal(terminal_streams)
        raise Terminated(signal_number)

    with restored_signal_handlers(TERMINATING_SIGNALS):
        for signal_number in heeded_signals(TERMINATING_SIGNALS):
            signal.signal(signal_number, raise_terminated)
        yield

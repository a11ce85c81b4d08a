"""Errors that reach the user as one short paragraph (exit status 2), never a bare traceback."""

from __future__ import annotations


class TracetuiError(Exception):
    """A problem the user can fix: the message says what went wrong, where, and what to do."""

    exit_status = 2

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # The user's own traceback (from their script), shown below the message.
        self.detail = detail


class ScriptError(TracetuiError):
    """A model script failed to import, has no build(), or returned the wrong thing."""


class TraceFileError(TracetuiError):
    """A trace file is corrupt, truncated, foreign or from a newer tracetui."""


class RecordingError(TracetuiError):
    """The forward pass could not be recorded (hooks did not fire, unsupported values)."""


class UsageError(TracetuiError):
    """Bad command-line arguments or options (a rename map that does not parse, say)."""


class OutputError(TracetuiError):
    """A file could not be written (a full disk, no permission); whatever was there is unchanged."""

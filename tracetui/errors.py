"""Errors that reach the user as one short paragraph (exit status 2), never a bare traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


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


class InternalError(TracetuiError):
    """tracetui itself failed (inside one of its hooks, say): not the user's model, not their input."""


def own_hook(hook: Callable[..., Any], source: str, names: dict[int, str]) -> Callable[..., Any]:
    """``hook``, with an exception of tracetui's own code made an :class:`InternalError` naming
    the module. Without it, a failure in a hook surfaces from inside the model's forward pass
    and reads as the model's fault ("the forward pass raised …, fix it in the model code")."""

    @functools.wraps(hook)
    def guarded(module: Any, *arguments: Any) -> Any:
        try:
            return hook(module, *arguments)
        except TracetuiError:
            raise
        except Exception as error:
            name = names.get(id(module), "?") or "(root)"
            raise InternalError(
                f"{source}: tracetui failed while watching module {name} ({type(module).__name__}): "
                f"{type(error).__name__}: {error}. This is tracetui's failure, not the model's: please report it "
                "with the output of the same command run with --debug."
            ) from error

    return guarded


class OutputError(TracetuiError):
    """A file could not be written (a full disk, no permission); whatever was there is unchanged."""

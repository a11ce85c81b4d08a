"""The module calls that have started and not yet ended, one stack per thread.

Model code may run submodules on worker threads (a thread pool over the experts of a
mixture, say): their hooks fire on those threads, interleaved with the thread that runs the
forward pass. A single stack shared by all threads nests calls in the wrong parent and closes
the wrong call, and the root's output is then never recorded. Each thread's calls nest in that
thread; a worker's outermost call nests in the innermost open call of the thread that started
the pass, which is the module that handed the work out in every model we know of.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

Entry = TypeVar("Entry")


class OpenCalls(Generic[Entry]):
    """Per-thread stacks of open calls, innermost last. Create it on the thread that runs the pass.

    Hooks that read or change it hold :attr:`lock`: the recorder's bookkeeping is not made for
    two threads at once, and a model that runs its modules in parallel gets them recorded one
    at a time (the forward bodies still run in parallel).
    """

    def __init__(self) -> None:
        self._main_thread = threading.get_ident()
        self._stacks: dict[int, list[Entry]] = {}
        self.lock = threading.RLock()

    def _stack(self) -> list[Entry]:
        thread = threading.get_ident()
        stack = self._stacks.get(thread)
        if stack is None:
            stack = self._stacks[thread] = []
        return stack

    def push(self, entry: Entry) -> None:
        self._stack().append(entry)

    def pop(self) -> Entry:
        return self._stack().pop()

    def top(self) -> Entry | None:
        """This thread's innermost open call (None when this thread has none)."""
        stack = self._stack()
        return stack[-1] if stack else None

    def innermost(self) -> Entry | None:
        """The call a new call on this thread nests in: this thread's innermost, or, for a
        worker thread's outermost call, the innermost open call of the main thread."""
        return next(self.enclosing(), None)

    def enclosing(self) -> Iterator[Entry]:
        """The open calls around a new call on this thread, innermost first."""
        stack = self._stack()
        yield from reversed(stack)
        if threading.get_ident() != self._main_thread:
            yield from reversed(self._stacks.get(self._main_thread, []))

"""Memory housekeeping shared by the stages that build many objects."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def garbage_collection_paused() -> Iterator[None]:
    """Recording and comparing create many small objects and no cycles worth collecting; the
    collector would walk the growing heap again and again (half the time of a 20,000-call compare)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _load_malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed blocks below its (growing) mmap threshold in the heap, so a recording
    that copies, writes and frees shard after shard would otherwise hold its peak for good —
    the bounded-memory modes would be bounded only on paper.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)

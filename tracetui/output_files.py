"""Files tracetui writes: checked before any model runs, then written whole or not at all.

A mistyped output path found after both models ran wastes their minutes, and a report,
trace or map half-written over a good one (a full disk, Ctrl-C) destroys what the user had.
So every command checks each output path up front (:func:`check_output_file`,
:func:`check_output_directory`): its folder exists, it is not a folder itself, not a Python
source and not one of the command's own inputs. And every file is written through
:func:`write_atomically`: into a temporary file beside it, moved over the old one with
``os.replace`` only once complete, and removed on any failure.

Paths are made absolute (:func:`absolute_path`) before a model script runs, because a script
may change the working directory; messages show them as the user typed them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tracetui.errors import OutputError, UsageError

# Ends the name of a file still being written; a trace directory counts such leftovers as its own.
PARTIAL_SUFFIX = ".tracetui-partial"

GivenPath = str | Path  # a path as the user or the caller gave it

# Why a write failed, in words a user acts on (the rest: the system's own message).
WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
}


def absolute_path(path: GivenPath) -> Path:
    """``path`` from the current working directory, ``..`` folded, symlinks left alone."""
    return Path(os.path.abspath(path))


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: ``./a.py`` and ``a.py``, a symlink and its target, hard links."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist
        return False


def is_within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def is_plain_file(path: Path) -> bool:
    """A regular file that is not a symlink: what can be replaced by a new file of the same name."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def nearest_existing_folder(path: Path) -> Path:
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def check_output_file(
    path: GivenPath,
    option: str,
    inputs: Iterable[Path] = (),
    *,
    example: str = "out",
    python_allowed: bool = False,
    creates_folder: bool = False,
) -> Path:
    """The absolute path of a file a command will write; a :class:`UsageError` naming ``option`` otherwise.

    ``inputs`` are the command's own input files, which it must not overwrite; a ``.py`` name is
    refused unless ``python_allowed`` (the command writes Python). Missing folders are an error
    unless the command ``creates_folder``. ``example`` is a file name to suggest for a folder.
    """
    absolute = absolute_path(path)
    where = f"{option} {path}"
    if absolute.is_dir():
        raise UsageError(f"{where}: that is a folder; name a file in it, e.g. {option} {Path(path) / example}.")
    for input_path in inputs:
        if same_file(absolute, input_path):
            raise UsageError(f"{where}: that is one of this command's inputs, and writing there would destroy it; write to another file.")
    if absolute.suffix == ".py" and not python_allowed:
        raise UsageError(f"{where}: a .py name is for Python source, and tracetui would write another format into it; choose another name.")
    folder = nearest_existing_folder(absolute) if creates_folder else absolute.parent
    if not folder.exists():
        raise UsageError(f"{where}: the folder {folder} does not exist; create it first or write somewhere else.")
    if not folder.is_dir():
        raise UsageError(f"{where}: {folder} is a file, not a folder; write somewhere else.")
    if os.path.lexists(absolute) and not is_plain_file(absolute):  # a device (/dev/null) or a pipe is written in place
        writable = os.access(absolute, os.W_OK)
    else:  # the new file is made beside the old one, then moved over it
        writable = os.access(folder, os.W_OK | os.X_OK)
    if not writable:
        raise UsageError(f"{where}: no permission to write there; choose a folder you can write to.")
    return absolute


def check_output_directory(path: GivenPath, option: str, inputs: Iterable[Path] = ()) -> Path:
    """The absolute path of a folder a command will write files into (making it and its parents if needed)."""
    absolute = absolute_path(path)
    where = f"{option} {path}"
    if os.path.lexists(absolute) and not absolute.is_dir():
        raise UsageError(f"{where}: that is a file, and {option} names a folder to write into; pass a new or empty folder.")
    for input_path in inputs:
        if is_within(input_path, absolute):
            raise UsageError(f"{where}: the folder holds {input_path}, an input of this command; pass another folder.")
    folder = absolute if absolute.is_dir() else nearest_existing_folder(absolute)
    if not folder.is_dir():
        raise UsageError(f"{where}: {folder} is a file, not a folder; write somewhere else.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{where}: no permission to write in {folder}; choose a folder you can write to.")
    return absolute


def write_atomically(path: Path, write: Callable[[Path], None], shown: str | None = None) -> None:
    """Have ``write`` fill a temporary file beside ``path``, then move it over ``path``.

    The old file stays as it was until the new one is complete; on any failure, Ctrl-C
    included, the partial file is removed. A failed write (a full disk, say) becomes an
    :class:`OutputError` naming ``shown`` (default: the path). Devices, pipes and symlinks
    (``/dev/null``, ``/dev/stdout``) are written in place, since replacing them would replace the
    device or the link.
    """
    shown = str(path) if shown is None else shown
    existed = os.path.lexists(path)
    if existed and not is_plain_file(path):
        try:
            write(path)
        except OSError as error:
            raise write_failed(shown, error, "") from error
        return
    temporary = create_partial_file(path)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_failed(shown, error, "the file already there is unchanged" if existed else "") from error
        raise


@contextlib.contextmanager
def directory_written_whole(directory: Path, shown: str | None = None) -> Iterator[Path]:
    """A new folder beside ``directory`` to write into, which takes ``directory``'s place only once
    the block completes: a recording that fails (a full disk, Ctrl-C) leaves the trace that was
    there as it was, and no partial folder behind. Files memory-mapped from the new folder stay
    readable after the move (a rename keeps them)."""
    shown = str(directory) if shown is None else shown
    directory.parent.mkdir(parents=True, exist_ok=True)
    working = directory.with_name(f".{directory.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        working.mkdir(mode=0o777)  # the umask narrows it, as for any new folder
    except OSError as error:
        raise write_failed(shown, error, "the folder already there is unchanged" if directory.exists() else "") from error
    try:
        yield working
        previous = None
        if directory.exists():
            previous = working.with_name(working.name + ".previous")
            directory.rename(previous)
        working.rename(directory)
    except BaseException as error:
        shutil.rmtree(working, ignore_errors=True)
        if isinstance(error, OSError):
            raise write_failed(shown, error, "the folder already there is unchanged" if directory.exists() else "") from error
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def write_text_atomically(path: Path, text: str, shown: str | None = None) -> None:
    """:func:`write_atomically` for text (UTF-8)."""

    def write(temporary: Path) -> None:
        temporary.write_text(text, encoding="utf-8")

    write_atomically(path, write, shown)


def create_partial_file(path: Path) -> Path:
    """An empty, new file beside ``path``, with the permissions ``path`` has (or the umask gives)."""
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o666
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        except OSError as error:
            raise write_failed(str(path), error, "the file already there is unchanged" if path.exists() else "") from error
        os.close(descriptor)
        if path.exists():
            os.chmod(temporary, mode)  # the umask narrowed it at creation
        return temporary


def write_failed(shown: str, error: OSError, kept: str) -> OutputError:
    reason = WRITE_FAILURES.get(error.errno or 0) or error.strerror or str(error)
    advice = "Free some space or write elsewhere" if error.errno in (errno.ENOSPC, errno.EDQUOT) else "Write elsewhere"
    return OutputError(f"{shown}: could not be written ({reason}){'; ' + kept if kept else ''}. {advice}.")

"""What several sub-commands share: their run and memory options, and the checks on them."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

from tracetui.errors import OutputError, UsageError
from tracetui.safe_text import printable
from tracetui.script import DEFAULT_SEED

THEMES = {"dark": "textual-dark", "light": "textual-light"}  # --theme → Textual's theme


def add_theme_option(command: argparse.ArgumentParser) -> None:
    """--theme: the interface's colours (ctrl+p, Theme, switches them while it runs)."""
    command.add_argument(
        "--theme",
        choices=tuple(THEMES),
        default="dark",
        help="the interface's colours: dark, or light for a light terminal (default: %(default)s; ctrl+p → Theme switches)",
    )


def add_run_options(command: argparse.ArgumentParser, rerun: bool) -> None:
    """--seed, --device, --debug (and --no-rerun for commands that run each model twice)."""
    command.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="seed set before build() and the forward pass (default: %(default)s)"
    )
    command.add_argument("--device", default="cpu", help="device to run the models on, e.g. cuda (default: %(default)s)")
    if rerun:
        command.add_argument(
            "--no-rerun",
            action="store_true",
            help="run each model once; skips the check that finds nondeterministic calls (default: run twice)",
        )
    command.add_argument("--debug", action="store_true", help="show tracetui's own traceback on errors")


def add_distributed_options(command: argparse.ArgumentParser, side: str) -> None:
    """--nproc and --timeout: run a script that splits itself across ranks (tracetui.distributed)."""
    from tracetui.distributed.launch import DEFAULT_TIMEOUT

    group = command.add_argument_group("distributed (ports too big for one device)")
    group.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help=f"run {side} on N processes with torch.distributed.run (gloo on CPU, nccl on CUDA), the default process group "
        "initialised before build(); each rank records, sharded tensors are gathered, rank 0 writes one trace (default: one process)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="with --nproc: stop every rank and fail (exit 2) when the ranks have not finished after this long (default: %(default)g)",
    )


def add_memory_options(command: argparse.ArgumentParser, stream: bool) -> None:
    """What a recording keeps of each tensor and where: for models whose traces outgrow memory."""
    group = command.add_argument_group("memory (models whose traces do not fit in memory)")
    group.add_argument(
        "--keep",
        choices=("full", "stats"),
        default="full",
        help="full: keep every tensor; stats: keep shape, dtype, min, max, mean and NaN/Inf count only — "
        "a difference in statistics is certain, agreement is not proof (default: %(default)s)",
    )
    group.add_argument("--only", metavar="REGEX", help="keep full tensors only for modules whose name matches REGEX, statistics elsewhere")
    if stream:
        group.add_argument(
            "--spill",
            metavar="DIR",
            help="write tensors to DIR/original and DIR/ported as they are recorded and read them back memory-mapped",
        )
        group.add_argument(
            "--stream",
            action="store_true",
            help="record ORIG to disk (--spill DIR, or a temporary directory), then check PORTED against it as it runs, "
            "holding about one layer in memory; PORTED keeps statistics (and --only tensors)",
        )
    else:
        group.add_argument(
            "--spill",
            action="store_true",
            help="write tensors to the -o directory as they are recorded (bounded memory); -o names a directory",
        )


def check_tolerance(arguments: argparse.Namespace) -> None:
    """Before any model runs: NaN, infinite or negative tolerances are refused."""
    for name, value in (("--atol", arguments.atol), ("--rtol", arguments.rtol)):
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a finite number, zero or positive (got {value:g}).")


NO_TERMINAL_TO_DRAW_ON = "no terminal to draw the interface on (stderr is redirected): printing the report; --no-tui says so explicitly"


def wants_interface(arguments: argparse.Namespace, console: Console) -> bool:
    """The interface opens in a terminal unless --no-tui; piped output gets the headless report.

    Textual reads keys from stdin and draws on stderr (``sys.__stderr__``). With stderr
    redirected (``2>/dev/null``) it would draw into the file and look hung on the terminal, so
    the report is printed instead, with a note on stdout saying why. (Drawing on /dev/tty instead
    would mean swapping Textual's private output stream, and there is no /dev/tty on Windows.)
    """
    if arguments.no_tui or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False
    if sys.__stderr__ is None or not sys.__stderr__.isatty():
        console.print(NO_TERMINAL_TO_DRAW_ON, highlight=False, markup=False, soft_wrap=True)
        return False
    return True


def write_json_after_report(write: Callable[[], None], printed: bool = True) -> None:
    """Write --json after the report is printed; a failure (a full disk) says the printed report is whole."""
    try:
        write()
    except OutputError as error:
        before = "the report above is complete, but " if printed else ""
        raise OutputError(f"{before}the JSON report was not written: {error.message}") from error


@contextmanager
def progress_line(errors: Console, first_message: str) -> Iterator[Callable[[str], None]]:
    """A transient line on stderr while the models run: a spinner, the stage with its call count
    (``recording the port, run 1 of 2: 12000 calls``) and the time so far, which moves even
    while one long call runs. Yields the function that sets the stage. Nothing on a stderr that
    is not a terminal. The interface opens only once the comparison is done: until then, this is
    what it shows, the same as the headless report."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description} …", markup=False), TimeElapsedColumn())
    with Progress(*columns, console=errors, transient=True, disable=not errors.is_terminal) as progress:
        task = progress.add_task(printable(first_message), total=None)

        def show_stage(message: str) -> None:
            progress.update(task, description=printable(message))
            progress.refresh()  # at once, as rich's status does: a stage may last less than a refresh

        yield show_stage

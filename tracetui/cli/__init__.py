"""The ``tracetui`` command: one module per sub-command, dispatched by name from :data:`SUB_COMMANDS`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import NamedTuple

from rich.console import Console

from tracetui.cli import align, compare, export_tests, record, show, weights
from tracetui.errors import TracetuiError
from tracetui.interruption import INTERRUPTED_EXIT_STATUS, terminating_signals_interrupt
from tracetui.safe_text import for_markup, printable

DESCRIPTION = """\
Find where a ported neural network stops giving the same numbers as the original.

tracetui runs both models with hooks on every module, records every call's inputs and
outputs, pairs the calls of the two models, and names the module that introduces a
difference (its inputs agree within tolerance, its outputs do not) apart from the modules
that only inherit it.

A model script is a Python file with build() returning (model, inputs), and optionally
forward(model, inputs). The model is a torch.nn.Module; the original's may also be a Flax
linen module (bound, or the pair (module, variables)), a Flax NNX module or a Keras 3 model,
run un-jitted (README: "Originals in JAX, Flax and Keras"). Wherever a script is accepted, a
trace file saved by `tracetui record` is accepted too."""


class SubCommand(NamedTuple):
    add_parser: Callable[[argparse._SubParsersAction], None]  # adds the sub-command's parser and options
    run: Callable[[argparse.Namespace, Console, Console], int]  # (arguments, output, errors) → exit status


# Sub-command name → its parser and its function, in the order `tracetui --help` lists them.
SUB_COMMANDS: dict[str, SubCommand] = {
    "compare": SubCommand(compare.add_compare_command, compare.run_compare),
    "record": SubCommand(record.add_record_command, record.run_record),
    "show": SubCommand(show.add_show_command, show.run_show),
    "align": SubCommand(align.add_align_command, align.run_align),
    "weights": SubCommand(weights.add_weights_command, weights.run_weights),
    "export-tests": SubCommand(export_tests.add_export_tests_command, export_tests.run_export_tests),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracetui", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="tracetui 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for sub_command in SUB_COMMANDS.values():
        sub_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    # As typed: the interface, quitting, prints the command that gives the report without it.
    arguments.command_line = list(sys.argv[1:] if argv is None else argv)
    if arguments.command is None:
        parser.print_help()
        return 2
    # Piped into a file or a CI log, rich would wrap at 80 columns; module names need more.
    # No emoji codes: a module named ":warning:" is shown as those characters.
    console = Console(emoji=False) if sys.stdout.isatty() else Console(width=160, emoji=False)
    errors = Console(stderr=True, emoji=False)
    try:
        # SIGTERM and SIGHUP unwind like Ctrl-C: temporary traces removed, the terminal given back.
        with terminating_signals_interrupt():
            try:
                return SUB_COMMANDS[arguments.command].run(arguments, console, errors)
            except TracetuiError as error:
                if arguments.debug:
                    raise
                print_error(errors, error.message, error.detail)
                return error.exit_status
            except Exception as error:  # tracetui's own bug: still exit 2, never 1 ("diverged")
                if arguments.debug:
                    raise
                print_error(
                    errors,
                    f"tracetui failed: {type(error).__name__}: {error}. This is tracetui's failure, not your model's: "
                    "please report it with the output of the same command run with --debug.",
                    None,
                )
                return 2
    except KeyboardInterrupt:
        report_interrupted(errors)
        return INTERRUPTED_EXIT_STATUS


def print_error(errors: Console, message: str, detail: str | None) -> None:
    # The message quotes paths, names and the script's own exception (its lines kept), and
    # tracetui's own words may hold brackets ("[regex, replacement]"): none of it is markup.
    errors.print(f"[bold red]error:[/] {for_markup(message, multiline=True)}", highlight=False, soft_wrap=True)
    if detail:
        errors.print(printable(detail, multiline=True), highlight=False, markup=False, soft_wrap=True)


def report_interrupted(errors: Console) -> None:
    """Say so on stderr, if there is still somewhere to say it: after SIGHUP the terminal may be
    gone (EIO), and a second Ctrl-C may land here; neither may change the exit status."""
    with contextlib.suppress(OSError, KeyboardInterrupt):
        errors.print("interrupted")

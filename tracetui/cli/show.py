"""``tracetui show``: one model's calls in call order, in the interface or as a table."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracetui import api
from tracetui.cli.common import THEMES, add_run_options, add_theme_option, wants_interface
from tracetui.options import RunOptions
from tracetui.safe_text import printable
from tracetui.trace import Trace


def add_show_command(commands: argparse._SubParsersAction) -> None:
    show = commands.add_parser(
        "show",
        help="list one model's trace",
        description="Record SCRIPT (or load TRACEFILE) and list its module calls in call order.",
        epilog="example:\n  tracetui show ported.py --no-tui",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("source", metavar="SCRIPT|TRACEFILE")
    show.add_argument("--no-tui", action="store_true", help="print the calls instead of opening the interface")
    add_theme_option(show)
    add_run_options(show, rerun=True)


def run_show(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    with errors.status("recording …"):
        trace = api.record_source(arguments.source, RunOptions.from_arguments(arguments))
    if wants_interface(arguments, console):
        from tracetui.tui import open_trace

        open_trace(trace, theme=THEMES[arguments.theme])
        return 0
    print_trace(trace, console)
    return 0


def print_trace(trace: Trace, console: Console) -> None:
    table = Table(box=None, header_style="bold", title=Text(printable(trace.source)), title_justify="left")
    for column in ("#", "module", "class", "call", "outputs"):
        table.add_column(column)
    for record in trace.records:
        outputs = ", ".join(leaf.describe() for leaf in record.tensor_outputs()[:3])
        name = Text(printable("  " * record.depth + record.display_name))
        table.add_row(str(record.index), name, Text(printable(record.class_name)), str(record.call), Text(printable(outputs)))
    console.print(table)

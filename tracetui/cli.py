"""The ``tracetui`` command: compare, record, show."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from tracetui import api
from tracetui.commands import add_align_command, add_memory_options, add_run_options, add_weights_command, run_align, run_weights
from tracetui.compare import Comparison
from tracetui.errors import TracetuiError, UsageError
from tracetui.report import print_report
from tracetui.trace import Trace
from tracetui.tracefile import is_directory_trace, save_trace

DESCRIPTION = """\
Find where a ported neural network stops giving the same numbers as the original.

tracetui runs both models with hooks on every module, records every call's inputs and
outputs, pairs the calls of the two models, and names the module that introduces a
difference (its inputs agree within tolerance, its outputs do not) apart from the modules
that only inherit it.

A model script is a Python file with build() returning (model, inputs), and optionally
forward(model, inputs). Wherever a script is accepted, a trace file saved by
`tracetui record` is accepted too."""

COMPARE_EPILOG = """\
exit status (headless): 0 all paired outputs agree, 1 a divergence was found, 2 usage,
load or script error.

examples:
  tracetui compare original.py ported.py --no-tui
  tracetui compare original.py ported.py --map map.toml --json report.json --no-tui
  tracetui compare original.trace ported.py --atol 1e-4 --no-tui
  tracetui compare original.py ported.py --break-on-mismatch
  tracetui compare original.py ported.py --break-at model.layers.0.mlp:2 --side ported

debugger: --break-on-mismatch and --break-at print the headless report, then build the
chosen side's script again and run it, stopping ipdb at the first line of that module's
forward on that call, with the real arguments in scope. At the prompt `ctx` holds both
sides' recorded inputs and outputs for the call: `p ctx`, `p ctx.diff(hidden_states)`,
`p ctx.diff_output(result)`, `ctx.other.inputs[...]`. `c` runs to the end, `q` stops the
run; the exit status is the comparison's (0 match, 1 diverged), 2 for an unknown or
never-run module or a side given as a trace file."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracetui", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="tracetui 0.1.0")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare",
        help="compare an original model with its port",
        description="Run ORIG and PORTED, pair their module calls and name the first divergence.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("original", metavar="ORIG", help="original model script (.py) or trace file")
    compare.add_argument("ported", metavar="PORTED", help="ported model script (.py) or trace file")
    compare.add_argument("--atol", type=float, default=1e-3, help="absolute tolerance (default: %(default)g)")
    compare.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default: %(default)g)")
    compare.add_argument(
        "--map",
        metavar="MAP.toml",
        help='rename map: rename = [["regex", "replacement"], ...] applied to original names; calls it leaves unpaired '
        "are paired automatically (default: no map, pair everything automatically; see `tracetui align`)",
    )
    compare.add_argument("--no-infer", action="store_true", help="pair calls only by equal names and the --map, not automatically")
    compare.add_argument("--no-tui", action="store_true", help="print the report instead of opening the interface")
    compare.add_argument("--json", metavar="OUT.json", help="also write the report as JSON (schema tracetui.report/1)")
    compare.add_argument("--full", action="store_true", help="headless: print every row, not only the culprit's neighbourhood")
    breaking = compare.add_mutually_exclusive_group()
    breaking.add_argument(
        "--break-on-mismatch",
        action="store_true",
        help="after the report, re-run the --side model and stop ipdb at the first line of the culprit's forward",
    )
    breaking.add_argument(
        "--break-at",
        metavar="QUALNAME[:CALL]",
        help="after the report, re-run the --side model and stop ipdb at the first line of this module's forward "
        "on its CALL-th call (0-based, default 0); QUALNAME is a name of that side's model, (root) for the root",
    )
    compare.add_argument(
        "--side",
        choices=("original", "ported"),
        default="ported",
        help="the model to re-run and stop in for --break-on-mismatch / --break-at (default: %(default)s)",
    )
    add_run_options(compare, rerun=True)
    add_memory_options(compare, stream=True)

    record = commands.add_parser(
        "record",
        help="save a model's trace to a file",
        description="Record SCRIPT's forward pass and save it (safetensors) to compare later or elsewhere.",
        epilog="example:\n  tracetui record original.py -o original.trace\n  tracetui compare original.trace ported.py --no-tui",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("script", metavar="SCRIPT", help="model script (.py)")
    record.add_argument(
        "-o", "--output", required=True, metavar="TRACEFILE",
        help="where to write the trace: a file, or a directory (an existing one, or a name with no suffix) holding shards",
    )
    add_run_options(record, rerun=True)
    add_memory_options(record, stream=False)

    show = commands.add_parser(
        "show",
        help="list one model's trace",
        description="Record SCRIPT (or load TRACEFILE) and list its module calls in call order.",
        epilog="example:\n  tracetui show ported.py --no-tui",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("source", metavar="SCRIPT|TRACEFILE")
    show.add_argument("--no-tui", action="store_true", help="print the calls instead of opening the interface")
    add_run_options(show, rerun=True)

    add_align_command(commands)
    add_weights_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if arguments.command is None:
        parser.print_help()
        return 2
    # Piped into a file or a CI log, rich would wrap at 80 columns; module names need more.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    errors = Console(stderr=True)
    try:
        if arguments.command == "compare":
            return run_compare(arguments, console, errors)
        if arguments.command == "record":
            return run_record(arguments, console, errors)
        if arguments.command == "align":
            return run_align(arguments, console, errors)
        if arguments.command == "weights":
            return run_weights(arguments, console, errors)
        return run_show(arguments, console, errors)
    except TracetuiError as error:
        if arguments.debug:
            raise
        errors.print(f"[bold red]error:[/] {error.message}", highlight=False, soft_wrap=True)
        if error.detail:
            errors.print(error.detail, highlight=False, markup=False, soft_wrap=True)
        return error.exit_status
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


def check_tolerance(arguments: argparse.Namespace) -> None:
    if arguments.atol < 0 or arguments.rtol < 0:
        raise UsageError(f"--atol and --rtol must be zero or positive (got atol {arguments.atol:g}, rtol {arguments.rtol:g}).")


def run_compare(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    check_tolerance(arguments)
    check_break_options(arguments)
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    with errors.status("starting") as status:
        comparison = api.compare(
            arguments.original,
            arguments.ported,
            atol=arguments.atol,
            rtol=arguments.rtol,
            rename_map=rename_map,
            infer=not arguments.no_infer,
            rerun=not arguments.no_rerun,
            seed=arguments.seed,
            device=arguments.device,
            progress=lambda message: status.update(message + " …"),
            keep=arguments.keep,
            only=arguments.only,
            spill=arguments.spill,
            stream=arguments.stream,
        )
    if arguments.json:
        from tracetui.json_report import write_report

        write_report(comparison, arguments.json)
    exit_status = 0 if comparison.verdict == "match" else 1
    if arguments.break_on_mismatch or arguments.break_at is not None:
        print_report(comparison, console, full=arguments.full)
        return run_debugger(arguments, comparison, exit_status, console, errors)
    if wants_interface(arguments):
        from tracetui.tui import open_comparison

        open_comparison(comparison)
        return exit_status
    print_report(comparison, console, full=arguments.full)
    return exit_status


def check_break_options(arguments: argparse.Namespace) -> None:
    """Catch debugger option mistakes before the slow comparison."""
    breaking = arguments.break_on_mismatch or arguments.break_at is not None
    if not breaking:
        if arguments.side != "ported":
            raise UsageError("--side chooses the model to stop in; use it with --break-at or --break-on-mismatch.")
        return
    from tracetui.debugger import parse_break_at, require_script

    if arguments.break_at is not None:
        parse_break_at(arguments.break_at)
    require_script(arguments.original if arguments.side == "original" else arguments.ported, arguments.side)


def run_debugger(arguments: argparse.Namespace, comparison: Comparison, exit_status: int, console: Console, errors: Console) -> int:
    """--break-on-mismatch / --break-at: re-run one side and stop ipdb in a module's forward."""
    from tracetui.debugger import debug_script_call, describe_outcome, find_row, parse_break_at
    from tracetui.script import load_script

    side = arguments.side
    script_path = arguments.original if side == "original" else arguments.ported
    if arguments.break_on_mismatch:
        if comparison.culprit is None:
            console.print("nothing to break at: every paired call agrees within tolerance.")
            return exit_status
        row = comparison.culprit
        if (row.original if side == "original" else row.ported) is None:
            raise UsageError(f"the culprit {row.label} has no {side} call; choose the other side with --side.")
    with errors.status(f"building {script_path} …"):
        script = load_script(script_path, seed=arguments.seed, device=arguments.device)
    if arguments.break_at is not None:
        name, call = parse_break_at(arguments.break_at)
        row = find_row(comparison, side, name, call, model_names=lambda: (module_name for module_name, _ in script.model.named_modules()))
    outcome = debug_script_call(comparison, row, side, script)
    console.print(describe_outcome(outcome, row, side), highlight=False)
    return 2 if outcome == "not_reached" else exit_status


def wants_interface(arguments: argparse.Namespace) -> bool:
    """The interface opens in a terminal unless --no-tui; piped output gets the headless report."""
    return not arguments.no_tui and sys.stdin.isatty() and sys.stdout.isatty()


def run_record(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    if not api.is_script_path(arguments.script):
        raise UsageError(f"{arguments.script}: `tracetui record` takes a model script (.py); this is already a trace or not a script.")
    output = Path(arguments.output)
    if arguments.spill and not is_directory_trace(output):
        raise UsageError(f"{output}: --spill writes the trace as a directory of shards; pass a directory (a name with no suffix) to -o.")
    with errors.status("recording …") as status:
        trace = api.record(
            arguments.script,
            rerun=not arguments.no_rerun,
            seed=arguments.seed,
            device=arguments.device,
            progress=lambda message: status.update(f"recording, {message} …"),
            keep=arguments.keep,
            only=arguments.only,
            spill=output if arguments.spill else None,
        )
    if not arguments.spill:  # a spilled trace is already on disk, index and all
        with errors.status(f"saving {len(trace)} calls …") as status:
            output = save_trace(trace, output, progress=lambda message: status.update(f"saving {len(trace)} calls, {message} …"))
    console.print(
        f"recorded {len(trace)} calls of {arguments.script}, {len(trace.unique_tensors())} tensors "
        f"({trace.nbytes() / 1e6:.1f} MB) → {output}"
    )
    return 0


def run_show(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    with errors.status("recording …"):
        trace = api.record(arguments.source, rerun=not arguments.no_rerun, seed=arguments.seed, device=arguments.device)
    if wants_interface(arguments):
        from tracetui.tui import open_trace

        open_trace(trace)
        return 0
    print_trace(trace, console)
    return 0


def print_trace(trace: Trace, console: Console) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=str(trace.source), title_justify="left")
    for column in ("#", "module", "class", "call", "outputs"):
        table.add_column(column)
    for record in trace.records:
        outputs = ", ".join(leaf.describe() for leaf in record.tensor_outputs()[:3])
        table.add_row(str(record.index), "  " * record.depth + record.display_name, record.class_name, str(record.call), outputs)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())

"""``tracetui compare``: run both models, pair their calls, name the culprit; optionally stop ipdb in it."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from tracetui import api
from tracetui.classify import Tolerance
from tracetui.cli.common import (
    THEMES,
    add_distributed_options,
    add_memory_options,
    add_run_options,
    add_theme_option,
    check_tolerance,
    progress_line,
    wants_interface,
    write_json_after_report,
)
from tracetui.compare import Comparison
from tracetui.errors import ScriptError, UsageError
from tracetui.frameworks import ForeignScript
from tracetui.isolate import IsolateWhen
from tracetui.options import RunOptions
from tracetui.output_files import absolute_path, check_output_directory, check_output_file, is_within
from tracetui.report import print_report
from tracetui.safe_text import for_markup, printable
from tracetui.script import ModelScript, load_script
from tracetui.sides import SIDES, Side, other_side, pick
from tracetui.spill import trace_directory_entries
from tracetui.trace import Trace
from tracetui.tracefile import INDEX_NAME

COMPARE_EPILOG = """\
exit status (headless): 0 all paired outputs agree, 1 a divergence was found, 2 usage,
load or script error, 130 interrupted (Ctrl-C, SIGTERM or SIGHUP; temporary files are removed).

examples:
  tracetui compare original.py ported.py --no-tui
  tracetui compare original.py ported.py --map map.toml --json report.json --no-tui
  tracetui compare original.trace ported.py --atol 1e-4 --no-tui
  tracetui compare original.py ported_bf16.py --precision strict --no-tui
  tracetui compare original.py ported.py --break-on-mismatch
  tracetui compare original.py ported.py --break-at model.layers.0.mlp:2 --side ported
  tracetui compare original.py ported_tensor_parallel.py --nproc 2 --no-tui

debugger: --break-on-mismatch and --break-at print the headless report, then build the
chosen side's script again and run it, stopping ipdb at the first line of that module's
forward on that call, with the real arguments in scope. At the prompt `ctx` holds both
sides' recorded inputs and outputs for the call: `p ctx`, `p ctx.diff(hidden_states)`,
`p ctx.diff_output(result)`, `ctx.other.inputs[...]`. `c` runs to the end, `q` stops the
run; the exit status is the comparison's (0 match, 1 diverged), 2 for an unknown or
never-run module or a side given as a trace file. A name the model does not have is caught
as soon as that side's script is built, before anything is recorded (with --stream the
port is built once more for that check, then let go before the original runs)."""


def add_compare_command(commands: argparse._SubParsersAction) -> None:
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
    compare.add_argument(
        "--no-isolate",
        action="store_true",
        help="skip the extra run of the port that judges every module on its own: only the first culprit is named (by descent)",
    )
    compare.add_argument(
        "--no-fixes",
        action="store_true",
        help="skip trying the usual porting mistakes (activation, eps, scale, swapped or unconverted weights, ...) "
        "on each culprit alone; by default the report names the patch that makes a culprit match on the recorded inputs",
    )
    compare.add_argument(
        "--precision",
        choices=("auto", "strict", "rounding"),
        default="auto",
        help="auto: when the port runs in bfloat16/float16 and the original in float32, run the original again in the port's "
        "dtype and count a difference within 3x that rounding (its noise floor) as a match; strict: atol/rtol alone; "
        "rounding: measure the floor even when both sides share a 16-bit dtype (default: %(default)s)",
    )
    compare.add_argument("--no-tui", action="store_true", help="print the report instead of opening the interface")
    add_theme_option(compare)
    compare.add_argument("--json", metavar="OUT.json", help="also write the report as JSON (schema tracetui.report/1)")
    compare.add_argument("--full", action="store_true", help="headless: print every row, not only the culprit's neighbourhood")
    add_debugger_options(compare)
    add_run_options(compare, rerun=True)
    add_memory_options(compare, stream=True)
    add_distributed_options(compare, "PORTED (ORIG runs in one process, as always)")


def add_debugger_options(compare: argparse.ArgumentParser) -> None:
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


def run_compare(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    check_tolerance(arguments)
    check_break_options(arguments)
    check_nproc_options(arguments)
    json_path = check_outputs(arguments)
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    sources: dict[Side, str | Trace | ModelScript | ForeignScript] = {"original": arguments.original, "ported": arguments.ported}
    debugging = arguments.break_on_mismatch or arguments.break_at is not None
    interface = not debugging and wants_interface(arguments, console)
    with progress_line(errors, "starting") as show_stage, contextlib.ExitStack() as temporary_folders:
        options = RunOptions.from_arguments(arguments, progress=show_stage)
        stream = arguments.stream
        if arguments.nproc is not None and stream:
            # The port runs in other processes and cannot be checked live: both traces go to disk
            # instead (--spill, a temporary folder without it) and are compared memory-mapped.
            stream = False
            errors.print(
                "note: --stream with --nproc: the port runs in other processes and cannot be checked live; both traces are "
                "written to disk (--spill, or a temporary folder) and compared memory-mapped instead",
                markup=False, highlight=False, soft_wrap=True,
            )
            if options.spill is None:
                temporary = temporary_folders.enter_context(tempfile.TemporaryDirectory(prefix="tracetui-stream-"))
                options = replace(options, spill=Path(temporary))
        if arguments.nproc is not None:
            from tracetui.distributed.launch import record_distributed

            show_stage(f"recording the port on {arguments.nproc} processes")
            ported_spill = None if options.spill is None else options.spill / "ported"
            ported_options = replace(options, spill=ported_spill)
            sources["ported"] = record_distributed(arguments.ported, ported_options, arguments.nproc, arguments.timeout)
        on_loaded = break_at_check(arguments)
        if on_loaded is not None and not stream:
            # The side to stop in is built first and checked before either model is recorded; the
            # comparison then records that very script.
            side = arguments.side
            show_stage(f"building {sources[side]}")
            loaded = api.load_source(sources[side], options)
            sources[side] = loaded
            on_loaded(side, loaded)
        elif on_loaded is not None and arguments.side == "ported" and arguments.nproc is None:
            # --stream builds one model at a time, the original first: the port is built once
            # more, here, to check the name before the original's (long) recording, and let go.
            check_before_streaming(arguments.ported, options, on_loaded, show_stage)
        comparison = api.compare_sources(
            sources["original"],
            sources["ported"],
            options,
            tolerance=Tolerance(atol=arguments.atol, rtol=arguments.rtol),
            rename_map=rename_map,
            infer=not arguments.no_infer,
            stream=stream,
            isolate=when_to_isolate(arguments, interface or debugging),
            fixes=not arguments.no_fixes,
            on_loaded=on_loaded if stream else None,
            precision=arguments.precision,
        )
        del sources  # the model built first: the debugger builds its own, fresh
        if interface:
            show_stage("opening the interface")  # importing Textual takes a moment too
            from tracetui.tui import open_comparison
    exit_status = 0 if comparison.verdict == "match" else 1
    if interface:
        write_json_report(comparison, arguments.json, json_path, printed=False)
        from tracetui.tui.summary import headless_command

        open_comparison(comparison, theme=THEMES[arguments.theme], command=headless_command(arguments.command_line))
        return exit_status
    print_report(comparison, console, full=arguments.full)  # first: a JSON that cannot be written must not lose it
    write_json_report(comparison, arguments.json, json_path, printed=True)
    if arguments.break_on_mismatch or arguments.break_at is not None:
        return run_debugger(arguments, comparison, exit_status, console, errors)
    return exit_status


def when_to_isolate(arguments: argparse.Namespace, interactive: bool) -> IsolateWhen:
    """The fed run judges every module on its own, to name every culprit. A headless report is
    final at its tolerance: a port whose outputs all agree has no culprit, and is spared that
    run; the interface (which can change the tolerance) and the debugger always get it."""
    if arguments.no_isolate:
        return "never"
    return "always" if interactive else "if diverged"


def check_nproc_options(arguments: argparse.Namespace) -> None:
    """--nproc runs the port's script on N ranks: it takes a script."""
    if arguments.nproc is None:
        return
    from tracetui.distributed.launch import check_nproc

    check_nproc(arguments.nproc, arguments.timeout)
    if not api.is_script_path(arguments.ported):
        raise UsageError(
            f"--nproc {arguments.nproc}: PORTED ({arguments.ported}) is a trace; --nproc runs a model script (.py) on N processes."
        )


def check_outputs(arguments: argparse.Namespace) -> Path | None:
    """Before any model runs: --json and --spill can be written, and overwrite none of the inputs.

    Returns the JSON report's absolute path: a script may change the working directory.
    """
    inputs = [absolute_path(path) for path in (arguments.original, arguments.ported, arguments.map) if path]
    json_path = None
    if arguments.json:
        json_path = check_output_file(arguments.json, "--json", inputs, example="report.json")
    if arguments.spill:
        spill = check_output_directory(arguments.spill, "--spill")
        # Each side spills into a folder of its own, cleared first: a side given as a trace is not recorded.
        for side, source in (("original", arguments.original), ("ported", arguments.ported)):
            if api.is_script_path(source):
                side_shown = str(Path(arguments.spill) / side)
                side_folder = check_output_directory(side_shown, "--spill", inputs)
                trace_directory_entries(side_folder, INDEX_NAME, shown=f"--spill {side_shown}")
        if json_path is not None and (json_path == spill or any(is_within(json_path, spill / side) for side in SIDES)):
            raise UsageError(f"--json {arguments.json}: that is where --spill puts the recorded tensors; write the report elsewhere.")
    return json_path


def write_json_report(comparison: Comparison, shown: str | None, path: Path | None, printed: bool) -> None:
    if path is None:
        return
    from tracetui.json_report import write_report

    write_json_after_report(lambda: write_report(comparison, path, shown), printed)


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
    require_script(pick(arguments, arguments.side), arguments.side)


def break_at_check(arguments: argparse.Namespace) -> Callable[[Side, ModelScript | ForeignScript | Trace], None] | None:
    """For --break-at: a check of the name against the side's model as soon as it is built, so
    that a misspelt name fails in seconds, before the slow recording, with the closest names."""
    if arguments.break_at is None or not api.is_script_path(pick(arguments, arguments.side)):
        return None
    from tracetui.debugger import check_module_name, parse_break_at

    name, _ = parse_break_at(arguments.break_at)
    chosen_side: Side = arguments.side
    other_source = pick(arguments, other_side(chosen_side))

    def other_names() -> list[str]:
        """The other model's module names, built only to tell a name of the wrong side (the error path)."""
        if not api.is_script_path(other_source):
            return []
        try:
            other_script = load_script(other_source, seed=arguments.seed, device=arguments.device)
        except ScriptError:
            return []  # the name's own error is the one to report; the other script's comes later
        if not isinstance(other_script, ModelScript):
            return []
        return [module_name for module_name, _ in other_script.model.named_modules()]

    def check(side: Side, loaded: ModelScript | ForeignScript | Trace) -> None:
        if side == chosen_side and isinstance(loaded, ModelScript):
            check_module_name(name, side, loaded, other_names)

    return check


def check_before_streaming(
    ported: str, options: RunOptions, check: Callable[[Side, ModelScript | ForeignScript | Trace], None], show_stage: Callable[[str], None]
) -> None:
    """Build the port, check the --break-at name in it, and let the model go before anything runs."""
    import gc

    show_stage(f"building {ported} to check --break-at")
    loaded = api.load_source(ported, options)
    check("ported", loaded)
    del loaded
    gc.collect()  # its weights go before the original's are built


def run_debugger(arguments: argparse.Namespace, comparison: Comparison, exit_status: int, console: Console, errors: Console) -> int:
    """--break-on-mismatch / --break-at: re-run one side and stop ipdb in a module's forward."""
    from tracetui.debugger import built_for_debugging, debug_script_call, describe_outcome, find_row, parse_break_at

    side = arguments.side
    script_path = pick(arguments, side)
    if arguments.break_on_mismatch:
        if comparison.culprit is None:
            console.print("nothing to break at: every paired call agrees within tolerance.")
            return exit_status
        row = comparison.culprit
        if pick(row, side) is None:
            raise UsageError(f"the culprit {row.label} has no {side} call; choose the other side with --side.")
    with contextlib.ExitStack() as running:
        with errors.status(f"building {for_markup(script_path)} …"):
            run = running.enter_context(built_for_debugging(comparison, side, script_path, seed=arguments.seed, device=arguments.device))
        script = run.script
        if arguments.break_at is not None:
            name, call = parse_break_at(arguments.break_at)
            torch_model = script.model if isinstance(script, ModelScript) else None  # a Flax/Keras original: its recorded names only
            row = find_row(
                comparison, side, name, call,
                model_names=None if torch_model is None else lambda: (module_name for module_name, _ in torch_model.named_modules()),
            )
        outcome = debug_script_call(comparison, row, side, script)
        run.ended(outcome)
    console.print(printable(describe_outcome(outcome, row, side)), markup=False, highlight=False)
    return 2 if outcome == "not_reached" else exit_status

"""``tracetui record``: save one model's trace to a file (or a directory of shards) to compare later."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from tracetui import api
from tracetui.cli.common import add_distributed_options, add_memory_options, add_run_options
from tracetui.errors import UsageError
from tracetui.options import RunOptions
from tracetui.output_files import absolute_path, check_output_directory, check_output_file, directory_written_whole
from tracetui.safe_text import for_markup
from tracetui.spill import trace_directory_entries
from tracetui.trace import Trace
from tracetui.tracefile import INDEX_NAME, is_directory_trace, save_trace


def add_record_command(commands: argparse._SubParsersAction) -> None:
    record = commands.add_parser(
        "record",
        help="save a model's trace to a file",
        description="Record SCRIPT's forward pass and save it (safetensors) to compare later or elsewhere.",
        epilog="example:\n  tracetui record original.py -o original.trace\n  tracetui compare original.trace ported.py --no-tui\n"
        "  tracetui record ported_tp.py --nproc 2 -o ported.trace\n"
        "  torchrun --nproc-per-node 2 -m tracetui record ported_tp.py -o ported.trace   # the same, under your own torchrun",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record.add_argument("script", metavar="SCRIPT", help="model script (.py)")
    record.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="TRACEFILE",
        help="where to write the trace: a file, or a directory (an existing one, or a name with no suffix) holding shards",
    )
    add_run_options(record, rerun=True)
    add_memory_options(record, stream=False)
    add_distributed_options(record, "SCRIPT")


def run_record(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    if not api.is_script_path(arguments.script):
        raise UsageError(f"{arguments.script}: `tracetui record` takes a model script (.py); this is already a trace or not a script.")
    output = check_trace_output(arguments)
    from tracetui.distributed.worker import under_launcher

    if under_launcher():  # one rank of `torchrun … -m tracetui record`: every rank records, rank 0 writes
        return record_as_rank(arguments, output, console)
    if arguments.nproc is not None:
        from tracetui.distributed.launch import check_nproc

        check_nproc(arguments.nproc, arguments.timeout)
    if is_directory_trace(output):
        # Recorded into a new folder that replaces the old trace only when complete.
        with directory_written_whole(output, shown=f"-o {arguments.output}") as working:
            trace = record_and_save(arguments, working, errors)
    else:
        trace = record_and_save(arguments, output, errors)
    console.print(
        f"recorded {len(trace)} calls of {for_markup(arguments.script)}, {len(trace.unique_tensors())} tensors "
        f"({trace.nbytes() / 1e6:.1f} MB) → {for_markup(arguments.output)}"
    )
    return 0


def record_and_save(arguments: argparse.Namespace, output: Path, errors: Console) -> Trace:
    with errors.status("recording …") as status:
        options = RunOptions.from_arguments(arguments, progress=lambda message: status.update(f"recording, {for_markup(message)} …"))
        if arguments.spill:  # the tensors go straight to the trace's folder as they are recorded
            options = replace(options, spill=output)
        if arguments.nproc is not None:
            from tracetui.distributed.launch import record_distributed

            status.update(f"recording on {arguments.nproc} processes …")
            trace = record_distributed(arguments.script, options, arguments.nproc, arguments.timeout)
        else:
            trace = api.record_source(arguments.script, options)
    if not arguments.spill:  # a spilled trace is already on disk, index and all
        with errors.status(f"saving {len(trace)} calls …") as status:
            saving = f"saving {len(trace)} calls"
            save_trace(trace, output, progress=lambda message: status.update(f"{saving}, {for_markup(message)} …"))
    return trace


def record_as_rank(arguments: argparse.Namespace, output: Path, console: Console) -> int:
    """Under torchrun: this process is one rank. The trace goes to ``output`` as it is (rank 0 alone writes it)."""
    from tracetui.distributed.worker import record_on_this_rank

    options = RunOptions.from_arguments(arguments)
    if arguments.spill:
        options = replace(options, spill=output)
    trace = record_on_this_rank(arguments.script, options, None if arguments.spill else output)
    if trace is not None:
        processes = trace.distributed.world_size if trace.distributed else 1
        shown = f"{for_markup(arguments.script)} on {processes} processes → {for_markup(arguments.output)}"
        console.print(f"recorded {len(trace)} calls of {shown}")
    return 0


def check_trace_output(arguments: argparse.Namespace) -> Path:
    """Before the model runs: where the trace goes (absolute: a script may change the working
    directory) can be written, and is not the script."""
    inputs = [absolute_path(arguments.script)]
    output = absolute_path(arguments.output)
    if not is_directory_trace(output):
        if arguments.spill:
            raise UsageError(
                f"-o {arguments.output}: --spill writes the trace as a directory of shards; pass a directory (a name with no suffix) to -o."
            )
        return check_output_file(arguments.output, "-o", inputs, example="original.trace")
    output = check_output_directory(arguments.output, "-o", inputs)
    trace_directory_entries(output, INDEX_NAME, shown=f"-o {arguments.output}")
    return output

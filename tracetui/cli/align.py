"""``tracetui align``: pair two models' calls without a map and write the pairing as a rename map."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from rich.console import Console

from tracetui import api
from tracetui.cli.common import add_run_options
from tracetui.errors import UsageError
from tracetui.options import RunOptions
from tracetui.output_files import absolute_path, check_output_file, write_text_atomically
from tracetui.pairing.alignment import Alignment, align
from tracetui.pairing.map_writer import rename_rules, render_rename_map
from tracetui.safe_text import for_markup

ALIGN_EPILOG = """\
The map pairs the calls the way `tracetui compare` would with no --map: by equal names first,
then by inference (structure, kind of module, names with their usual synonyms, values). Pass
it back with `tracetui compare ORIG PORTED --map map.toml` to get the same pairing, or edit it
first: rules are Python re.sub(pattern, replacement, name) applied in order to the ORIGINAL
model's module names, generalised over layer indices where every layer pairs alike.

exit status: 0 the map was written, 2 usage, load or script error.

examples:
  tracetui align original.py ported.py -o map.toml
  tracetui align original.py ported.py --map partial.toml -o map.toml
  tracetui align original.trace ported.trace          # print the map"""


def add_align_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "align",
        help="infer a rename map pairing the two models' modules",
        description="Run ORIG and PORTED, pair their module calls without a map, and write the pairing as a rename map.",
        epilog=ALIGN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("original", metavar="ORIG", help="original model script (.py) or trace file")
    command.add_argument("ported", metavar="PORTED", help="ported model script (.py) or trace file")
    command.add_argument("-o", "--output", metavar="MAP.toml", help="where to write the map (default: print it)")
    command.add_argument("--map", metavar="MAP.toml", help="a partial rename map to honour; the rest is inferred")
    command.add_argument("--atol", type=float, default=1e-3, help="values within this count as agreeing evidence (default: %(default)g)")
    add_run_options(command, rerun=False)


def run_align(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    if arguments.atol < 0:
        raise UsageError(f"--atol must be zero or positive (got {arguments.atol:g}).")
    output = None
    if arguments.output is not None:
        inputs = [absolute_path(path) for path in (arguments.original, arguments.ported, arguments.map) if path]
        output = check_output_file(arguments.output, "-o", inputs, example="map.toml")  # before the models run
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    options = replace(RunOptions.from_arguments(arguments), rerun=False)  # pairing needs one run of each model
    with errors.status("recording the original …") as status:
        original = api.record_source(arguments.original, options)
        status.update("recording the port …")
        ported = api.record_source(arguments.ported, options)
        status.update("pairing …")
        alignment = align(original, ported, rename_map, atol=arguments.atol)
    header = f"Rename map inferred by `tracetui align {arguments.original} {arguments.ported}`" + (
        f" with --map {arguments.map}" if arguments.map else ""
    )
    text = render_rename_map(alignment, header)
    summary = Console(stderr=True) if output is None else console
    print_alignment_summary(alignment, summary)
    if output is None:
        sys.stdout.write(text)
    else:
        write_text_atomically(output, text, shown=arguments.output)
        summary.print(f"wrote {len(rename_rules(alignment))} rules → {for_markup(arguments.output)}")
    return 0


def print_alignment_summary(alignment: Alignment, console: Console) -> None:
    modules_original = sum(1 for record in alignment.original.records if record.kind == "module")
    modules_ported = sum(1 for record in alignment.ported.records if record.kind == "module")
    by_method: dict[str, int] = {}
    for pair in alignment.paired():
        by_method[pair.method] = by_method.get(pair.method, 0) + 1
    methods = ", ".join(f"{count} by {method}" for method, count in sorted(by_method.items()))
    paired = len(alignment.paired())
    console.print(
        f"paired {paired} calls ({methods}) of {modules_original} original and {modules_ported} ported module calls",
        highlight=False,
    )
    uncertain = [pair for pair in alignment.paired() if pair.method == "inferred" and pair.confidence < 0.5]
    for pair in uncertain[:10]:
        assert pair.original is not None and pair.ported is not None
        console.print(
            f"  less sure ({pair.confidence:.2f}): {for_markup(alignment.original.records[pair.original].display_name)} ↔ "
            f"{for_markup(alignment.ported.records[pair.ported].display_name)}",
            highlight=False,
        )

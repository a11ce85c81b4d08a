"""``tracetui export-tests``: write the component tests a porter keeps (see :mod:`tracetui.components`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from tracetui import api
from tracetui.classify import Tolerance
from tracetui.cli.common import add_run_options, check_tolerance
from tracetui.components import check_export_paths, export_component_tests
from tracetui.errors import UsageError
from tracetui.options import RunOptions
from tracetui.output_files import absolute_path
from tracetui.safe_text import for_markup

EXPORT_EPILOG = """\
The test file has one test per paired module call: it builds the port with PORTED's build(),
runs the forward pass to that call, gives the call the original's recorded inputs and checks
its outputs against the original's at the tolerance. The original's values go to a safetensors
file next to it (same name, .safetensors), so the tests need neither the original's code nor
its weights. Run them with pytest; a module that fails names its worst element.

exit status: 0 the tests were written, 2 usage, load or script error.

examples:
  tracetui export-tests original.py ported.py --map map.toml -o tests/test_port_components.py
  tracetui export-tests original.trace ported.py -o tests/test_port_components.py --atol 1e-4"""


def add_export_tests_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "export-tests",
        help="write pytest component tests of the port against the original's recorded values",
        description="Compare ORIG and PORTED, then write a pytest file testing each paired module of PORTED alone.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("original", metavar="ORIG", help="original model script (.py) or trace file")
    command.add_argument("ported", metavar="PORTED", help="ported model script (.py): the tests build it")
    command.add_argument("-o", "--output", metavar="TEST.py", required=True, help="the test file to write (test_*.py)")
    command.add_argument("--map", metavar="MAP.toml", help="rename map pairing the original's modules with the port's")
    command.add_argument("--no-infer", action="store_true", help="pair calls only by equal names and the --map")
    command.add_argument("--atol", type=float, default=1e-3, help="absolute tolerance of the tests (default: %(default)g)")
    command.add_argument("--rtol", type=float, default=0.0, help="relative tolerance of the tests (default: %(default)g)")
    add_run_options(command, rerun=False)


def run_export_tests(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    check_tolerance(arguments)
    ported = Path(arguments.ported)
    if not api.is_script_path(ported):
        raise UsageError(f"{ported}: the tests build the port, so PORTED must be its model script (.py), not a trace.")
    inputs = [absolute_path(path) for path in (arguments.original, arguments.ported, arguments.map) if path]
    output = check_export_paths(arguments.output, inputs)  # absolute: a script may change the working directory
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    options = replace(RunOptions.from_arguments(arguments), rerun=False)  # the tests need one run of each
    with errors.status("comparing …") as status:
        options = replace(options, progress=lambda message: status.update(for_markup(message)))
        comparison = api.compare_sources(
            arguments.original,
            ported,
            options,
            tolerance=Tolerance(arguments.atol, arguments.rtol),
            rename_map=rename_map,
            infer=not arguments.no_infer,
            stream=False,
        )
        status.update("writing the tests …")
        cases = export_component_tests(comparison, absolute_path(ported), output)
    shown = Path(arguments.output)
    console.print(
        f"wrote {len(cases)} tests to {for_markup(shown)} and the original's values to {for_markup(shown.with_suffix('.safetensors'))} "
        f"({output.with_suffix('.safetensors').stat().st_size / 1e6:.1f} MB); run them with: python -m pytest {for_markup(shown)}",
        highlight=False,
    )
    if comparison.culprits:
        names = ", ".join(for_markup(row.label) for row in comparison.culprits[:3])
        console.print(f"the port diverges now: the tests of {names} (and of the modules around them) fail until it is fixed.")
    return 0

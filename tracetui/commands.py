"""The ``align`` and ``weights`` sub-commands: infer a rename map; check a weight conversion.

Kept apart from :mod:`tracetui.cli` so that file stays a short dispatcher; ``cli`` calls
:func:`add_align_command`, :func:`add_weights_command` and the two ``run_`` functions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracetui import api
from tracetui.errors import ScriptError, UsageError
from tracetui.pairing.alignment import Alignment, align
from tracetui.pairing.map_writer import rename_rules, render_rename_map
from tracetui.pairing.names import template_of
from tracetui.script import DEFAULT_SEED
from tracetui.weights import TensorSource, WeightReport, check_weights, report_document, state_with_buffers

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

WEIGHTS_EPILOG = """\
For every tensor of PORTED's state dict (parameters and persistent buffers) this finds where
its values came from in ORIG's: the tensor of the same name (after --map: a weight's name is
its module's name plus .weight/.bias), the same values under another name, the transpose of a
tensor, a block of rows or columns of one (q out of a fused qkv, a Conv1D-style chunk), blocks
of several put together (a fused projection, rows in another order), or nothing at all —
probably never converted and still at its random initialisation. Then every ORIG tensor that
no ported tensor uses. Values are matched exactly, after casting both sides to the narrowest
floating dtype present, so a float32 → float16 conversion is found too; no map is needed.

ORIG and PORTED are model scripts (build() returns (model, inputs); the inputs are not used)
or state-dict files (.safetensors, or .pt/.pth/.bin saved with torch.save).

exit status: 0 every ported tensor is accounted for, 1 some came from nothing (or, with
--map, from another original tensor than the map names), 2 usage, load or script error.

examples:
  tracetui weights original.py ported.py
  tracetui weights original.py ported.py --map map.toml --json weights.json
  tracetui weights original.safetensors ported.py --full"""


def add_run_options(command: argparse.ArgumentParser, rerun: bool) -> None:
    """--seed, --device, --debug (and --no-rerun for commands that run each model twice)."""
    command.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed set before build() and the forward pass (default: %(default)s)")
    command.add_argument("--device", default="cpu", help="device to run the models on, e.g. cuda (default: %(default)s)")
    if rerun:
        command.add_argument(
            "--no-rerun",
            action="store_true",
            help="run each model once; skips the check that finds nondeterministic calls (default: run twice)",
        )
    command.add_argument("--debug", action="store_true", help="show tracetui's own traceback on errors")


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


def add_weights_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "weights",
        help="check that every ported weight came from the original",
        description="Find where each tensor of PORTED's state dict came from in ORIG's, and what ORIG has that PORTED does not use.",
        epilog=WEIGHTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("original", metavar="ORIG", help="original model script (.py) or state-dict file")
    command.add_argument("ported", metavar="PORTED", help="ported model script (.py) or state-dict file")
    command.add_argument(
        "--map", metavar="MAP.toml", help="rename map naming where each tensor should come from (default: match by value only)"
    )
    command.add_argument("--json", metavar="OUT.json", help="also write the result as JSON (schema tracetui.weights/1)")
    command.add_argument("--full", action="store_true", help="list every tensor, not only those not taken from their namesake")
    command.add_argument("--seed", type=int, default=0, help="seed set before build() (default: %(default)s)")
    command.add_argument("--debug", action="store_true", help="show tracetui's own traceback on errors")


# -- align ------------------------------------------------------------------------------------


def run_align(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    if arguments.atol < 0:
        raise UsageError(f"--atol must be zero or positive (got {arguments.atol:g}).")
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    with errors.status("recording the original …") as status:
        original = api.record(arguments.original, rerun=False, seed=arguments.seed, device=arguments.device)
        status.update("recording the port …")
        ported = api.record(arguments.ported, rerun=False, seed=arguments.seed, device=arguments.device)
        status.update("pairing …")
        alignment = align(original, ported, rename_map, atol=arguments.atol)
    header = f"Rename map inferred by `tracetui align {arguments.original} {arguments.ported}`" + (
        f" with --map {arguments.map}" if arguments.map else ""
    )
    text = render_rename_map(alignment, header)
    summary = Console(stderr=True) if arguments.output is None else console
    print_alignment_summary(alignment, summary)
    if arguments.output is None:
        sys.stdout.write(text)
    else:
        Path(arguments.output).write_text(text)
        summary.print(f"wrote {len(rename_rules(alignment))} rules → {arguments.output}")
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
            f"  less sure ({pair.confidence:.2f}): {alignment.original.records[pair.original].display_name} ↔ "
            f"{alignment.ported.records[pair.ported].display_name}",
            highlight=False,
        )


# -- weights ----------------------------------------------------------------------------------


def load_state(path: str, seed: int) -> dict[str, torch.Tensor]:
    """A state dict from a model script (its model's) or a state-dict file."""
    suffix = Path(path).suffix
    if suffix == ".py":
        script = api.load_source(path, seed=seed)
        if isinstance(script, api.Trace):  # pragma: no cover - .py always loads as a script
            raise ScriptError(f"{path}: expected a model script.")
        return state_with_buffers(script.model)
    if not Path(path).exists():
        raise UsageError(f"{path}: no such file. Pass a model script (.py) or a state-dict file (.safetensors, .pt, .pth, .bin).")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(path))
    if suffix in (".pt", ".pth", ".bin"):
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise UsageError(f"{path}: torch.load could not read it as a state dict ({error}).") from error
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
        if isinstance(loaded, Mapping) and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return dict(loaded)
        raise UsageError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors.")
    raise UsageError(
        f"{path}: not a model script or a state-dict file. `tracetui weights` takes .py scripts, .safetensors, or .pt/.pth/.bin files."
    )


def run_weights(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    with errors.status("building the original …") as status:
        original = load_state(arguments.original, arguments.seed)
        status.update("building the port …")
        ported = load_state(arguments.ported, arguments.seed)
        status.update(f"matching {len(ported)} ported tensors …")
        report = check_weights(original, ported, rename_map)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(report_document(report), indent=2) + "\n")
    print_weight_report(report, console, full=arguments.full)
    return 0 if report.complete else 1


HOW_STYLES = {
    "same": "green",
    "renamed": "green",
    "transposed": "cyan",
    "slice": "cyan",
    "assembled": "yellow",
    "rearranged": "yellow",
    "missing": "bold red",
}
NUMBERED = re.compile(r"(?<=\.)\d+(?=\.)")


def group_key(source: TensorSource, problem: bool) -> tuple[object, ...]:
    """Rows that differ only in their layer index are shown once (``#`` for the index)."""
    ported_numbers = NUMBERED.findall(source.ported)
    original_numbers = NUMBERED.findall(source.original or "")
    same_layer = bool(ported_numbers) and ported_numbers == original_numbers
    if not same_layer or source.breaks_pattern:
        return (source.ported,)
    return (
        source.how,
        template_of(source.ported),
        template_of(source.original or ""),
        NUMBERED.sub("#", source.detail),
        source.cast,
        problem,
    )


def print_weight_report(report: WeightReport, console: Console, full: bool = False) -> None:
    problems = report.problems
    groups: dict[tuple[object, ...], list[TensorSource]] = {}
    for source in report.sources:
        problem = source in problems
        if not full and not problem and source.how == "same" and not source.cast and not source.breaks_pattern:
            continue
        groups.setdefault(group_key(source, problem), []).append(source)
    ordered = sorted(groups.values(), key=lambda group: (group[0] not in problems, group[0].breaks_pattern is None))
    if ordered:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("ported tensor", "shape", "how", "from the original", "detail"):
            table.add_column(column, overflow="fold")
        for group in ordered:
            first = group[0]
            label = first.ported if len(group) == 1 else NUMBERED.sub("#", first.ported) + f"  (×{len(group)})"
            original = first.original or "—"
            if len(group) > 1 and first.original:
                original = NUMBERED.sub("#", first.original)
            detail = first.detail if len(group) == 1 else NUMBERED.sub("#", first.detail)
            if first.cast:
                detail = (detail + "; " if detail else "") + f"cast {first.cast}"
            if first in problems and first.how != "missing":
                detail = (detail + "; " if detail else "") + "not the tensor the map names"
            if first.breaks_pattern:
                detail = (detail + "; " if detail else "") + first.breaks_pattern
            style = "bold red" if first in problems else "bold yellow" if first.breaks_pattern else HOW_STYLES[first.how]
            table.add_row(label, "×".join(str(size) for size in first.shape) or "scalar", Text(first.how, style=style), original, detail)
        console.print(table)
    if report.unused:
        console.print(Text("original tensors no ported tensor uses:", style="bold"))
        for tensor in report.unused:
            note = f"  (same values as {tensor.same_values_as}, which is used: tied?)" if tensor.same_values_as else ""
            console.print(f"  {tensor.name}  {'×'.join(str(size) for size in tensor.shape)}{note}", highlight=False)
    counts = report.counts()
    parts = [f"{count} {how}" for how, count in counts.items() if count]
    verdict = (
        Text("complete: every ported tensor came from the original", style="bold green")
        if report.complete
        else Text(f"incomplete: {len(problems)} ported tensor(s) not accounted for", style="bold red")
    )
    console.print(verdict)
    outliers = [source for source in report.sources if source.breaks_pattern]
    if outliers:
        console.print(
            Text(
                f"warning: {len(outliers)} tensor(s) come from another original name than in the other layers "
                "(swapped in the conversion?): "
                + ", ".join(source.ported for source in outliers[:4])
                + (" …" if len(outliers) > 4 else ""),
                style="bold yellow",
            )
        )
    console.print(
        f"{len(report.sources)} ported tensors: {', '.join(parts)}; {len(report.unused)} original tensor(s) unused.", highlight=False
    )

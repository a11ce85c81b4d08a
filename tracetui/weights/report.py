"""What ``tracetui weights`` found, and its two renderings: the JSON document and the console table.

:mod:`tracetui.weights.check` fills a :class:`WeightReport`; the renderers sit here, next to
the types they read, so that a new field and the places that show it change together. Tensor
names come from the state dicts (files others send, too): the console shows them through
:mod:`tracetui.safe_text`, the JSON keeps them exact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracetui.pairing.names import template_of
from tracetui.safe_text import printable

How = Literal["same", "renamed", "transposed", "slice", "assembled", "rearranged", "missing"]
HOWS: tuple[How, ...] = ("same", "renamed", "transposed", "slice", "assembled", "rearranged", "missing")
SCHEMA = "tracetui.weights/1"
Axis = Literal["rows", "columns", "elements"]


@dataclass
class Piece:
    """A block of an original tensor: rows (or columns) ``start:stop``, maybe transposed."""

    original: str
    axis: Axis
    start: int
    stop: int
    transposed: bool = False

    def describe(self) -> str:
        text = f"{self.original} {self.axis} {self.start}:{self.stop}"
        return text + " transposed" if self.transposed else text


@dataclass
class TensorSource:
    """Where one ported tensor's values came from."""

    ported: str
    shape: tuple[int, ...]
    dtype: str
    how: How
    original: str | None = None  # the (main) original tensor
    detail: str = ""
    expected: str | None = None  # the original name the map (or an equal name) points to
    original_dtype: str | None = None
    pieces: list[Piece] = field(default_factory=list)
    # Set when the same tensor of the other layers comes from another original name: swapped
    # q and k in one layer look like this. A warning, not a problem (the values are accounted for).
    breaks_pattern: str | None = None

    @property
    def accounted_for(self) -> bool:
        return self.how != "missing"

    @property
    def from_unexpected_tensor(self) -> bool:
        """The map names an original tensor that exists, but the values came from another one."""
        if self.expected is None or self.how == "missing":
            return False
        sources: set[str | None] = {piece.original for piece in self.pieces} or {self.original}
        return self.expected not in sources

    @property
    def cast(self) -> str | None:
        if self.original_dtype is None or self.original_dtype == self.dtype:
            return None
        return f"{self.original_dtype} → {self.dtype}"


@dataclass
class UnusedTensor:
    name: str
    shape: tuple[int, ...]
    same_values_as: str | None = None  # an original tensor that is used and holds the same values (tied)


@dataclass
class WeightReport:
    sources: list[TensorSource]
    unused: list[UnusedTensor]
    mapped: bool  # a rename map was given: a tensor taken from another name than the map's is a problem

    @property
    def problems(self) -> list[TensorSource]:
        return [source for source in self.sources if not source.accounted_for or (self.mapped and source.from_unexpected_tensor)]

    @property
    def complete(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(HOWS, 0)
        for source in self.sources:
            counts[source.how] += 1
        return counts


# -- the JSON document ------------------------------------------------------------------------


def report_document(report: WeightReport) -> dict[str, object]:
    """The report as JSON (schema ``tracetui.weights/1``), for ``--json``."""
    return {
        "schema": SCHEMA,
        "verdict": "complete" if report.complete else "incomplete",
        "counts": report.counts(),
        "ported": [
            {
                "name": source.ported,
                "shape": list(source.shape),
                "dtype": source.dtype,
                "how": source.how,
                "original": source.original,
                "detail": source.detail or None,
                "expected": source.expected,
                "cast": source.cast,
                "pieces": [
                    {
                        "original": piece.original,
                        "axis": piece.axis,
                        "start": piece.start,
                        "stop": piece.stop,
                        "transposed": piece.transposed,
                    }
                    for piece in source.pieces
                ],
                "problem": source in report.problems,
                "breaks_pattern": source.breaks_pattern,
            }
            for source in report.sources
        ],
        "unused_original": [
            {"name": tensor.name, "shape": list(tensor.shape), "same_values_as": tensor.same_values_as} for tensor in report.unused
        ],
    }


# -- the console report -----------------------------------------------------------------------

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
LAYER_INDEX = re.compile(r"(?:^|(?<=[._]))\d+(?=$|\.)")  # a whole component (h.0) or a Flax-style suffix (h_0)
SourceGroup = list[TensorSource]  # tensors that differ only in their layer index, shown as one row


def print_weight_report(report: WeightReport, console: Console, full: bool = False) -> None:
    """The tensors worth a look (every one with ``full``), the unused original tensors, the verdict."""
    problems = report.problems
    groups = shown_groups(report, problems, full)
    if groups:
        console.print(source_table(groups, problems))
    if report.unused:
        print_unused(report.unused, console)
    print_verdict(report, problems, console)


def shown_groups(report: WeightReport, problems: list[TensorSource], full: bool) -> list[SourceGroup]:
    """The rows of the table, problems first, then tensors that break their layers' pattern.

    Without ``full``, a tensor taken unchanged from its namesake is left out: it needs no look.
    """
    groups: dict[tuple[object, ...], SourceGroup] = {}
    for source in report.sources:
        problem = source in problems
        if not full and not problem and is_unremarkable(source):
            continue
        groups.setdefault(group_key(source, problem), []).append(source)
    return sorted(groups.values(), key=lambda group: (group[0] not in problems, group[0].breaks_pattern is None))


def is_unremarkable(source: TensorSource) -> bool:
    return source.how == "same" and not source.cast and not source.breaks_pattern


def layer_numbers(name: str) -> list[str]:
    """The layer indices of a (ported, PyTorch-style) name: its numeric components."""
    return [part for part in name.split(".") if part.isdigit()]


def same_layer_template(original: str | None, ported: str) -> str | None:
    """The original name with the ported name's layer indices as ``#`` when it takes them in the same
    order (``h.1.attn`` or Flax's ``h_1.attn`` for ``layers.1.self_attn``), else None."""
    numbers = layer_numbers(ported)
    matches = list(LAYER_INDEX.finditer(original or ""))[: len(numbers)]
    if original is None or not numbers or [match.group() for match in matches] != numbers:
        return None
    for match in reversed(matches):
        original = original[: match.start()] + "#" + original[match.end() :]
    return original


def group_key(source: TensorSource, problem: bool) -> tuple[object, ...]:
    """Rows that differ only in their layer index are shown once (``#`` for the index)."""
    original_template = same_layer_template(source.original, source.ported)
    if original_template is None or source.breaks_pattern:
        return (source.ported,)
    return (
        source.how,
        template_of(source.ported),
        original_template,
        NUMBERED.sub("#", source.detail),
        source.cast,
        problem,
    )


def source_table(groups: list[SourceGroup], problems: list[TensorSource]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ported tensor", "shape", "how", "from the original", "detail"):
        table.add_column(column, overflow="fold")
    for group in groups:
        table.add_row(*group_row(group, problem=group[0] in problems))
    return table


def group_row(group: SourceGroup, problem: bool) -> tuple[Text, str, Text, Text, Text]:
    """One row for a group: its first tensor's, with the layer index as ``#`` when there are several."""
    first = group[0]
    several = len(group) > 1
    label = NUMBERED.sub("#", first.ported) + f"  (×{len(group)})" if several else first.ported
    original = (same_layer_template(first.original, first.ported) if several else first.original) or "—"
    how = Text(first.how, style=how_style(first, problem))
    shape = format_shape(first.shape) or "scalar"
    return Text(printable(label)), shape, how, Text(printable(original)), Text(printable(row_detail(first, several, problem)))


def how_style(source: TensorSource, problem: bool) -> str:
    if problem:
        return "bold red"
    if source.breaks_pattern:
        return "bold yellow"
    return HOW_STYLES[source.how]


def row_detail(source: TensorSource, several: bool, problem: bool) -> str:
    """The finding's detail, then the notes that apply: a cast, a map not followed, a pattern broken."""
    notes = [NUMBERED.sub("#", source.detail) if several else source.detail]
    if source.cast:
        notes.append(f"cast {source.cast}")
    if problem and source.how != "missing":
        notes.append("not the tensor the map names")
    if source.breaks_pattern:
        notes.append(source.breaks_pattern)
    return "; ".join(note for note in notes if note)


def format_shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(size) for size in shape)


def print_unused(unused: list[UnusedTensor], console: Console) -> None:
    console.print(Text("original tensors no ported tensor uses:", style="bold"))
    for tensor in unused:
        note = f"  (same values as {tensor.same_values_as}, which is used: tied?)" if tensor.same_values_as else ""
        console.print(Text(printable(f"  {tensor.name}  {format_shape(tensor.shape)}{note}")))


def print_verdict(report: WeightReport, problems: list[TensorSource], console: Console) -> None:
    """Complete or not, a warning for pattern breaks, and the count of each finding."""
    if report.complete:
        console.print(Text("complete: every ported tensor came from the original", style="bold green"))
    else:
        console.print(Text(f"incomplete: {len(problems)} ported tensor(s) not accounted for", style="bold red"))
    outliers = [source for source in report.sources if source.breaks_pattern]
    if outliers:
        console.print(pattern_warning(outliers))
    parts = [f"{count} {how}" for how, count in report.counts().items() if count]
    console.print(
        f"{len(report.sources)} ported tensors: {', '.join(parts)}; {len(report.unused)} original tensor(s) unused.", highlight=False
    )


def pattern_warning(outliers: list[TensorSource]) -> Text:
    """Warn of tensors taken otherwise than in the other layers: from another name, or (un)transposed."""
    lines = []
    renamed = [source for source in outliers if not is_orientation_break(source)]
    oriented = [source for source in outliers if is_orientation_break(source)]
    if renamed:
        lines.append(
            f"warning: {len(renamed)} tensor(s) come from another original name than in the other layers "
            f"(swapped in the conversion?): {listed(renamed)}"
        )
    if oriented:
        lines.append(
            f"warning: {len(oriented)} tensor(s) are transposed where the other layers' are not, or the reverse "
            f"(a Dense kernel [in, out] copied into a Linear weight [out, in] untransposed?): {listed(oriented)}"
        )
    return Text("\n".join(lines), style="bold yellow")


def is_orientation_break(source: TensorSource) -> bool:
    return (source.breaks_pattern or "").endswith("transposed")


def listed(sources: list[TensorSource]) -> str:
    return ", ".join(printable(source.ported) for source in sources[:4]) + (" …" if len(sources) > 4 else "")

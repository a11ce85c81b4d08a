"""The headless report: the culprit and its neighbourhood, counts, one summary line.

Readable at a glance in a terminal or a CI log; ``--full`` prints every row. Names, paths and
reasons come from the scripts and trace files: they are printed through :mod:`tracetui.safe_text`.
"""

from __future__ import annotations

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.precision import (
    describe_precision,
    floor_sentence,
    notes_with_precision,
    rounding_match_label,
    row_noise_floor,
    within_rounding,
)
from tracetui.rows import LeafPair, Row
from tracetui.safe_text import for_markup, printable
from tracetui.text import first_few
from tracetui.trace import CallRecord

STATUS_STYLES = {
    "match": "green",
    "diverged": "bold red",
    "inherited": "yellow",
    "shape_mismatch": "bold magenta",
    "dtype_mismatch": "cyan",
    "unmatched": "dim",
    "nonfinite": "bold magenta",
    "nondeterministic": "bold blue",
}
ROWS_BEFORE_CULPRIT = 3
ROWS_AFTER_CULPRIT = 4
CULPRITS_SHOWN = 10  # culprits listed with their reasons (and their rows) before "… and N more"


def summary_line(comparison: Comparison) -> str:
    counts = comparison.status_counts()
    paired = sum(1 for row in comparison.rows if row.is_paired)
    unmatched = f"{counts['unmatched']} unmatched" if counts["unmatched"] else "none unmatched"
    culprit = comparison.culprit
    if comparison.verdict == "match":
        measured = [row for row in comparison.rows if row.output_max_abs is not None]
        largest = max(measured, key=lambda row: row.output_max_abs or 0.0, default=None)
        where = f" (largest output |Δ| {format_difference(largest.output_max_abs)} at {largest.label})" if largest else ""
        within = f"{comparison.tolerance}"
        if comparison.rounding.measured:
            within += f" or {comparison.rounding.factor:g}× the noise floor"
        return f"{rounding_match_label(comparison)}: all {paired} paired calls agree within {within}{where}; {unmatched}."
    inherited = counts["inherited"]
    if culprit is None:
        return f"diverged: {comparison.reason}; {unmatched}."
    culprits = comparison.culprits
    others = f"; {len(culprits) - 1} more culprit(s): {first_few(row.label for row in culprits[1:])}" if len(culprits) > 1 else ""
    return (
        f"diverged: first divergence at {culprit.label} — {comparison.reason}{others}; "
        f"{inherited} later call(s) inherit a difference; {unmatched}."
    )


def call_name(record: CallRecord | None, depth: int) -> Text:
    if record is None:
        return Text("—", style="dim")
    name = " " * depth + record.display_name + (f" #{record.call}" if record.call else "")
    return Text(printable(name))


def rows_to_show(comparison: Comparison, full: bool) -> list[Row]:
    """Every row with ``full``; else each culprit's neighbourhood and ancestors (the first few culprits')."""
    if full or comparison.culprit is None:
        if full or len(comparison.rows) <= 40:
            return comparison.rows
        return [row for row in comparison.rows if comparison.status(row) != "match"][:40] or comparison.rows[:20]
    chosen: set[int] = set()
    for culprit in comparison.culprits[:CULPRITS_SHOWN]:
        ancestor = culprit.parent
        while ancestor is not None:
            chosen.add(ancestor)
            ancestor = comparison.rows[ancestor].parent
        first = max(0, culprit.index - ROWS_BEFORE_CULPRIT)
        chosen.update(range(first, min(len(comparison.rows), culprit.index + ROWS_AFTER_CULPRIT + 1)))
    return [comparison.rows[index] for index in sorted(chosen)]


def bound_label(value: float | None, pairs: list[LeafPair]) -> str:
    """``1.2e-01``, or ``≥1.2e-01`` when a statistics-only leaf proved at least that much."""
    from_statistics = any(pair.difference is not None and pair.difference.from_statistics for pair in pairs)
    return ("≥" if from_statistics and value else "") + format_difference(value)


def rows_table(comparison: Comparison, rows: list[Row]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("original", overflow="fold")
    table.add_column("ported", overflow="fold")
    table.add_column("class", style="dim", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("in |Δ|", justify="right", no_wrap=True)
    table.add_column("out |Δ|", justify="right", no_wrap=True)
    floors = comparison.rounding.measured  # the original run in the port's dtype: rounding's share
    if floors:
        table.add_column("floor |Δ|", justify="right", no_wrap=True)
    alone = any(row.isolated is not None for row in rows)
    if alone:  # the ported call fed the original's values: its own error
        table.add_column("alone |Δ|", justify="right", no_wrap=True)
    previous_index: int | None = None
    for row in rows:
        if previous_index is not None and row.index != previous_index + 1:
            table.add_row("…", style="dim")
        previous_index = row.index
        is_culprit = comparison.is_culprit(row)
        row_status = comparison.status(row)
        status = Text(row_status, style=STATUS_STYLES[row_status])
        if row_status == "match" and within_rounding(comparison, row):
            status.append(" (rounding)", style="dim")
        if is_culprit:
            status.append(" ◀ culprit", style="bold red")
        cells: list[RenderableType] = [
            str(row.index),
            call_name(row.original, row.depth),
            call_name(row.ported, row.depth),
            Text(printable(row.class_label)),
            status,
            bound_label(row.input_max_abs, row.inputs),
            bound_label(row.output_max_abs, row.outputs),
        ]
        if floors:
            floor = row_noise_floor(comparison, row)
            cells.append("" if floor is None else format_difference(floor[0]))
        if alone:
            cells.append("" if row.isolated is None else format_difference(row.isolated_max_abs))
        table.add_row(
            *cells,
            style="bold" if is_culprit else ("dim" if row_status == "unmatched" else ""),
        )
    return table


def why_line(comparison: Comparison, culprit: Row) -> str:
    """The culprit's reason, and the noise floor beside its difference when one was measured."""
    floor = floor_sentence(comparison, culprit)
    return comparison.reason_for(culprit) + (f"; {floor}" if floor else "")


def print_fix(comparison: Comparison, culprit: Row, console: Console, indent: str) -> None:
    """The best of the usual porting mistakes tried on the culprit alone, if a search ran."""
    search = comparison.fixes.get(culprit.index)
    if search is None:
        return
    found = bool(search.fixes(comparison.tolerance))
    console.print(Text(indent + printable(search.summary(comparison.tolerance)), style="green" if found else "dim"))
    skipped = search.skipped_line()
    if skipped is not None and not found:
        console.print(Text(indent + printable(skipped), style="dim"))


def print_other_culprits(comparison: Comparison, console: Console) -> None:
    """The culprits after the first: each is wrong on its own, whatever came before it."""
    others = comparison.culprits[1:]
    if not others:
        return
    heading = "  also wrong on its own:" if len(others) == 1 else f"  {len(others)} more culprits, each wrong on its own:"
    console.print(Text(heading, style="bold"))
    for culprit in others[: CULPRITS_SHOWN - 1]:
        console.print(Text.assemble("  • ", (printable(culprit.label), "bold"), f"  {printable(culprit.class_label)}"))
        console.print(Text(f"    why: {printable(why_line(comparison, culprit))}"))
        print_fix(comparison, culprit, console, "    ")
    if len(others) > CULPRITS_SHOWN - 1:
        console.print(Text(f"  … and {len(others) - CULPRITS_SHOWN + 1} more (--json lists them all)", style="dim"))


def print_report(comparison: Comparison, console: Console, full: bool = False) -> None:
    original_source, ported_source = for_markup(comparison.original.source), for_markup(comparison.ported.source)
    console.print(f"[bold]tracetui[/]  original [cyan]{original_source}[/]  ported [cyan]{ported_source}[/]  {comparison.tolerance}")
    precision = describe_precision(comparison)
    console.print(Text(f"precision: {printable(precision)}", style="dim"))
    if precision.judged_against:
        console.print(Text(f"mode: {printable(precision.judged_against)}", style="dim"))
    culprit = comparison.culprit
    if comparison.verdict == "match":
        console.print(Text(rounding_match_label(comparison).upper(), style="bold green"))
    elif culprit is not None:
        console.print(Text.assemble(("DIVERGED", "bold red"), "  first divergence: ", (printable(culprit.label), "bold")))
        console.print(Text(f"  class: {printable(culprit.class_label)}"))
        console.print(Text(f"  why: {printable(why_line(comparison, culprit))}"))
        print_fix(comparison, culprit, console, "  ")
        print_other_culprits(comparison, console)
    else:
        console.print(Text.assemble(("DIVERGED", "bold red"), f"  {printable(comparison.reason)}"))
    console.print(rows_table(comparison, rows_to_show(comparison, full)))
    counts = comparison.status_counts()
    listed = ", ".join(f"{counts[status]} {status}" for status in STATUS_STYLES if counts[status])
    console.print(f"rows: {listed} ({len(comparison.rows)} in all)")
    for note in notes_with_precision(comparison, precision):
        console.print(Text(f"note: {printable(note)}", style="yellow"))
    console.print(Text(printable(summary_line(comparison)), style="bold"))

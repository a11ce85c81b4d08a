"""The detail of one row (or, for ``tracetui show``, one call): its title, why it has its
status, the figures of its inputs and outputs in one line, then every leaf
(:func:`~tracetui.tui.tensor_detail.describe_leaf`). Names, classes and reasons come from the
user's code and trace files: they pass through :func:`~tracetui.safe_text.printable`."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.numeric import format_difference
from tracetui.precision import floor_sentence
from tracetui.rows import LeafPair, Row, in_port_layout, largest_difference
from tracetui.safe_text import printable
from tracetui.trace import CallRecord, Leaf
from tracetui.tui.listing import STATUS_LABELS, classes_differ, culprit_label
from tracetui.tui.tensor_detail import (
    WORST_COUNT,
    Palette,
    absolute_difference,
    describe_leaf,
    side_previews,
    statistics_table,
    worst_elements,
)


def row_title(comparison: Comparison, row: Row, palette: Palette) -> Text:
    is_culprit = comparison.is_culprit(row)
    status = comparison.status(row)
    title = Text(f"#{row.index}  ", palette.dim)
    title.append(printable(row.label), palette.heading)
    title.append("  ")
    if is_culprit:
        title.append(f" {culprit_label(status)} ", palette.culprit)
    else:
        title.append(STATUS_LABELS[status], palette.label)
    title.append("   ")
    title.append(printable(row.class_label), palette.class_mismatch if classes_differ(row) else palette.dim)
    if row.is_paired:
        title.append(f"   {row.pairing_label}", palette.dim)
    return title


def row_explanation(comparison: Comparison, row: Row, palette: Palette) -> Text | None:
    if comparison.is_culprit(row):
        return Text(f"why: {printable(comparison.reason_for(row))}", palette.warning)
    if not row.is_paired:
        side_name = "original" if row.original is not None else "ported"
        return Text(f"only the {side_name} model makes this call: nothing to compare it with", palette.dim)
    status = comparison.status(row)
    if status == "inherited":
        return Text(f"inherited: its inputs already differ (max |Δ| {format_difference(row.input_max_abs)})", palette.dim)
    if status == "diverged":
        return Text(
            f"its inputs agree (max |Δ| {format_difference(row.input_max_abs)}) but its outputs do not; "
            "the difference starts in it or in one of its submodules",
            palette.warning,
        )
    return None


def row_summary(comparison: Comparison, row: Row, palette: Palette) -> Text | None:
    """``inputs max |Δ| 0 · outputs max |Δ| 2.26e-01, 96 of 112 elements break atol 0.001``."""
    if not row.is_paired:
        return None
    tolerance = comparison.tolerance
    summary = Text()
    for position, (heading, pairs, agree) in enumerate(
        (("inputs", row.inputs, comparison.inputs_agree(row)), ("outputs", row.outputs, comparison.outputs_agree(row)))
    ):
        differences = [pair.difference for pair in pairs if pair.difference is not None]
        if position:
            summary.append(" · ", palette.dim)
        summary.append(f"{heading} ", palette.label)
        if not differences:
            summary.append("none compared", palette.dim)
            continue
        summary.append(f"max |Δ| {format_difference(largest_difference(pairs))}", palette.good if agree else palette.bad)
        counts = [difference.out_of_tolerance(tolerance.atol, tolerance.rtol) for difference in differences]
        broken = sum(count for count in counts if count is not None)
        total = sum(difference.numel for difference in differences)
        if None in counts or any(difference.from_statistics for difference in differences):
            summary.append(" (partly from statistics or uncounted: values not kept)", palette.dim)
        elif broken:
            summary.append(f", {broken:,} of {total:,} elements break {tolerance}", palette.bad)
    if row.isolated is not None:
        # The fed run: this call alone, on the original's inputs (its submodules' outputs too).
        alone = row.isolated_max_abs
        summary.append(" · ", palette.dim)
        summary.append("alone on the original's inputs ", palette.label)
        if row.isolated.not_judged:
            summary.append(f"not judged: {printable(row.isolated.not_judged[0])}", palette.dim)
        else:
            wrong = comparison.classification.isolated_disagrees[row.index]
            summary.append(f"max |Δ| {format_difference(alone)}", palette.bad if wrong else palette.good)
            if comparison.classification.makes_bad_input[row.index]:
                summary.append(", but it makes a wrong input (why:)", palette.bad)
    floor = floor_sentence(comparison, row)  # the original run in the port's dtype: rounding's share, and the ratio
    if floor:
        summary.append(" · ", palette.dim)
        summary.append(floor, palette.dim)
    return summary


def row_fixes(comparison: Comparison, row: Row, palette: Palette) -> Text | None:
    """The usual porting mistakes tried on a culprit alone: each patch that makes it match on the
    recorded inputs, else that none is known and what came closest."""
    search = comparison.fixes.get(row.index)
    if search is None:
        return None
    tolerance = comparison.tolerance
    fixes = search.fixes(tolerance)
    text = Text()
    if fixes:
        text.append("fixes that make it match on the recorded inputs (hypotheses: check them in your code):", palette.label)
    else:
        text.append(f"no known fix found ({search.tried} usual porting mistakes tried)", palette.label)
        if search.attempts:
            text.append("; closest:", palette.label)
    for attempt in search.suggestions(tolerance):
        style = palette.good if attempt in fixes else palette.dim
        text.append(f"\n  {printable(attempt.patch)}  max |Δ| {format_difference(attempt.max_abs_after)}", style)
    skipped = search.skipped_line()
    if skipped is not None and not fixes:
        text.append(f"\n{printable(skipped)}", palette.dim)
    return text


def outputs_first(comparison: Comparison, row: Row) -> bool:
    """A row whose inputs agree and outputs do not (a culprit, a diverged row): its outputs, where
    the difference is, come before its inputs, which agree."""
    return row.is_paired and (comparison.is_culprit(row) or comparison.status(row) == "diverged")


def differing_first(pairs: list[LeafPair], tolerance: Tolerance) -> list[LeafPair]:
    """The leaves that break the tolerance first (in their order), then the others."""
    breaking = [pair for pair in pairs if pair.difference is not None and not pair.difference.within(tolerance.atol, tolerance.rtol)]
    return breaking + [pair for pair in pairs if pair not in breaking]


def has_values(pair: LeafPair) -> bool:
    """Both sides' tensors were kept (not statistics only), in the same shape."""
    original, ported = pair.original, pair.ported
    same_shape = pair.difference is not None and pair.difference.shape_matches
    return same_shape and original is not None and original.tensor is not None and ported is not None and ported.tensor is not None


def worst_output(row: Row) -> LeafPair | None:
    """The output leaf (else input leaf) with the largest |Δ| that both sides kept the values of."""
    for pairs in (row.outputs, row.inputs):
        kept = [pair for pair in pairs if has_values(pair) and pair.difference is not None and pair.difference.max_abs > 0]
        if kept:
            return max(kept, key=lambda pair: pair.difference.max_abs)  # type: ignore[union-attr]
    return None


def worst_elements_text(row: Row, pair: LeafPair) -> str:
    """The worst elements of a leaf as tab-separated lines to paste: index, original, ported, Δ."""
    pair = in_port_layout(pair)
    assert pair.original is not None and pair.original.tensor is not None and pair.ported is not None and pair.ported.tensor is not None
    absolute = absolute_difference(pair.original.tensor, pair.ported.tensor)
    lines = [f"# {row.label} {pair.name}: the {WORST_COUNT} largest |ported - original|", "index\toriginal\tported\tdelta"]
    for element in worst_elements(pair.original.tensor, pair.ported.tensor, absolute):
        lines.append(f"{list(element.index)}\t{element.original!r}\t{element.ported!r}\t{element.difference!r}")
    return "\n".join(lines) + "\n"


def describe_row(comparison: Comparison, row: Row, width: int, palette: Palette) -> RenderableType:
    parts: list[RenderableType] = [row_title(comparison, row, palette)]
    summary = row_summary(comparison, row, palette)
    if summary is not None:
        parts.append(summary)
    if row.layout is not None:  # compared in the port's layout (a Flax/Keras original's heads, channels-last)
        parts.append(Text(f"layout: {row.layout} (the original's tensors compared in the port's layout)", palette.dim))
    explanation = row_explanation(comparison, row, palette)
    if explanation is not None:
        parts.append(explanation)
    fixes = row_fixes(comparison, row, palette)
    if fixes is not None:
        parts.append(fixes)
    tolerance = comparison.tolerance
    if row.is_paired:
        sections = (("inputs", row.inputs), ("outputs", row.outputs))
    else:
        record = row.original or row.ported
        assert record is not None
        in_original = row.original is not None
        sections = (
            ("inputs", [LeafPair(leaf, None) if in_original else LeafPair(None, leaf) for leaf in record.inputs]),
            ("outputs", [LeafPair(leaf, None) if in_original else LeafPair(None, leaf) for leaf in record.outputs]),
        )
    if outputs_first(comparison, row):
        sections = (sections[1], sections[0])
    for heading, pairs in sections:
        parts.append(Text(f"\n{heading.upper()}" + ("" if pairs else "  none"), palette.label))
        for pair in differing_first(pairs, tolerance) if row.is_paired else pairs:
            parts.append(describe_leaf(pair, tolerance, width, palette))
    return Group(*parts)


def describe_record(record: CallRecord, width: int, palette: Palette) -> RenderableType:
    """One call of a single trace (`tracetui show`): the same view, one side, no Δ."""
    title = Text(printable(record.display_name) + (f" (call {record.call})" if record.call else ""), palette.heading)
    title.append(f"   {printable(record.class_name)}", palette.dim)
    parts: list[RenderableType] = [title]
    for heading, leaves in (("inputs", record.inputs), ("outputs", record.outputs)):
        parts.append(Text(f"\n{heading.upper()}" + ("" if leaves else "  none"), palette.label))
        for leaf in leaves:
            parts.append(describe_single_leaf(leaf, width, palette))
    return Group(*parts)


def describe_single_leaf(leaf: Leaf, width: int, palette: Palette) -> RenderableType:
    title = Text(printable(leaf.name), palette.heading)
    if leaf.tensor is None:
        title.append(f"   {printable(leaf.value_type)} {printable(leaf.value_repr)}", palette.dim)
        return title
    pair = LeafPair(leaf, None)
    parts: list[RenderableType] = [title, statistics_table([("value", leaf)], palette)]
    parts += side_previews(pair, Tolerance(), width, palette, None, labels=("value", ""))
    return Group(*parts)

"""The detail of one row: every input and output leaf, both sides, described for a person.

Computed for the selected row only, in the detail pane's worker thread: statistics of each
side, the elements that break the tolerance, the worst five, |Δ| along each dimension and a
side-by-side preview that reads like a printed tensor. The differences themselves (max |Δ|,
max rel, cosine, worst element, the count out of tolerance) come from the comparison's
:class:`~tracetui.numeric.TensorDifference`; this module only reads the recorded tensors for
what a summary cannot hold (the top five, the per-dimension profile, the preview).

Colours are not chosen here: :class:`Palette` carries the detail pane's component styles,
which live in the ``.tcss`` file.

Leaf names, value reprs and the dtypes a statistics-only trace stores come from the user's code
and trace files: they pass through :func:`~tracetui.safe_text.printable`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from rich.console import Group, RenderableType
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tracetui.classify import Tolerance
from tracetui.numeric import TensorDifference, as_comparable, format_difference
from tracetui.rows import LeafPair, in_port_layout
from tracetui.safe_text import printable
from tracetui.text import shape_text
from tracetui.trace import Leaf

WORST_COUNT = 5
PREVIEW_ROWS = 7  # rows of a matrix printed at most (edges, the worst row, ...)
SPARK_CHARACTERS = "▁▂▃▄▅▆▇█"
MAX_PROFILE_BINS = 48
MAX_PROFILED_DIMENSIONS = 3
# |Δ| buckets of the histogram, as multiples of atol (the last bucket is open).
HISTOGRAM_EDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class Palette:
    """Rich styles for the parts of the detail, taken from the pane's component classes."""

    heading: Style = field(default_factory=Style)
    label: Style = field(default_factory=Style)
    dim: Style = field(default_factory=Style)
    good: Style = field(default_factory=Style)
    bad: Style = field(default_factory=Style)
    culprit: Style = field(default_factory=Style)
    warning: Style = field(default_factory=Style)
    class_mismatch: Style = field(default_factory=Style)  # GELU ↔ SiLU
    worst: Style = field(default_factory=Style)  # the worst element in a preview


# -- numbers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statistics:
    minimum: float
    maximum: float
    mean: float
    std: float
    nonfinite: int


def statistics(tensor: torch.Tensor) -> Statistics | None:
    if tensor.numel() == 0:
        return None
    values = as_comparable(tensor).reshape(-1)
    finite = torch.isfinite(values)
    nonfinite = int((~finite).sum())
    values = values[finite]
    if values.numel() == 0:
        return Statistics(math.nan, math.nan, math.nan, math.nan, nonfinite)
    std = float(values.std()) if values.numel() > 1 else 0.0
    return Statistics(float(values.min()), float(values.max()), float(values.mean()), std, nonfinite)


@dataclass(frozen=True)
class WorstElement:
    index: tuple[int, ...]
    original: float
    ported: float

    @property
    def difference(self) -> float:
        return self.ported - self.original


def absolute_difference(original: torch.Tensor, ported: torch.Tensor) -> torch.Tensor:
    """|p - o| where both sides are finite, 0 elsewhere (NaN/Inf are counted apart)."""
    original_values = as_comparable(original)
    ported_values = as_comparable(ported)
    both_finite = torch.isfinite(original_values) & torch.isfinite(ported_values)
    return torch.where(both_finite, (ported_values - original_values).abs(), 0.0)


def worst_elements(original: torch.Tensor, ported: torch.Tensor, absolute: torch.Tensor, count: int = WORST_COUNT) -> list[WorstElement]:
    flat = absolute.reshape(-1)
    if flat.numel() == 0:
        return []
    values, positions = flat.topk(min(count, flat.numel()))
    original_flat = as_comparable(original).reshape(-1)
    ported_flat = as_comparable(ported).reshape(-1)
    worst = []
    for value, position in zip(values.tolist(), positions.tolist(), strict=True):
        if value <= 0.0:
            break
        index = tuple(int(item) for item in torch.unravel_index(torch.tensor(position), tuple(original.shape)))
        worst.append(WorstElement(index, float(original_flat[position]), float(ported_flat[position])))
    return worst


@dataclass(frozen=True)
class DimensionProfile:
    """Max |Δ| along one dimension: one value per bin of ``bin_width`` consecutive positions."""

    dimension: int
    values: list[float]
    bin_width: int = 1


def dimension_profiles(absolute: torch.Tensor) -> list[DimensionProfile]:
    """Max |Δ| at each index of each dimension longer than 1 (the last few), binned to fit."""
    profiles = []
    dimensions = [dimension for dimension in range(absolute.dim()) if absolute.shape[dimension] > 1]
    for dimension in dimensions[-MAX_PROFILED_DIMENSIONS:]:
        other = [axis for axis in range(absolute.dim()) if axis != dimension]
        profile = absolute.amax(dim=other) if other else absolute
        bins = 1
        if profile.numel() > MAX_PROFILE_BINS:
            bins = math.ceil(profile.numel() / MAX_PROFILE_BINS)
            padded = torch.nn.functional.pad(profile, (0, bins * MAX_PROFILE_BINS - profile.numel()))
            profile = padded.view(MAX_PROFILE_BINS, bins).amax(dim=1)[: math.ceil(absolute.shape[dimension] / bins)]
        profiles.append(DimensionProfile(dimension, profile.tolist(), bins))
    return profiles


def profile_line(profile: DimensionProfile, length: int, threshold: float, palette: Palette) -> Text:
    """``|Δ| along dim 2 (768; each bar = 16 positions; █ = 1.93e-01): ▁▁█▁``: the bars' scale and bin width."""
    bars = "each bar = 1 position" if profile.bin_width == 1 else f"each bar = {profile.bin_width} positions"
    top = format_difference(max(profile.values, default=0.0))
    text = Text(f"|Δ| along dim {profile.dimension} ({length}; {bars}; █ = {top}): ", palette.label)
    text.append_text(sparkline(profile.values, threshold, palette))
    return text


def histogram(absolute: torch.Tensor, atol: float) -> list[tuple[str, int]]:
    """How many elements fall in each |Δ| bucket, the buckets being multiples of atol."""
    if atol <= 0:
        return []
    flat = absolute.reshape(-1)
    buckets = []
    lower = None
    for edge in HISTOGRAM_EDGES:
        upper = edge * atol
        inside = flat <= upper if lower is None else (flat > lower) & (flat <= upper)
        buckets.append((f"≤{upper:.0e}", int(inside.sum())))
        lower = upper
    assert lower is not None  # HISTOGRAM_EDGES is not empty
    buckets.append((f">{lower:.0e}", int((flat > lower).sum())))
    return buckets


# -- preview -------------------------------------------------------------------------------


def number_format(values: list[float], integral: bool) -> str:
    """Fixed or scientific the way torch chooses: scientific for wide ranges or tiny values."""
    if integral:
        return "{:.0f}"
    magnitudes = [abs(value) for value in values if math.isfinite(value) and value != 0]
    if not magnitudes:
        return "{:.4f}"
    largest, smallest = max(magnitudes), min(magnitudes)
    if largest / smallest > 1000 or largest > 1e8 or smallest < 1e-4:
        return "{:.4e}"
    return "{:.4f}"


def shown_indices(size: int, slots: int, must_show: int | None) -> list[int | None]:
    """At most ``slots`` indices along one axis: both edges, ``must_show``, and None where ... stands."""
    if size <= slots:
        return list(range(size))
    edge = max(1, (slots - 1) // 2)
    if must_show is not None and edge <= must_show < size - edge:
        edge = max(1, (slots - 3) // 2)  # room for the worst one and a second ...
    else:
        must_show = None
    chosen = sorted(set(range(edge)) | set(range(size - edge, size)) | ({must_show} if must_show is not None else set()))
    shown: list[int | None] = []
    previous = -1
    for index in chosen:
        if index != previous + 1:
            shown.append(None)
        shown.append(index)
        previous = index
    return shown


@dataclass(frozen=True)
class PreviewLayout:
    """Which slice of a tensor the preview prints, and which rows and columns of it."""

    prefix: tuple[int, ...]
    rows: list[int | None]
    columns: list[int | None]

    def title(self, dimensions: int) -> str:
        if dimensions <= 2:
            return ""
        return "[" + ", ".join([str(index) for index in self.prefix] + [":", ":"]) + "]"

    def caption(self, shape: tuple[int, ...]) -> str:
        """Which part of the tensor is printed: ``rows 0-2, 9, 253-255 of 256, columns 0-3, 767 of 768
        of [4, 256, 768] at [0, :, :]``."""
        if not shape:
            return "a scalar"
        if len(shape) == 1:
            return f"elements {index_ranges(self.columns)} of {shape[0]}"
        text = f"rows {index_ranges(self.rows)} of {shape[-2]}, columns {index_ranges(self.columns)} of {shape[-1]}"
        if len(shape) > 2:
            text += f" of {shape_text(shape, as_list=True)} at {self.title(len(shape))}"
        return text

    def position_of(self, index: tuple[int, ...] | None) -> tuple[int, int] | None:
        """Where element ``index`` is printed (row, column of the preview), or None if it is not."""
        if index is None:
            return None
        if not index:
            return (0, 0)
        row = 0 if len(index) == 1 else index[-2]
        rows = [0] if len(index) == 1 else self.rows
        if tuple(index[:-2]) != self.prefix or row not in rows or index[-1] not in self.columns:
            return None
        return rows.index(row), self.columns.index(index[-1])


def index_ranges(indices: list[int | None]) -> str:
    """``0-2, 9, 253-255``: the indices shown (None stands for the ones left out)."""
    runs: list[list[int]] = []
    for index in indices:
        if index is None:
            continue
        if runs and index == runs[-1][-1] + 1:
            runs[-1].append(index)
        else:
            runs.append([index])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def preview_layout(shape: tuple[int, ...], focus: tuple[int, ...] | None, columns_that_fit: int) -> PreviewLayout:
    if len(shape) == 0:
        return PreviewLayout((), [0], [0])
    focus = focus if focus is not None and len(focus) == len(shape) else tuple(0 for _ in shape)
    if len(shape) == 1:
        return PreviewLayout((), [0], shown_indices(shape[0], columns_that_fit, focus[0]))
    return PreviewLayout(
        tuple(focus[:-2]),
        shown_indices(shape[-2], PREVIEW_ROWS, focus[-2]),
        shown_indices(shape[-1], columns_that_fit, focus[-1]),
    )


def preview_values(tensor: torch.Tensor, layout: PreviewLayout) -> list[list[float | None]]:
    values = as_comparable(tensor) if tensor.dtype != torch.bool else tensor.to(torch.float64)
    if tensor.dim() == 0:
        return [[float(values)]]
    matrix = values.unsqueeze(0) if tensor.dim() == 1 else values[layout.prefix] if layout.prefix else values
    result: list[list[float | None]] = []
    for row in layout.rows:
        if row is None:
            result.append([])
            continue
        result.append([None if column is None else float(matrix[row, column]) for column in layout.columns])
    return result


def render_preview(
    matrix: list[list[float | None]],
    dimensions: int,
    number: str,
    width: int,
    broken: set[tuple[int, int]],
    palette: Palette,
    worst: tuple[int, int] | None = None,
) -> Text:
    """Rows like torch prints them: ``[[ 0.1234, -0.5678, ...,  0.9012],``; ``broken`` cells
    highlighted, the ``worst`` one (max |Δ|) marked apart."""
    opening = "[" * min(dimensions, 2)
    closing = "]" * min(dimensions, 2)
    text = Text(no_wrap=True, overflow="ellipsis")
    if dimensions == 0:
        text.append(number.format(matrix[0][0]))
        return text
    last = len(matrix) - 1
    for row_position, row in enumerate(matrix):
        start = opening if row_position == 0 else " " * (len(opening) - 1) + ("[" if dimensions >= 2 else "")
        if not row:  # the elided rows
            text.append(" " * len(opening) + "...,\n", palette.dim)
            continue
        text.append(start)
        for column_position, value in enumerate(row):
            if column_position:
                text.append(", ")
            if value is None:
                text.append("...".rjust(width), palette.dim)
            else:
                style = palette.bad if (row_position, column_position) in broken else Style()
                if (row_position, column_position) == worst:
                    style += palette.worst
                text.append(number.format(value).rjust(width), style)
        text.append(closing if row_position == last else ("]," if dimensions >= 2 else ",") + "\n")
    return text


# -- one leaf ------------------------------------------------------------------------------


def dtype_label(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def general(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3e}"


def statistics_table(sides: list[tuple[str, Leaf | None]], palette: Palette) -> Table:
    table = Table.grid(padding=(0, 2))
    for _ in range(8):
        table.add_column(justify="right")
    table.columns[0].justify = "left"
    table.add_row(*(Text(title, palette.label) for title in ("", "shape", "dtype", "min", "max", "mean", "std", "NaN/Inf")))
    cells: list[str | Text]
    for side_name, leaf in sides:
        if leaf is not None and leaf.tensor is None and leaf.summary is not None:
            kept = leaf.summary  # recorded with statistics only: no std, no values
            statistics_cells = (general(kept.minimum), general(kept.maximum), general(kept.mean), "—")
            cells = [shape_text(kept.shape), Text(printable(kept.dtype)), *statistics_cells]
            cells.append(Text(str(kept.nonfinite), palette.bad) if kept.nonfinite else Text("0", palette.dim))
            table.add_row(Text(side_name, palette.label), *cells)
            continue
        if leaf is None or leaf.tensor is None:
            value = "no counterpart" if leaf is None else printable(f"{leaf.value_type} {leaf.value_repr}")
            table.add_row(Text(side_name, palette.label), Text(value, palette.dim))
            continue
        summary = statistics(leaf.tensor)
        cells = [shape_text(leaf.tensor.shape), dtype_label(leaf.tensor)]
        if summary is None:
            cells += ["—"] * 5
        else:
            cells += [general(summary.minimum), general(summary.maximum), general(summary.mean), general(summary.std)]
            cells.append(Text(str(summary.nonfinite), palette.bad) if summary.nonfinite else Text("0", palette.dim))
        table.add_row(Text(side_name, palette.label), *cells)
    return table


def sparkline(values: list[float], threshold: float, palette: Palette) -> Text:
    text = Text()
    top = max(values, default=0.0)
    for value in values:
        level = 0 if top <= 0 else min(len(SPARK_CHARACTERS) - 1, int(value / top * (len(SPARK_CHARACTERS) - 1) + 0.5))
        character = SPARK_CHARACTERS[level] if value > 0 else "·"
        text.append(character, palette.bad if value > threshold else palette.good)
    return text


def difference_summary(difference: TensorDifference, tolerance: Tolerance, palette: Palette) -> Text:
    within = difference.within(tolerance.atol, tolerance.rtol)
    style = palette.good if within else palette.bad
    text = Text()
    if difference.from_statistics:
        text.append("max |Δ| ≥ ", palette.label)
        text.append(format_difference(difference.max_abs), style)
        text.append(
            "   from min, max and mean only (one side kept statistics): a difference is certain, agreement is not proof",
            palette.dim,
        )
        return text
    broken = difference.out_of_tolerance(tolerance.atol, tolerance.rtol)
    numel = max(difference.numel, 1)
    text.append("max |Δ| ", palette.label)
    text.append(format_difference(difference.max_abs), style)
    text.append("   max rel ", palette.label)
    text.append(format_difference(difference.max_rel))
    text.append("   mean |Δ| ", palette.label)
    text.append(format_difference(difference.mean_abs))
    text.append("   cosine ", palette.label)
    text.append(f"{difference.cosine:.6f}")
    text.append("\n")
    if broken is None:
        text.append(f"{'within' if within else 'breaks'} {tolerance}; elements not counted (the values were not kept)", style)
    else:
        text.append(f"{broken:,} of {difference.numel:,} elements ({100 * broken / numel:.1f}%) break {tolerance}", style)
    if difference.nonfinite_mismatches:
        text.append(
            f"   NaN/Inf mismatches: {difference.nonfinite_mismatches:,} "
            f"(original only {difference.nonfinite_original:,}, ported only {difference.nonfinite_ported:,})",
            palette.bad,
        )
    return text


def describe_leaf(pair: LeafPair, tolerance: Tolerance, width: int, palette: Palette) -> RenderableType:
    """Everything about one input or output leaf, both sides."""
    parts: list[RenderableType] = []
    title = Text(printable(pair.name), palette.heading)
    pair = in_port_layout(pair)  # the original's values as compared, in the port's layout
    difference = pair.difference
    original, ported = pair.original, pair.ported
    if original is not None and ported is not None and not original.is_tensor and not ported.is_tensor:
        values = f"   {original.value_type}  original {original.value_repr}  ported {ported.value_repr}"
        title.append(printable(values), palette.dim)
        return title
    parts.append(title)
    parts.append(statistics_table([("original", original), ("ported", ported)], palette))
    if difference is None:
        if original is None or ported is None:
            parts.append(Text("no counterpart on the other side: not compared", palette.warning))
        parts += side_previews(pair, tolerance, width, palette, None)
        return Group(*parts)
    if not difference.shape_matches:
        original_shape = shape_text(difference.original_shape, as_list=True)
        ported_shape = shape_text(difference.ported_shape, as_list=True)
        parts.append(Text(f"shapes differ: {original_shape} vs {ported_shape} — not compared element by element", palette.bad))
        if difference.layout_ambiguity:
            parts.append(Text(printable(difference.layout_ambiguity), palette.warning))
        parts += side_previews(pair, tolerance, width, palette, None)
        return Group(*parts)
    if difference.layout is not None:
        original_shape = shape_text(difference.original_shape, as_list=True)
        parts.append(Text(f"layout: the original's {original_shape} compared after {difference.layout}", palette.warning))
    if not difference.dtype_matches:
        parts.append(Text(printable(f"dtypes differ: {difference.original_dtype} vs {difference.ported_dtype}"), palette.warning))
    parts.append(difference_summary(difference, tolerance, palette))
    assert original is not None and ported is not None
    if original.tensor is None or ported.tensor is None:  # one side kept statistics only
        parts += side_previews(pair, tolerance, width, palette, None)
        return Group(*parts)
    absolute = absolute_difference(original.tensor, ported.tensor)
    worst = worst_elements(original.tensor, ported.tensor, absolute)
    if worst:
        parts.append(worst_table(worst, tolerance, palette))
        threshold = tolerance.atol
        profile_text = Text()
        for profile in dimension_profiles(absolute):
            if profile_text:
                profile_text.append("\n")
            profile_text.append_text(profile_line(profile, absolute.shape[profile.dimension], threshold, palette))
        if profile_text:
            parts.append(profile_text)
        buckets = histogram(absolute, tolerance.atol)
        if buckets:
            line = Text("|Δ| histogram: ", palette.label)
            for position, (label, count) in enumerate(buckets):
                line.append(f"{label} ", palette.dim)
                over = position >= HISTOGRAM_EDGES.index(1.0) + 1
                line.append(f"{count:,}", (palette.bad if over else palette.good) if count else palette.dim)
                line.append("  ")
            parts.append(line)
    parts += side_previews(pair, tolerance, width, palette, absolute)
    return Group(*parts)


def worst_table(worst: list[WorstElement], tolerance: Tolerance, palette: Palette) -> Table:
    table = Table.grid(padding=(0, 2))
    for justify in ("left", "left", "right", "right", "right"):
        table.add_column(justify=justify)
    table.add_row(*(Text(title, palette.label) for title in (f"worst {len(worst)}", "index", "original", "ported", "Δ")))
    for element in worst:
        breaks = abs(element.difference) > tolerance.atol + tolerance.rtol * abs(element.original)
        table.add_row(
            "",
            str(list(element.index)),
            general(element.original),
            general(element.ported),
            Text(f"{element.difference:+.3e}", palette.bad if breaks else palette.good),
        )
    return table


def side_previews(
    pair: LeafPair,
    tolerance: Tolerance,
    width: int,
    palette: Palette,
    absolute: torch.Tensor | None,
    labels: tuple[str, str] = ("original", "ported"),
) -> list[RenderableType]:
    """The values of both sides next to each other, out-of-tolerance ported values highlighted."""
    sides = zip(labels, (pair.original, pair.ported), strict=True)
    leaves = [(name, leaf) for name, leaf in sides if leaf is not None and leaf.tensor is not None]
    if not leaves:
        return []
    side_width = max(20, (width - 4) // len(leaves))
    focus = pair.difference.worst_index if pair.difference is not None and pair.difference.max_abs > 0 else None
    matrices: list[tuple[str, Leaf, PreviewLayout | None, list[list[float | None]] | None]] = []
    for name, leaf in leaves:
        assert leaf.tensor is not None
        shape = tuple(leaf.tensor.shape)
        if leaf.tensor.numel() == 0:
            matrices.append((name, leaf, None, None))
            continue
        # First guess at the cell width, to know how many columns fit.
        first_guess = preview_layout(shape, focus, max(3, (side_width - 8) // 12))
        matrices.append((name, leaf, first_guess, preview_values(leaf.tensor, first_guess)))
    integral = all(not leaf.tensor.is_floating_point() and not leaf.tensor.is_complex() for _, leaf, _, _ in matrices)  # type: ignore[union-attr]
    shown = [value for _, _, _, matrix in matrices if matrix for row in matrix for value in row if value is not None]
    number = number_format(shown, integral)
    cell_width = max((len(number.format(value)) for value in shown), default=1)
    grid = Table.grid(padding=(0, 4))
    headings = []
    bodies = []
    captions: list[tuple[str, str]] = []  # (side, which part it shows)
    worst_shown = False
    for name, leaf, layout, matrix in matrices:
        assert leaf.tensor is not None
        if layout is None or matrix is None:
            headings.append(Text(f"{name}: empty", palette.label))
            bodies.append(Text(""))
            continue
        # Recompute with the real cell width now that the format is known.
        shape = tuple(leaf.tensor.shape)
        layout = preview_layout(shape, focus, max(3, (side_width - 6) // (cell_width + 2)))
        matrix = preview_values(leaf.tensor, layout)
        broken = broken_cells(layout, absolute, leaf.tensor, pair, tolerance) if name == "ported" and absolute is not None else set()
        worst = layout.position_of(focus)
        worst_shown = worst_shown or worst is not None
        captions.append((name, layout.caption(shape)))
        headings.append(Text(f"{name} {layout.title(leaf.tensor.dim())}".rstrip(), palette.label))
        bodies.append(render_preview(matrix, leaf.tensor.dim(), number, cell_width, broken, palette, worst))
    for _ in matrices:
        grid.add_column(no_wrap=True, overflow="ellipsis", max_width=side_width)
    grid.add_row(*headings)
    grid.add_row(*bodies)
    parts: list[RenderableType] = []
    if captions:
        # One line when both sides show the same part (the usual case), else each side's.
        parts_shown = {caption for _, caption in captions}
        shown_part = captions[0][1] if len(parts_shown) == 1 else "; ".join(f"{name} {caption}" for name, caption in captions)
        parts.append(Text(f"showing {shown_part}", palette.dim))
    parts.append(grid)
    if worst_shown and focus is not None:
        legend = Text("", palette.dim)
        legend.append(" worst ", palette.worst)
        legend.append(f" = the element with the largest |Δ|, {list(focus)}", palette.dim)
        if absolute is not None:
            legend.append(";  ", palette.dim)
            legend.append("this colour", palette.bad)
            legend.append(f" = breaks {tolerance}", palette.dim)
        parts.append(legend)
    return parts


def broken_cells(
    layout: PreviewLayout, absolute: torch.Tensor, ported: torch.Tensor, pair: LeafPair, tolerance: Tolerance
) -> set[tuple[int, int]]:
    assert pair.original is not None and pair.original.tensor is not None
    original = as_comparable(pair.original.tensor)
    limit = tolerance.atol + tolerance.rtol * original.abs()
    broken_mask = absolute > limit
    nonfinite = torch.isfinite(original) != torch.isfinite(as_comparable(ported))
    broken_mask = broken_mask | nonfinite
    if ported.dim() == 0:
        return {(0, 0)} if bool(broken_mask) else set()
    matrix = broken_mask.unsqueeze(0) if ported.dim() == 1 else (broken_mask[layout.prefix] if layout.prefix else broken_mask)
    cells = set()
    for row_position, row in enumerate(layout.rows):
        if row is None:
            continue
        for column_position, column in enumerate(layout.columns):
            if column is not None and bool(matrix[row, column]):
                cells.add((row_position, column_position))
    return cells

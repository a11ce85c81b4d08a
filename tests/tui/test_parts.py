"""The interface's pure parts: the outline (what is visible), the tensor detail, the dialog's parsing."""

from __future__ import annotations

import re

import pytest
import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.numeric import measure
from tracetui.rows import LeafPair
from tracetui.trace import Leaf
from tracetui.tui.detail import render_to_strips
from tracetui.tui.dialogs import parse_tolerance
from tracetui.tui.listing import ComparisonListing, make_listing
from tracetui.tui.outline import Outline, ViewOptions, compile_filter, narrows
from tracetui.tui.tensor_detail import (
    Palette,
    describe_leaf,
    dimension_profiles,
    histogram,
    number_format,
    shown_indices,
    statistics,
    worst_elements,
)


def render(renderable: object, width: int = 140) -> str:
    return "\n".join(strip.text.rstrip() for strip in render_to_strips(renderable, width))  # type: ignore[arg-type]


# -- outline -------------------------------------------------------------------------------


def test_the_filter_is_smart_case_and_anchors_to_each_name() -> None:
    assert compile_filter("") is None
    assert compile_filter("mlp").search("h.0.MLP")  # type: ignore[union-attr]
    assert not compile_filter("MLP").search("h.0.mlp")  # type: ignore[union-attr]
    both_names = "h.0.attn\nlayers.0.self_attn"
    assert compile_filter("^layers").search(both_names)  # type: ignore[union-attr]
    assert compile_filter("attn$").search(both_names)  # type: ignore[union-attr]
    with pytest.raises(re.error):
        compile_filter("(")


def test_outline_folds_filters_and_finds(comparison: Comparison) -> None:
    listing = make_listing(comparison)
    everything = Outline(listing)
    assert everything.visible == list(range(len(comparison.rows)))
    folded = Outline(listing, ViewOptions(collapsed=frozenset({2})))
    assert 3 not in folded.visible and 14 not in folded.visible and 15 in folded.visible
    assert folded.nearest(5) == 15 and folded.position_of(5) is None
    problems = Outline(listing, ViewOptions(only_problems=True, filter_text="mlp"))
    assert all(comparison.status(comparison.rows[row]) != "match" and "mlp" in listing.search_texts[row] for row in problems.visible)
    assert everything.find(0, 1, listing.is_problem) == 2
    assert everything.find(2, -1, listing.is_problem) == 0
    assert everything.find(len(comparison.rows) - 1, 1, listing.is_problem) is None
    assert ViewOptions().toggled(2).toggled(2) == ViewOptions()


def test_typing_a_filter_further_narrows_the_last_result(comparison: Comparison) -> None:
    listing = make_listing(comparison)
    previous = Outline(listing, ViewOptions(filter_text="h"))
    for text in ("h.", "h.0", "h.0.", "h.0.Mlp", "h.0.mlp", "h.0.m|c_q", "h.0.m|c_q)"[:-1]):
        options = ViewOptions(filter_text=text)
        assert Outline(listing, options, previous=previous).visible == Outline(listing, options).visible, text
    assert not narrows(ViewOptions(filter_text="ab"), ViewOptions(filter_text="ab|c"))
    assert not narrows(ViewOptions(filter_text="ab"), ViewOptions(filter_text="ab?"))
    assert narrows(ViewOptions(filter_text="h.0"), ViewOptions(filter_text="h.0.mlp"))


def test_a_new_tolerance_keeps_the_search_names(comparison: Comparison) -> None:
    listing = make_listing(comparison)
    assert isinstance(listing, ComparisonListing)
    relaxed = make_listing(comparison.with_tolerance(Tolerance(atol=1.0)), listing)
    assert relaxed.search_texts is listing.search_texts
    assert relaxed.culprit is None


# -- tensor detail -------------------------------------------------------------------------


def test_shown_indices_keep_the_edges_and_the_worst() -> None:
    assert shown_indices(5, 7, 3) == [0, 1, 2, 3, 4]
    assert shown_indices(10, 5, None) == [0, 1, None, 8, 9]
    assert shown_indices(10, 5, 1) == [0, 1, None, 8, 9]
    assert shown_indices(10, 5, 5) == [0, None, 5, None, 9]


def test_number_format_is_fixed_or_scientific_like_torch() -> None:
    assert number_format([0.5, -1.25], integral=False) == "{:.4f}"
    assert number_format([1e-6, 1.0], integral=False) == "{:.4e}"
    assert number_format([3.0, 7.0], integral=True) == "{:.0f}"


def test_statistics_worst_elements_profiles_and_histogram() -> None:
    original = torch.zeros(2, 3)
    ported = original.clone()
    ported[1, 2] = 0.5
    ported[0, 1] = -0.01
    summary = statistics(ported)
    assert summary is not None and summary.maximum == 0.5 and summary.nonfinite == 0
    absolute = (ported - original).abs().double()
    worst = worst_elements(original, ported, absolute)
    assert [element.index for element in worst] == [(1, 2), (0, 1)]
    assert worst[0].difference == 0.5
    profiles = {profile.dimension: profile.values for profile in dimension_profiles(absolute)}
    assert profiles[0] == pytest.approx([0.01, 0.5]) and profiles[1] == pytest.approx([0.0, 0.01, 0.5])
    counts = dict(histogram(absolute, atol=1e-3))
    assert sum(counts.values()) == 6 and counts[">1e-01"] == 1


def test_describe_leaf_shows_both_sides_and_marks_what_breaks() -> None:
    original = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10
    ported = original.clone()
    ported[2, 1] += 0.25
    pair = LeafPair(Leaf("hidden_states", original), Leaf("hidden_states", ported), measure(original, ported))
    text = render(describe_leaf(pair, Tolerance(), 140, Palette()))
    assert "1 of 12 elements (8.3%) break atol 0.001" in text
    assert "[2, 1]" in text and "+2.500e-01" in text
    assert "original" in text and "ported" in text
    assert "[[0.0000, 0.1000, 0.2000, 0.3000]," in text  # printed like a tensor
    assert "1.1500" in text  # the ported value that breaks the tolerance


def test_describe_leaf_of_a_shape_mismatch_and_an_unpaired_leaf() -> None:
    original, ported = torch.ones(2, 3), torch.ones(2, 2)
    pair = LeafPair(Leaf("output", original), Leaf("output", ported), measure(original, ported))
    assert "shapes differ: [2, 3] vs [2, 2]" in render(describe_leaf(pair, Tolerance(), 140, Palette()))
    alone = LeafPair(None, Leaf("attention_mask", torch.ones(4)))
    assert "no counterpart on the other side" in render(describe_leaf(alone, Tolerance(), 140, Palette()))


# -- tolerance dialog ----------------------------------------------------------------------


def test_parse_tolerance() -> None:
    assert parse_tolerance("1e-4", "") == Tolerance(atol=1e-4, rtol=0.0)
    assert parse_tolerance(" 0.5 ", "0.01") == Tolerance(atol=0.5, rtol=0.01)
    for atol, rtol in (("-1", "0"), ("abc", "0"), ("1", "nan"), ("inf", "0")):
        with pytest.raises(ValueError):
            parse_tolerance(atol, rtol)

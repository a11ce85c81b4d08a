"""Name the culprits: the modules that introduce a difference, and why.

With a fed run of the port (:mod:`tracetui.isolate`), every module is judged on its own: a
culprit is a call whose outputs break the tolerance although it was fed the original's inputs
and its submodules handed back the original's outputs (its own code is wrong), or a call that
made an input which breaks the tolerance although everything before it was fed (a module the
original has no counterpart of, or the enclosing forward's own lines). All of them are named,
in call order, so a port with three bugs shows three culprits in one run.

Without a fed run (a port given as a trace file, a streamed comparison) the culprit is found by
descent, and only the first: start at the earliest-executed call whose inputs agree and outputs
do not; step into its first child whose outputs disagree as long as that child's inputs agree
too; stop when the first disagreeing child inherited its difference (the bug is in the current
call's own code, before that child) or when no child disagrees.

A wrong input with no counterpart on the other side (an extra mask, a rope table computed
inline) is the one way a culprit's own code can be innocent, so the reason names such inputs
and the calls that made them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tracetui.classify import Classification, InputBlame, Tolerance
from tracetui.numeric import TensorDifference, format_difference
from tracetui.pairing.alignment import Alignment
from tracetui.rows import Row
from tracetui.sides import other_side
from tracetui.text import shape_text

# Inputs that agree only loosely: an output just over the tolerance may be amplified rounding.
LOOSE_AGREEMENT_FRACTION = 0.1


@dataclass(frozen=True)
class Diagnosis:
    """What a classification of the rows concludes: the culprits, why, and notes on the whole."""

    culprits: list[Row]  # in call order; empty when nothing introduces a difference
    reasons: dict[int, str]  # why each culprit is one, by row index
    notes: list[str]
    no_culprit_reason: str = ""  # why there is none, when there is none

    @property
    def culprit(self) -> Row | None:
        """The first culprit (the first divergence)."""
        return self.culprits[0] if self.culprits else None

    @property
    def reason(self) -> str:
        return self.reasons[self.culprits[0].index] if self.culprits else self.no_culprit_reason


def diagnose(rows: list[Row], classification: Classification, alignment: Alignment) -> Diagnosis:
    notes = general_notes(rows, classification)
    culprit_positions = np.flatnonzero(classification.culprits).tolist()
    if culprit_positions:
        culprits = [rows[position] for position in culprit_positions]
        reasons = {row.index: isolated_reason(row, rows, classification, alignment) for row in culprits}
        return Diagnosis(culprits, reasons, notes)
    culprit, reason = find_culprit(rows, classification, alignment)
    if culprit is None:
        return Diagnosis([], {}, notes, no_culprit_reason=reason)
    return Diagnosis([culprit], {culprit.index: reason}, notes)


# -- judged on its own (the fed run) ------------------------------------------------------------


def isolated_reason(culprit: Row, rows: list[Row], classification: Classification, alignment: Alignment) -> str:
    """Why the fed run blames this call: its own outputs, or an input it made, or both."""
    index = culprit.index
    parts = []
    if classification.isolated_disagrees[index] and classification.introduces[index]:
        children = [rows[position] for position in classification.figures.children.get(index, [])]
        parts.append(culprit_reason(culprit, classification, alignment, children))
    elif classification.isolated_disagrees[index]:
        parts.append(own_outputs_reason(culprit, classification))
    elif classification.introduces[index]:
        parts.append(in_run_sentence(culprit, classification))
    elif culprit.is_paired and not classification.inputs_agree[index]:
        parts.append(f"its inputs already differ in this run (max |Δ| {format_difference(culprit.input_max_abs)})")
    tolerance = classification.tolerance
    for blame in classification.figures.input_blames:
        assert blame.pair.difference is not None
        if blame.blamed == index and not blame.pair.difference.within(tolerance.atol, tolerance.rtol):
            parts.append(input_blame_reason(blame, culprit, rows))
    return "; ".join(parts)


def input_blame_reason(blame: InputBlame, culprit: Row, rows: list[Row]) -> str:
    assert blame.pair.ported is not None and blame.pair.difference is not None
    argument = f"the argument '{blame.pair.ported.name}' of {rows[blame.consumer].label}"
    differs = f"which differs from the original's (max |Δ| {format_difference(blame.pair.difference.max_abs)})"
    if blame.how == "reordered":
        return (
            f"its outputs hold the original's values in another order, and the code after it makes of them {argument}, {differs}: "
            "the layout of its outputs (its weights' rows or columns?) is not the one that code expects"
        )
    if blame.how == "returned":
        made = "it makes"
    elif blame.made_in is not None:
        made = f"its own forward code (in {rows[blame.made_in].label}, which exists on one side only) makes"
    else:
        made = "its own forward code (between its submodules) makes"
    reason = f"{made} {argument}, {differs} although everything before was fed the original's values"
    if not culprit.is_paired and blame.how == "returned":
        reason += "; it has no counterpart in the original"
    return reason


def own_outputs_reason(culprit: Row, classification: Classification) -> str:
    """A call wrong on its own although its inputs already differed in the run (a later bug)."""
    fed_children = bool(classification.figures.children.get(culprit.index))
    if classification.status(culprit.index) == "shape_mismatch":
        shapes = next(pair.difference for pair in culprit.outputs if pair.difference and not pair.difference.shape_matches)
        outcome = f"its output shapes differ ({shapes_text(shapes)})"
        if shapes.layout_ambiguity:
            outcome += f": {shapes.layout_ambiguity}"
    elif culprit.isolated is not None and culprit.isolated.raised:
        outcome = "it raised an exception (caught by model code) where the original's call returned"
    else:
        outcome = f"its outputs still differ (max |Δ| {format_difference(culprit.isolated_max_abs)})"
    reason = (
        f"its inputs already differ in this run (max |Δ| {format_difference(culprit.input_max_abs)}), but fed the original's "
        + ("inputs, with its submodules handing back the original's outputs, " if fed_children else "inputs, ")
        + f"{outcome}: {'look at its own forward code' if fed_children else 'its own code or weights are wrong'}"
    )
    if classification.nondeterministic[culprit.index]:
        reason += "; its outputs also change from one run of the same model to the next (dropout left active?)"
    assert culprit.isolated is not None
    if culprit.isolated.unfed_inputs:
        reason += (
            f". It ran on the port's own values for {', '.join(culprit.isolated.unfed_inputs)} (no counterpart to feed): "
            "if one of them is wrong, the bug is where it is made"
        )
    return reason


# -- the descent (no fed run) ---------------------------------------------------------------------


def find_culprit(rows: list[Row], classification: Classification, alignment: Alignment) -> tuple[Row | None, str]:
    """The descent of the module docstring, on the classification's arrays (without visiting
    20,000 rows in Python)."""
    tolerance = classification.tolerance
    disagrees = classification.disagrees
    introduces = classification.introduces
    children = classification.figures.children

    starts = np.flatnonzero(introduces)
    if not len(starts):
        disagreeing = np.flatnonzero(disagrees)
        if not len(disagreeing):
            return None, "every paired call's outputs agree within tolerance"
        earliest = rows[int(disagreeing[0])]
        return earliest, no_introducing_call_reason(earliest, tolerance)

    current = int(starts[0])
    while True:
        child = next((position for position in children.get(current, []) if disagrees[position]), None)
        if child is None or rows[child].kind == "tap" or not introduces[child]:
            break
        current = child
    child_rows = [rows[position] for position in children.get(current, [])]
    return rows[current], culprit_reason(rows[current], classification, alignment, child_rows)


def first_disagreeing(rows: list[Row], classification: Classification) -> Row | None:
    return next((row for row in rows if classification.disagrees[row.index]), None)


def one_sided_calls_before(children: list[Row], first_disagreeing_child: Row | None) -> list[Row]:
    """Calls with no counterpart that ran after the last agreeing child and before the first
    disagreeing one: where the difference may really start (an extra norm in the port, say)."""
    stop = len(children) if first_disagreeing_child is None else children.index(first_disagreeing_child)
    between: list[Row] = []
    for child in children[:stop]:
        if child.is_paired:
            between = []
        else:
            between.append(child)
    return between


def culprit_reason(culprit: Row, classification: Classification, alignment: Alignment, children: list[Row]) -> str:
    """Why this call is the culprit, in one paragraph: input Δ, output Δ, and what to check."""
    tolerance = classification.tolerance
    input_difference = culprit.input_max_abs
    reason = in_run_sentence(culprit, classification)
    if classification.nondeterministic[culprit.index]:
        reason += ", and its outputs change from one run of the same model to the next (dropout left active?)"

    first_disagreeing_child = first_disagreeing(children, classification)
    if first_disagreeing_child is not None and first_disagreeing_child.kind == "tap":
        reason += f"; no submodule introduces it — it first shows at {first_disagreeing_child.label}"
    elif first_disagreeing_child is not None and classification.introduces[first_disagreeing_child.index]:
        # Only with a fed run: the submodule is a culprit too, and so is this call's own code.
        reason += (
            f"; its submodule {first_disagreeing_child.label} introduces a difference too, but with every submodule "
            "handing back the original's outputs it still differs, so look at its own forward code as well"
        )
    elif any(child.is_paired for child in children):
        reason += "; none of its submodules introduces it, so look at its own forward code"
        one_sided = one_sided_calls_before(children, first_disagreeing_child)
        if one_sided:
            names = ", ".join(f"{row.label} ({'original' if row.original else 'ported'} only)" for row in one_sided[:3])
            reason += f", and at calls with no counterpart that ran just before the difference shows: {names}"
    loose = input_difference is not None and input_difference > LOOSE_AGREEMENT_FRACTION * tolerance.atol
    if loose and classification.figures.rounding is None:  # with a floor, rounding is measured, not guessed
        reason += (
            f". Its inputs agree only loosely ({format_difference(input_difference)} against atol {tolerance.atol:g}): "
            "the output difference may be amplified earlier rounding rather than a bug here"
        )
    extras = describe_unpaired_inputs(culprit, alignment)
    if extras:
        reason += f". Not compared, having no counterpart: {extras} — if one of them is wrong, the bug is where it is made"
    return reason


def in_run_sentence(culprit: Row, classification: Classification) -> str:
    """``its inputs agree (max |Δ| 0 ≤ atol 0.001) but its outputs do not (max |Δ| 1.93e-01)``."""
    status = classification.status(culprit.index)
    input_difference = culprit.input_max_abs
    if input_difference is None:
        inputs = "it has no paired tensor inputs"
    else:
        inputs = f"its inputs agree (max |Δ| {format_difference(input_difference)} ≤ {classification.tolerance})"
        if classification.figures.rounding is not None and input_difference > classification.tolerance.atol:
            inputs = f"its inputs agree within rounding (max |Δ| {format_difference(input_difference)}, within the noise floor)"
    if status == "shape_mismatch":
        shapes = next(pair.difference for pair in culprit.outputs if pair.difference and not pair.difference.shape_matches)
        outputs = f"its output shapes differ ({shapes_text(shapes)})"
        if shapes.layout_ambiguity:
            outputs += f": {shapes.layout_ambiguity}"
    elif status == "nonfinite":
        outputs = "its outputs have NaN/Inf where the other side has none"
    elif culprit.unreturned_side is not None:
        outputs = (
            f"its {culprit.unreturned_side} call raised an exception (caught by model code) and returned nothing, "
            f"while the {other_side(culprit.unreturned_side)} call returned"
        )
    else:
        outputs = f"its outputs do not (max |Δ| {format_difference(culprit.output_max_abs)})"
    return f"{inputs} but {outputs}"


def shapes_text(difference: TensorDifference) -> str:
    return f"{shape_text(difference.original_shape, as_list=True)} vs {shape_text(difference.ported_shape, as_list=True)}"


def describe_unpaired_inputs(row: Row, alignment: Alignment) -> str:
    descriptions = []
    for pair in row.unpaired_inputs():
        side, leaf, trace = ("original", pair.original, alignment.original) if pair.original else ("ported", pair.ported, alignment.ported)
        assert leaf is not None
        text = f"{side} input {leaf.name}"
        if leaf.source is not None:
            text += f" (made by {trace.records[leaf.source[0]].display_name})"
        descriptions.append(text)
    return ", ".join(descriptions)


def no_introducing_call_reason(row: Row, tolerance: Tolerance) -> str:
    if row.parent is None and row.original is not None and row.original.parent is None:
        return (
            f"the models' own inputs already differ (max |Δ| {format_difference(row.input_max_abs)} > {tolerance}): "
            "the two scripts' build() must return the same inputs"
        )
    return (
        "every call whose outputs disagree also has disagreeing inputs; the difference enters through code "
        "that is not a module on either side, or through calls that have no counterpart"
    )


def general_notes(rows: list[Row], classification: Classification) -> list[str]:
    """Notes on the comparison as a whole, from the classification's arrays and figures (the
    parts that do not depend on the tolerance are gathered once)."""
    notes = []
    figures = classification.figures
    counts = classification.status_counts()
    paired = figures.paired_count
    if counts["unmatched"] and paired <= 1:
        notes.append(
            f"Only {paired} call(s) could be paired; {counts['unmatched']} are unmatched. "
            "Pass a rename map with --map (`tracetui align ORIG PORTED -o map.toml` writes a first one to edit)."
        )
    sources = [rows[position] for position in np.flatnonzero(classification.nondeterministic).tolist()]
    if sources:
        names = ", ".join(row.label for row in sources[:3]) + (" …" if len(sources) > 3 else "")
        notes.append(
            f"{len(sources)} call(s) give different outputs from one run of the same model to the next: {names}. "
            "Something random is active in eval mode (dropout with training=True, random sampling): "
            "numbers from such a model cannot be compared reliably."
        )
    opaque_types = figures.opaque_output_types
    if opaque_types:
        notes.append(
            f"Outputs of type {', '.join(sorted(opaque_types))} were recorded by their repr only, not compared: "
            "tracetui compares tensors inside tuples, lists, dicts, dataclasses and namedtuples."
        )
    if figures.statistics_only_pairs:
        notes.append(
            f"{figures.statistics_only_pairs} tensor pair(s) were compared by their min, max and mean only, one side having "
            "kept statistics (--keep stats, outside --only): their |Δ| is a lower bound (shown ≥), so a difference there is "
            "certain but an agreement is not proof, and the first divergence may lie earlier than the one named. "
            "Keep full values for the calls before it (--only) to be sure."
        )
    if classification.isolation_undecided:
        notes.append(
            f"{classification.isolation_undecided} call(s) could not be judged on their own at {classification.tolerance}: "
            "their values were let go after the run, counted at the tolerance it ran with. Compare again with this "
            "tolerance (--atol/--rtol) to judge them."
        )
    return notes

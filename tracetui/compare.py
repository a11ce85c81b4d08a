"""Compare aligned calls against the tolerance and name the culprit.

The stages, each in its own module: :mod:`tracetui.rows` measures how every aligned call's
leaves differ (once, whatever the tolerance), :mod:`tracetui.classify` judges those figures
against one tolerance, and :mod:`tracetui.diagnose` names the culprit. A :class:`Comparison`
holds the three results and never changes: :meth:`Comparison.with_tolerance` gives another one
that shares the measured rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from tracetui.classify import Classification, RowFigures, Status, Tolerance
from tracetui.diagnose import Diagnosis, diagnose
from tracetui.isolate import IsolateWhen, Isolation
from tracetui.memory import garbage_collection_paused
from tracetui.noise_floor import NoiseFloor, Rounding
from tracetui.pairing.alignment import Alignment
from tracetui.rows import Measured, Row, build_rows, isolated_call
from tracetui.sides import Side, pick
from tracetui.trace import Trace

if TYPE_CHECKING:
    from tracetui.fixes import FixSearch


@dataclass(frozen=True, eq=False)
class Comparison:
    """The outcome of comparing two traces: the measured rows, their classification under one
    tolerance, and the culprit with its reason."""

    alignment: Alignment = field(repr=False)
    rows: list[Row] = field(repr=False)
    classification: Classification = field(repr=False)
    diagnosis: Diagnosis
    # What trying the usual porting mistakes on each culprit found, by row index (tracetui.fixes);
    # empty when no search ran (a port given as a trace, ``fixes=False``, no culprit).
    fixes: dict[int, FixSearch] = field(default_factory=dict, repr=False)
    # How rounding was judged: against a noise floor measured by running the original in the
    # port's dtype (tracetui.noise_floor), or strictly — with a note when it could not be measured.
    rounding: Rounding = field(default_factory=Rounding)

    @property
    def original(self) -> Trace:
        return self.alignment.original

    @property
    def ported(self) -> Trace:
        return self.alignment.ported

    @property
    def tolerance(self) -> Tolerance:
        return self.classification.tolerance

    @property
    def culprit(self) -> Row | None:
        """The first culprit: the first divergence."""
        return self.diagnosis.culprit

    @property
    def culprits(self) -> list[Row]:
        """Every call that introduces a difference, in call order (one at most without a fed run)."""
        return self.diagnosis.culprits

    def reason_for(self, culprit: Row) -> str:
        return self.diagnosis.reasons[culprit.index]

    def is_culprit(self, row: Row) -> bool:
        return row.index in self.diagnosis.reasons

    @property
    def reason(self) -> str:
        return self.diagnosis.reason

    @property
    def notes(self) -> list[str]:
        return self.diagnosis.notes

    @property
    def verdict(self) -> Literal["match", "diverged"]:
        return self.classification.verdict

    def status_counts(self) -> Counter[str]:
        return self.classification.status_counts()

    # -- one row under this tolerance --------------------------------------------------------

    def status(self, row: Row) -> Status:
        return self.classification.status(row.index)

    def inputs_agree(self, row: Row) -> bool:
        """Every input tensor that has a counterpart is within tolerance (True when unpaired)."""
        return bool(self.classification.inputs_agree[row.index])

    def outputs_agree(self, row: Row) -> bool:
        return bool(self.classification.outputs_agree[row.index])

    def disagrees(self, row: Row) -> bool:
        """Paired, and the outputs break the tolerance (for whatever reason)."""
        return bool(self.classification.disagrees[row.index])

    def is_nondeterministic(self, row: Row) -> bool:
        """The outputs changed between two runs of the same model while the inputs did not."""
        return bool(self.classification.nondeterministic[row.index])

    # -- the rows as a whole -----------------------------------------------------------------

    def with_tolerance(self, tolerance: Tolerance) -> Comparison:
        """The same rows under another tolerance, judged from the figures gathered once (no
        tensor is measured again without an rtol). This comparison stays as it was."""
        judged = judge(self.alignment, self.rows, self.classification.figures, tolerance)
        # Each search keeps its differences: fixes are judged at the new tolerance.
        return replace(judged, fixes=self.fixes, rounding=self.rounding)

    def row_of(self, side: Side, record_index: int) -> Row | None:
        for row in self.rows:
            record = pick(row, side)
            if record is not None and record.index == record_index:
                return row
        return None


def compare_alignment(
    alignment: Alignment,
    tolerance: Tolerance = Tolerance(),
    measured: Measured | None = None,
    isolation: Isolation | None = None,
    noise_floor: NoiseFloor | None = None,
    rounding: Rounding | None = None,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Measure every aligned call (or take the calls already ``measured`` while the port ran),
    classify them under ``tolerance`` and find the culprits (every one, given the ``isolation``
    a fed run of the port found: :mod:`tracetui.isolate`). With a ``noise_floor`` (the original
    run in the port's dtype) a difference rounding explains agrees; ``rounding`` says why there
    is none when the dtypes differ (:mod:`tracetui.noise_floor`). ``progress`` hears how many
    calls are measured, a few times a second."""
    with garbage_collection_paused():
        rows = build_rows(alignment, measured, isolation, progress)
    return classify_rows(alignment, rows, tolerance, noise_floor, rounding)


def compare_and_isolate(
    alignment: Alignment,
    tolerance: Tolerance,
    isolate: IsolateWhen,
    fed_run: Callable[[], Isolation | None],
    measured: Measured | None = None,
    noise_floor: NoiseFloor | None = None,
    rounding: Rounding | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Comparison, Isolation | None]:
    """:func:`compare_alignment` with the fed run ``isolate`` asks for: before the comparison
    ("always"), after it and only for a port that diverged ("if diverged"), or none. Returns the
    fed run's findings too (the fix search starts from them)."""
    isolation = fed_run() if isolate == "always" else None
    comparison = compare_alignment(alignment, tolerance, measured, isolation, noise_floor, rounding, progress)
    if isolate == "if diverged" and comparison.verdict == "diverged":
        isolation = fed_run()
        if isolation is not None:
            comparison = with_isolation(comparison, isolation, noise_floor)
    return comparison, isolation


def with_isolation(comparison: Comparison, isolation: Isolation, noise_floor: NoiseFloor | None) -> Comparison:
    """The same measured rows once a fed run has judged every ported module on its own: run
    after the comparison, and only for a port that diverged, it names every culprit (nothing
    is measured again)."""
    rows = [replace(row, isolated=isolated_call(row.original, row.ported, isolation)) for row in comparison.rows]
    judged = classify_rows(comparison.alignment, rows, comparison.tolerance, noise_floor, comparison.rounding)
    return replace(judged, fixes=comparison.fixes)


def classify_rows(
    alignment: Alignment, rows: list[Row], tolerance: Tolerance, noise_floor: NoiseFloor | None, rounding: Rounding | None
) -> Comparison:
    with garbage_collection_paused():
        figures = RowFigures.gather(rows, alignment)
        if noise_floor is not None:
            figures = replace(figures, rounding=noise_floor.figures(rows, figures.input_blames))
    judged = judge(alignment, rows, figures, tolerance)
    if figures.rounding is not None:
        return replace(judged, rounding=figures.rounding.rounding)
    return replace(judged, rounding=rounding or Rounding())


def judge(alignment: Alignment, rows: list[Row], figures: RowFigures, tolerance: Tolerance) -> Comparison:
    classification = Classification.judge(rows, figures, tolerance)
    diagnosis = diagnose(rows, classification, alignment)
    if alignment.ported.distributed is not None:  # a port recorded on several ranks (--nproc)
        from tracetui.distributed.findings import annotate_diagnosis

        diagnosis = annotate_diagnosis(diagnosis, alignment.ported.distributed, tolerance)
    return Comparison(alignment, rows, classification, diagnosis)

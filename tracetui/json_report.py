"""The JSON report, schema ``tracetui.report/1`` (shared/docs/contracts.md).

The contract's keys keep their meaning; extra keys (classes, input Δ, pairing, reason, precision,
whether a difference is a lower bound from statistics) are added.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tracetui.compare import Comparison
from tracetui.output_files import write_text_atomically
from tracetui.precision import (
    Precision,
    describe_precision,
    isolated_noise_floor,
    rounding_match_label,
    row_noise_floor,
    within_rounding,
)
from tracetui.rows import Row

SCHEMA = "tracetui.report/1"


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def row_entry(comparison: Comparison, row: Row) -> dict[str, Any]:
    return {
        "original": row.original_name,
        "ported": row.ported_name,
        "call": row.call,
        "status": comparison.status(row),
        "max_abs_diff": finite_or_none(row.output_max_abs),
        "input_max_abs_diff": finite_or_none(row.input_max_abs),
        # The ported call alone, fed the original's values (null when it was not run so).
        "isolated_max_abs_diff": finite_or_none(row.isolated_max_abs),
        "culprit": comparison.is_culprit(row),
        # True when a side kept statistics only: max_abs_diff is then a lower bound.
        "max_abs_diff_is_lower_bound": any(pair.difference is not None and pair.difference.from_statistics for pair in row.outputs),
        "original_class": None if row.original is None else row.original.class_name,
        "ported_class": None if row.ported is None else row.ported.class_name,
        "kind": row.kind,
        "depth": row.depth,
        "pairing": row.pairing.method,
        "confidence": row.pairing.confidence,
        # The transform into the port's layout its tensors were compared after ("reshape (2, 7, 4, 16)
        # → (2, 7, 64)", "permute [0, 3, 1, 2]"; several joined by "; "), or null.
        "layout": row.layout,
        # When an output of another shape fits several transforms, none is applied: which, and how to state one.
        "layout_ambiguity": row.layout_ambiguity,
        **noise_entries(comparison, row),
    }


def noise_entries(comparison: Comparison, row: Row) -> dict[str, Any]:
    """``noise_floor``: the original against its own run in the port's dtype at this call (null:
    no floor measured, or the row is unpaired), and ``within_rounding``: the row agrees only within
    k× that floor."""
    floor = row_noise_floor(comparison, row)
    alone = isolated_noise_floor(comparison, row)
    return {
        "noise_floor": None
        if floor is None
        else {
            "max_abs": finite_or_none(floor[0]),
            "mean_abs": finite_or_none(floor[1]),
            "isolated_max_abs": None if alone is None else finite_or_none(alone[0]),
            "isolated_mean_abs": None if alone is None else finite_or_none(alone[1]),
        },
        "within_rounding": within_rounding(comparison, row),
    }


def culprit_entry(comparison: Comparison, culprit: Row) -> dict[str, Any]:
    """One culprit: ``first_divergence`` and each entry of ``culprits``."""
    return {
        "original": culprit.original_name,
        "ported": culprit.ported_name,
        "max_abs_diff": finite_or_none(culprit.output_max_abs),
        "call": culprit.call,
        "status": comparison.status(culprit),
        "input_max_abs_diff": finite_or_none(culprit.input_max_abs),
        "isolated_max_abs_diff": finite_or_none(culprit.isolated_max_abs),
        "original_class": None if culprit.original is None else culprit.original.class_name,
        "ported_class": None if culprit.ported is None else culprit.ported.class_name,
        "reason": comparison.reason_for(culprit),
        **rank_entries(comparison, culprit),
        **fix_entries(comparison, culprit),
        **noise_entries(comparison, culprit),
    }


def rank_entries(comparison: Comparison, culprit: Row) -> dict[str, Any]:
    """``ranks``: for a port run on several processes, the ranks whose shard of the culprit's
    output breaks the tolerance ([] when none can be told apart; absent for a single process)."""
    info = comparison.ported.distributed
    if info is None:
        return {}
    from tracetui.distributed.findings import culprit_ranks

    return {"ranks": [share.rank for share in culprit_ranks(culprit, info, comparison.tolerance)]}


def distributed_entry(comparison: Comparison) -> dict[str, Any] | None:
    """``distributed``: how the port ran on several processes (null for one): the leaves gathered
    from shards and every value that differed between ranks."""
    info = comparison.ported.distributed
    if info is None:
        return None
    from tracetui.distributed.findings import report_entry

    return report_entry(info, comparison.tolerance)


def fix_entries(comparison: Comparison, culprit: Row) -> dict[str, Any]:
    """The usual porting mistakes tried on the culprit alone: ``fixes`` (best first: those that make
    it match on the recorded inputs, else what came closest) and ``fix_search`` (null: none ran)."""
    search = comparison.fixes.get(culprit.index)
    if search is None:
        return {"fixes": [], "fix_search": None}
    tolerance = comparison.tolerance
    return {
        "fixes": [
            {
                "kind": attempt.kind,
                "detail": attempt.detail,
                "patch": attempt.patch,
                "max_abs_diff_after": finite_or_none(attempt.max_abs_after),
                "within_tolerance": attempt.within(search.judged_at(tolerance)),
            }
            for attempt in search.suggestions(tolerance)
        ],
        "fix_search": {
            "max_abs_diff_before": finite_or_none(search.max_abs_before),
            "tried": search.tried,
            "seconds": round(search.seconds, 3),
            "skipped": [{"kind": kind, "reason": reason} for kind, reason in search.skipped],
        },
    }


def precision_entry(precision: Precision, comparison: Comparison) -> dict[str, Any]:
    """Recorded dtypes per side and the dtype differences were computed in, so that a reader of
    ``max_abs_diff`` knows whether it is half-precision rounding or a real difference."""
    return {
        "original": list(precision.original_dtypes),
        "ported": list(precision.ported_dtypes),
        "compared_in": precision.compared_in,
        "note": precision.note,
        # "rounding": judged against the original run in the port's dtype; "strict": atol/rtol alone.
        "mode": precision.mode,
        "judged_against": precision.judged_against,
        "floor_factor": comparison.rounding.factor if comparison.rounding.measured else None,
        "floor_note": comparison.rounding.note,
    }


def report_document(comparison: Comparison) -> dict[str, Any]:
    culprits = [culprit_entry(comparison, culprit) for culprit in comparison.culprits] if comparison.verdict == "diverged" else []
    return {
        "schema": SCHEMA,
        "atol": comparison.tolerance.atol,
        "rtol": comparison.tolerance.rtol,
        "verdict": comparison.verdict,
        "first_divergence": culprits[0] if culprits else None,
        "culprits": culprits,
        "original_source": comparison.original.source,
        "ported_source": comparison.ported.source,
        "counts": dict(comparison.status_counts()),
        "notes": comparison.notes,
        "precision": precision_entry(describe_precision(comparison), comparison),
        # "match (within bfloat16 rounding)" when a call agrees only within the noise floor.
        "verdict_detail": rounding_match_label(comparison) if comparison.verdict == "match" else "diverged",
        "distributed": distributed_entry(comparison),
        "rows": [row_entry(comparison, row) for row in comparison.rows],
    }


def write_report(comparison: Comparison, path: str | Path, shown: str | None = None) -> None:
    """Write the report whole or not at all; a failure is an OutputError naming ``shown`` (default: the path)."""
    write_text_atomically(Path(path), json.dumps(report_document(comparison), indent=1) + "\n", shown)

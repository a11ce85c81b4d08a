"""What trying the usual porting mistakes costs, per culprit, on the GPT demo.

For each planted bug of ``demos/gpt/ported.py``: build both scripts, compare them without the
fix search (``fixes=False``, ``rerun=False``), then time ``search_fixes`` alone — the forward
pass that captures the culprits' fed arguments and every hypothesis tried — in wall time,
divided by the number of culprits searched. The issue's budget is a few seconds per culprit
on CPU; the target here is 3 s. Prints each bug's first suggestion for context.

Run it with ``python bench/bench_fixes.py`` (``--repeats 1`` to be quicker).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from figures import report, verdict

import tracetui
from tracetui.fixes import search_fixes
from tracetui.script import load_script

DEMO = Path(__file__).resolve().parent.parent / "demos" / "gpt"
BUGS = ("activation", "attention_scale", "missing_residual", "unconverted_weight", "norm_eps", "q_sliced_wrong")
SECONDS_PER_CULPRIT_TARGET = 3.0


def time_search(bug: str, repeats: int) -> tuple[float, int, str]:
    """The fastest search's seconds per culprit, the number of culprits, the first culprit's summary."""
    os.environ["TRACETUI_DEMO_BUG"] = bug
    original = load_script(DEMO / "original.py")
    ported = load_script(DEMO / "ported.py")
    comparison = tracetui.compare(original, ported, rename_map=str(DEMO / "map.toml"), rerun=False, fixes=False)
    fastest = float("inf")
    searches = {}
    for _ in range(repeats):
        started = time.perf_counter()
        searches = search_fixes(comparison, ported, original)
        fastest = min(fastest, time.perf_counter() - started)
    culprits = max(len(searches), 1)
    first = searches.get(comparison.culprits[0].index) if comparison.culprits else None
    return fastest / culprits, len(searches), "" if first is None else first.summary(comparison.tolerance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="searches timed per bug; the fastest counts (default: %(default)s)")
    arguments = parser.parse_args()
    rows = []
    worst = 0.0
    for bug in BUGS:
        seconds, culprits, summary = time_search(bug, arguments.repeats)
        worst = max(worst, seconds)
        print(f"{bug}: {culprits} culprit(s), {seconds:.3f} s each; {summary}")
        rows.append((f"fixes: {bug}, seconds per culprit", f"{seconds:.3f} s", "", "info"))
    target = f"≤ {SECONDS_PER_CULPRIT_TARGET:g} s"
    rows.append(("fixes: slowest, seconds per culprit (gpt demo)", f"{worst:.3f} s", target, verdict(worst <= SECONDS_PER_CULPRIT_TARGET)))
    report(rows, "fixes: ")


if __name__ == "__main__":
    main()

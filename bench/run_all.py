"""Every tracetui benchmark in one run, then one table of every figure against its target.

Runs each benchmark as its own subprocess, one after the other (so that their memory figures
do not mix and they do not compete for the cores), streams its output, and collects the
``FIGURE`` lines it prints (``FIGURE<TAB>name<TAB>measured<TAB>target<TAB>met|NOT met|info``;
see ``bench/figures.py``). For ``bench_tui.py``, which does not print them, the figures are
read from its own lines ("time to first screen …", "slowest repaint of a key: …").

    python bench/run_all.py             # everything (about half an hour on 2 busy cores)
    python bench/run_all.py --quick     # fewer repeats and smaller sizes
    python bench/run_all.py --only record,memory

Exit status 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from figures import Figure, parse

HERE = Path(__file__).resolve().parent


@dataclass
class Bench:
    name: str
    script: str
    what: str
    arguments: list[str] = field(default_factory=list)
    quick_arguments: list[str] = field(default_factory=list)


BENCHES = [
    Bench("record", "bench_record.py", "recording overhead vs the plain forward and transformers' debugger (GPT-2 small)",
          quick_arguments=["--repeats", "3"]),
    Bench("compare", "bench_compare.py", "what judging every module on its own (the fed run) adds to a whole comparison (GPT-2 small)",
          quick_arguments=["--repeats", "2"]),
    Bench("cost", "bench_compare_cost.py", "the whole compare process, big activations and measuring the leaves, against their floors",
          quick_arguments=["--quick"]),
    Bench("memory", "bench_memory.py", "memory of an in-memory comparison of two GPT-2-small-shaped models",
          quick_arguments=["--modes", "full,stats"]),
    Bench("scale", "bench_scale.py", "a streamed comparison of a 1.1B-parameter decoder bigger than the memory it runs in",
          quick_arguments=["--quick"]),
    Bench("weights", "bench_weights.py", "tracetui weights on two ~300M-parameter state dicts"),
    Bench("fixes", "bench_fixes.py", "trying the usual porting mistakes on each culprit of the GPT demo",
          quick_arguments=["--repeats", "1"]),
    Bench("tui", "bench_tui.py", "the interface with 20,000 rows: first screen and per-key repaint",
          quick_arguments=["--repeats", "2"]),
]


def tui_figures(lines: list[str]) -> list[Figure]:
    """Figures from bench_tui.py's own output, for as long as it prints no FIGURE lines."""
    figures = []
    for line in lines:
        first = re.match(r"time to first screen\s+([\d.]+) ms\s+target < ([\d.]+) ms", line)
        if first:
            measured, target = float(first[1]), float(first[2])
            figures.append(Figure("tui: time to first screen, 20,000 rows", f"{measured:.0f} ms", f"< {target:.0f} ms",
                                  "met" if measured < target else "NOT met"))
        slowest = re.match(r"slowest repaint of a key: ([\d.]+) ms \(target < ([\d.]+) ms\)", line)
        if slowest:
            measured, target = float(slowest[1]), float(slowest[2])
            figures.append(Figure("tui: slowest repaint of a key (worst press of every key)", f"{measured:.1f} ms",
                                  f"< {target:.0f} ms", "met" if measured < target else "NOT met"))
        key = re.match(r"(\S.*?)\s{2,}([\d.]+)ms\s+([\d.]+)ms\s+< (\d+) ms", line)
        if key and key[1].startswith("t … enter"):
            figures.append(Figure("tui: t … enter, re-classify 20,000 rows (median)", f"{float(key[2]):.0f} ms",
                                  "(worker thread; not a key's repaint)", "info"))
    if figures:
        medians = []
        for line in lines:
            key = re.match(r"(\S.*?)\s{2,}([\d.]+)ms\s+([\d.]+)ms\s+< (\d+) ms", line)
            if key and not key[1].startswith("t … enter"):
                medians.append(float(key[2]))
        if medians:
            figures.append(Figure("tui: median repaint, middle key (median of the keys' medians)",
                                  f"{sorted(medians)[len(medians) // 2]:.1f} ms", "", "info"))
    return figures


def run(bench: Bench, quick: bool) -> tuple[list[Figure], float, int]:
    command = [sys.executable, "-u", str(HERE / bench.script), *(bench.quick_arguments if quick else bench.arguments)]
    print(f"\n{'=' * 100}\n{bench.name}: {bench.what}\n$ {' '.join(command[2:])}\n{'=' * 100}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=HERE.parent,
    )
    assert process.stdout is not None
    lines, figures = [], []
    for line in process.stdout:
        parsed = parse(line)
        if parsed is not None:
            figures.append(parsed)  # shown in the summary, not twice
            continue
        lines.append(line.rstrip("\n"))
        print("  " + line, end="", flush=True)
    returncode = process.wait()
    seconds = time.perf_counter() - started
    if not figures and bench.name == "tui":
        figures = tui_figures(lines)
    if returncode not in (0, 1) or not figures:  # bench_weights exits 1 when a target is missed
        ran = f"exit status {returncode}, {len(figures)} figures"
        figures.append(Figure(f"{bench.name}: benchmark ran", ran, "exit 0 with figures", "NOT met"))
    print(f"--- {bench.name}: {seconds:.0f} s, exit status {returncode}", flush=True)
    return figures, seconds, returncode


def print_summary(results: list[tuple[Bench, list[Figure], float]], total: float, quick: bool) -> int:
    rows = [("figure", "measured", "target", "")]
    for bench, figures, seconds in results:
        rows.append((f"[{bench.name}] {bench.script}, {seconds:.0f} s", "", "", ""))
        for item in figures:
            name = item.name.split(": ", 1)[1] if item.name.startswith(bench.name + ": ") else item.name
            rows.append(("  " + name, item.measured, item.target, "" if item.status == "info" else item.status))
    widths = [min(max(len(row[column]) for row in rows), limit) for column, limit in zip(range(4), (78, 40, 46, 7), strict=True)]

    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "…"

    print(f"\n{'=' * 100}\nSUMMARY{' (--quick: fewer repeats, smaller sizes)' if quick else ''}: "
          f"{len(results)} benchmarks in {total / 60:.1f} min; load average now "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())} on {os.cpu_count()} cores\n")
    for row in rows:
        print("  ".join(cut(cell, width).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    judged = [item for _, figures, _ in results for item in figures if item.status != "info"]
    missed = [item for item in judged if item.status != "met"]
    print(f"\n{len(judged) - len(missed)} of {len(judged)} targets met" + (
        ": NOT met — " + "; ".join(item.name for item in missed) if missed else ""))
    return 0 if not missed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (a few minutes less)")
    parser.add_argument("--only", help=f"comma-separated benchmarks to run, of: {', '.join(bench.name for bench in BENCHES)}")
    arguments = parser.parse_args()
    chosen = BENCHES
    if arguments.only:
        names = [name.strip() for name in arguments.only.split(",") if name.strip()]
        unknown = sorted(set(names) - {bench.name for bench in BENCHES})
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(bench.name for bench in BENCHES)}")
        chosen = [bench for bench in BENCHES if bench.name in names]

    from importlib.metadata import version

    print(f"tracetui benchmarks: torch {version('torch')}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{value:.2f}' for value in os.getloadavg())}; running {', '.join(bench.name for bench in chosen)}"
          f"{' (--quick)' if arguments.quick else ''}", flush=True)
    started = time.perf_counter()
    results = []
    for bench in chosen:
        figures, seconds, _ = run(bench, arguments.quick)
        results.append((bench, figures, seconds))
    return print_summary(results, time.perf_counter() - started, arguments.quick)


if __name__ == "__main__":
    sys.exit(main())

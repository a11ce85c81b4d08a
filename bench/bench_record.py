"""How much a tracetui recording costs on a GPT-2-small-shaped model, next to other ways.

Builds transformers' ``GPT2LMHeadModel`` (12 layers, width 768, 12 heads, vocabulary 50,257,
eager attention) with random weights, in eval mode, and one input of 128 token ids (fixed
seed). Then times, in interleaved rounds (one run of each per round, so that all of them see
the machine's load of the moment):

1. the plain forward pass (under ``no_grad``);
2. ``tracetui.record.record_script`` keeping full tensor copies (one run, no rerun): its ratio
   to the plain pass (target ≤ 1.25×);
3. the same keeping statistics only (``KeepPolicy(values="stats")``): ratio to the plain pass
   (target ≤ 1.1×);
4. transformers' ``model_addition_debugger_context`` (``do_prune_layers=False``, ``use_repr=True``,
   writing its JSON into a temporary folder) around the same forward: tracetui's speed-up over
   it (target ≥ 3×), and the debugger's own cost over the plain pass. No recorder runs faster
   than the plain pass, so debugger / plain is the largest speed-up any recorder could show:
   when it is under 3× nobody can meet the target. Skipped, with the reason, if the API is
   missing or fails.

How it is timed: each run's CPU time (``time.process_time``: what this process spent, whatever
else the machine runs) and wall time; the figures are ratios of the *fastest* round of each,
since other processes' load only ever adds time. torch runs one intra-op thread by default
(``--threads``): on a small shared machine a second thread gains little and, while other
processes hold the cores, spin-waits at every barrier, which makes the times of a 2-thread
run vary several-fold from round to round. Wall-time ratios and medians are printed too.

Then, for context: the debugger with ``use_repr=False`` (a few rounds of its own), the bytes
tracetui kept (``trace.nbytes()``), the number of calls, and the copy bandwidth they imply
(bytes / (recording − plain)), beside the machine's memcpy bandwidth (``torch.empty(n).copy_``
on 256 MB).

Prints a table and one ``FIGURE`` line per figure (see ``bench/figures.py``). Run it with
``python bench/bench_record.py`` (``--repeats 3`` to be quicker; a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from figures import report, verdict

from tracetui.record import KeepPolicy, record_script
from tracetui.script import ModelScript

OVERHEAD_TARGET = 1.25  # recording time / plain forward time, at most
STATS_OVERHEAD_TARGET = 1.1  # statistics-only recording time / plain forward time, at most
SPEEDUP_TARGET = 3.0  # debugger time / recording time, at least
SEQUENCE = 128
MEMCPY_BYTES = 256 * 1024 * 1024


def build(vocabulary: int) -> tuple[torch.nn.Module, torch.Tensor]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=vocabulary, attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, vocabulary, (1, SEQUENCE))
    return model, ids


@dataclass
class Timing:
    """The CPU and wall times of the rounds of one contender."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def run(self, function):  # noqa: ANN001, ANN201
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return result


def timed(function, repeats: int) -> Timing:
    timing = Timing()
    for _ in range(repeats):
        timing.run(function)
    return timing


def memcpy_bandwidth(repeats: int) -> float:
    values = MEMCPY_BYTES // 4
    source = torch.rand(values)
    timings = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.empty(values).copy_(source)  # a fresh allocation each time, as a recording makes
        timings.append(time.perf_counter() - start)
    return MEMCPY_BYTES / min(timings[1:])  # the fastest copy: other load only adds time


def debugger_runner(model: torch.nn.Module, ids: torch.Tensor, use_repr: bool) -> tuple[object | None, str]:
    """A function running the forward inside transformers' debugger, or None and why not."""
    try:
        from transformers.model_debugging_utils import model_addition_debugger_context
    except ImportError:
        try:
            from transformers import model_addition_debugger_context
        except ImportError as error:
            return None, f"model_addition_debugger_context not importable: {error}"

    def run() -> None:
        with (
            tempfile.TemporaryDirectory() as folder,
            torch.no_grad(),
            model_addition_debugger_context(model, debug_path=folder, do_prune_layers=False, use_repr=use_repr),
        ):
            model(ids)

    try:
        run()  # also the warm-up
    except Exception as error:  # report and skip
        return None, f"model_addition_debugger_context failed: {type(error).__name__}: {error}"
    return run, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds after the warm-up (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s; see the docstring)")
    parser.add_argument("--vocabulary", type=int, default=50257)
    parser.add_argument("--no-debugger", action="store_true", help="skip transformers' debugger")
    arguments = parser.parse_args()
    repeats = arguments.repeats
    torch.set_num_threads(arguments.threads)

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s), load average {load} on {os.cpu_count()} cores; "
          f"building GPT-2-small (vocabulary {arguments.vocabulary}), input [1, {SEQUENCE}], "
          f"{repeats} interleaved rounds after a warm-up", flush=True)
    start = time.perf_counter()
    model, ids = build(arguments.vocabulary)
    print(f"built in {time.perf_counter() - start:.1f} s, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters", flush=True)

    def plain():
        with torch.no_grad():
            return model(ids)

    script = ModelScript(path=Path("<bench>"), model=model, inputs=ids)
    stats_only = KeepPolicy(values="stats")

    contenders: dict[str, object] = {
        "plain": plain,
        "full": lambda: record_script(script),
        "stats": lambda: record_script(script, keep=stats_only),
    }
    why = "skipped (--no-debugger)"
    if not arguments.no_debugger:
        debugger, why = debugger_runner(model, ids, use_repr=True)
        if debugger is not None:
            contenders["debugger"] = debugger

    # Warm-up, then rounds with one run of each, so that all of them see the same load.
    results: dict[str, object] = {}
    for name, function in contenders.items():
        if name != "debugger":  # the debugger's warm-up was its trial run
            results[name] = function()
    timings = {name: Timing() for name in contenders}
    for round_number in range(repeats):
        for name, function in contenders.items():
            results.pop(name, None)
            results[name] = timings[name].run(function)
        print(f"round {round_number + 1}/{repeats} (CPU ms): "
              + ", ".join(f"{name} {timings[name].cpu[-1] * 1000:.0f}" for name in contenders), flush=True)
    best = {name: min(timing.cpu) for name, timing in timings.items()}
    best_wall = {name: min(timing.wall) for name, timing in timings.items()}
    median_wall = {name: statistics.median(timing.wall) for name, timing in timings.items()}

    trace, stats_trace = results["full"], results["stats"]
    recorded_bytes = trace.nbytes()
    calls = len(trace.records)
    stats_calls = len(stats_trace.records)
    results.clear()
    trace = stats_trace = None
    gc.collect()

    plain_seconds = best["plain"]
    overhead = best["full"] / plain_seconds
    stats_overhead = best["stats"] / plain_seconds
    extra = best_wall["full"] - best_wall["plain"]
    implied_bandwidth = recorded_bytes / extra if extra > 0 else float("inf")
    floor = memcpy_bandwidth(repeats)

    tensors_timing, tensors_why = None, why
    if not arguments.no_debugger:
        tensors_run, tensors_why = debugger_runner(model, ids, use_repr=False)
        if tensors_run is not None:
            tensors_timing = timed(tensors_run, max(1, repeats // 2))

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.0f} ms"

    def wall_ratios(name: str) -> str:
        return f"{best_wall[name] / best_wall['plain']:.2f}× fastest, {median_wall[name] / median_wall['plain']:.2f}× median"

    # (figure, measured, target, status)
    rows: list[tuple[str, str, str, str]] = [
        ("record: plain forward, CPU time (fastest round)", ms(plain_seconds), "", "info"),
        ("record: overhead, full copies / plain (CPU time)", f"{overhead:.2f}×", f"≤ {OVERHEAD_TARGET:.2f}×",
         verdict(overhead <= OVERHEAD_TARGET)),
        ("record: overhead, statistics only / plain (CPU time)", f"{stats_overhead:.2f}×", f"≤ {STATS_OVERHEAD_TARGET:.2f}×",
         verdict(stats_overhead <= STATS_OVERHEAD_TARGET)),
        ("record: full copies / plain, wall time", wall_ratios("full"), "", "info"),
        ("record: statistics only / plain, wall time", wall_ratios("stats"), "", "info"),
    ]
    if "debugger" in best:
        debugger_seconds = best["debugger"]
        speedup = debugger_seconds / best["full"]
        bound = debugger_seconds / plain_seconds
        rows += [
            ("record: transformers debugger (use_repr=True), CPU time", ms(debugger_seconds), "", "info"),
            ("record: speed-up, debugger / tracetui full (CPU time)", f"{speedup:.2f}×", f"≥ {SPEEDUP_TARGET:.0f}×",
             verdict(speedup >= SPEEDUP_TARGET)),
            ("record: speed-up, debugger / tracetui statistics only", f"{debugger_seconds / best['stats']:.2f}×", "", "info"),
            ("record: debugger / plain: the most any recorder could gain", f"{bound:.2f}×",
             f"≥ {SPEEDUP_TARGET:.0f}× for the target to be reachable", "info"),
            ("record: debugger / plain, wall time", wall_ratios("debugger"), "", "info"),
        ]
    if tensors_timing is not None:
        rows += [
            ("record: debugger (use_repr=False) / tracetui full, CPU time", f"{min(tensors_timing.cpu) / best['full']:.2f}×", "", "info"),
        ]
    rows += [
        ("record: bytes recorded (trace.nbytes), calls",
         f"{recorded_bytes / 1e6:.1f} MB, {calls} calls ({stats_calls} statistics only)", "", "info"),
        ("record: implied copy bandwidth / memcpy bandwidth", f"{implied_bandwidth / 1e9:.2f} / {floor / 1e9:.2f} GB/s", "", "info"),
    ]

    for message in {why, tensors_why} - {""}:
        print(f"debugger line skipped: {message}")
    print("\nCPU ms per round: " + "; ".join(f"{name} {[round(t * 1000) for t in timing.cpu]}" for name, timing in timings.items()))
    print("wall ms per round: " + "; ".join(f"{name} {[round(t * 1000) for t in timing.wall]}" for name, timing in timings.items()))
    if "debugger" in best and best["debugger"] / plain_seconds < SPEEDUP_TARGET:
        print(f"note: the debugger costs only {best['debugger'] / plain_seconds:.2f}× the plain forward here, so no recorder "
              f"(which cannot run faster than the plain forward) can be {SPEEDUP_TARGET:.0f}× faster than it on this model.")
    report(rows, "record: ")


if __name__ == "__main__":
    main()

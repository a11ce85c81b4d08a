"""How much a tracetui recording costs on a GPT-2-small-shaped model, next to other ways.

Builds transformers' ``GPT2LMHeadModel`` (12 layers, width 768, 12 heads, vocabulary 50,257,
eager attention) with random weights, in eval mode, and one input of 128 token ids (fixed
seed). Then, in one run so that the ratios share the machine's current load:

1. the plain forward pass (under ``no_grad``): median of the repeats after a warm-up;
2. ``tracetui.record.record_script`` with full tensor copies (one run, no rerun): median time
   and its ratio to the plain pass (target ≤ 1.25×);
3. transformers' ``model_addition_debugger_context`` (``do_prune_layers=False``, writing its
   JSON into a temporary folder) around the same forward: median time and tracetui's speed-up
   over it (target ≥ 3×); skipped, with the reason, if the API is missing or fails;
4. the bytes tracetui kept (``trace.nbytes()``), the number of calls, and the copy bandwidth
   they imply (bytes / (recording time − plain time)), beside the machine's memcpy bandwidth
   (``torch.empty(n).copy_(src)`` on 256 MB), which is the floor.

Run it with ``python bench/bench_record.py`` (``--repeats 3`` to be quicker; about a minute on
2 cores).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tracetui.record import record_script
from tracetui.script import ModelScript

OVERHEAD_TARGET = 1.25  # recording time / plain forward time, at most
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


def timed(function, repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Median wall time of ``function()`` over ``repeats`` runs after ``warmup`` runs."""
    result = None
    for _ in range(warmup):
        result = function()
    times = []
    for _ in range(repeats):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def memcpy_bandwidth(repeats: int) -> float:
    values = MEMCPY_BYTES // 4
    source = torch.rand(values)
    timings = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        torch.empty(values).copy_(source)  # a fresh allocation each time, as a recording makes
        timings.append(time.perf_counter() - start)
    return MEMCPY_BYTES / statistics.median(timings[1:])


def debugger_time(model: torch.nn.Module, ids: torch.Tensor, repeats: int, use_repr: bool) -> tuple[float | None, str]:
    try:
        from transformers.model_debugging_utils import model_addition_debugger_context
    except ImportError:
        try:
            from transformers import model_addition_debugger_context
        except ImportError as error:
            return None, f"model_addition_debugger_context not importable: {error}"

    def run() -> None:
        with tempfile.TemporaryDirectory() as folder:
            with model_addition_debugger_context(model, debug_path=folder, do_prune_layers=False, use_repr=use_repr):
                model(ids)

    try:
        seconds, _ = timed(run, repeats)
    except Exception as error:  # report and skip, as the brief says
        return None, f"model_addition_debugger_context failed: {type(error).__name__}: {error}"
    return seconds, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocabulary", type=int, default=50257)
    parser.add_argument("--no-debugger", action="store_true", help="skip transformers' debugger")
    arguments = parser.parse_args()
    repeats = arguments.repeats

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; building GPT-2-small "
          f"(vocabulary {arguments.vocabulary}), input [1, {SEQUENCE}], {repeats} repeats after a warm-up")
    start = time.perf_counter()
    model, ids = build(arguments.vocabulary)
    print(f"built in {time.perf_counter() - start:.1f} s, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")

    def plain():
        with torch.no_grad():
            return model(ids)

    script = ModelScript(path=Path("<bench>"), model=model, inputs=ids)

    def recording():
        return record_script(script)

    # Interleave plain and recording rounds so both see the same load.
    plain(); recording()  # warm-up
    plain_times, record_times, trace = [], [], None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter(); plain(); plain_times.append(time.perf_counter() - t0)
        trace = None
        gc.collect()
        t0 = time.perf_counter(); trace = recording(); record_times.append(time.perf_counter() - t0)
    plain_seconds = statistics.median(plain_times)
    record_seconds = statistics.median(record_times)
    overhead = record_seconds / plain_seconds

    recorded_bytes = trace.nbytes()
    calls = len(trace.records)
    extra = record_seconds - plain_seconds
    implied_bandwidth = recorded_bytes / extra if extra > 0 else float("inf")
    trace = None
    gc.collect()

    floor = memcpy_bandwidth(repeats)

    debugger_seconds, why = (None, "skipped (--no-debugger)") if arguments.no_debugger else debugger_time(model, ids, repeats, use_repr=True)
    tensors_seconds, tensors_why = (None, why) if arguments.no_debugger else debugger_time(model, ids, max(1, repeats // 2), use_repr=False)

    rows = [
        ("plain forward (median)", f"{plain_seconds * 1000:.0f} ms", "", ""),
        ("tracetui record_script (median)", f"{record_seconds * 1000:.0f} ms", "", ""),
        ("  overhead: record / plain", f"{overhead:.2f}×", f"≤ {OVERHEAD_TARGET:.2f}×",
         "met" if overhead <= OVERHEAD_TARGET else "NOT met"),
    ]
    if debugger_seconds is not None:
        speedup = debugger_seconds / record_seconds
        rows += [
            ("transformers debugger, use_repr=True (median)", f"{debugger_seconds * 1000:.0f} ms", "", ""),
            ("  speed-up: debugger / tracetui", f"{speedup:.1f}×", f"≥ {SPEEDUP_TARGET:.0f}×",
             "met" if speedup >= SPEEDUP_TARGET else "NOT met"),
        ]
    if tensors_seconds is not None:
        rows += [
            ("transformers debugger, use_repr=False (median)", f"{tensors_seconds * 1000:.0f} ms", "(info)", ""),
            ("  debugger(use_repr=False) / tracetui", f"{tensors_seconds / record_seconds:.1f}×", "(info)", ""),
        ]
    rows += [
        ("bytes recorded (trace.nbytes)", f"{recorded_bytes / 1e6:.1f} MB", "", ""),
        ("calls recorded", f"{calls}", "", ""),
        ("implied copy bandwidth", f"{implied_bandwidth / 1e9:.2f} GB/s", "(info)", ""),
        ("memcpy bandwidth, 256 MB copy_ (floor)", f"{floor / 1e9:.2f} GB/s", "(info)", ""),
    ]

    widths = [max(len(row[column]) for row in rows + [("figure", "value", "target", "")]) for column in range(4)]
    header = ("figure", "value", "target", "")
    print()
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for message in {why, tensors_why} - {""}:
        print(f"debugger line skipped: {message}")
    print(f"\nplain times (ms): {[round(t * 1000) for t in plain_times]}; "
          f"record times (ms): {[round(t * 1000) for t in record_times]}")


if __name__ == "__main__":
    main()

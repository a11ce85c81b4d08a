"""What judging every module on its own costs the whole comparison a user waits for.

Builds transformers' GPT-2 (12 layers, width 768, 12 heads, eager attention) with random
weights, twice (the original and an identical port, so every module is paired by name and
agrees), one input of 128 token ids. Then times, in interleaved rounds (one run of each per
round, so that all of them see the machine's load of the moment):

1. the plain forward passes of both models (under ``no_grad``): what any comparison watches;
2. ``tracetui.compare((original, ids), (port, ids), rerun=False, isolate=False)``: record both,
   pair, measure, classify, find the first culprit by descent;
3. the same with ``isolate=True`` (the default): one more forward pass of the port, every
   paired module fed the original's values, each judged on its own.

Each run's CPU time (``time.process_time``) on one torch thread, the fastest round of each
(another process's load only ever adds time). The figure is what the fed run adds, (3) − (2),
over one forward pass of the port, (1) / 2: the diagnosis issue allows one more forward pass,
and the target (≤ 1.5×) leaves half of one for feeding each call and measuring it once more.
(3) / (2), and (2) and (3) over (1), are printed for context.

Run it with ``python bench/bench_compare.py`` (``--repeats 3`` to be quicker).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import time

import torch
from bench_record import SEQUENCE, build
from figures import report, verdict

import tracetui

FED_RUN_TARGET = 1.5  # what the fed run adds / one forward pass of the port, at most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds after the warm-up (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--vocabulary", type=int, default=50257)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {load}; GPT-2-small twice, "
          f"input [1, {SEQUENCE}], {arguments.repeats} interleaved rounds after a warm-up", flush=True)
    original, ids = build(arguments.vocabulary)
    port = copy.deepcopy(original)

    def plain() -> None:
        with torch.no_grad():
            original(ids)
            port(ids)

    def compare(isolate: bool) -> tracetui.Comparison:
        return tracetui.compare((original, ids), (port, ids), rerun=False, isolate=isolate)

    contenders = {"plain": plain, "descent": lambda: compare(False), "fed": lambda: compare(True)}
    for function in contenders.values():  # warm-up
        function()
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(arguments.repeats):
        for name, function in contenders.items():
            gc.collect()
            start = time.process_time()
            result = function()
            cpu[name].append(time.process_time() - start)
            del result
        print(f"round {round_number + 1}/{arguments.repeats} (CPU s): " + ", ".join(f"{name} {cpu[name][-1]:.2f}" for name in contenders),
              flush=True)
    best = {name: min(times) for name, times in cpu.items()}
    added = (best["fed"] - best["descent"]) / (best["plain"] / 2)
    checked = compare(True)
    report(
        [
            ("compare: what the fed run adds / one forward of the port (CPU, GPT-2 small, 128 tokens)", f"{added:.2f}×",
             f"≤ {FED_RUN_TARGET:.1f}×", verdict(added <= FED_RUN_TARGET)),
            ("compare: whole compare, with the fed run / without it", f"{best['fed'] / best['descent']:.2f}×", "", "info"),
            ("compare: without the fed run / plain forwards of both models", f"{best['descent'] / best['plain']:.2f}×", "", "info"),
            ("compare: with the fed run / plain forwards of both models", f"{best['fed'] / best['plain']:.2f}×", "", "info"),
            ("compare: fastest round, without / with the fed run", f"{best['descent']:.2f} s / {best['fed']:.2f} s", "", "info"),
            ("compare: calls judged on their own", f"{sum(row.isolated is not None for row in checked.rows)} of {len(checked.rows)}",
             "", "info"),
        ],
        "compare: ",
    )


if __name__ == "__main__":
    main()

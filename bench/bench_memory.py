"""How much memory a comparison of two GPT-2-small-shaped models takes, against what it keeps.

For each mode, a fresh subprocess (so that no figure inherits another's heap):

1. imports torch, transformers' GPT-2 and tracetui, and reads its resident memory: the
   baseline (code, not data);
2. builds transformers' ``GPT2LMHeadModel`` (12 layers, width 768, vocabulary 50,257, eager
   attention, random weights) and a port that is a deep copy of it (the same architecture and
   weights: what matters here is sizes), and one input of ``--sequence`` token ids;
3. resets the kernel's peak-resident counter (``/proc/self/clear_refs``: building has a transient
   peak of its own), runs ``tracetui.compare((model_a, ids), (model_b, ids), rerun=True,
   keep=MODE)`` and reads the peak resident memory (``VmHWM``; ``ru_maxrss`` if the reset is
   refused).

Figures, mode ``full`` (the default recording): the two models' weights, the activations kept
(``comparison.original.nbytes() + comparison.ported.nbytes()``), the peak above the baseline,
and (peak − weights) / activations, target ≤ 1.3. Mode ``stats`` (statistics only) shows the
same peak for context; mode ``full-pinned`` is ``full`` with glibc's ``MALLOC_MMAP_THRESHOLD_``
pinned, which shows how much of the peak is freed memory the allocator kept. Then, from the full original trace: "the same tensor passed on
unchanged from one module to the next is stored once" — every input leaf that is the very
tensor an earlier call produced must hold the same stored copy, and the bytes a recorder
storing every leaf separately would keep, against ``trace.nbytes()``.

Prints a table and ``FIGURE`` lines (see ``bench/figures.py``). Run it with
``python bench/bench_memory.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from figures import report, verdict

RATIO_TARGET = 1.3  # (peak above baseline − weights) / activations kept, at most
RESULT_PREFIX = "RESULT\t"
MB = 1e6


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, RssAnon, …)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak() -> bool:
    """Reset the kernel's peak resident size (VmHWM) to the current one (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def child(mode: str, sequence: int, layers: int) -> None:
    import copy
    import gc

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    import tracetui

    torch.set_num_threads(2)
    gc.collect()
    baseline = status_kib("VmRSS") * 1024

    started = time.perf_counter()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=layers, n_embd=768, n_head=12, vocab_size=50257, attn_implementation="eager")
    model_a = GPT2LMHeadModel(config).eval()
    model_b = copy.deepcopy(model_a)
    ids = torch.randint(0, config.vocab_size, (1, sequence))
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for model in (model_a, model_b) for p in model.parameters()}
    weights = sum(storages.values())
    parameters = sum(p.numel() for p in model_a.parameters())
    built_resident = status_kib("VmRSS") * 1024 - baseline
    built = time.perf_counter() - started
    gc.collect()
    peak_reset = reset_peak()  # building has its own transient peak (random init), not the comparison's

    started = time.perf_counter()
    comparison = tracetui.compare((model_a, ids), (model_b, ids), rerun=True, keep=mode)
    elapsed = time.perf_counter() - started
    peak = (status_kib("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024 - baseline
    resident_after = status_kib("VmRSS") * 1024 - baseline
    activations = comparison.original.nbytes() + comparison.ported.nbytes()

    trace = comparison.original
    leaves = [leaf for record in trace.records for leaf in record.inputs + record.outputs if leaf.tensor is not None]
    every_leaf_bytes = sum(leaf.tensor.numel() * leaf.tensor.element_size() for leaf in leaves)
    passed_on = shared = 0
    for record in trace.records:
        for leaf in record.inputs:
            if leaf.tensor is None or leaf.source is None:
                continue
            source_record, source_name = leaf.source
            source_leaf = next((out for out in trace.records[source_record].outputs if out.name == source_name), None)
            passed_on += 1
            shared += source_leaf is not None and source_leaf.tensor is leaf.tensor
    result = {
        "mode": mode,
        "parameters": parameters,
        "weights": weights,
        "built_resident": built_resident,
        "baseline": baseline,
        "peak": peak,
        "peak_reset": peak_reset,
        "resident_after": resident_after,
        "activations": activations,
        "original_nbytes": comparison.original.nbytes(),
        "ported_nbytes": comparison.ported.nbytes(),
        "rows": len(comparison.rows),
        "verdict": comparison.verdict,
        "built_seconds": built,
        "compare_seconds": elapsed,
        "tensor_leaves": len(leaves),
        "unique_tensors": len(trace.unique_tensors()),
        "every_leaf_bytes": every_leaf_bytes,
        "trace_nbytes": trace.nbytes(),
        "passed_on": passed_on,
        "passed_on_shared": shared,
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


PINNED = "-pinned"  # a mode suffix: glibc's mmap threshold pinned, so freed buffers go back to the system


def run_mode(mode: str, sequence: int, layers: int) -> dict:
    keep = mode.removesuffix(PINNED)
    environment = dict(os.environ)
    if mode.endswith(PINNED):
        # glibc raises its mmap threshold (up to 32 MB) each time a large block is freed, after
        # which buffers below it come from the heap and stay resident when freed; pinning it
        # shows how much of the peak is the allocator's retention rather than tracetui's data.
        environment["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    command = [sys.executable, __file__, "--child", keep, "--sequence", str(sequence), "--layers", str(layers)]
    process = subprocess.run(command, capture_output=True, text=True, env=environment)
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if process.returncode != 0 or not lines:
        sys.stderr.write(process.stdout + process.stderr)
        raise SystemExit(f"the {mode} subprocess failed (exit status {process.returncode})")
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", type=int, default=256, help="input length in tokens (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=12, help="GPT-2 layers (default: %(default)s, GPT-2 small)")
    parser.add_argument(
        "--modes", default="full,stats,full-pinned",
        help="comma-separated keep modes, one subprocess each; '-pinned' runs with glibc's MALLOC_MMAP_THRESHOLD_ pinned "
             "at 128 KiB (default: %(default)s)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.sequence, arguments.layers)
        return 0

    modes = [mode for mode in arguments.modes.split(",") if mode]
    print(f"GPT-2 ({arguments.layers} layers, width 768) twice, input [1, {arguments.sequence}], "
          f"compare(..., rerun=True); modes: {', '.join(modes)}, each in a fresh subprocess", flush=True)
    results = {}
    for mode in modes:
        results[mode] = result = run_mode(mode, arguments.sequence, arguments.layers)
        print(f"  {mode}: built in {result['built_seconds']:.1f} s, compared in {result['compare_seconds']:.1f} s, "
              f"{result['rows']} rows, verdict {result['verdict']}; peak {result['peak'] / MB:.0f} MB above the baseline "
              f"({result['baseline'] / MB:.0f} MB after the imports)", flush=True)

    rows: list[tuple[str, str, str, str]] = []
    if "full" in results:
        full = results["full"]
        ratio = (full["peak"] - full["weights"]) / full["activations"]
        allowed = full["weights"] + RATIO_TARGET * full["activations"]
        rows += [
            ("memory: weights of the two models", f"{full['weights'] / MB:.0f} MB ({full['parameters'] / 1e6:.0f}M parameters each)",
             "", "info"),
            ("memory: activations kept (original + port nbytes)",
             f"{full['activations'] / MB:.0f} MB ({full['original_nbytes'] / MB:.0f} + {full['ported_nbytes'] / MB:.0f})", "", "info"),
            ("memory: peak RSS above baseline, full compare", f"{full['peak'] / MB:.0f} MB",
             f"≤ {allowed / MB:.0f} MB (weights + {RATIO_TARGET}× activations)", verdict(full["peak"] <= allowed)),
            ("memory: (peak − weights) / activations", f"{ratio:.2f}", f"≤ {RATIO_TARGET}", verdict(ratio <= RATIO_TARGET)),
        ]
        retained = (full["resident_after"] - full["weights"]) / full["activations"]
        rows += [
            ("memory: (resident after the compare − weights) / activations", f"{retained:.2f}", "(info: what stays)", "info"),
            ("memory: transient above what stays (peak − resident after)",
             f"{(full['peak'] - full['resident_after']) / MB:.0f} MB", "", "info"),
        ]
        separate = full["every_leaf_bytes"] / full["trace_nbytes"]
        rows += [
            ("memory: a tensor passed on unchanged is stored once (inputs sharing the producer's copy)",
             f"{full['passed_on_shared']} of {full['passed_on']}", f"all {full['passed_on']}",
             verdict(full["passed_on"] > 0 and full["passed_on_shared"] == full["passed_on"])),
            ("memory: tensor leaves / unique tensors stored (original trace)",
             f"{full['tensor_leaves']} / {full['unique_tensors']}", "", "info"),
            ("memory: bytes if every leaf were stored / trace.nbytes()",
             f"{full['every_leaf_bytes'] / MB:.0f} MB / {full['trace_nbytes'] / MB:.0f} MB = {separate:.2f}×", "", "info"),
        ]
    if "stats" in results:
        stats = results["stats"]
        rows += [
            ("memory: peak RSS above baseline, statistics-only compare",
             f"{stats['peak'] / MB:.0f} MB (weights {stats['weights'] / MB:.0f} MB + {(stats['peak'] - stats['weights']) / MB:.0f} MB)",
             "", "info"),
        ]
    if "full" + PINNED in results:
        pinned = results["full" + PINNED]
        pinned_ratio = (pinned["peak"] - pinned["weights"]) / pinned["activations"]
        rows.append((
            "memory: (peak − weights) / activations, full compare with MALLOC_MMAP_THRESHOLD_=131072",
            f"{pinned_ratio:.2f} (peak {pinned['peak'] / MB:.0f} MB)",
            f"(info; target ≤ {RATIO_TARGET} is for the default allocator)", "info",
        ))
    for mode in sorted(set(results) - {"full", "stats", "full" + PINNED}):
        rows.append((f"memory: peak RSS above baseline, keep={mode}", f"{results[mode]['peak'] / MB:.0f} MB", "", "info"))

    report(rows, "memory: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())

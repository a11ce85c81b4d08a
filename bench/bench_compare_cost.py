"""What a whole comparison costs next to the forward passes it watches (issue 12's figures).

Three measurements, each side by side in interleaved rounds (one run of each contender per
round, so that all of them see the machine's load of the moment), one torch thread:

1. **Whole process**: ``tracetui compare S S --no-tui`` on a GPT-2-small-shaped transformers
   model (12 layers, width 768, batch 4 × 256 tokens, random weights), against a plain
   process that builds the model twice and runs each forward twice (``no_grad``): what any
   comparison with a run-to-run check must do. Wall and CPU time (the child's rusage), median
   of the rounds. Target ≤ 1.5× (aim 1.3×). The default ``compare`` also runs the port once
   more (the fed run that judges every module on its own) for a port that diverged, and tries
   fixes on culprits: S S matches, so a headless report skips both; the ratio with
   ``--no-isolate`` is printed beside it, and that of a port that diverges everywhere
   (S S′ at ``--atol 0 --no-fixes``: the fed run included), as the cost a diverged port adds.
2. **Big activations**: the same, on a model whose activations are 40M-element tensors,
   against a hand-written floor in one process: build both, one forward each with hooks that
   clone every output, one ``(b - a).abs().max()`` per pair. Target ≤ 3× (aim 2×), with
   ``--no-rerun --no-isolate`` (the floor's work); the default's ratio is printed beside it.
3. **Measuring the leaves** of the GPT-2-small traces (in this process, once recorded):
   ``build_rows`` against one float32 ``(b - a).abs().max()`` per unique pair of tensors.
   Target ≤ 3×. Then the peak resident memory of the whole-process compare of (1) beyond
   that of a process that builds the model once and runs it once (the interpreter, the
   libraries, a build's transient memory and a forward pass's working memory: what any tool
   holding the model needs), against what tracetui must keep on top of it: the other model's
   weights and both traces' unique tensors. Target ≤ 1.15× (15 % over what is kept).

Run it with ``python bench/bench_compare_cost.py`` (``--repeats 3``; several minutes on 2 cores,
``--quick`` for a smaller model). Prints a table and ``FIGURE`` lines (``bench/figures.py``).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import torch
from figures import report, verdict

WHOLE_TARGET = 1.5
BIG_TARGET = 3.0
LEAVES_TARGET = 3.0

GPT2_SCRIPT = """
import torch
from transformers import GPT2Config, GPT2LMHeadModel

def build():
    torch.manual_seed(0)
    config = GPT2Config(n_layer={layers}, n_embd=768, n_head=12, vocab_size={vocabulary}, attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    if {perturb}:  # a port differs from its original by rounding at least: weights off by ~1e-7 relative
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1 + 1e-7 * torch.randn(parameter.shape, generator=generator))
    return model, torch.randint(0, {vocabulary}, ({batch}, {sequence}))
"""

BIG_SCRIPT = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.activation = nn.GELU()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x + self.activation(self.norm(x)) * self.scale

class Big(nn.Module):
    def __init__(self, width, blocks):
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(x)

def build():
    torch.manual_seed(0)
    return Big({width}, {blocks}).eval(), torch.randn({rows}, {width})
"""

PLAIN_RUNNER = """
import sys, runpy, torch
torch.set_num_threads(1)
script = runpy.run_path(sys.argv[1])
for _ in range(2):
    model, inputs = script["build"]()
    with torch.no_grad():
        for _ in range(int(sys.argv[2])):
            model(inputs)
"""

FLOOR_RUNNER = """
import sys, runpy, torch
torch.set_num_threads(1)
script = runpy.run_path(sys.argv[1])
traces = []
for _ in range(2):
    model, inputs = script["build"]()
    outputs = []
    hooks = [module.register_forward_hook(lambda module, args, output: outputs.append(output.detach().clone()))
             for module in model.modules()]
    with torch.no_grad():
        model(inputs)
    for hook in hooks:
        hook.remove()
    traces.append(outputs)
    del model
largest = max(float((ported - original).abs().max()) for original, ported in zip(*traces))
"""


def run_child(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak resident kB of one child process."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss  # ru_maxrss of children: the largest of any child so far


def interleaved(contenders: dict[str, list[str]], repeats: int, label: str) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds of each contender over ``repeats`` interleaved rounds."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for round_number in range(repeats):
        for name, command in contenders.items():
            wall, cpu, _ = run_child(command)
            times[name].append((wall, cpu))
        print(f"{label} round {round_number + 1}/{repeats}: "
              + ", ".join(f"{name} {times[name][-1][0]:.1f} s wall / {times[name][-1][1]:.1f} s CPU" for name in contenders), flush=True)
    return {
        name: (statistics.median(wall for wall, _ in values), statistics.median(cpu for _, cpu in values)) for name, values in times.items()
    }


def peak_rss_kb(command: list[str]) -> int:
    """Peak resident memory of one run, read by a fresh interpreter (children's maxrss is global)."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    completed = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS="1"))
    return int(completed.stdout.strip())


def time_in_process(function: Callable[[], object]) -> float:
    gc.collect()
    start = time.process_time()
    function()
    return time.process_time() - start


def measure_leaves(script: Path, port_script: Path, repeats: int) -> tuple[float, float, int, int]:
    """build_rows and the floor on the same two traces: best CPU seconds of each, unique pairs, both traces' bytes."""
    from tracetui.pairing.alignment import align
    from tracetui.record import record_script
    from tracetui.rows import build_rows
    from tracetui.script import load_script

    original = record_script(load_script(script))
    ported = record_script(load_script(port_script))
    alignment = align(original, ported, None)
    unique: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for pair in alignment.pairs:
        if pair.original is None or pair.ported is None:
            continue
        original_record, ported_record = original.records[pair.original], ported.records[pair.ported]
        for original_leaf, ported_leaf in zip(original_record.inputs + original_record.outputs,
                                              ported_record.inputs + ported_record.outputs, strict=False):
            if original_leaf.tensor is not None and ported_leaf.tensor is not None and original_leaf.tensor.is_floating_point():
                unique[(id(original_leaf.tensor), id(ported_leaf.tensor))] = (original_leaf.tensor, ported_leaf.tensor)

    def floor() -> None:
        for original_tensor, ported_tensor in unique.values():
            float((ported_tensor.float() - original_tensor.float()).abs().max())

    build_best, floor_best = float("inf"), float("inf")
    for _ in range(repeats):
        build_best = min(build_best, time_in_process(lambda: build_rows(alignment)))
        floor_best = min(floor_best, time_in_process(floor))
    return build_best, floor_best, len(unique), original.nbytes() + ported.nbytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="4 layers, batch 2 × 128 tokens, a 10M-element big model")
    parser.add_argument("--only", default="whole,big,leaves", help="comma-separated parts (default: %(default)s)")
    arguments = parser.parse_args()
    parts = set(arguments.only.split(","))
    torch.set_num_threads(1)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, 1 thread, load average {load}, {arguments.repeats} interleaved rounds", flush=True)
    if arguments.quick:
        shape = dict(layers=4, vocabulary=50257, batch=2, sequence=128)
    else:
        shape = dict(layers=12, vocabulary=50257, batch=4, sequence=256)
    big = dict(width=1000, blocks=3, rows=10_000) if arguments.quick else dict(width=1000, blocks=3, rows=40_000)
    figures: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as folder:
        gpt2 = Path(folder) / "gpt2_small.py"
        gpt2.write_text(textwrap.dedent(GPT2_SCRIPT.format(**shape, perturb=False)))
        # The port as ports are: the same model with weights that differ by rounding, so that no
        # tensor pair is bitwise equal and every one takes the full measurement.
        gpt2_port = Path(folder) / "gpt2_small_port.py"
        gpt2_port.write_text(textwrap.dedent(GPT2_SCRIPT.format(**shape, perturb=True)))
        big_script = Path(folder) / "big_activations.py"
        big_script.write_text(textwrap.dedent(BIG_SCRIPT.format(**big)))
        tracetui = [sys.executable, "-m", "tracetui", "compare"]
        if "whole" in parts:
            medians = interleaved(
                {
                    "plain": [sys.executable, "-c", PLAIN_RUNNER, str(gpt2), "2"],
                    "compare": [*tracetui, str(gpt2), str(gpt2), "--no-tui"],
                    "compare --no-isolate": [*tracetui, str(gpt2), str(gpt2), "--no-tui", "--no-isolate"],
                    "compare S S′": [*tracetui, str(gpt2), str(gpt2_port), "--no-tui"],
                    "compare S S′ diverged": [*tracetui, str(gpt2), str(gpt2_port), "--no-tui", "--atol", "0", "--no-fixes"],
                },
                arguments.repeats,
                "whole",
            )
            wall_ratio = medians["compare"][0] / medians["plain"][0]
            cpu_ratio = medians["compare"][1] / medians["plain"][1]
            figures += [
                ("cost: whole compare S S --no-tui / plain 2 builds × 2 forwards (wall, GPT-2 small, 4×256)",
                 f"{wall_ratio:.2f}×", f"≤ {WHOLE_TARGET:.1f}×", verdict(wall_ratio <= WHOLE_TARGET)),
                ("cost: the same, CPU", f"{cpu_ratio:.2f}×", "", "info"),
                ("cost: the same with --no-isolate (wall)", f"{medians['compare --no-isolate'][0] / medians['plain'][0]:.2f}×", "", "info"),
                ("cost: compare S S′ (a port off by rounding everywhere) / plain (wall)",
                 f"{medians['compare S S′'][0] / medians['plain'][0]:.2f}×", "", "info"),
                ("cost: compare S S′ --atol 0 --no-fixes (diverged everywhere: the fed run included) / plain (wall)",
                 f"{medians['compare S S′ diverged'][0] / medians['plain'][0]:.2f}×", "", "info"),
                ("cost: medians, plain / compare / --no-isolate (wall)",
                 f"{medians['plain'][0]:.1f} s / {medians['compare'][0]:.1f} s / {medians['compare --no-isolate'][0]:.1f} s", "", "info"),
            ]
        if "big" in parts:
            medians = interleaved(
                {
                    "floor": [sys.executable, "-c", FLOOR_RUNNER, str(big_script)],
                    "compare --no-rerun --no-isolate": [
                        *tracetui, str(big_script), str(big_script), "--no-tui", "--no-rerun", "--no-isolate"
                    ],
                    "compare": [*tracetui, str(big_script), str(big_script), "--no-tui"],
                },
                arguments.repeats,
                "big",
            )
            ratio = medians["compare --no-rerun --no-isolate"][0] / medians["floor"][0]
            elements = big["rows"] * big["width"]
            figures += [
                (f"cost: {elements / 1e6:.0f}M-element activations, compare --no-rerun --no-isolate / hand-written floor (wall)",
                 f"{ratio:.2f}×", f"≤ {BIG_TARGET:.1f}×", verdict(ratio <= BIG_TARGET)),
                ("cost: the same with the defaults (rerun check, fed run) / floor (wall)",
                 f"{medians['compare'][0] / medians['floor'][0]:.2f}×", "", "info"),
                ("cost: medians, floor / compare --no-rerun --no-isolate / compare (wall)",
                 f"{medians['floor'][0]:.1f} s / {medians['compare --no-rerun --no-isolate'][0]:.1f} s"
                 f" / {medians['compare'][0]:.1f} s", "", "info"),
            ]
        if "leaves" in parts:
            build_seconds, floor_seconds, pairs, trace_bytes = measure_leaves(gpt2, gpt2_port, arguments.repeats)
            ratio = build_seconds / floor_seconds
            figures += [
                ("cost: measuring every paired leaf (build_rows) / one float32 abs-max per unique pair (CPU, S vs S')",
                 f"{ratio:.2f}×", f"≤ {LEAVES_TARGET:.1f}×", verdict(ratio <= LEAVES_TARGET)),
                ("cost: build_rows / floor, seconds", f"{build_seconds:.2f} s / {floor_seconds:.2f} s ({pairs} unique pairs)", "", "info"),
            ]
            # What any tool holding the model costs: the interpreter and libraries, one build (with
            # the transient memory of its initialisation) and one forward pass's working memory.
            # tracetui keeps, on top of it, the other model's weights and both traces.
            peak = peak_rss_kb([*tracetui, str(gpt2), str(gpt2), "--no-tui"]) * 1024
            one_model = peak_rss_kb([sys.executable, "-c", PLAIN_RUNNER.replace("range(2)", "range(1)"), str(gpt2), "1"]) * 1024
            import transformers

            config = transformers.GPT2Config(n_layer=shape["layers"], n_embd=768, n_head=12, vocab_size=shape["vocabulary"])
            weights = sum(parameter.numel() * 4 for parameter in transformers.GPT2LMHeadModel(config).parameters())
            kept = weights + trace_bytes
            ratio = (peak - one_model) / kept
            figures += [
                ("cost: peak memory of compare S S --no-tui beyond one build + forward / (the other model's weights + both traces)",
                 f"{ratio:.2f}×", "≤ 1.15×", verdict(ratio <= 1.15)),
                ("cost: peak of compare / of one build + forward; weights of one model; both traces",
                 f"{peak / 2**20:.0f} / {one_model / 2**20:.0f} MiB; {weights / 2**20:.0f} MiB; {trace_bytes / 2**20:.0f} MiB", "", "info"),
            ]
    report(figures, "cost: ")


if __name__ == "__main__":
    main()

"""A comparison whose traces do not fit in the memory it runs in: ``compare(..., stream=True)``.

The original is a TinyLlama-shaped decoder built by transformers' ``LlamaForCausalLM`` with
random weights (width 2048, MLP 5632, 32 heads, 4 key/value heads, vocabulary 32,000, 22
layers: 1.1B parameters, 4.4 GB in float32; sdpa attention). The port is the same script
with one planted bug: layer 10's ``mlp.down_proj`` weight scaled by 1.05 (the middle layer
when there are fewer than 11). Both are model scripts written into a temporary folder and
passed as paths, so that the streamed compare builds each one only when it needs it and the
two models are never in memory together. The input (768 token ids by default) makes the
original's trace 2.8 GB (3.6 MB a token; 1024 tokens make 3.7 GB and take half as long again).

The comparison, ``tracetui.compare(original.py, ported.py, stream=True, spill=DIR,
rerun=False)``, runs in a subprocess whose memory this process samples every 20 ms from
``/proc/PID/status``:

- ``RssAnon``, the anonymous resident memory — the process's own data, which cannot be given
  back without swap. The target is on it: its peak above the subprocess's baseline (after its
  imports) ≤ one model's weights + 1 GB of working set, while the trace is more than twice
  that working set.
- ``VmRSS`` also counts file pages: the spilled trace is read back memory-mapped, and the pages
  touched stay resident as page cache while memory is free, but the kernel can drop them at
  any time. Printed for context.
- Why not a hard limit with ``RLIMIT_DATA``: safetensors maps trace files privately and
  writable (``rw-p``), and Linux counts such mappings against ``RLIMIT_DATA`` by their size
  whether or not any page is resident, so the limit would have to exceed the trace itself.
  The peak ``VmData`` is printed to show this.

Also printed: parameters, weights bytes, the size of the original's spilled trace on disk
(what the in-memory mode would hold per side), wall time, and whether the culprit is the
planted module. ``--layers``, ``--sequence`` change the sizes; ``--quick`` is
``--layers 6 --sequence 512``. Prints ``FIGURE`` lines (see ``bench/figures.py``). Run it with
``python bench/bench_scale.py`` (about five minutes on 2 cores, most of it measuring the port's
calls against the original's; needs the trace's size in free disk).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from figures import figure, report, verdict

WORKING_SET = 1_000_000_000  # bytes allowed above one model's weights
TRACE_FACTOR = 2.0  # the trace must exceed this many working sets for the figure to mean anything
PLANTED_LAYER = 10
SCALE = 1.05
RESULT_PREFIX = "RESULT\t"
GB = 1e9

CONFIG = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
    max_position_embeddings=4096,
)

SCRIPT = '''\
"""{title} (written by bench/bench_scale.py)."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM

CONFIG = {config!r}
SEQUENCE = {sequence}
PLANTED = {planted!r}


def build():
    config = LlamaConfig(**CONFIG, attn_implementation="sdpa")
    model = LlamaForCausalLM(config)  # random weights: tracetui calls build() under a fixed seed
    if PLANTED is not None:
        with torch.no_grad():
            model.model.layers[PLANTED].mlp.down_proj.weight.mul_({scale})
    ids = torch.randint(0, config.vocab_size, (1, SEQUENCE), generator=torch.Generator().manual_seed(1))
    return model, ids
'''


def status_fields(pid: int | str, names: tuple[str, ...]) -> dict[str, int]:
    """Fields of /proc/PID/status in bytes."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in names:
                    values[name] = int(rest.split()[0]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values


def directory_bytes(path: Path) -> int:
    return sum(entry.stat().st_size for entry in path.rglob("*") if entry.is_file())


def child(folder: Path) -> None:
    """Run the streamed comparison; print progress with timestamps and a result line."""
    import torch
    import transformers  # noqa: F401  (imported before the baseline, as the scripts will)

    import tracetui

    torch.set_num_threads(2)
    baseline = status_fields("self", Sampler.FIELDS)
    print(RESULT_PREFIX + json.dumps({"baseline": baseline}), flush=True)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"  [{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    comparison = tracetui.compare(
        folder / "original.py", folder / "ported.py", stream=True, spill=folder / "trace", rerun=False, progress=progress
    )
    elapsed = time.perf_counter() - started
    culprit = comparison.culprit
    result = {
        "seconds": elapsed,
        "verdict": comparison.verdict,
        "rows": len(comparison.rows),
        "culprit_original": culprit.original.name if culprit is not None and culprit.original is not None else None,
        "culprit_ported": culprit.ported.name if culprit is not None and culprit.ported is not None else None,
        "reason": comparison.reason,
        "original_nbytes": comparison.original.nbytes(),
        "ported_nbytes": comparison.ported.nbytes(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


class Sampler(threading.Thread):
    """Peaks of a process's memory fields, read every ``interval`` seconds."""

    FIELDS = ("RssAnon", "VmRSS", "VmData", "VmHWM")

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peaks: dict[str, int] = dict.fromkeys(self.FIELDS, 0)
        self.baseline: dict[str, int] | None = None
        self.phase = "starting"
        self.phase_anon_peaks: dict[str, int] = {}  # peak RssAnon while each progress stage ran
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            values = status_fields(self.pid, self.FIELDS)
            if not values:
                return
            for name, value in values.items():
                self.peaks[name] = max(self.peaks[name], value)
            phase = self.phase
            self.phase_anon_peaks[phase] = max(self.phase_anon_peaks.get(phase, 0), values.get("RssAnon", 0))
            time.sleep(self.interval)


def parameter_count(layers: int) -> int:
    """Parameters of the model, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**CONFIG, num_hidden_layers=layers))
    return sum(parameter.numel() for parameter in model.parameters())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, help="decoder layers (default: 22, TinyLlama's; 6 with --quick)")
    parser.add_argument("--sequence", type=int, help="input tokens (default: 768; 512 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller: --layers 6 --sequence 512")
    parser.add_argument("--directory", type=Path, help="where to write the scripts and the trace (default: a temporary folder)")
    parser.add_argument("--keep-files", action="store_true", help="leave the scripts and the spilled trace on disk")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child)
        return 0

    layers = arguments.layers or (6 if arguments.quick else 22)
    sequence = arguments.sequence or (512 if arguments.quick else 768)
    planted = PLANTED_LAYER if layers > PLANTED_LAYER else layers // 2
    planted_name = f"model.layers.{planted}.mlp.down_proj"
    config = dict(CONFIG, num_hidden_layers=layers)

    parameters = parameter_count(layers)
    weights = parameters * 4  # float32
    folder = Path(tempfile.mkdtemp(prefix="tracetui-bench-scale-", dir=arguments.directory))
    scripts = (
        ("original.py", "The original: a random-weight Llama", None),
        ("ported.py", "The port: the same, with a planted bug", planted),
    )
    for name, title, bug in scripts:
        (folder / name).write_text(SCRIPT.format(title=title, config=config, sequence=sequence, planted=bug, scale=SCALE))
    free_disk = shutil.disk_usage(folder).free
    print(f"Llama decoder, {layers} layers, width 2048: {parameters / 1e9:.2f}B parameters, {weights / GB:.2f} GB of float32 "
          f"weights; input [1, {sequence}]; port: {planted_name}.weight × {SCALE}; folder {folder} "
          f"({free_disk / GB:.0f} GB free)", flush=True)

    try:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-u", __file__, "--child", str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        sampler = Sampler(process.pid)
        sampler.start()
        result = None
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(RESULT_PREFIX):
                payload = json.loads(line.removeprefix(RESULT_PREFIX))
                if "baseline" in payload:
                    sampler.baseline = payload["baseline"]
                else:
                    result = payload
                continue
            stage = line.partition("] ")[2].strip()
            if stage and not re.match(r"\d+ calls", stage):  # a stage, not the recorder's call count
                sampler.phase = re.sub(r"\d+", "N", stage)
            print(line, end="", flush=True)
        returncode = process.wait()
        wall = time.perf_counter() - started
        sampler.stopped.set()
        sampler.join()
        if returncode != 0 or result is None or sampler.baseline is None:
            print(f"the comparison subprocess failed (exit status {returncode})")
            figure("scale: streamed compare ran", f"exit status {returncode}", "0", "NOT met")
            return 1
        trace_bytes = directory_bytes(folder / "trace")
    finally:
        if not arguments.keep_files:
            shutil.rmtree(folder, ignore_errors=True)

    baseline = sampler.baseline
    anon_peak = sampler.peaks["RssAnon"] - baseline.get("RssAnon", 0)
    rss_peak = max(sampler.peaks["VmHWM"], sampler.peaks["VmRSS"]) - baseline.get("VmRSS", 0)
    data_peak = sampler.peaks["VmData"] - baseline.get("VmData", 0)
    allowed = weights + WORKING_SET
    culprit = result["culprit_ported"]
    found = culprit == planted_name and result["culprit_original"] == planted_name
    full_size = trace_bytes >= TRACE_FACTOR * WORKING_SET

    rows: list[tuple[str, str, str, str]] = [
        ("scale: parameters (one model)", f"{parameters / 1e9:.2f}B ({layers} layers, sequence {sequence})", "", "info"),
        ("scale: weights, one model (float32)", f"{weights / GB:.2f} GB", "", "info"),
        ("scale: original's trace on disk (in-memory mode keeps one per side)", f"{trace_bytes / GB:.2f} GB",
         f"> {TRACE_FACTOR:.0f} × {WORKING_SET / GB:.0f} GB working set", verdict(full_size) if not arguments.quick else "info"),
        ("scale: peak anonymous memory (RssAnon) above baseline, streamed compare", f"{anon_peak / GB:.2f} GB",
         f"≤ weights + {WORKING_SET / GB:.0f} GB = {allowed / GB:.2f} GB", verdict(anon_peak <= allowed)),
        ("scale: working set above one model's weights", f"{(anon_peak - weights) / GB:.2f} GB", f"≤ {WORKING_SET / GB:.0f} GB", "info"),
        ("scale: peak VmRSS above baseline (includes reclaimable mapped trace pages)", f"{rss_peak / GB:.2f} GB", "", "info"),
        ("scale: peak VmData above baseline (what RLIMIT_DATA would count)", f"{data_peak / GB:.2f} GB", "", "info"),
        ("scale: culprit is the planted module", f"{culprit}", planted_name, verdict(found)),
        ("scale: wall time of the streamed compare", f"{wall:.0f} s", "", "info"),
    ]
    print("\npeak RssAnon above baseline by stage: " + ", ".join(
        f"{stage} {(peak - baseline.get('RssAnon', 0)) / GB:.2f} GB" for stage, peak in sampler.phase_anon_peaks.items()))
    print(f"verdict {result['verdict']}, {result['rows']} rows; culprit {result['culprit_original']} ↔ {culprit}")
    print(f"  why: {result['reason']}")
    if arguments.quick:
        print("(--quick: the trace is smaller than the 2 GB the memory figure is meant to be measured against)")
    report(rows, "scale: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())

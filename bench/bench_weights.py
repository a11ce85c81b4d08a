"""How fast, and in how much memory, ``tracetui weights`` checks a conversion of a ~350M model.

Builds two state dicts directly as tensors (no model construction):

- the original: GPT-2-medium-shaped in nanoGPT's layout (24 layers, width 1024, vocabulary
  50,257; fused ``attn.c_attn`` [3072, 1024], Linear weights [out, in], ``lm_head`` tied to
  ``wte``): 355M values, 1.4 GB in float32;
- the port: Llama-style names, q/k/v split out of the fused weight and bias (row slices), MLP
  weights transposed (Conv1D-style), ``lm_head`` an untied copy, one tensor never converted
  (layer 7's ``o_proj.weight``, random) and one original tensor left unused (``wpe``: the port
  has no position embedding).

Then runs :func:`tracetui.weights.check_weights` on them and prints the time it took and the
process's peak resident memory against the size of the two state dicts, each with its target
beside it, and checks the findings; then one ``FIGURE`` line each (see ``bench/figures.py``).
``--dtype float16`` converts the port to half precision (the cast must still be found).

Run it with ``python bench/bench_weights.py`` (about a minute on 2 cores, most of it making
random tensors).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time

import torch
from figures import figure, verdict

from tracetui.weights import check_weights

TIME_TARGET = 30.0  # seconds for the check
MEMORY_TARGET = 2.5  # peak resident memory / bytes of the two state dicts

LAYERS = 24
WIDTH = 1024
VOCABULARY = 50257
POSITIONS = 1024
UNCONVERTED = "model.layers.7.self_attn.o_proj.weight"


def original_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state = {"transformer.wte.weight": random(VOCABULARY, WIDTH), "transformer.wpe.weight": random(POSITIONS, WIDTH)}
    for layer in range(LAYERS):
        prefix = f"transformer.h.{layer}."
        state |= {
            prefix + "ln_1.weight": random(WIDTH),
            prefix + "ln_1.bias": random(WIDTH),
            prefix + "attn.c_attn.weight": random(3 * WIDTH, WIDTH),
            prefix + "attn.c_attn.bias": random(3 * WIDTH),
            prefix + "attn.c_proj.weight": random(WIDTH, WIDTH),
            prefix + "attn.c_proj.bias": random(WIDTH),
            prefix + "ln_2.weight": random(WIDTH),
            prefix + "ln_2.bias": random(WIDTH),
            prefix + "mlp.c_fc.weight": random(4 * WIDTH, WIDTH),
            prefix + "mlp.c_fc.bias": random(4 * WIDTH),
            prefix + "mlp.c_proj.weight": random(WIDTH, 4 * WIDTH),
            prefix + "mlp.c_proj.bias": random(WIDTH),
        }
    state |= {"transformer.ln_f.weight": random(WIDTH), "transformer.ln_f.bias": random(WIDTH)}
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in nanoGPT
    return state


def ported_state(original: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    def copy(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype=dtype, copy=True).contiguous()

    state = {"model.embed_tokens.weight": copy(original["transformer.wte.weight"])}
    for layer in range(LAYERS):
        old, new = f"transformer.h.{layer}.", f"model.layers.{layer}."
        for part, chunk in zip(("q", "k", "v"), original[old + "attn.c_attn.weight"].chunk(3, dim=0), strict=True):
            state[new + f"self_attn.{part}_proj.weight"] = copy(chunk)
        for part, chunk in zip(("q", "k", "v"), original[old + "attn.c_attn.bias"].chunk(3, dim=0), strict=True):
            state[new + f"self_attn.{part}_proj.bias"] = copy(chunk)
        state[new + "self_attn.o_proj.weight"] = copy(original[old + "attn.c_proj.weight"])
        state[new + "self_attn.o_proj.bias"] = copy(original[old + "attn.c_proj.bias"])
        state[new + "input_layernorm.weight"] = copy(original[old + "ln_1.weight"])
        state[new + "input_layernorm.bias"] = copy(original[old + "ln_1.bias"])
        state[new + "post_attention_layernorm.weight"] = copy(original[old + "ln_2.weight"])
        state[new + "post_attention_layernorm.bias"] = copy(original[old + "ln_2.bias"])
        state[new + "mlp.fc_in.weight"] = copy(original[old + "mlp.c_fc.weight"].t())  # Conv1D layout
        state[new + "mlp.fc_in.bias"] = copy(original[old + "mlp.c_fc.bias"])
        state[new + "mlp.fc_out.weight"] = copy(original[old + "mlp.c_proj.weight"].t())
        state[new + "mlp.fc_out.bias"] = copy(original[old + "mlp.c_proj.bias"])
    state["model.norm.weight"] = copy(original["transformer.ln_f.weight"])
    state["model.norm.bias"] = copy(original["transformer.ln_f.bias"])
    state["lm_head.weight"] = copy(original["lm_head.weight"])  # untied in the port
    state[UNCONVERTED] = torch.randn(WIDTH, WIDTH, generator=torch.Generator().manual_seed(1)).to(dtype)  # the planted miss
    return state


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in state.values():
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def peak_resident_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="the port's dtype (default: float32)"
    )
    arguments = parser.parse_args()
    dtype = getattr(torch, arguments.dtype)
    torch.set_num_threads(2)

    started = time.perf_counter()
    original = original_state()
    ported = ported_state(original, dtype)
    gc.collect()
    built = time.perf_counter() - started
    both = state_bytes(original) + state_bytes(ported)
    values = sum(tensor.numel() for tensor in original.values() if tensor is not original["lm_head.weight"])
    print(
        f"state dicts: original {len(original)} tensors ({values / 1e6:.0f}M values), port {len(ported)} tensors "
        f"({arguments.dtype}); {both / 1e9:.2f} GB together; built in {built:.1f} s"
    )
    resident_before = peak_resident_bytes()

    started = time.perf_counter()
    report = check_weights(original, ported)
    elapsed = time.perf_counter() - started
    peak = peak_resident_bytes()

    counts = {how: count for how, count in report.counts().items() if count}
    print(f"found: {counts}; unused originals: {[tensor.name for tensor in report.unused]}")
    missing = [source.ported for source in report.sources if source.how == "missing"]
    checks = {
        "the unconverted tensor is the only one missing": missing == [UNCONVERTED],
        "q/k/v are row slices of c_attn": all(
            source.how == "slice" and "c_attn" in (source.original or "")
            for source in report.sources
            if "_proj.weight" in source.ported and source.ported.split(".")[-2] in ("q_proj", "k_proj", "v_proj")
        ),
        "MLP weights are transposes": all(
            source.how == "transposed" for source in report.sources if ".mlp." in source.ported and source.ported.endswith("weight")
        ),
        "wpe and layer 7's c_proj.weight are unused": sorted(tensor.name for tensor in report.unused)
        == ["transformer.h.7.attn.c_proj.weight", "transformer.wpe.weight"],
    }
    for what, holds in checks.items():
        print(f"  {'ok  ' if holds else 'FAIL'} {what}")

    ratio = peak / both
    time_ok = elapsed <= TIME_TARGET
    memory_ok = ratio <= MEMORY_TARGET
    print(f"check time     {elapsed:6.1f} s          target ≤ {TIME_TARGET:.0f} s   {'ok' if time_ok else 'OVER'}")
    print(
        f"peak memory    {peak / 1e9:6.2f} GB = {ratio:.2f}×  target ≤ {MEMORY_TARGET}× the two state dicts ({both / 1e9:.2f} GB)   "
        f"{'ok' if memory_ok else 'OVER'}   (resident before the check: {resident_before / 1e9:.2f} GB)"
    )
    print()
    figure("weights: check_weights time, two ~300M-value state dicts", f"{elapsed:.1f} s", f"≤ {TIME_TARGET:.0f} s", verdict(time_ok))
    figure(
        "weights: peak RSS / bytes of the two state dicts", f"{ratio:.2f}× ({peak / 1e9:.2f} GB / {both / 1e9:.2f} GB)",
        f"≤ {MEMORY_TARGET}×", verdict(memory_ok),
    )
    figure(
        "weights: findings (unconverted tensor, q/k/v slices, transposes, unused)",
        f"{sum(checks.values())} of {len(checks)} right", f"all {len(checks)}", verdict(all(checks.values())),
    )
    return 0 if time_ok and memory_ok and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The demo GPT port (`ported.py`) run tensor-parallel with DTensor: the port for `--nproc N`.

    tracetui compare demos/gpt/original.py demos/gpt/tensor_parallel.py --map demos/gpt/map.toml --nproc 2

tracetui initialises the default process group before `build()`; `build()` builds the port as
`ported.py` does and splits every layer across the ranks the way Megatron-style ports do:
q/k/v and the MLP's first linear column-wise (each rank holds some heads / some hidden units),
o_proj and the MLP's second linear row-wise (their outputs summed across ranks). Run without a
process group (`tracetui show`), it is the single-process port.

Planted bugs, `TRACETUI_TP_BUG=<name>` (and `TRACETUI_DEMO_BUG` plants `ported.py`'s own):

  qkv_split_rank1   rank 1's shard of layer 1's q_proj is split from the fused qkv weight at k's
                    offset (the split in the wrong order on that rank only)
  replicated_rank1  rank 1's copy of layer 0's post_attention_layernorm weight differs from
                    rank 0's (a replicated parameter loaded wrongly on one rank)
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist

BUG_ENV_VAR = "TRACETUI_TP_BUG"
# planted bug -> (ported module it shows at, the rank it lives on)
BUGS: dict[str, tuple[str, int]] = {
    "qkv_split_rank1": ("model.layers.1.self_attn.q_proj", 1),
    "replicated_rank1": ("model.layers.0.mlp.fc_in", 1),
}


def load_port_module() -> ModuleType:
    """Import the sibling ported.py under a name of its own."""
    module_name = "_tracetui_demo_gpt_ported"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, Path(__file__).with_name("ported.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def parallelize(model: torch.nn.Module) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    layer_plan = {
        "self_attn.q_proj": ColwiseParallel(),
        "self_attn.k_proj": ColwiseParallel(),
        "self_attn.v_proj": ColwiseParallel(),
        "self_attn.o_proj": RowwiseParallel(),
        "mlp.fc_in": ColwiseParallel(),
        "mlp.fc_out": RowwiseParallel(),
    }
    for layer in model.model.layers:
        parallelize_module(layer, mesh, layer_plan)


def plant_bugs(model: torch.nn.Module, bugs: set[str]) -> None:
    rank = dist.get_rank()
    with torch.no_grad():
        if "qkv_split_rank1" in bugs and rank == 1:
            attention = model.model.layers[1].self_attn
            attention.q_proj.weight.to_local().copy_(attention.k_proj.weight.to_local())  # PLANTED BUG
            attention.q_proj.bias.to_local().copy_(attention.k_proj.bias.to_local())
        if "replicated_rank1" in bugs and rank == 1:
            model.model.layers[0].post_attention_layernorm.weight.add_(0.05)  # PLANTED BUG


def build() -> tuple[torch.nn.Module, torch.Tensor]:
    port = load_port_module()
    model, input_ids = port.build()
    if not dist.is_initialized():
        return model, input_ids
    bugs = {name.strip() for name in os.environ.get(BUG_ENV_VAR, "").split(",") if name.strip()}
    unknown = bugs - set(BUGS)
    if unknown:
        raise ValueError(f"unknown {BUG_ENV_VAR}={sorted(unknown)}; valid names: {', '.join(BUGS)}")
    parallelize(model)
    plant_bugs(model, bugs)
    return model, input_ids

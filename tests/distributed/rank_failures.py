"""The tensor-parallel demo port, failing on one rank, for the --nproc error tests.

`TRACETUI_TEST_RANK_FAILURE`: `raise` (rank 1's forward raises), `hang` (rank 1 never returns
from build()). Each rank writes its process id to `$TRACETUI_TEST_PID_FOLDER/rank<N>` (when
set), so that a test can check that no rank outlives the command.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

DEMO = Path(__file__).resolve().parents[2] / "demos" / "gpt" / "tensor_parallel.py"


def load_demo():
    name = "_tracetui_test_tensor_parallel"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, DEMO)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class RaisingOnRank1(torch.nn.Module):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if dist.get_rank() == 1:
            raise RuntimeError("rank 1 lost its shard")
        return hidden_states


def build():
    rank = dist.get_rank()
    pid_folder = os.environ.get("TRACETUI_TEST_PID_FOLDER")
    if pid_folder:
        Path(pid_folder, f"rank{rank}").write_text(str(os.getpid()))
    model, input_ids = load_demo().build()
    failure = os.environ.get("TRACETUI_TEST_RANK_FAILURE", "")
    if failure == "hang" and rank == 1:
        time.sleep(3600)
    if failure == "raise":
        model.model.layers[1].mlp.act_fn = torch.nn.Sequential(model.model.layers[1].mlp.act_fn, RaisingOnRank1())
    return model, input_ids

"""The demo GPT port (demos/gpt/ported.py) dispatched with accelerate: `disk_offload` (the default)
or, with `TRACETUI_OFFLOAD_HOW=device_map`, `dispatch_model` with a `device_map` that keeps the
embeddings, layer 0, the final norm and the head on the CPU and offloads layers 1-3 to disk.

Every offloaded parameter sits on the meta device, its values in an `offload_folder` (a temporary folder
removed when the process ends) until accelerate's hooks load them for the module's forward and
let them go afterwards. `TRACETUI_OFFLOAD_BUG` plants the demo's bugs (names as ported.py's
`TRACETUI_DEMO_BUG`) in this copy only, so that the undispatched original stays clean.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

PORTED = Path(__file__).resolve().parents[2] / "demos" / "gpt" / "ported.py"


def load_port_module():
    name = "_tracetui_test_offload_ported"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PORTED)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def build() -> tuple[torch.nn.Module, torch.Tensor]:
    from accelerate import disk_offload

    model, input_ids = load_port_module().build(bug=os.environ.get("TRACETUI_OFFLOAD_BUG", ""))
    offload_folder = tempfile.mkdtemp(prefix="tracetui-offload-")
    atexit.register(shutil.rmtree, offload_folder, ignore_errors=True)
    if os.environ.get("TRACETUI_OFFLOAD_HOW", "disk_offload") == "device_map":
        from accelerate import dispatch_model

        on_cpu = ("model.embed_tokens", "model.embed_positions", "model.layers.0", "model.norm", "lm_head")
        device_map = dict.fromkeys(on_cpu, "cpu")
        device_map |= {f"model.layers.{layer}": "disk" for layer in (1, 2, 3)}
        dispatch_model(model, device_map=device_map, offload_dir=offload_folder)
        assert model.model.layers[1].mlp.fc_in.weight.device.type == "meta"
    else:
        disk_offload(model, offload_dir=offload_folder, execution_device="cpu")
        assert all(parameter.device.type == "meta" for parameter in model.parameters())
    return model, input_ids

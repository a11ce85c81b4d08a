"""``tracetui weights``: check that every ported weight came from the original (see :mod:`tracetui.weights`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from tracetui import api
from tracetui.cli.common import write_json_after_report
from tracetui.errors import ScriptError, UsageError
from tracetui.options import RunOptions
from tracetui.output_files import absolute_path, check_output_file, write_text_atomically
from tracetui.weights import check_weights, print_weight_report, report_document, state_with_buffers
from tracetui.weights.foreign import ForeignWeightsError, named_arrays, to_torch, tree_arrays, weight_name

WEIGHTS_EPILOG = """\
For every tensor of PORTED's state dict (parameters and persistent buffers) this finds where
its values came from in ORIG's: the tensor of the same name (after --map: a weight's name is
its module's name plus .weight/.bias), the same values under another name, the transpose of a
tensor, a block of rows or columns of one (q out of a fused qkv, a Conv1D-style chunk), blocks
of several put together (a fused projection, rows in another order), or nothing at all —
probably never converted and still at its random initialisation. Then every ORIG tensor that
no ported tensor uses. Values are matched exactly, after casting both sides to the narrowest
floating dtype present, so a float32 → float16 conversion is found too; no map is needed.

ORIG and PORTED are model scripts (build() returns (model, inputs); the inputs are not used)
or state-dict files (.safetensors, .pt/.pth/.bin saved with torch.save, numpy .npz, or a Flax
.msgpack checkpoint written with flax.serialization.to_bytes). Flax and numpy weights are named
by their path joined with "." without the leading "params" (h_0.attn.query.kernel).

exit status: 0 every ported tensor is accounted for, 1 some came from nothing (or, with
--map, from another original tensor than the map names), 2 usage, load or script error.

examples:
  tracetui weights original.py ported.py
  tracetui weights original.py ported.py --map map.toml --json weights.json
  tracetui weights original.safetensors ported.py --full"""

STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin")  # read with torch.load
STATE_FILE_KINDS = ".safetensors, .pt/.pth/.bin, .npz or a Flax .msgpack"
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")  # where training checkpoints keep the state dict


def add_weights_command(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "weights",
        help="check that every ported weight came from the original",
        description="Find where each tensor of PORTED's state dict came from in ORIG's, and what ORIG has that PORTED does not use.",
        epilog=WEIGHTS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("original", metavar="ORIG", help="original model script (.py), state-dict file, .npz or Flax .msgpack")
    command.add_argument("ported", metavar="PORTED", help="ported model script (.py) or state-dict file")
    command.add_argument(
        "--map", metavar="MAP.toml", help="rename map naming where each tensor should come from (default: match by value only)"
    )
    command.add_argument("--json", metavar="OUT.json", help="also write the result as JSON (schema tracetui.weights/1)")
    command.add_argument("--full", action="store_true", help="list every tensor, not only those not taken from their namesake")
    command.add_argument("--seed", type=int, default=0, help="seed set before build() (default: %(default)s)")
    command.add_argument("--debug", action="store_true", help="show tracetui's own traceback on errors")


def run_weights(arguments: argparse.Namespace, console: Console, errors: Console) -> int:
    json_path = None
    if arguments.json:  # checked before the models are built
        inputs = [absolute_path(path) for path in (arguments.original, arguments.ported, arguments.map) if path]
        json_path = check_output_file(arguments.json, "--json", inputs, example="weights.json")
    rename_map = api.resolve_rename_map(arguments.map) if arguments.map else None
    with errors.status("building the original …") as status:
        original = load_state(arguments.original, arguments.seed)
        status.update("building the port …")
        ported = load_state(arguments.ported, arguments.seed)
        status.update(f"matching {len(ported)} ported tensors …")
        report = check_weights(original, ported, rename_map)
    print_weight_report(report, console, full=arguments.full)  # first: a JSON that cannot be written must not lose it
    if json_path is not None:
        document = json.dumps(report_document(report), indent=2) + "\n"
        write_json_after_report(lambda: write_text_atomically(json_path, document, shown=arguments.json))
    return 0 if report.complete else 1


def load_state(path: str, seed: int) -> dict[str, torch.Tensor]:
    """A state dict from a model script (its model's) or a state-dict file."""
    suffix = Path(path).suffix
    if suffix == ".py":
        script = api.load_source(path, RunOptions(seed=seed))
        if isinstance(script, api.Trace):  # pragma: no cover - .py always loads as a script
            raise ScriptError(f"{path}: expected a model script.")
        return script_model_state(path, script.model)
    if not Path(path).exists():
        raise UsageError(f"{path}: no such file. Pass a model script (.py) or a state-dict file ({STATE_FILE_KINDS}).")
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(path))
    if suffix in STATE_DICT_SUFFIXES:
        return load_torch_state(path)
    if suffix == ".npz":
        return load_npz_state(path)
    if suffix == ".msgpack":
        return load_msgpack_state(path)
    raise UsageError(f"{path}: not a model script or a state-dict file. `tracetui weights` takes .py scripts or {STATE_FILE_KINDS} files.")


def script_model_state(path: str, model: object) -> dict[str, torch.Tensor]:
    """The weights of a script's model: a torch state dict, or those of a Flax/Keras original."""
    if isinstance(model, torch.nn.Module):
        return state_with_buffers(model)
    return foreign_model_state(path, model)


def foreign_model_state(path: str, model: object) -> dict[str, torch.Tensor]:
    """The weights of a Flax or Keras original (a bound linen module, an NNX module, a Keras model,
    or a variables tree) by name, through :func:`named_arrays`."""
    try:
        return named_arrays(model)
    except ForeignWeightsError as error:
        raise ScriptError(f"{path}: {error}") from error


def load_npz_state(path: str) -> dict[str, torch.Tensor]:
    """A numpy ``.npz`` archive: names with ``/`` read as ``.``, a leading ``params`` collection left out."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except Exception as error:
        raise UsageError(f"{path}: numpy could not read it as an .npz archive of arrays ({error}).") from error
    return {weight_name(name.replace("/", ".")): to_torch(array) for name, array in arrays.items()}


def load_msgpack_state(path: str) -> dict[str, torch.Tensor]:
    """A Flax checkpoint written with ``flax.serialization.to_bytes`` (a variables or params tree)."""
    try:
        from flax.serialization import msgpack_restore
    except ImportError as error:
        raise UsageError(f'{path}: reading a Flax .msgpack checkpoint needs flax (pip install -e ".[jax]").') from error
    try:
        tree = msgpack_restore(Path(path).read_bytes())
    except Exception as error:
        raise UsageError(f"{path}: not a Flax msgpack checkpoint ({type(error).__name__}: {error}).") from error
    if not isinstance(tree, Mapping):
        raise UsageError(f"{path}: holds a {type(tree).__name__}, not a tree of arrays.")
    return tree_arrays(tree)


def load_torch_state(path: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save, bare or inside a training checkpoint's dict."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UsageError(f"{path}: torch.load could not read it as a state dict ({error}).") from error
    for key in WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if isinstance(loaded, Mapping) and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return dict(loaded)
    raise UsageError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors.")

"""Load a model script: a Python file whose ``build()`` returns ``(model, inputs)``.

The contract (shared/docs/contracts.md): the file is imported with its folder on ``sys.path``,
``build()`` is called under a fixed seed, the model is put in ``eval()`` mode, and the forward
pass runs under ``torch.no_grad()`` — through the script's own ``forward(model, inputs)`` when it
defines one. Every way a script can be wrong becomes a :class:`ScriptError` naming the file.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy
import torch

from tracetui.errors import ScriptError, TracetuiError
from tracetui.global_state import GlobalState, script_state
from tracetui.output_files import absolute_path

if TYPE_CHECKING:
    from tracetui.frameworks import ForeignScript

DEFAULT_SEED = 0

ForwardFunction = Callable[[torch.nn.Module, Any], Any]


@dataclass
class ModelScript:
    """A built model, its inputs, and how to run it — everything a recording needs."""

    path: Path  # absolute: a script may change the working directory
    model: torch.nn.Module
    inputs: Any
    forward_function: ForwardFunction | None = None
    seed: int = DEFAULT_SEED
    # The process-wide state its runs need: what its import and build() left (None: the clean
    # one). See tracetui.global_state.
    global_state: GlobalState | None = None
    shown_as: str = ""  # the path as the user gave it, for messages and reports

    @property
    def label(self) -> str:
        return self.shown_as or str(self.path)

    def run(self, seed: int | None = None) -> Any:
        """One forward pass under ``no_grad`` with a fixed seed; the script's errors name the file."""
        def forward() -> Any:
            if self.forward_function is not None:
                return self.forward_function(self.model, self.inputs)
            return call_with_inputs(self.model, self.inputs)

        return run_forward(self.label, self.path, self.global_state, self.seed if seed is None else seed, forward)


def run_forward(label: str, path: Path, global_state: GlobalState | None, seed: int, forward: Callable[[], Any]) -> Any:
    """Run a script's forward pass under its own process-wide state, its folder on the path,
    ``no_grad`` and the seed; an error of the model's becomes a :class:`ScriptError` naming the file."""
    with script_state(global_state), script_folder_on_path(path), torch.no_grad():
        seed_everything(seed)
        try:
            return forward()
        except SystemExit as error:
            raise script_exited(label, "the forward pass", error) from error
        except TracetuiError:  # raised by tracetui's own hooks: not the model's doing
            raise
        except Exception as error:
            raise ScriptError(
                f"{label}: the forward pass raised {type(error).__name__}: {error}. "
                "The traceback below is from the model code; fix it there "
                "(check the inputs that build() returns).",
                detail=user_traceback(error),
            ) from error


def call_with_inputs(model: Any, inputs: Any) -> Any:
    """Call the model the way the contract says: tensor → one argument, tuple → positional, dict → keywords."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def user_traceback(error: BaseException) -> str:
    """The traceback of an error raised in user code, without tracetui's own frames on top."""
    frames = traceback.extract_tb(error.__traceback__)
    tracetui_folder = str(Path(__file__).parent)
    user_frames = [frame for frame in frames if not frame.filename.startswith(tracetui_folder)]
    lines = ["Traceback (most recent call last):\n"]
    lines += traceback.format_list(user_frames or frames)
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines)


@contextlib.contextmanager
def script_folder_on_path(path: Path) -> Iterator[None]:
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def script_exited(path: Path | str, stage: str, error: SystemExit) -> ScriptError:
    """``sys.exit()`` in a script is an error like any other, never an exit status of tracetui's
    (1 would read as "divergence found", 0 as "the port matches")."""
    return ScriptError(
        f"{path}: {stage} called sys.exit({error.code!r}). A model script must return (model, inputs) and let the "
        "forward pass return; remove the exit (an `if __name__ == '__main__':` guard keeps it for running the file alone).",
        detail=user_traceback(error),
    )


def import_script(path: Path, location: Path) -> ModuleType:
    """Import a script as a fresh module, so two scripts may both import a local ``model.py``.

    ``path`` is the script as the user gave it (for messages), ``location`` its absolute path:
    ``__file__`` stays right when the script changes the working directory. Modules the script
    imports from its own folder are dropped from ``sys.modules`` afterwards: the original and
    the ported script often each have a helper module of the same name.
    """
    if not location.exists():
        raise ScriptError(f"{path}: no such file. Pass the path of a model script (a .py file with build()) or a trace file.")
    if path.suffix != ".py":
        raise ScriptError(
            f"{path}: not a Python script or a tracetui trace file. "
            "Pass a .py file that defines build() returning (model, inputs), or a trace saved by `tracetui record`."
        )
    folder = location.resolve().parent
    module_name = f"_tracetui_script_{abs(hash(str(location.resolve())))}"
    specification = importlib.util.spec_from_file_location(module_name, location)
    if specification is None or specification.loader is None:
        raise ScriptError(f"{path}: Python cannot load this file as a module.")
    module = importlib.util.module_from_spec(specification)
    # Registered before it runs, as a normal import would be: @dataclass looks its module up.
    sys.modules[module_name] = module
    modules_before = set(sys.modules)
    with script_folder_on_path(location):
        try:
            specification.loader.exec_module(module)
        except SystemExit as error:
            raise script_exited(path, "importing the script", error) from error
        except SyntaxError as error:
            raise ScriptError(
                f"{path}: the script has a syntax error at line {error.lineno}: {error.msg}.",
                detail=user_traceback(error),
            ) from error
        except Exception as error:
            raise ScriptError(
                f"{path}: importing the script raised {type(error).__name__}: {error}. "
                "The traceback below is from the script; fix it there.",
                detail=user_traceback(error),
            ) from error
        finally:
            forget_local_modules(modules_before, folder)
    return module


def forget_local_modules(modules_before: set[str], folder: Path) -> None:
    for name in set(sys.modules) - modules_before:
        module_file = getattr(sys.modules[name], "__file__", None)
        if module_file and Path(module_file).resolve().is_relative_to(folder):
            del sys.modules[name]


def load_script(path: str | Path, seed: int = DEFAULT_SEED, device: str = "cpu") -> ModelScript | ForeignScript:
    """Import a model script, call its ``build()`` under a fixed seed, and check what it returned.

    Every script is imported and built from the same clean process-wide state, and keeps the
    state that left for its own runs; the caller's state comes back afterwards.
    """
    location = absolute_path(path)  # before the script runs: it may change the working directory
    with script_state():
        script = build_script(Path(path), location, seed, device)
        script.global_state = GlobalState.capture()
    return script


def build_script(path: Path, location: Path, seed: int, device: str) -> ModelScript | ForeignScript:
    module = import_script(path, location)
    build = getattr(module, "build", None)
    if build is None:
        raise ScriptError(
            f"{path}: the script defines no build(). Add `def build():` returning (model, inputs), "
            "where model is a torch.nn.Module and inputs a tensor, a tuple of arguments or a dict of keyword arguments."
        )
    if not callable(build):
        raise ScriptError(f"{path}: `build` is a {type(build).__name__}, not a function. Define `def build():` returning (model, inputs).")
    forward_function = getattr(module, "forward", None)
    if forward_function is not None and not callable(forward_function):
        raise ScriptError(
            f"{path}: `forward` is a {type(forward_function).__name__}, not a function. Define `def forward(model, inputs):` or remove it."
        )

    seed_everything(seed)
    folder = location.resolve().parent
    modules_before = set(sys.modules)
    with script_folder_on_path(location):
        try:
            built = build()
        except SystemExit as error:
            raise script_exited(path, "build()", error) from error
        except Exception as error:
            raise ScriptError(
                f"{path}: build() raised {type(error).__name__}: {error}. The traceback below is from the script; fix it there.",
                detail=user_traceback(error),
            ) from error
        finally:
            forget_local_modules(modules_before, folder)
    model, inputs = check_built(path, built)
    foreign = foreign_script(path, location, model, inputs, forward_function, seed)
    if foreign is not None:
        return foreign
    model, inputs = prepare(model, inputs, device)
    return ModelScript(path=location, model=model, inputs=inputs, forward_function=forward_function, seed=seed, shown_as=str(path))


def foreign_script(
    path: Path, location: Path, model: Any, inputs: Any, forward_function: Callable[..., Any] | None, seed: int
) -> ForeignScript | None:
    """A :class:`ForeignScript` when the model is a Flax or Keras one (see tracetui.frameworks), else None."""
    from tracetui.frameworks import ForeignScript, detect_framework
    from tracetui.frameworks.foreign import adapter

    framework = detect_framework(model)
    if framework is None:
        return None
    with script_folder_on_path(location):
        prepared = adapter(framework).prepare(model, path)
    return ForeignScript(
        path=location, shown_as=str(path), framework=framework, model=prepared, inputs=inputs,
        forward_function=forward_function, seed=seed,
    )


def prepare(model: torch.nn.Module, inputs: Any, device: str) -> tuple[torch.nn.Module, Any]:
    """Eval mode, and model and inputs on the device: what the contract promises before a run."""
    model.eval()
    if device != "cpu":
        model.to(device)
        inputs = move_to_device(inputs, device)
    return model, inputs


def check_built(path: Path, built: Any) -> tuple[Any, Any]:
    """The pair build() returned, checked: a model tracetui can record (PyTorch, or a Flax or Keras
    one, see tracetui.frameworks) and inputs of the contract's kinds."""
    from tracetui.frameworks import ACCEPTED_MODELS, detect_framework

    if not isinstance(built, tuple) or len(built) != 2:
        what = f"a tuple of {len(built)} items" if isinstance(built, tuple) else f"a {type(built).__name__}"
        raise ScriptError(f"{path}: build() returned {what}; it must return a pair (model, inputs), e.g. `return model, input_ids`.")
    model, inputs = built
    if not isinstance(model, torch.nn.Module) and detect_framework(model) is None:
        raise ScriptError(
            f"{path}: build() returned a {type(model).__name__} as the model; the first item must be {ACCEPTED_MODELS}."
            + (" (It looks like the pair is the wrong way round: return (model, inputs).)" if isinstance(inputs, torch.nn.Module) else "")
        )
    if not isinstance(inputs, (torch.Tensor, tuple, dict)) and not (detect_framework(model) is not None and is_array(inputs)):
        raise ScriptError(
            f"{path}: build() returned a {type(inputs).__name__} as the inputs; they must be a tensor "
            "(or an array, for a Flax or Keras model) "
            "(one positional argument), a tuple (positional arguments) or a dict (keyword arguments)."
        )
    if isinstance(inputs, dict) and not all(isinstance(key, str) for key in inputs):
        raise ScriptError(f"{path}: build() returned a dict of inputs whose keys are not all strings; keys are keyword-argument names.")
    return model, inputs


def is_array(value: Any) -> bool:
    """An array of numpy, JAX or TensorFlow: a single input of a Flax or Keras model."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def move_to_device(value: Any, device: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(move_to_device(item, device) for item in value)
    if isinstance(value, list):
        return [move_to_device(item, device) for item in value]
    if isinstance(value, dict):
        return {key: move_to_device(item, device) for key, item in value.items()}
    return value

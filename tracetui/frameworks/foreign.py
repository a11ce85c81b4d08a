"""A built original of another framework: run it, and record it into a :class:`Trace`.

Each framework's adapter (:mod:`.flax_linen`, :mod:`.flax_nnx`, :mod:`.keras`) knows how to
call the model and how to watch its module calls; this module turns each watched call into a
record through the torch recorder's own call/leaf/keep code (:class:`tracetui.record.Recorder`),
so a Flax or Keras trace is kept, spilled, saved and compared exactly like a PyTorch one.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import numpy
import torch

from tracetui.errors import InternalError, RecordingError, ScriptError, TracetuiError
from tracetui.global_state import GlobalState
from tracetui.script import DEFAULT_SEED, call_with_inputs, run_forward

if TYPE_CHECKING:
    from tracetui.record import KeepPolicy, LiveCheck, Progress, Recorder
    from tracetui.trace import Trace

ADAPTER_MODULES = {"flax.linen": "flax_linen", "flax.nnx": "flax_nnx", "keras": "keras"}
SCALAR_TYPES = (bool, int, float, complex, str, bytes, type(None))
MAXIMUM_NESTING = 8


class CallWatch(Protocol):
    """What an adapter calls in place of each module call while a run is watched.

    ``name`` is the module's path joined with ``.`` (``""`` for the root), or None when the
    module has none (a Keras layer created during the call): it is then named after the
    enclosing call, ``parent.local_name``. ``signature`` names the arguments. ``call`` runs the
    module's own code and returns its output, which the watch returns."""

    def __call__(
        self,
        module: object,
        name: str | None,
        local_name: str,
        signature: inspect.Signature | None,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any: ...


def adapter(framework: str) -> ModuleType:
    """The adapter module of a framework :func:`~tracetui.frameworks.detect_framework` named."""
    return importlib.import_module(f"tracetui.frameworks.{ADAPTER_MODULES[framework]}")


@dataclass
class ForeignScript:
    """A model script whose ``build()`` returned a Flax or Keras model: what a recording needs.

    ``model`` is a bound linen module (a ``(module, variables)`` pair is bound when the script is
    built), an NNX module or a Keras model or layer. It is run as the script says
    (``forward(model, inputs)``) or called with the inputs (Keras with ``training=False``).
    """

    path: Path
    shown_as: str
    framework: str
    model: Any
    inputs: Any
    forward_function: Callable[[Any, Any], Any] | None = None
    seed: int = DEFAULT_SEED
    global_state: GlobalState | None = None

    @property
    def label(self) -> str:
        return self.shown_as or str(self.path)

    def run(self, seed: int | None = None) -> Any:
        """One forward pass, un-jitted, with the seeds set; the script's errors name the file."""
        def forward() -> Any:
            if self.forward_function is not None:
                return self.forward_function(self.model, self.inputs)
            return adapter(self.framework).call_model(self.model, self.inputs)

        return run_forward(self.label, self.path, self.global_state, self.seed if seed is None else seed, forward)

    def watched(self, watch: CallWatch) -> Any:
        """A context manager during which every module call of this model goes through ``watch``."""
        return adapter(self.framework).watched(self.model, watch)

    def record(
        self,
        progress: Progress | None = None,
        keep: KeepPolicy | None = None,
        *,
        seed: int | None = None,
        live_check: LiveCheck | None = None,
    ) -> Trace:
        """Run the model once, recording every module call, and return its trace."""
        from tracetui.memory import garbage_collection_paused, release_free_memory
        from tracetui.record import KeepPolicy, Recorder

        recorder = Recorder(None, self.label, progress, keep or KeepPolicy(), live_check)
        converter = TorchConverter(self.label)
        watch = RecordingWatch(recorder, converter, self.label)
        try:
            with garbage_collection_paused(), self.watched(watch):
                self.run(seed)
        finally:
            converter.clear()
        recorder.trace.seed = self.seed if seed is None else seed
        if not any(record.kind == "module" for record in recorder.trace.records):
            raise RecordingError(
                f"{self.label}: the {self.framework} model ran but no module call was seen, so there is nothing to compare. "
                "This happens when the forward pass is compiled (jax.jit, model.predict, a jitted apply): "
                "call the model un-jitted, e.g. `model(inputs)` in forward()."
            )
        trace = recorder.finish()
        release_free_memory()
        return trace


class RecordingWatch:
    """Records each watched call: its inputs before the module runs, its output after."""

    def __init__(self, recorder: Recorder, converter: TorchConverter, label: str) -> None:
        self.recorder = recorder
        self.converter = converter
        self.label = label
        self._running: list[object] = []  # the modules whose calls are open, innermost last

    def __call__(
        self,
        module: object,
        name: str | None,
        local_name: str,
        signature: inspect.Signature | None,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        if self._running and self._running[-1] is module:  # a subclass's __call__ calling its base's: one call
            return call(*args, **kwargs)
        full_name = name if name is not None else joined(self.enclosing_name(), local_name)
        self.guarded(module, full_name, lambda: self.recorder.begin_call(
            module, full_name, type(module).__name__, lambda: self.converter.convert(name_arguments(signature, args, kwargs))
        ))
        self._running.append(module)
        try:
            output = call(*args, **kwargs)
            self.guarded(module, full_name, lambda: self.recorder.finish_call(module, self.converter.convert(output)))
            return output
        finally:
            self._running.pop()
            self.recorder.end_call(module)

    def enclosing_name(self) -> str:
        enclosing = self.recorder.innermost_call()
        return "" if enclosing is None else enclosing.name

    def guarded(self, module: object, name: str, step: Callable[[], None]) -> None:
        """Run a recording step; a failure of tracetui's own is said to be one, not the model's."""
        try:
            step()
        except TracetuiError:
            raise
        except Exception as error:
            raise InternalError(
                f"{self.label}: tracetui failed while watching module {name or '(root)'} ({type(module).__name__}): "
                f"{type(error).__name__}: {error}. This is tracetui's failure, not the model's: please report it "
                "with the output of the same command run with --debug."
            ) from error


def joined(parent: str, local_name: str) -> str:
    return f"{parent}.{local_name}" if parent else local_name


def name_arguments(signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    """Name positional arguments by the call's parameters, as the torch side does (``args.N`` when it cannot)."""
    if signature is not None:
        parameters = signature.parameters
        if not any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
            # What the framework's own __call__ takes and does not pass on (Keras's training=, mask=) is left out.
            kwargs = {key: value for key, value in kwargs.items() if key in parameters}
        try:
            return list(signature.bind(*args, **kwargs).arguments.items())
        except TypeError:
            pass
    return [(f"args.{position}", value) for position, value in enumerate(args)] + list(kwargs.items())


_signatures: dict[tuple[type, str], inspect.Signature | None] = {}


def method_signature(cls: type, method_name: str) -> inspect.Signature | None:
    """The signature of ``cls.method_name`` without ``self`` (cached per class), None when unknown."""
    key = (cls, method_name)
    if key not in _signatures:
        try:
            signature = inspect.signature(getattr(cls, method_name))
            parameters = list(signature.parameters.values())
            _signatures[key] = signature.replace(parameters=parameters[1:])
        except (TypeError, ValueError, AttributeError):
            _signatures[key] = None
    return _signatures[key]


class TorchConverter:
    """Turns a framework's arrays (JAX arrays, numpy arrays, TensorFlow tensors) into CPU torch
    tensors of the same dtype, bfloat16 included, inside nested containers.

    The same array seen again (a layer's output passed on as the next one's input) gives the
    same tensor object, so the recorder stores it once and knows where it came from. The arrays
    are held until :meth:`clear`, so that their ids are not reused during the run."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._converted: dict[int, tuple[Any, torch.Tensor]] = {}

    def clear(self) -> None:
        self._converted.clear()

    def convert(self, value: Any, nesting: int = 0) -> Any:
        if isinstance(value, (torch.Tensor, *SCALAR_TYPES)) or nesting >= MAXIMUM_NESTING:
            return value
        if isinstance(value, Mapping):
            return {key: self.convert(item, nesting + 1) for key, item in value.items()}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return {key: self.convert(getattr(value, key), nesting + 1) for key in value._fields}
        if isinstance(value, (tuple, list)):
            return type(value)(self.convert(item, nesting + 1) for item in value) if type(value) in (tuple, list) else [
                self.convert(item, nesting + 1) for item in value
            ]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {field.name: self.convert(getattr(value, field.name), nesting + 1) for field in dataclasses.fields(value)}
        return self.tensor_of(value)

    def tensor_of(self, value: Any) -> Any:
        """The torch tensor holding an array's values, or the value itself when it is no array."""
        known = self._converted.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        tensor = self.array_to_tensor(value)
        if tensor is None:
            return value
        self._converted[id(value)] = (value, tensor)
        return tensor

    def array_to_tensor(self, value: Any) -> torch.Tensor | None:
        jax = sys.modules.get("jax")
        if jax is not None:
            if isinstance(value, jax.core.Tracer):
                raise RecordingError(
                    f"{self.label}: a module was called on traced values (jax.jit, jax.vmap, nn.scan or another JAX "
                    "transform around the model), which hold no numbers to record. Call the model un-jitted: remove "
                    "jax.jit from the forward pass the script runs (keep it for training), and unroll scanned layers."
                )
            if isinstance(value, jax.Array):
                try:
                    return torch.from_dlpack(value)
                except Exception:  # an accelerator array, or a dtype dlpack does not carry: through numpy
                    return numpy_to_tensor(numpy.asarray(value))
        tensorflow = sys.modules.get("tensorflow")
        if tensorflow is not None and isinstance(value, tensorflow.Tensor):
            return numpy_to_tensor(value.numpy())
        if isinstance(value, (numpy.ndarray, numpy.generic)) and value.dtype.kind in "biufc" or is_bfloat16(value):
            return numpy_to_tensor(numpy.asarray(value))
        return None


def is_bfloat16(value: Any) -> bool:
    return isinstance(value, (numpy.ndarray, numpy.generic)) and value.dtype.name == "bfloat16"


def numpy_to_tensor(array: numpy.ndarray) -> torch.Tensor:
    """A CPU torch tensor with the array's values and dtype; ml_dtypes' bfloat16 is carried bit for bit."""
    array = numpy.array(array, copy=True)  # writable, and owned by the tensor
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(numpy.uint16)).view(torch.bfloat16)
    if array.dtype.kind not in "biufc":  # another ml_dtypes type (float8, int4): its values, in float32
        return torch.from_numpy(array.astype(numpy.float32))
    return torch.from_numpy(array)


def call_model(model: Any, inputs: Any) -> Any:
    """Call the model the contract's way: tensor → one argument, tuple → positional, dict → keywords."""
    return call_with_inputs(model, inputs)


def foreign_port_error(port: ForeignScript) -> ScriptError:
    """A Flax or Keras model given as the port: tracetui runs the port again (the fed run, the
    debugger, the fix search), which needs PyTorch."""
    return ScriptError(
        f"{port.label}: the port must be a PyTorch model (a torch.nn.Module), and build() returned a "
        f"{port.framework} model ({type(port.model).__name__}). tracetui compares an original written in "
        "Flax or Keras with its PyTorch port: pass the Flax/Keras script as ORIG."
    )

"""Stop in ipdb inside one module call of a fresh run, with the other model's recorded tensors at hand.

The debugger consumes a :class:`Comparison`: it picks a row (the culprit, or a call named on the
command line), builds that side's model script again, and runs it with a breakpoint that stops
ipdb at the first statement of that module's own ``forward`` — on the same call as the row (the
third call of a shared module stops on the third call), with the real arguments in scope.

How the stop works (:class:`ForwardBreakpoint`):

1. a forward pre-hook on the module counts its calls;
2. on the wanted call it installs a ``sys.settrace`` function that waits for the frame of the
   module's ``forward`` code object (unwrapped from decorators) to start;
3. on that frame's ``call`` event it prints the banner, puts ``ctx`` into builtins and hands the
   frame to ``ipdb.set_trace(frame)``, which stops at the frame's first line event.

Everything is undone in one ``finally`` (:meth:`ForwardBreakpoint.installed`): hook handles, the
trace function, the debugger's frame trace functions, ``ctx``, ``sys.excepthook``, the SIGINT
handler and the terminal settings — whether the user continued (``c``) or quit (``q``, which
bdb turns into ``BdbQuit`` unwinding the model's forward).
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import inspect
import signal
import sys
import threading
from bdb import BdbQuit
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Literal

import torch

from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.errors import ScriptError, UsageError
from tracetui.flatten import flatten
from tracetui.numeric import TensorDifference, equivalent_shapes, format_difference, measure
from tracetui.rows import LeafPair, Row, pair_leaves
from tracetui.script import ModelScript, load_script
from tracetui.sides import Side, other_side, pick
from tracetui.text import first_few, shape_text
from tracetui.trace import CallRecord, Leaf

# What happened to a debug run: stopped and continued to the end, stopped and quit with q, or
# the run ended without reaching the call (the model took another path this time).
DebugOutcome = Literal["continued", "quit", "not_reached"]

CONTEXT_NAME = "ctx"
FALLBACK_CONTEXT_NAME = "tracetui_ctx"  # when the forward itself uses a name `ctx`
ROOT_NAMES = ("", "(root)")
CLOSE_NAMES = 6


# -- the recorded values at hand --------------------------------------------------------------


class RecordedValues(dict[str, Any]):
    """Leaf name → recorded tensor (or the repr of a non-tensor value); prints as a short list."""

    def __repr__(self) -> str:
        if not self:
            return "{}  (nothing recorded)"
        parts = []
        for name, value in self.items():
            if isinstance(value, torch.Tensor):
                parts.append(f"{name!r}: {str(value.dtype).removeprefix('torch.')}{shape_text(value.shape, as_list=True)}")
            else:
                parts.append(f"{name!r}: {value}")
        return "{" + ", ".join(parts) + "}"

    __str__ = __repr__


@dataclass
class RecordedCall:
    """One side's record of this call: ``inputs`` and ``outputs`` by leaf name."""

    side: Side
    name: str
    class_name: str
    call: int
    inputs: RecordedValues
    outputs: RecordedValues

    @classmethod
    def of(cls, side: Side, record: CallRecord) -> RecordedCall:
        return cls(
            side=side,
            name=record.name,
            class_name=record.class_name,
            call=record.call,
            inputs=leaf_values(record.inputs),
            outputs=leaf_values(record.outputs),
        )

    def __repr__(self) -> str:
        return (
            f"<{self.side} {self.name or '(root)'} ({self.class_name}) call {self.call}: "
            f"inputs {self.inputs!r}, outputs {self.outputs!r}>"
        )


def first_tensor_name(values: RecordedValues) -> str | None:
    return next((name for name, value in values.items() if isinstance(value, torch.Tensor)), None)


def live_leaf(path: str, value: Any) -> Leaf:
    if isinstance(value, torch.Tensor):
        return Leaf(name=path, tensor=value.detach().to("cpu"))
    return Leaf(name=path, value_type=type(value).__name__, value_repr=repr(value)[:80])


def leaf_values(leaves: list[Leaf]) -> RecordedValues:
    return RecordedValues((leaf.name, leaf.tensor if leaf.tensor is not None else leaf.value_repr) for leaf in leaves)


@dataclass
class TensorDiff:
    """A live tensor against a recorded one; prints as one line (``p ctx.diff(x)``)."""

    label: str
    difference: TensorDifference
    tolerance: Tolerance
    side: Side

    @property
    def max_abs(self) -> float:
        return self.difference.max_abs

    @property
    def over_tolerance(self) -> int | None:
        return self.difference.out_of_tolerance(self.tolerance.atol, self.tolerance.rtol)

    @property
    def within_tolerance(self) -> bool:
        return self.difference.within(self.tolerance.atol, self.tolerance.rtol)

    def __repr__(self) -> str:
        return f"{self.label}: {describe_difference(self.difference, self.tolerance)}"

    __str__ = __repr__


@dataclass
class OutputDiff:
    """Each output leaf of a live result against the other side's recorded outputs."""

    lines: list[str]
    pairs: list[LeafPair]

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    __str__ = __repr__


def describe_difference(difference: TensorDifference, tolerance: Tolerance) -> str:
    """``max |Δ| 1.2e-01, 2980 of 3072 over atol 0.001, worst at (0, 5, 17): 0.12 (original) vs 0.45 (ported)``."""
    if not difference.shape_matches:
        original_shape = shape_text(difference.original_shape, as_list=True)
        ported_shape = shape_text(difference.ported_shape, as_list=True)
        return f"shapes differ: {original_shape} (original) vs {ported_shape} (ported)"
    if difference.from_statistics:
        return f"max |Δ| ≥ {format_difference(difference.max_abs)} (from min, max and mean: the other side kept statistics only)"
    over = difference.out_of_tolerance(tolerance.atol, tolerance.rtol)
    if over is None:
        within = "within" if difference.within(tolerance.atol, tolerance.rtol) else "over"
        return f"max |Δ| {format_difference(difference.max_abs)}, {within} {tolerance} (elements not counted: values not kept)"
    text = f"max |Δ| {format_difference(difference.max_abs)}, {over} of {difference.numel} over {tolerance}"
    if difference.nonfinite_mismatches:
        text += f", {difference.nonfinite_mismatches} NaN/Inf mismatches"
    if over and difference.worst_index is not None:
        text += (
            f", worst at {difference.worst_index}: {difference.worst_original:.6g} (original) "
            f"vs {difference.worst_ported:.6g} (ported)"
        )
    elif not over:
        text += " — within tolerance"
    if not difference.dtype_matches:
        text += f" [dtypes {difference.original_dtype} vs {difference.ported_dtype}]"
    return text


def describe_leaf_pairs(pairs: list[LeafPair], tolerance: Tolerance) -> list[str]:
    lines = []
    for pair in pairs:
        if pair.difference is not None:
            lines.append(f"{pair.name}: {describe_difference(pair.difference, tolerance)}")
            continue
        leaf = pair.original or pair.ported
        if leaf is None or not leaf.is_tensor:
            continue  # non-tensor values are not compared
        owner = "original" if pair.original is not None else "ported"
        lines.append(f"{leaf.describe()}: {owner} only, no counterpart, not compared")
    return lines


class DebugContext:
    """What ``ctx`` is at the ipdb prompt: this call as both sides recorded it, and diff helpers.

    - ``ctx.other.inputs['hidden_states']``, ``ctx.other.outputs['output']``: the other model's
      recorded tensors for the paired call; ``ctx.this``: this side's own recording;
      ``ctx.original`` / ``ctx.ported`` name them by side.
    - ``ctx.diff(tensor)``: a live tensor against the other side's input of the same parameter
      name (found by looking the tensor up among your variables), else of the same shape;
      ``ctx.diff(tensor, 'name')`` names the other side's leaf explicitly.
    - ``ctx.diff_output(result)``: a live result (tensor, tuple, dataclass …) against the other
      side's recorded outputs, leaf by leaf.
    """

    def __init__(self, comparison: Comparison, row: Row, side: Side, script_path: Path) -> None:
        record = pick(row, side)
        assert record is not None
        other_record = pick(row, other_side(side))
        self.comparison = comparison
        self.row = row
        self.side: Side = side
        self.other_side: Side = other_side(side)
        self.script_path = script_path
        self.tolerance = comparison.tolerance
        self.this = RecordedCall.of(side, record)
        self.other = None if other_record is None else RecordedCall.of(self.other_side, other_record)
        self.name = CONTEXT_NAME

    @property
    def original(self) -> RecordedCall | None:
        return self.this if self.side == "original" else self.other

    @property
    def ported(self) -> RecordedCall | None:
        return self.this if self.side == "ported" else self.other

    # -- helpers for the prompt ----------------------------------------------------------

    def diff(self, value: Any, name: str | None = None) -> TensorDiff:
        """``value`` (a live tensor) against the other side's recorded input of the same name or shape."""
        other = self._require_other()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"ctx.diff takes a tensor, got a {type(value).__name__}")
        if name is not None:
            leaf_name = name if name in other.inputs else None
            if leaf_name is None and name in other.outputs:
                label = f"tensor vs the {self.other_side}'s output {name}"
                return self._tensor_diff(value, label, other.outputs[name], f"{self.other_side} output {name}")
            if leaf_name is None:
                raise LookupError(f"the {self.other_side} call has no input {name!r}; its inputs: {other.inputs!r}")
        else:
            leaf_name = self._counterpart_input(value, sys._getframe(1).f_locals)
        recorded = other.inputs[leaf_name]
        local_names = self._names_of(value, sys._getframe(1).f_locals)
        label = f"{local_names[0] if local_names else 'tensor'} vs the {self.other_side}'s input {leaf_name}"
        return self._tensor_diff(value, label, recorded, f"{self.other_side} input {leaf_name}")

    def diff_output(self, value: Any) -> OutputDiff:
        """A live result against the other side's recorded outputs, leaf by leaf."""
        self._require_other()
        other_record = pick(self.row, self.other_side)
        assert other_record is not None
        live = [live_leaf(path, item) for path, item in flatten(value, "output")]
        if self.side == "ported":
            pairs = pair_leaves(other_record.outputs, live, pair_leftovers_by_order=True)
        else:
            pairs = pair_leaves(live, other_record.outputs, pair_leftovers_by_order=True)
        lines = [f"{self.side} result vs {self.other_side} recorded outputs:"]
        lines += ["  " + line for line in describe_leaf_pairs(pairs, self.tolerance)]
        return OutputDiff(lines=lines, pairs=pairs)

    def _require_other(self) -> RecordedCall:
        if self.other is None:
            raise LookupError(
                f"{self.this.name or '(root)'} has no paired call on the {self.other_side} side, so there is nothing "
                "to compare against (pair it with --map)"
            )
        return self.other

    def _tensor_diff(self, value: torch.Tensor, label: str, recorded: Any, what: str) -> TensorDiff:
        if not isinstance(recorded, torch.Tensor):
            raise LookupError(f"the {what} is not a tensor: {recorded}")
        live = value.detach().to("cpu")
        difference = measure(recorded, live) if self.side == "ported" else measure(live, recorded)
        return TensorDiff(label=label, difference=difference, tolerance=self.tolerance, side=self.side)

    def _names_of(self, value: Any, namespace: dict[str, Any]) -> list[str]:
        """The names ``value`` has where the user typed the call (pdb's namespace for its frame).

        Only that namespace is read: reading the stopped frame's ``f_locals`` again would refresh
        the dict pdb holds and so undo an assignment typed at the prompt.
        """
        return [name for name, item in namespace.items() if item is value]

    def _counterpart_input(self, value: torch.Tensor, namespace: dict[str, Any]) -> str:
        """The other side's input leaf for ``value``: by parameter name, then by shape."""
        other = self._require_other()
        names = self._names_of(value, namespace)
        for name in names:
            for pair in self.row.inputs:  # this side's leaf of that name, and what the comparison paired it with
                mine, theirs = (pair.ported, pair.original) if self.side == "ported" else (pair.original, pair.ported)
                if mine is not None and theirs is not None and mine.name == name and theirs.is_tensor:
                    return theirs.name
            if isinstance(other.inputs.get(name), torch.Tensor):
                return name
        same_shape = [
            leaf_name
            for leaf_name, recorded in other.inputs.items()
            if isinstance(recorded, torch.Tensor) and equivalent_shapes(tuple(recorded.shape), tuple(value.shape))
        ]
        if same_shape:
            return same_shape[0]
        raise LookupError(
            f"no {self.other_side} input has the name {names[0] if names else '?'!r} or the shape {shape_text(value.shape, as_list=True)}; "
            f"its inputs: {other.inputs!r}. Name one: ctx.diff(tensor, 'name'), or compare a result with ctx.diff_output(...)"
        )

    # -- what it prints ------------------------------------------------------------------

    def summary_lines(self) -> list[str]:
        row = self.row
        this, other = self.this, self.other
        status = f"status {self.comparison.status(row)}" + (" — the culprit (first divergence)" if row is self.comparison.culprit else "")
        lines = [
            f"tracetui: stopped in the {self.side} model, {self.script_path}",
            f"  module  {this.name or '(root)'} ({this.class_name}), call {this.call}   [row {row.index}, {status}]",
        ]
        if other is None:
            lines.append(f"  paired  nothing on the {self.other_side} side: no recorded values to compare with")
        else:
            lines.append(f"  paired  {self.other_side} {other.name or '(root)'} ({other.class_name}), call {other.call}")
            input_lines = describe_leaf_pairs(row.inputs, self.tolerance)
            output_lines = describe_leaf_pairs(row.outputs, self.tolerance)
            lines.append("  inputs" + ("" if input_lines else "  none compared"))
            lines += ["    " + line for line in input_lines]
            lines.append("  outputs" + ("" if output_lines else " none compared"))
            lines += ["    " + line for line in output_lines]
        return lines

    def usage_lines(self) -> list[str]:
        name = self.name
        example = first_tensor_name(self.this.inputs)
        example_input = first_tensor_name(self.other.inputs) if self.other else None
        example_output = first_tensor_name(self.other.outputs) if self.other else None
        commands = [(f"p {name}", "this summary")]
        if self.other is not None:
            commands += [
                (f"p {name}.diff({example or 'tensor'})", f"a tensor vs the {self.other_side}'s input of that name (or shape)"),
                (f"p {name}.diff_output(result)", f"a result vs the {self.other_side}'s recorded outputs"),
                (f"{name}.other.inputs[{example_input!r}]", f"the {self.other_side}'s recorded tensors; also .outputs[{example_output!r}]"),
            ]
        commands += [
            (f"{name}.this.inputs, .outputs", "this side's own recording"),
            ("n  s  c  q", "next line, step in, continue to the end of the run, stop the run"),
        ]
        width = max(len(command) for command, _ in commands) + 3
        lines = [f"At the prompt, `{name}` holds this call's recorded inputs and outputs, both sides:"]
        lines += [f"  {command.ljust(width)}{meaning}" for command, meaning in commands]
        return lines

    def banner(self) -> str:
        return "\n".join(self.summary_lines() + self.usage_lines())

    def __repr__(self) -> str:
        return self.banner()

    __str__ = __repr__


# -- the breakpoint ---------------------------------------------------------------------------


def forward_code(module: torch.nn.Module) -> CodeType:
    """The code object of the module's own forward: the instance's, unwrapped from decorators."""
    forward = module.forward
    function = getattr(forward, "__func__", forward)
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None:
        raise UsageError(
            f"cannot stop in the forward of {type(module).__name__}: it is not Python code ({function!r})."
        )
    return code


class ForwardBreakpoint:
    """Stop ipdb at the first statement of ``module``'s forward on its ``call``-th call (0-based).

    Use :meth:`installed` around the run. ``on_stop(frame)`` runs just before ipdb takes the frame
    (to print a banner, inject names); ``stopped``, ``quit`` and ``missed`` say what happened.
    """

    def __init__(self, module: torch.nn.Module, call: int, on_stop: Callable[[FrameType], None], context: int | None = None) -> None:
        self.module = module
        self.call = call
        self.on_stop = on_stop
        self.context = context
        self.code = forward_code(module)
        self.calls_seen = 0
        self.stopped = False
        self.missed = False  # the call ran but its forward code never started (forward replaced?)
        self.debugger: Any = None
        self._armed = False
        self._previous_trace: Any = None

    @property
    def quit(self) -> bool:
        return bool(self.debugger is not None and getattr(self.debugger, "quitting", False))

    @contextlib.contextmanager
    def installed(self) -> Iterator[ForwardBreakpoint]:
        import ipdb  # noqa: F401  (imported before the run, so the stop itself is quick)

        self._previous_trace = sys.gettrace()
        previous_excepthook = sys.excepthook
        previous_main = sys.modules.get("__main__")  # IPython's shell puts its own __main__ in place
        handles = []
        with restored_signal_handlers(), restored_terminal():
            try:
                handles.append(self.module.register_forward_pre_hook(self._before_call))
                handles.append(self.module.register_forward_hook(self._after_call, always_call=True))
                yield self
            finally:
                for handle in handles:
                    handle.remove()
                sys.settrace(self._previous_trace)
                self._armed = False
                if self.debugger is not None:
                    forget_frame_tracing(self.debugger)
                sys.excepthook = previous_excepthook
                if previous_main is not None:
                    sys.modules["__main__"] = previous_main

    def _before_call(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True  # ipdb steps over this frame
        call = self.calls_seen
        self.calls_seen += 1
        if call == self.call and not self.stopped:
            self._armed = True
            sys.settrace(self._on_call)

    def _after_call(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        __tracebackhide__ = True  # ipdb steps over this frame
        if self._armed:  # the wanted call ended and its forward code never started
            self._armed = False
            self.missed = True
            sys.settrace(self._previous_trace)

    def _on_call(self, frame: FrameType, event: str, argument: Any) -> Any:
        if event == "call" and self._armed and frame.f_code is self.code and self._is_our_call(frame):
            self._armed = False
            self.stopped = True
            sys.settrace(None)
            self.on_stop(frame)
            import ipdb

            ipdb.set_trace(frame, context=self.context)
            self.debugger = getattr(frame.f_trace, "__self__", None)
            return frame.f_trace
        if self._previous_trace is not None:  # keep an outer tracer (coverage) informed meanwhile
            return self._previous_trace(frame, event, argument)
        return None

    def _is_our_call(self, frame: FrameType) -> bool:
        """The forward frame's first argument is our module (not another instance of the class)."""
        code = frame.f_code
        if code.co_argcount == 0:
            return True
        first = frame.f_locals.get(code.co_varnames[0])
        return first is self.module or not isinstance(first, torch.nn.Module)


def forget_frame_tracing(debugger: Any) -> None:
    """bdb leaves its trace function on the frames it walked; take it off the ones still running."""
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if getattr(frame.f_trace, "__self__", None) is debugger:
            frame.f_trace = None
        frame = frame.f_back


@contextlib.contextmanager
def restored_signal_handlers() -> Iterator[None]:
    """pdb's ``c`` installs its own SIGINT handler; put back the one we had."""
    import pdb

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if in_main_thread else None
    previous_pdb_handler = getattr(pdb.Pdb, "_previous_sigint_handler", None)
    try:
        yield
    finally:
        if in_main_thread and previous is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGINT, previous)
        if hasattr(pdb.Pdb, "_previous_sigint_handler"):
            pdb.Pdb._previous_sigint_handler = previous_pdb_handler


@contextlib.contextmanager
def restored_terminal() -> Iterator[None]:
    """Whatever the prompt did to the terminal (raw mode, no echo), leave it as it was."""
    settings = None
    file_descriptor = -1
    try:
        import termios

        file_descriptor = sys.stdin.fileno()
        if sys.stdin.isatty():
            settings = termios.tcgetattr(file_descriptor)
    except (ImportError, OSError, ValueError, AttributeError):
        settings = None
    try:
        yield
    finally:
        if settings is not None:
            import termios

            with contextlib.suppress(OSError, ValueError, termios.error):
                termios.tcsetattr(file_descriptor, termios.TCSADRAIN, settings)


@contextlib.contextmanager
def injected_builtin(name: str, value: Any) -> Iterator[None]:
    """``name`` visible everywhere (pdb evaluates in the frame's locals + globals + builtins), then gone."""
    missing = object()
    previous = getattr(builtins, name, missing)
    setattr(builtins, name, value)
    try:
        yield
    finally:
        if previous is missing:
            with contextlib.suppress(AttributeError):
                delattr(builtins, name)
        else:
            setattr(builtins, name, previous)


def context_name_for(frame: FrameType) -> str:
    """``ctx`` unless the forward itself has a local or global of that name (autograd code does)."""
    code = frame.f_code
    if CONTEXT_NAME in code.co_varnames or CONTEXT_NAME in code.co_cellvars or CONTEXT_NAME in frame.f_globals:
        return FALLBACK_CONTEXT_NAME
    return CONTEXT_NAME


# -- choosing what to debug --------------------------------------------------------------------


def script_path_for(comparison: Comparison, side: Side, script_path: str | Path | None = None) -> Path:
    """The model script to re-run for ``side``: the one given, else the one the trace was recorded from."""
    path = Path(script_path) if script_path is not None else Path(pick(comparison, side).source)
    return require_script(path, side)


def require_script(path: str | Path, side: Side) -> Path:
    path = Path(path)
    if path.suffix != ".py":
        raise UsageError(
            f"{path}: the {side} side is a trace file; the debugger re-runs the model, so it needs the {side} model "
            "script (.py). Pass the script instead of the trace, or choose the other side with --side."
        )
    if not path.exists():
        raise UsageError(f"{path}: no such script; the debugger re-runs the {side} model script, so it must exist.")
    return path


def parse_break_at(text: str) -> tuple[str, int]:
    """``QUALNAME[:CALL]`` → (name, call); ``(root)`` is the root module, whose name is ``""``."""
    name, separator, call_text = text.rpartition(":")
    if not separator:
        name, call = text, 0
    elif call_text.isdigit():
        call = int(call_text)
    else:
        raise UsageError(
            f"--break-at {text!r}: expected QUALNAME[:CALL], CALL being the 0-based call index (e.g. model.layers.0.mlp:2)."
        )
    name = name.strip()
    return ("" if name in ROOT_NAMES else name), call


def find_row(
    comparison: Comparison,
    side: Side,
    name: str,
    call: int = 0,
    model_names: Callable[[], Iterable[str]] | None = None,
) -> Row:
    """The row of ``side``'s call ``call`` of module ``name``; a clear :class:`UsageError` otherwise.

    ``model_names`` lists the modules of ``side``'s model (built fresh): it tells a module that
    exists but never ran from a name that does not exist at all.
    """
    trace = pick(comparison, side)
    calls = [record for record in trace.records if record.kind == "module" and record.name == name]
    shown = name or "(root)"
    if calls:
        match = next((record for record in calls if record.call == call), None)
        if match is None:
            ran = "once (call 0)" if len(calls) == 1 else f"{len(calls)} times (calls 0 to {len(calls) - 1})"
            raise UsageError(
                f"{side} module {shown} ran {ran}; there is no call {call}. Calls are counted from 0: --break-at {shown}:N."
            )
        row = comparison.row_of(side, match.index)
        assert row is not None, "every record has a row"
        return row
    names_in_model = list(model_names()) if model_names is not None else []
    if name in names_in_model:
        raise UsageError(
            f"module {shown} exists in the {side} model ({trace.source}) but never ran: its forward was not called "
            "during the forward pass, so there is no call to stop in."
        )
    recorded_names = dict.fromkeys(record.name for record in trace.records if record.kind == "module")
    candidates = list(dict.fromkeys([*names_in_model, *recorded_names]))
    close = difflib.get_close_matches(name, candidates, n=CLOSE_NAMES, cutoff=0.5)
    message = f"no module named {name!r} in the {side} model ({trace.source})."
    other = other_side(side)
    other_records = [record for record in pick(comparison, other).records if record.kind == "module" and record.name == name]
    if other_records:
        row = comparison.row_of(other, other_records[0].index)
        counterpart = pick(row, side) if row is not None else None
        message += f" It is a module of the {other} model: add --side {other}"
        message += f" (its {side} counterpart is {counterpart.name})." if counterpart is not None else "."
    if close:
        message += f" Closest names: {', '.join(name or '(root)' for name in close)}."
    else:
        message += f" Its modules include: {first_few(recorded_names, CLOSE_NAMES)}."
    raise UsageError(message + " Names are as model.named_modules() yields them.")


# -- running -----------------------------------------------------------------------------------


def debug_call(
    comparison: Comparison,
    row: Row,
    side: Side = "ported",
    script_path: str | Path | None = None,
    *,
    device: str = "cpu",
    context: int | None = None,
) -> DebugOutcome:
    """Re-run ``side``'s script and stop ipdb at the first line of ``row``'s module's forward.

    Runs in the current terminal (an interface calls it inside ``app.suspend()``). The script is
    ``script_path``, or the ``.py`` the side's trace was recorded from; a trace file cannot be
    re-run (:class:`UsageError`). Returns how the session ended; script errors raise
    :class:`ScriptError` as everywhere else.
    """
    record = pick(row, side)
    if record is None:
        raise UsageError(f"row {row.index} ({row.label}) has no {side} call to stop in; choose the other side.")
    if record.kind != "module":
        raise UsageError(f"{record.display_name} is a tap, not a module call; break in the module around it instead.")
    path = script_path_for(comparison, side, script_path)
    script = load_script(path, seed=pick(comparison, side).seed, device=device)
    return debug_script_call(comparison, row, side, script, context=context)


def debug_script_call(
    comparison: Comparison, row: Row, side: Side, script: ModelScript, *, context: int | None = None
) -> DebugOutcome:
    """:func:`debug_call` on an already built script (the command line builds it once)."""
    record = pick(row, side)
    assert record is not None
    module = dict(script.model.named_modules()).get(record.name)
    if module is None:
        raise ScriptError(
            f"{script.path}: the model built now has no module {record.display_name}, which the recording had. "
            "Did the script change since the comparison? Compare again."
        )
    debug_context = DebugContext(comparison, row, side, script.path)
    names: contextlib.ExitStack = contextlib.ExitStack()

    def on_stop(frame: FrameType) -> None:
        debug_context.name = context_name_for(frame)
        names.enter_context(injected_builtin(debug_context.name, debug_context))
        print(debug_context.banner(), flush=True)

    breakpoint = ForwardBreakpoint(module, record.call, on_stop, context=context)
    with names, breakpoint.installed():
        try:
            script.run()
        except BdbQuit:
            pass
        except ScriptError as error:
            if not isinstance(error.__cause__, BdbQuit):  # run() wraps what the forward raised
                raise
    if not breakpoint.stopped:
        return "not_reached"
    return "quit" if breakpoint.quit else "continued"


def describe_outcome(outcome: DebugOutcome, row: Row, side: Side) -> str:
    record = pick(row, side)
    name = record.display_name if record is not None else row.label
    call = record.call if record is not None else row.call
    if outcome == "continued":
        return "debugger: the run finished."
    if outcome == "quit":
        return "debugger: quit; the run was stopped."
    return (
        f"debugger: the re-run ended without reaching call {call} of {side} {name}: the model took another path "
        "this time (is it deterministic?), or its forward was replaced."
    )

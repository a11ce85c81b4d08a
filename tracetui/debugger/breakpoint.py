"""The stop: ipdb at the first statement of one module call's own ``forward``, everything undone after."""

from __future__ import annotations

import builtins
import contextlib
import inspect
import signal
import sys
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

import torch

from tracetui.debugger.context import CONTEXT_NAME, FALLBACK_CONTEXT_NAME
from tracetui.errors import UsageError
from tracetui.interruption import restored_signal_handlers

if TYPE_CHECKING:
    from tracetui.frameworks import ForeignScript

# -- the breakpoint ---------------------------------------------------------------------------


def forward_code(module: torch.nn.Module) -> CodeType:
    """The code object of the module's own forward: the instance's, unwrapped from decorators."""
    forward = module.forward
    function = getattr(forward, "__func__", forward)
    function = inspect.unwrap(function)
    code = getattr(function, "__code__", None)
    if code is None:
        raise UsageError(f"cannot stop in the forward of {type(module).__name__}: it is not Python code ({function!r}).")
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
        self.code: CodeType | None = forward_code(module)
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
        with sigint_handler_restored(), restored_terminal():
            try:
                with self._watching():
                    yield self
            finally:
                sys.settrace(self._previous_trace)
                self._armed = False
                if self.debugger is not None:
                    forget_frame_tracing(self.debugger)
                sys.excepthook = previous_excepthook
                if previous_main is not None:
                    sys.modules["__main__"] = previous_main

    @contextlib.contextmanager
    def _watching(self) -> Iterator[None]:
        """Hooks on the module that arm the stop at the wanted call, removed afterwards."""
        handles = []
        try:
            handles.append(self.module.register_forward_pre_hook(self._before_call))
            handles.append(self.module.register_forward_hook(self._after_call, always_call=True))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _before_call(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        __tracebackhide__ = True  # ipdb steps over this frame
        call = self.calls_seen
        self.calls_seen += 1
        if call == self.call and not self.stopped:
            self._arm()

    def _after_call(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        __tracebackhide__ = True  # ipdb steps over this frame
        if self._armed:  # the wanted call ended and its forward code never started
            self._armed = False
            self.missed = True
            sys.settrace(self._previous_trace)

    def _arm(self) -> None:
        self._armed = True
        sys.settrace(self._on_call)

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


class ForeignCallBreakpoint(ForwardBreakpoint):
    """Stop ipdb at the first statement of a Flax module's ``__call__`` / a Keras layer's ``call``
    on the ``call``-th call (0-based) of the module named ``name``, during a fresh un-jitted run.

    The module is known only when it is called (linen binds a fresh instance each run), so the
    run is watched through the framework's adapter (tracetui.frameworks) instead of torch hooks.
    """

    def __init__(
        self, script: ForeignScript, name: str, call: int, on_stop: Callable[[FrameType], None], context: int | None = None
    ) -> None:
        self.script = script
        self.name = name
        self.call = call
        self.on_stop = on_stop
        self.context = context
        self.module: Any = None
        self.code: CodeType | None = None
        self.calls_seen = 0
        self.stopped = False
        self.missed = False
        self.debugger = None
        self._armed = False
        self._previous_trace = None
        self._open_names: list[str] = []

    @contextlib.contextmanager
    def _watching(self) -> Iterator[None]:
        with self.script.watched(self._watch):
            yield

    def _watch(
        self,
        module: object,
        name: str | None,
        local_name: str,
        signature: inspect.Signature | None,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        __tracebackhide__ = True  # ipdb steps over this frame
        from tracetui.frameworks.foreign import adapter, joined

        if name is None:
            name = joined(self._open_names[-1] if self._open_names else "", local_name)
        wanted = False
        if name == self.name and not (self._open_names and self._open_names[-1] == name):
            wanted = self.calls_seen == self.call and not self.stopped
            self.calls_seen += 1
        if wanted:
            self.module = module
            self.code = function_code(adapter(self.script.framework).module_function(module), type(module).__name__)
            self._arm()
        self._open_names.append(name)
        try:
            return call(*args, **kwargs)
        finally:
            self._open_names.pop()
            if wanted and self._armed:  # the wanted call ended and its code never started
                self._armed = False
                self.missed = True
                sys.settrace(self._previous_trace)

    def _is_our_call(self, frame: FrameType) -> bool:
        code = frame.f_code
        return code.co_argcount == 0 or frame.f_locals.get(code.co_varnames[0]) is self.module


def function_code(function: Callable[..., Any], class_name: str) -> CodeType:
    """The code object of a method, unwrapped from decorators (linen wraps every module method)."""
    code = getattr(inspect.unwrap(function), "__code__", None)
    if code is None:
        raise UsageError(f"cannot stop in {class_name}: its call is not Python code ({function!r}).")
    return code


def forget_frame_tracing(debugger: Any) -> None:
    """bdb leaves its trace function on the frames it walked; take it off the ones still running."""
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if getattr(frame.f_trace, "__self__", None) is debugger:
            frame.f_trace = None
        frame = frame.f_back


@contextlib.contextmanager
def sigint_handler_restored() -> Iterator[None]:
    """pdb's ``c`` installs its own SIGINT handler; put back the one we had, and pdb's note of it."""
    import pdb

    previous_pdb_handler = getattr(pdb.Pdb, "_previous_sigint_handler", None)
    try:
        with restored_signal_handlers([signal.SIGINT]):
            yield
    finally:
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

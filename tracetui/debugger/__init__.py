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

from tracetui.debugger.breakpoint import ForwardBreakpoint, context_name_for
from tracetui.debugger.context import DebugContext
from tracetui.debugger.session import (
    DebugOutcome,
    built_for_debugging,
    check_module_name,
    debug_call,
    debug_script_call,
    describe_outcome,
    find_row,
    parse_break_at,
    require_script,
)

__all__ = [
    "DebugContext",
    "DebugOutcome",
    "built_for_debugging",
    "check_module_name",
    "ForwardBreakpoint",
    "context_name_for",
    "debug_call",
    "debug_script_call",
    "describe_outcome",
    "find_row",
    "parse_break_at",
    "require_script",
]

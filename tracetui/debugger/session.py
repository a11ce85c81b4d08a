"""Which call to debug (the culprit, or one named on the command line) and the fresh run that stops in it."""

from __future__ import annotations

import contextlib
import difflib
from bdb import BdbQuit
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Literal

from tracetui.compare import Comparison
from tracetui.debugger.breakpoint import ForeignCallBreakpoint, ForwardBreakpoint, context_name_for, injected_builtin
from tracetui.debugger.context import DebugContext
from tracetui.errors import ScriptError, UsageError
from tracetui.frameworks import ForeignScript
from tracetui.rows import Row
from tracetui.safe_text import printable
from tracetui.script import ModelScript, load_script
from tracetui.sides import Side, other_side, pick
from tracetui.text import first_few
from tracetui.trace import Trace

if TYPE_CHECKING:
    from tracetui.distributed.debug import FollowerRanks

# What happened to a debug run: stopped and continued to the end, stopped and quit with q, or
# the run ended without reaching the call (the model took another path this time).
DebugOutcome = Literal["continued", "quit", "not_reached"]

ROOT_NAMES = ("", "(root)")
CLOSE_NAMES = 6
# How the user picks the other side, named in messages: the command line's option; the
# interface passes its key instead.
SWITCH_SIDE_OPTION = "--side"


# -- choosing what to debug --------------------------------------------------------------------


def script_path_for(
    comparison: Comparison, side: Side, script_path: str | Path | None = None, switch_side: str = SWITCH_SIDE_OPTION
) -> Path:
    """The model script to re-run for ``side``: the one given, else the one the trace was recorded from."""
    path = Path(script_path) if script_path is not None else Path(pick(comparison, side).source)
    return require_script(path, side, switch_side)


def require_script(path: str | Path, side: Side, switch_side: str = SWITCH_SIDE_OPTION) -> Path:
    """``path`` as a script to re-run; ``switch_side`` names how to pick the other side (``--side``, or a key)."""
    path = Path(path)
    if path.suffix != ".py":
        raise UsageError(
            f"{path}: the {side} side is a trace file; the debugger re-runs the model, so it needs the {side} model "
            f"script (.py). Pass the script instead of the trace, or choose the other side with {switch_side}."
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
        raise UsageError(f"--break-at {text!r}: expected QUALNAME[:CALL], CALL being the 0-based call index (e.g. model.layers.0.mlp:2).")
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
            raise UsageError(f"{side} module {shown} ran {ran}; there is no call {call}. Calls are counted from 0: --break-at {shown}:N.")
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
    other = other_side(side)
    other_records = [record for record in pick(comparison, other).records if record.kind == "module" and record.name == name]
    other_side_hint = ""
    if other_records:
        row = comparison.row_of(other, other_records[0].index)
        counterpart = pick(row, side) if row is not None else None
        other_side_hint = f" It is a module of the {other} model: add --side {other}"
        other_side_hint += f" (its {side} counterpart is {counterpart.name})." if counterpart is not None else "."
    raise UsageError(unknown_module_message(name, side, trace.source, candidates, other_side_hint))


def unknown_module_message(name: str, side: Side, source: str | Path, candidates: list[str], other_side_hint: str = "") -> str:
    """``no module named 'x' in the ported model (port.py).`` with the closest names, or some names.

    The names come from the user's model: each is kept to one line (a newline shows as ``\\n``)."""
    message = f"no module named {name!r} in the {side} model ({source})." + other_side_hint
    close = difflib.get_close_matches(name, candidates, n=CLOSE_NAMES, cutoff=0.5)
    if close:
        message += f" Closest names: {', '.join(map(shown_name, close))}."
    else:
        message += f" Its modules include: {first_few(map(shown_name, candidates), CLOSE_NAMES)}."
    return message + " Names are as model.named_modules() yields them."


def shown_name(name: str) -> str:
    return printable(name) or "(root)"


def check_module_name(name: str, side: Side, script: ModelScript, other_names: Callable[[], Iterable[str]] | None = None) -> None:
    """A --break-at name checked against ``side``'s model as soon as it is built, before any
    recording: a typo costs seconds, not the whole comparison. Whether the call index exists
    is known only after the run (:func:`find_row`). ``other_names`` (the other model's, asked
    only when the name is unknown) tells a name of the wrong side."""
    names = [module_name for module_name, _ in script.model.named_modules()]
    if name in names:
        return
    other_side_hint = ""
    if other_names is not None and name in set(other_names()):
        other = other_side(side)
        other_side_hint = f" It is a module of the {other} model: add --side {other}, or name its {side} counterpart."
    raise UsageError(unknown_module_message(name, side, script.label, names, other_side_hint))


# -- running -----------------------------------------------------------------------------------


def debug_call(
    comparison: Comparison,
    row: Row,
    side: Side = "ported",
    script_path: str | Path | None = None,
    *,
    device: str = "cpu",
    context: int | None = None,
    switch_side: str = SWITCH_SIDE_OPTION,
) -> DebugOutcome:
    """Re-run ``side``'s script and stop ipdb at the first line of ``row``'s module's forward.

    Runs in the current terminal (an interface calls it inside ``app.suspend()``). The script is
    ``script_path``, or the ``.py`` the side's trace was recorded from; a trace file cannot be
    re-run (:class:`UsageError`; ``switch_side`` names, in messages, how to pick the other side).
    Returns how the session ended; script errors raise :class:`ScriptError` as everywhere else.
    """
    record = pick(row, side)
    if record is None:
        raise UsageError(f"row #{row.index} ({row.label}) has no {side} call to stop in; choose the other side with {switch_side}.")
    if record.kind != "module":
        raise UsageError(f"{record.display_name} is a tap, not a module call; break in the module around it instead.")
    path = script_path_for(comparison, side, script_path, switch_side)
    with built_for_debugging(comparison, side, path, seed=pick(comparison, side).seed, device=device) as run:
        outcome = debug_script_call(comparison, row, side, run.script, context=context)
        run.ended(outcome)
        return outcome


def ranks_of(trace: Trace) -> int:
    """How many processes the trace's model ran on (``--nproc``); 1 for a model on one process."""
    return trace.distributed.world_size if trace.distributed is not None else 1


@dataclass
class DebugRun:
    """A script built for a debug run; for a port on N processes, the other ranks running alongside."""

    script: ModelScript | ForeignScript
    ranks: FollowerRanks | None = None

    def ended(self, outcome: DebugOutcome) -> None:
        """A quit stopped this rank's forward part-way: the other ranks wait for it in vain."""
        if self.ranks is not None and outcome == "quit":
            self.ranks.left_waiting = True


@contextlib.contextmanager
def built_for_debugging(comparison: Comparison, side: Side, path: str | Path, *, seed: int, device: str) -> Iterator[DebugRun]:
    """``side``'s script built fresh for a debug run. A port recorded on N processes (``--nproc``)
    is built and run with this process as rank 0 of N, the other ranks alongside it
    (tracetui.distributed.debug): ipdb stops here, in the terminal, with the comparison at hand."""
    world_size = ranks_of(pick(comparison, side))
    if world_size == 1:
        yield DebugRun(load_script(path, seed=seed, device=device))
        return
    from tracetui.distributed.debug import joined_as_rank_zero

    with joined_as_rank_zero(path, world_size, seed=seed, device=device) as ranks:
        yield DebugRun(load_script(path, seed=seed, device=device), ranks)


def debug_script_call(
    comparison: Comparison, row: Row, side: Side, script: ModelScript | ForeignScript, *, context: int | None = None
) -> DebugOutcome:
    """:func:`debug_call` on an already built script (the command line builds it once).

    A Flax or Keras original stops in its module's ``__call__`` / layer's ``call``, found by name
    while the run goes (tracetui.frameworks); ``ctx`` holds the port's tensors as for PyTorch."""
    record = pick(row, side)
    assert record is not None
    debug_context = DebugContext(comparison, row, side, Path(script.label), model=script.model if isinstance(script, ModelScript) else None)
    names: contextlib.ExitStack = contextlib.ExitStack()

    def on_stop(frame: FrameType) -> None:
        debug_context.name = context_name_for(frame)
        names.enter_context(injected_builtin(debug_context.name, debug_context))
        print(debug_context.banner(), flush=True)  # the banner passes what it quotes through printable()

    breakpoint: ForwardBreakpoint
    if isinstance(script, ModelScript):
        module = dict(script.model.named_modules()).get(record.name)
        if module is None:
            raise ScriptError(
                f"{script.label}: the model built now has no module {record.display_name}, which the recording had. "
                "Did the script change since the comparison? Compare again."
            )
        breakpoint = ForwardBreakpoint(module, record.call, on_stop, context=context)
    else:
        breakpoint = ForeignCallBreakpoint(script, record.name, record.call, on_stop, context=context)
    with names, breakpoint.installed():
        try:
            script.run()
        except BdbQuit:
            pass
        except ScriptError as error:
            if not isinstance(error.__cause__, BdbQuit):  # run() wraps what the forward raised
                raise
        finally:
            debug_context.undo_fixes()  # ctx.try_fix patches hold for this run only
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

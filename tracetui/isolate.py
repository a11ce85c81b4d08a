"""Judge every ported module on its own: one more run of the port, fed the original's values.

In this run every paired module receives the original's recorded inputs in place of its own,
and hands on the original's recorded outputs in place of what it computed — after what it
computed has been measured against them. A module's figure then reflects its own code only:
its inputs are right, and so is everything its submodules give it back. So every bug of a port
shows in one run, and a module that merely contains a bug, or runs after one, is not blamed.

Before a module's inputs are replaced they are measured too. A difference there was made by
code that no paired module owns: a module that exists on one side only (a rotary embedding
that computes the cos/sin tables the original computes inline), or the enclosing forward's own
lines between two submodules. The run notes which call made each such input.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch

from tracetui.classify import Tolerance
from tracetui.errors import own_hook
from tracetui.flatten import flatten, name_arguments, replace_arguments, replace_leaves, tensor_leaves
from tracetui.layouts import Layout
from tracetui.memory import garbage_collection_paused, release_free_memory
from tracetui.numeric import dense, equivalent_shapes
from tracetui.open_calls import OpenCalls
from tracetui.pairing.alignment import Alignment
from tracetui.rows import LayoutScope, LeafPair, layout_scopes, measure_inputs, measure_outputs
from tracetui.script import ModelScript
from tracetui.text import shape_text
from tracetui.trace import CallRecord, Leaf, Trace

TRIM_EVERY_ELEMENTS = 32 * 1024 * 1024  # elements measured between returns of freed memory


class Maker(NamedTuple):
    """What made an input that differed before it was fed."""

    # "returned": a call returned it (a module the original has no counterpart of, say);
    # "inline": the enclosing forward's own lines made it; "reordered": those lines made it
    # from a call's outputs that hold the original's values in another layout.
    how: Literal["returned", "inline", "reordered"]
    record_index: int | None  # the ported record index of that call ("returned", "reordered")


@dataclass
class Isolated:
    """What the fed run measured of one paired call."""

    # The call's inputs as the port made them (from fed values upstream) against the original's.
    fed_inputs: list[LeafPair]
    # What the call returned, computed from the original's inputs, against the original's outputs.
    outputs: list[LeafPair]
    # Ported input tensors with no counterpart to feed them from: the call ran on the port's own
    # values there (an extra rope table, say), and is judged all the same.
    unfed_inputs: list[str] = field(default_factory=list)
    # Why the call cannot be judged on its own, if it cannot: an input whose counterpart has another
    # shape or kind (or kept statistics only), or a submodule whose outputs could not be replaced
    # by the original's — its outputs then carry a difference that is not its own.
    not_judged: list[str] = field(default_factory=list)
    # For each input that differed before it was fed: what made it.
    input_makers: dict[str, Maker] = field(default_factory=dict)
    enclosing: int | None = None  # the ported record index of the call this one ran inside
    raised: bool = False  # fed the original's inputs, it raised (an exception model code caught)


# The fed run's findings, by (original record index, ported record index).
Isolation = dict[tuple[int, int], Isolated]

# When to run the port once more, fed the original's values: "if diverged" skips it for a port whose
# every output agrees (no culprit to name) — where the tolerance cannot change afterwards (headless).
IsolateWhen = Literal["always", "if diverged", "never"]


def fitted(original: torch.Tensor, live: torch.Tensor, layout: Layout | None = None) -> torch.Tensor | None:
    """The original's tensor in the live tensor's shape, dtype and device — a fresh copy, so that
    an in-place operation of the port cannot reach the recording — or None when it cannot stand
    in for it (another number of elements, or another kind: a float additive mask is no bool mask).
    ``layout``: the transform into the port's layout it was compared after (:mod:`tracetui.layouts`)."""
    if layout is not None:
        original = layout.apply(original)
    if original.is_floating_point() != live.is_floating_point() or (original.dtype == torch.bool) != (live.dtype == torch.bool):
        return None
    if live.layout != torch.strided:  # a sparse argument: the module expects that storage, not a dense stand-in
        return None
    if original.shape != live.shape:
        if equivalent_shapes(tuple(original.shape), tuple(live.shape)):
            original = original.reshape(live.shape)
        else:
            try:
                original = original.expand(live.shape)
            except RuntimeError:
                return None
    return original.to(device=live.device, dtype=live.dtype, copy=True)


def live_leaves(named_values: list[tuple[str, Any]]) -> list[Leaf]:
    """The tensors of a call's named arguments or output, as leaves holding the live tensors."""
    return [Leaf(path, tensor=tensor) for path, tensor in tensor_leaves(named_values)]


class FedRun:
    """The hooks of the fed run. Use :meth:`attached` around one forward pass of the port."""

    def __init__(self, model: torch.nn.Module, alignment: Alignment, tolerance: Tolerance) -> None:
        self.model = model
        self.tolerance = tolerance
        ported = alignment.ported
        self.source = f"{ported.source} (the run fed the original's values)"
        self.ported_records = ported.records
        self.record_by_call = {(record.name, record.call): record for record in ported.records if record.kind == "module"}
        self.counterpart: dict[int, CallRecord] = {
            pair.ported: alignment.original.records[pair.original]
            for pair in alignment.paired()
            if pair.ported is not None and pair.original is not None
        }
        self.inferred = {pair.ported for pair in alignment.paired() if pair.method == "inferred"}
        self.layout_scope = layout_scopes(alignment)
        self.isolation: Isolation = {}
        self._names: dict[int, str] = {}
        self._call_counts: Counter[str] = Counter()
        # Calls that have started and not returned: (module, ported record index or None).
        self._open_calls: OpenCalls[tuple[torch.nn.Module, int | None]] = OpenCalls()
        self._pending: dict[int, Isolated] = {}  # by ported record index, until the call returns
        # id(tensor) → the tensor, the ported record index of the call that returned it, and
        # whether it is the original's value fed in its place (which differs from the original
        # by the cast to the port's dtype at most: no call's doing).
        self._makers: dict[int, tuple[weakref.ref[torch.Tensor], int, bool]] = {}
        # Calls whose outputs hold the original's values in another order, by the call they ran in.
        self._reordered_in: dict[int | None, list[int]] = {}
        self._measured_since_trim = 0

    @contextmanager
    def attached(self) -> Iterator[FedRun]:
        handles = []
        before_call = own_hook(self._before_call, self.source, self._names)
        after_call = own_hook(self._after_call, self.source, self._names)
        try:
            for name, module in self.model.named_modules():
                self._names[id(module)] = name
                handles.append(module.register_forward_pre_hook(before_call, with_kwargs=True))
                handles.append(module.register_forward_hook(after_call, with_kwargs=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    # -- hooks -------------------------------------------------------------------------------

    def _before_call(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        with self._open_calls.lock:
            return self._feed(module, args, kwargs)

    def _feed(
        self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        name = self._names[id(module)]
        record = self.record_by_call.get((name, self._call_counts[name]))
        self._call_counts[name] += 1
        enclosing = self._enclosing_index()
        index = None if record is None else record.index
        self._open_calls.push((module, index))
        original = None if index is None else self.counterpart.get(index)
        if index is None or original is None:
            return None
        fed_inputs = measure_inputs(original.inputs, live_leaves(name_arguments(module, args, kwargs)), scope=self._scope(original))
        isolated = Isolated(fed_inputs=fed_inputs, outputs=[], enclosing=enclosing)
        replacements, unfittable = self._replacements(fed_inputs, isolated.unfed_inputs)
        isolated.not_judged += [f"input {name} cannot be fed the original's" for name in unfittable]
        for pair in fed_inputs:
            if pair.ported is not None and pair.difference is not None and pair.difference.max_abs != 0.0:
                maker = self._maker_of(pair, enclosing)
                if maker is not None:
                    isolated.input_makers[pair.ported.name] = maker
        self._let_go(fed_inputs)
        self._pending[index] = isolated
        return replace_arguments(module, args, kwargs, replacements) if replacements else None

    def _after_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        with self._open_calls.lock:
            return self._hand_on(module, output)

    def _hand_on(self, module: torch.nn.Module, output: Any) -> Any:
        index = None
        raised_inside: list[str] = []
        while self._open_calls.top() is not None:  # calls whose forward raised (and were caught) never got here
            open_module, index = self._open_calls.pop()
            if open_module is module:
                break
            if index is not None and self._note_raised(index):
                raised_inside.append(self._label(index))
        if index is None:
            return None
        isolated = self._pending.pop(index, None)
        original = self.counterpart.get(index)
        if isolated is None or original is None:
            self._note_makers(output, index)
            return None
        if raised_inside:
            isolated.not_judged.append(f"{', '.join(raised_inside)} raised inside it where the original's returned")
        isolated.outputs = measure_outputs(original.outputs, live_leaves([("output", output)]), scope=self._scope(original))
        reordered = [pair.ported.name for pair in isolated.outputs if pair.ported is not None and self._reordered(pair)]
        if reordered:
            # Not comparable, and what follows in the port expects its own layout, so it is
            # handed on as it is.
            isolated.not_judged.append(f"its outputs ({', '.join(reordered)}) hold the original's values in another order")
            if index not in self.inferred:
                # Paired by name or map: its layout is the one to doubt if the code after it goes wrong.
                self._reordered_in.setdefault(self._enclosing_index(), []).append(index)
            # Paired by inference, which upstream differences kept from seeing the layout (as for
            # RoPE-permuted projections): likely not its counterpart at all, so the code after it
            # answers for what it makes.
        comparable = [pair for pair in isolated.outputs if pair.ported is None or pair.ported.name not in reordered]
        replacements, unfittable = self._replacements(comparable, [])
        if unfittable:
            self._spoil_enclosing(f"{', '.join(unfittable)} of {self._label(index)} cannot be replaced by the original's")
        self._let_go(isolated.outputs)
        self.isolation[(original.index, index)] = isolated
        handed_on = replace_leaves(output, "output", replacements) if replacements else output
        self._note_makers(handed_on, index, fed={id(tensor) for tensor in replacements.values()})
        return None if handed_on is output else handed_on

    # -- helpers -----------------------------------------------------------------------------

    def _scope(self, original: CallRecord) -> LayoutScope:
        """The map's layout rules for the original call's tensors (compared, and fed, in the port's layout)."""
        return self.layout_scope(original.name)

    def _replacements(self, pairs: list[LeafPair], no_counterpart: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The original's tensor for each live tensor leaf that has one that fits, and the names of
        those whose counterpart does not fit (another shape or kind, or no values kept). Leaves
        with no counterpart at all go to ``no_counterpart``."""
        replacements = {}
        unfittable = []
        for pair in pairs:
            if pair.ported is None or pair.ported.tensor is None:
                continue
            if pair.original is None or not pair.original.is_tensor:
                no_counterpart.append(pair.ported.name)
                continue
            layout = None if pair.difference is None else pair.difference.layout_transform
            value = None if pair.original.tensor is None else fitted(pair.original.tensor, pair.ported.tensor, layout)
            if value is None:
                unfittable.append(pair.ported.name)
            else:
                replacements[pair.ported.name] = value
        return replacements, unfittable

    def _maker_of(self, pair: LeafPair, enclosing: int | None) -> Maker | None:
        """What made an input that differs before it is fed (the call that returned it, the
        enclosing forward's lines, or a layout); None when no call is to blame."""
        assert pair.ported is not None and pair.ported.tensor is not None and pair.original is not None
        entry = self._makers.get(id(pair.ported.tensor))
        if entry is not None and entry[0]() is pair.ported.tensor:
            index, fed = entry[1], entry[2]
            if not fed:
                return Maker("returned", index)
            if pair.ported.dtype != pair.original.dtype:
                return None  # the original's value fed to an earlier call: it differs by the cast alone
            # The original's value in the original's dtype, and still not this input's: the lines
            # between that call and this one did not do what the original's do.
        if enclosing is not None and enclosing in self._pending and self._pending[enclosing].not_judged:
            return None  # the enclosing lines computed from values that are not the original's: no finding
        if self._reordered_in.get(enclosing):
            # Made from a call's outputs in another layout, the rest being fed: that layout.
            return Maker("reordered", self._reordered_in[enclosing][-1])
        return Maker("inline", None)

    def _reordered(self, pair: LeafPair) -> bool:
        """The live output holds the original's values in another order (and differs in place)."""
        original = None if pair.original is None else pair.original.tensor
        live = None if pair.ported is None else pair.ported.tensor
        difference = pair.difference
        if original is None or live is None or difference is None or difference.within(self.tolerance.atol, self.tolerance.rtol):
            return False
        if original.numel() != live.numel() or not original.numel() or not (original.is_floating_point() and live.is_floating_point()):
            return False
        original_sorted = dense(original.detach()).flatten().to("cpu", torch.float64).sort().values
        live_sorted = dense(live.detach()).flatten().to("cpu", torch.float64).sort().values
        return bool((original_sorted - live_sorted).abs().max() <= self.tolerance.atol)

    def _spoil_enclosing(self, why: str) -> None:
        """The nearest open paired call computes with values that are not the original's: it
        cannot be judged on its own (a call between them exists on one side only, and hands
        everything on as it is)."""
        for _, index in self._open_calls.enclosing():
            if index is not None and index in self._pending:
                self._pending[index].not_judged.append(why)
                return

    def _note_raised(self, index: int) -> bool:
        """A paired call raised, fed the original's inputs: that is its finding. True when its
        counterpart returned, so that what encloses it computed with values not the original's."""
        isolated = self._pending.pop(index, None)
        original = self.counterpart.get(index)
        if isolated is None or original is None:
            return False
        isolated.raised = True
        self.isolation[(original.index, index)] = isolated
        return original.finished

    def _enclosing_index(self) -> int | None:
        """The ported record index of the open call a new call on this thread runs in."""
        enclosing = self._open_calls.innermost()
        return None if enclosing is None else enclosing[1]

    def _label(self, index: int) -> str:
        return self.ported_records[index].display_name

    def _let_go(self, pairs: list[LeafPair]) -> None:
        """Count the tolerance, and keep nothing of the live tensors but their description: they
        are the port's, and only the differences measured here are read afterwards."""
        for pair in pairs:
            if pair.difference is not None:
                pair.difference.forget_values(self.tolerance.atol, self.tolerance.rtol)
                self._measured_since_trim += pair.difference.numel
            leaf = pair.ported
            if leaf is not None and leaf.tensor is not None:
                description = f"{shape_text(leaf.tensor.shape, as_list=True)}, the fed run's value, not kept"
                leaf.value_type, leaf.value_repr = "tensor", f"{leaf.dtype}{description}"
                leaf.tensor = None
        if self._measured_since_trim >= TRIM_EVERY_ELEMENTS:
            release_free_memory()
            self._measured_since_trim = 0

    def _note_makers(self, output: Any, index: int, fed: frozenset[int] | set[int] = frozenset()) -> None:
        """Note which call returned each tensor first: a call that hands a tensor on unchanged
        (an identity, a wrapper returning its submodule's output) did not make it."""
        for _, item in flatten(output, "output"):
            if isinstance(item, torch.Tensor):
                known = self._makers.get(id(item))
                if known is None or known[0]() is not item:
                    self._makers[id(item)] = (weakref.ref(item), index, id(item) in fed)


def isolate(
    ported: ModelScript | Trace, alignment: Alignment, tolerance: Tolerance, progress: Callable[[str], None] | None = None
) -> Isolation | None:
    """Run the port once more, every paired module fed the original's values (module docstring).

    None when there is nothing to run (the port given as a trace) or nothing to feed (the
    original kept statistics of some tensors, ``--keep stats`` or outside ``--only``): the
    culprit is then found by descent.
    """
    if not isinstance(ported, ModelScript) or not kept_every_value(alignment.original):
        return None
    if progress is not None:
        progress("running the port once more, each module fed the original's values")
    run = FedRun(ported.model, alignment, tolerance)
    with garbage_collection_paused(), run.attached():
        ported.run(seed=alignment.ported.seed)
    release_free_memory()
    return run.isolation


def kept_every_value(trace: Trace) -> bool:
    return all(leaf.summary is None for record in trace.records for leaf in record.inputs + record.outputs)

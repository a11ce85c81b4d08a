"""Streaming comparison: the original recorded to disk, the port checked against it as it runs.

For models whose traces do not fit in memory. The original runs first and its tensors are
spilled to a trace directory; its model is then let go. The port runs next, and every call
paired by name or by the rename map is measured the moment its inputs and its outputs exist,
against the original's memory-mapped tensors — so about one layer's tensors are in memory at
a time. The port's own tensors are not kept (statistics only) unless ``keep`` says otherwise.

The rows measured this way are exact. Calls that only inference pairs afterwards are compared
by statistics (a lower bound), and nothing is re-measured at another rtol: see
:meth:`tracetui.numeric.TensorDifference.forget_values`.
"""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from tracetui.classify import Tolerance
from tracetui.compare import Comparison, compare_and_isolate
from tracetui.errors import UsageError
from tracetui.frameworks import ForeignScript
from tracetui.isolate import IsolateWhen
from tracetui.isolate import isolate as judge_alone
from tracetui.memory import release_free_memory
from tracetui.options import RunOptions
from tracetui.pairing.alignment import align, pairing_key
from tracetui.pairing.rename_map import RenameMap
from tracetui.record import KeepPolicy, Progress, RerunCheck, record_script, record_twice
from tracetui.rows import LeafPair, Measured, measure_inputs, measure_outputs
from tracetui.script import ModelScript
from tracetui.trace import CallRecord, Leaf, Trace

TRIM_EVERY_ELEMENTS = 32 * 1024 * 1024  # elements measured between returns of freed memory
CallKey = tuple[str, str, int]  # kind, name, call: the same call in two runs of one model


def call_key(record: CallRecord) -> CallKey:
    return (record.kind, record.name, record.call)


class StreamCheck:
    """The live check of the port: measures each call against its original counterpart."""

    def __init__(self, counterparts: dict[CallKey, CallRecord], tolerance: Tolerance) -> None:
        self.counterparts = counterparts  # port call → the original call it is paired with
        self.tolerance = tolerance
        self.measured: dict[CallKey, tuple[int, list[LeafPair], list[LeafPair]]] = {}
        self._inputs: dict[CallKey, list[LeafPair]] = {}  # until the call's outputs arrive
        self._measured_since_trim = 0

    def __call__(self, record: CallRecord, part: str, leaves: list[Leaf]) -> None:
        key = call_key(record)
        original = self.counterparts.get(key)
        if original is None:
            return
        if part == "inputs":
            pairs = measure_inputs(original.inputs, leaves)
            self._inputs[key] = pairs
        else:
            pairs = measure_outputs(original.outputs, leaves)
            self.measured[key] = (original.index, self._inputs.pop(key, []), pairs)
        for pair in pairs:
            if pair.difference is not None:  # count the tolerance (and the figures a shown row needs) now: the live tensor is about to go
                pair.difference.forget_values(self.tolerance.atol, self.tolerance.rtol, keep_details=True)
                self._measured_since_trim += pair.difference.numel
        if self._measured_since_trim >= TRIM_EVERY_ELEMENTS:
            release_free_memory()  # the float64 slices measured so far, back to the system
            self._measured_since_trim = 0

    def by_record_index(self, ported: Trace) -> Measured:
        ported_index = {call_key(record): record.index for record in ported.records}
        return {
            (original_index, ported_index[key]): (inputs, outputs)
            for key, (original_index, inputs, outputs) in self.measured.items()
            if key in ported_index
        }


def compare_streaming(
    load_original: Callable[[], ModelScript | ForeignScript | Trace],
    load_ported: Callable[[], ModelScript | Trace],
    options: RunOptions,
    *,
    rename_map: RenameMap | None,
    tolerance: Tolerance,
    infer: bool,
    isolate: IsolateWhen = "always",
    fixes: bool = True,
) -> Comparison:
    """Record the original into ``options.spill`` (a temporary directory if None), then stream the port.

    The loaders build each script only when it is needed, so the two models are never in
    memory together. An original that is already a trace (``tracetui record orig.py -o DIR
    --spill``) is used as it is: record it once, stream each new version of the port.
    """
    progress: Progress = options.progress or (lambda message: None)
    keep = options.keep_policy()  # an invalid --only fails before either model is built
    with working_directory(options.spill) as work:
        progress("recording the original to disk")
        loaded_original = load_original()
        if isinstance(loaded_original, Trace):
            original = loaded_original
        else:
            original_keep = KeepPolicy(values=keep.values, only=keep.only, spill=work / "original")
            original = (record_twice if options.rerun else record_script)(loaded_original, progress=progress, keep=original_keep)
        del loaded_original
        gc.collect()  # the original model's weights go before the port's are built

        progress("running the port against it")
        ported_script = load_ported()
        if not isinstance(ported_script, ModelScript):
            raise UsageError(
                f"{ported_script.source}: --stream runs the port live against the original; pass the port as a model script (.py)."
            )
        # The port keeps statistics, and full values only where --only asks (spilled next to the original's).
        ported_keep = KeepPolicy(values="stats", only=keep.only, spill=None if keep.only is None or keep.spill is None else work / "ported")
        check = StreamCheck({pairing_key(record, rename_map): record for record in original.records}, tolerance)
        ported = record_script(ported_script, progress=progress, keep=ported_keep, live_check=check)
        if options.rerun:  # the port's own nondeterminism: one more run, checked live against this one
            record_script(ported_script, seed=ported_script.seed + 1, keep=KeepPolicy(values="none"), live_check=RerunCheck(ported))
        progress("comparing")
        alignment = align(original, ported, rename_map, infer=infer, atol=tolerance.atol)
        measured = check.by_record_index(ported)
        # Calls paired only now, by inference, were not measured while the port ran: run it once
        # more and measure exactly those, rather than settle for their statistics.
        late_pairs = {
            call_key(ported.records[pair.ported]): original.records[pair.original]
            for pair in alignment.paired()
            if pair.original is not None and pair.ported is not None and (pair.original, pair.ported) not in measured
        }
        if late_pairs:
            progress(f"running the port again for the {len(late_pairs)} calls paired by inference")
            late_check = StreamCheck(late_pairs, tolerance)
            record_script(ported_script, keep=KeepPolicy(values="stats"), live_check=late_check)
            measured |= late_check.by_record_index(ported)
        # The fed run reads the original's values from disk.
        comparison, isolation = compare_and_isolate(
            alignment, tolerance, isolate, lambda: judge_alone(ported_script, alignment, tolerance, progress), measured
        )
        if fixes and isolation is not None:
            from tracetui.fixes.search import NO_ORIGINAL_MODEL, search_fixes

            # The original model is gone: the hypotheses that read its own values are not tried.
            why = f"{NO_ORIGINAL_MODEL}: --stream let it go once recorded"
            comparison = replace(comparison, fixes=search_fixes(comparison, ported_script, None, progress, why_no_original=why))
        return comparison


@contextmanager
def working_directory(directory: Path | None) -> Iterator[Path]:
    """``directory``, or a temporary one removed afterwards.

    A removed trace's tensors stay readable: they are memory-mapped, and a mapped file lives
    on until it is unmapped. The disk space comes back when the process ends.
    """
    if directory is not None:
        yield directory
        return
    temporary = Path(tempfile.mkdtemp(prefix="tracetui-stream-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

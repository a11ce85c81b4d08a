"""The trace: the ordered record of one forward pass, one :class:`CallRecord` per module call.

Everything downstream (pairing, comparison, the interface, the debugger, trace files) reads
this type and nothing else. Tensors live in :class:`Leaf` objects; a leaf that holds the same
recorded tensor as another (a module's output passed on unchanged as the next one's input)
shares the tensor object, so it is stored once in memory and once on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from tracetui.text import shape_text

if TYPE_CHECKING:
    from tracetui.distributed.info import DistributedInfo

RecordKind = Literal["module", "tap"]


@dataclass(frozen=True)
class TensorSummary:
    """What is kept of a tensor recorded without its values (``--keep stats``, outside ``--only``).

    Enough to check shapes and dtypes and to prove a difference: ``|max p - max o|``,
    ``|min p - min o|`` and ``|mean p - mean o|`` are each at most ``max |p - o|``. Statistics
    can show that two tensors differ; they cannot show that they agree.
    """

    shape: tuple[int, ...]
    dtype: str  # "float32", "bfloat16", ...
    minimum: float  # NaN when the tensor holds a NaN; over real and imaginary parts for complex
    maximum: float
    mean: float
    nonfinite: int  # how many elements are NaN or ±Inf

    def describe(self) -> str:
        return f"min {self.minimum:.4g}, max {self.maximum:.4g}, mean {self.mean:.4g}" + (
            f", {self.nonfinite} NaN/Inf" if self.nonfinite else ""
        )


@dataclass
class Leaf:
    """One named value from a call's inputs or outputs, flattened out of nested containers.

    ``name`` is a path such as ``hidden_states``, ``position_embeddings.0`` or ``output.logits``.
    A tensor leaf holds a detached copy, or only its :class:`TensorSummary` when the recording
    kept statistics; any other value is kept as its type and a short repr.
    """

    name: str
    tensor: torch.Tensor | None = field(default=None, repr=False)
    value_type: str = ""
    value_repr: str = ""
    # Where this tensor came from, when it is the very tensor an earlier call produced:
    # (record index, leaf name). Lets a report say "this extra input came from model.rotary_emb".
    source: tuple[int, str] | None = None
    summary: TensorSummary | None = field(default=None, repr=False)

    @property
    def is_tensor(self) -> bool:
        """A tensor was recorded here, with its values or with statistics only."""
        return self.tensor is not None or self.summary is not None

    @property
    def shape(self) -> tuple[int, ...] | None:
        if self.tensor is not None:
            return tuple(self.tensor.shape)
        return None if self.summary is None else self.summary.shape

    @property
    def dtype(self) -> str | None:
        if self.tensor is not None:
            return str(self.tensor.dtype).removeprefix("torch.")
        return None if self.summary is None else self.summary.dtype

    def describe(self) -> str:
        if self.is_tensor:
            kept = "" if self.tensor is not None else " (statistics only)"
            return f"{self.name}: {self.dtype}{shape_text(self.shape or (), as_list=True)}{kept}"
        return f"{self.name}: {self.value_type} {self.value_repr}"


def summary_leaf(name: str, summary: TensorSummary, source: tuple[int, str] | None = None) -> Leaf:
    """A tensor leaf recorded with statistics only; its repr says so wherever values are shown."""
    return Leaf(
        name=name,
        summary=summary,
        source=source,
        value_type="tensor",
        value_repr=f"{summary.dtype}{shape_text(summary.shape, as_list=True)}, values not kept — {summary.describe()}",
    )


@dataclass
class CallRecord:
    """One call of one module (or one :func:`tracetui.tap` point), in the order calls started."""

    index: int
    name: str  # qualified name as named_modules() yields it; "" is the root; a tap's own name
    class_name: str
    call: int  # 0-based: the nth call of this module in the pass
    depth: int
    parent: int | None  # index of the enclosing call's record
    kind: RecordKind = "module"
    inputs: list[Leaf] = field(default_factory=list, repr=False)
    outputs: list[Leaf] = field(default_factory=list, repr=False)
    finished: bool = False  # False when the forward raised inside this call

    @property
    def display_name(self) -> str:
        if self.kind == "tap":
            return f"tap {self.name!r}"
        return self.name if self.name else "(root)"

    def tensor_inputs(self) -> list[Leaf]:
        return [leaf for leaf in self.inputs if leaf.is_tensor]

    def tensor_outputs(self) -> list[Leaf]:
        return [leaf for leaf in self.outputs if leaf.is_tensor]


@dataclass
class Trace:
    """All calls of one forward pass of one model, plus where it came from."""

    source: str  # the script or trace file it was recorded from, for headers and errors
    records: list[CallRecord] = field(default_factory=list, repr=False)
    seed: int = 0
    torch_version: str = torch.__version__
    # The same model run a second time with another seed: the largest output difference of
    # each record between the two runs (None when the model was run once).
    rerun_output_diff: list[float] | None = field(default=None, repr=False)
    rerun_input_diff: list[float] | None = field(default=None, repr=False)
    # Recorded on several ranks (--nproc): what was gathered, and where ranks disagreed.
    distributed: DistributedInfo | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> CallRecord:
        return self.records[index]

    def children(self, index: int) -> list[CallRecord]:
        return [record for record in self.records if record.parent == index]

    def unique_tensors(self) -> list[torch.Tensor]:
        seen: dict[int, torch.Tensor] = {}
        for record in self.records:
            for leaf in record.inputs + record.outputs:
                if leaf.tensor is not None:
                    seen.setdefault(id(leaf.tensor), leaf.tensor)
        return list(seen.values())

    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.unique_tensors())

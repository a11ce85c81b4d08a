"""What automatic pairing knows about each recorded call, gathered once per trace.

A call's kind (a leaf computation or a container, and which family), its name read through the
vocabulary of :mod:`tracetui.pairing.names`, its main input and output flattened, and for a
container the kind of call whose output it returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from tracetui.pairing.names import PASS_THROUGH_FAMILIES, component_concepts, name_parts, op_family, structural_family, template_of
from tracetui.trace import CallRecord, Leaf, Trace


@dataclass
class CallFacts:
    """What the scorer needs to know about one recorded call."""

    record: CallRecord
    is_leaf: bool
    family: str
    is_op: bool  # a leaf whose family is a computation (linear, norm, ...) or unknown
    last_concepts: frozenset[str]
    path_concepts: frozenset[str]
    indices: tuple[int, ...]
    template: str
    output: torch.Tensor | None  # main output, flattened
    output_shape: tuple[int, ...] | None  # up to size-1 dimensions
    input: torch.Tensor | None  # main input, flattened
    input_shape: tuple[int, ...] | None
    producer_family: str | None = None  # for a container: the kind of call whose output it returns
    subtree_end: int = 0  # index of the last call nested in this one (itself when none)


def main_leaf(leaves: Iterable[Leaf]) -> Leaf | None:
    """The first tensor leaf, whether its values were kept or only its statistics."""
    return next((leaf for leaf in leaves if leaf.is_tensor), None)


def squeezed_shape(leaf: Leaf | None) -> tuple[int, ...] | None:
    if leaf is None or leaf.shape is None:
        return None
    return tuple(size for size in leaf.shape if size != 1)


def flat(tensor: torch.Tensor | None) -> torch.Tensor | None:
    if tensor is None:
        return None
    if tensor.is_complex():
        tensor = torch.view_as_real(tensor)
    return tensor.reshape(-1)


def describe_calls(trace: Trace, needed: set[int] | None = None) -> list[CallFacts]:
    """Facts about every call; the costly ones (producers) only for the ``needed`` calls."""
    records = trace.records
    has_children = [False] * len(records)
    for record in records:
        if record.parent is not None and record.kind == "module":
            has_children[record.parent] = True
    facts: list[CallFacts] = []
    for record in records:
        is_leaf = not has_children[record.index]
        known_op = op_family(record.class_name) if is_leaf else None
        if known_op is not None:
            family, is_op = known_op, True
        else:
            family = structural_family(record.class_name)
            is_op = is_leaf and family == "other"
            if is_op:
                family = "unknown"
        last, path, indices = name_parts(record.name)
        path_concepts = frozenset().union(*(component_concepts(part) for part in path)) if path else frozenset()
        output = main_leaf(record.outputs)
        main_input = main_leaf(record.inputs)
        facts.append(
            CallFacts(
                record=record,
                is_leaf=is_leaf,
                family=family,
                is_op=is_op,
                last_concepts=component_concepts(last) if last else frozenset({"root"}),
                path_concepts=path_concepts,
                indices=indices,
                template=template_of(record.name),
                output=flat(None if output is None else output.tensor),
                output_shape=squeezed_shape(output),
                input=flat(None if main_input is None else main_input.tensor),
                input_shape=squeezed_shape(main_input),
                subtree_end=record.index,
            )
        )
    for record in reversed(records):
        if record.parent is not None:
            parent = facts[record.parent]
            parent.subtree_end = max(parent.subtree_end, facts[record.index].subtree_end)
    for fact in facts:
        if not fact.is_leaf and (needed is None or fact.record.index in needed):
            fact.producer_family = producer_family(fact, facts)
    return facts


def producer_family(container: CallFacts, facts: list[CallFacts]) -> str | None:
    """The family of the earliest nested computation whose output *is* the container's output.

    BERT's ``attention`` returns what its LayerNorm made; a port's ``attn`` what its output
    projection made. Identity-like calls (dropout in eval mode) are looked through.
    """
    output = container.output
    if output is None:
        return None
    for index in range(container.record.index + 1, container.subtree_end + 1):
        candidate = facts[index]
        if not candidate.is_leaf or candidate.family in PASS_THROUGH_FAMILIES or candidate.output is None:
            continue
        same_size = candidate.output.numel() == output.numel() and candidate.output.dtype == output.dtype
        if same_size and (candidate.output is output or torch.equal(candidate.output, output)):
            return candidate.family
    return None

"""Where each ported weight came from: the weight-conversion check behind ``tracetui weights``.

For every tensor of the port's state dict (parameters and persistent buffers) the check finds
the original tensor its values came from, and how:

* ``same`` — the original tensor of the same name (after the rename map: a weight's name is its
  module's name plus ``.weight``, ``.bias``, ...), same values;
* ``renamed`` — the same values under another original name;
* ``transposed`` — the transpose of an original tensor (Linear ↔ GPT-2's Conv1D);
* ``slice`` — a block of rows or columns of an original tensor, transposed or not (q out of a
  fused qkv along dim 0, or a Conv1D-style chunk along dim 1), or a 1-D slice (a bias);
* ``assembled`` — row or column blocks of one or more original tensors put together: a fused
  projection built from separate ones, or the rows of one tensor in another order (RoPE
  permutations are that; so is a swap of q and k inside a fused weight);
* ``rearranged`` — the values of one original tensor in an order none of the above explains;
* ``missing`` — nothing in the original holds these values: probably never converted, still
  its random initialisation.

…and every original tensor that no ported tensor uses.

:mod:`~tracetui.weights.index` hashes the original tensors, :mod:`~tracetui.weights.check`
finds each ported tensor's source in them, and :mod:`~tracetui.weights.report` holds the
result with its JSON and console renderings.
"""

from __future__ import annotations

from tracetui.weights.check import check_weights, state_with_buffers
from tracetui.weights.report import (
    HOWS,
    SCHEMA,
    How,
    Piece,
    TensorSource,
    UnusedTensor,
    WeightReport,
    print_weight_report,
    report_document,
)

__all__ = [
    "HOWS",
    "SCHEMA",
    "How",
    "Piece",
    "TensorSource",
    "UnusedTensor",
    "WeightReport",
    "check_weights",
    "print_weight_report",
    "report_document",
    "state_with_buffers",
]

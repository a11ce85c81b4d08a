"""Ports that run on several processes under torch.distributed (``--nproc N``).

The port's script runs in N ranks started by PyTorch's own launcher (``torch.distributed.run``,
:mod:`tracetui.distributed.launch`), each with the default process group initialised before
``build()`` (:mod:`tracetui.distributed.worker`). Every rank records; sharded values are gathered
into full tensors as they are recorded and replicated ones are checked to agree across ranks
(:mod:`tracetui.distributed.gather`); rank 0 writes one trace, which compares with a
single-process original like any other, and :mod:`tracetui.distributed.findings` says which
rank a culprit's difference lives on.
"""

"""Originals written in another framework than PyTorch: Flax (linen, NNX) and Keras 3.

A model script's ``build()`` may return such a model; :func:`detect_framework` tells which
without importing any framework (importing keras first would fix its backend before the
script's own ``KERAS_BACKEND`` is read), and a :class:`ForeignScript` records it into the
same :class:`~tracetui.trace.Trace` a PyTorch model gives: module paths joined with ``.``,
framework class names, leaves as CPU torch tensors in their own dtype.
"""

from tracetui.frameworks.detect import ACCEPTED_MODELS, FRAMEWORKS, detect_framework
from tracetui.frameworks.foreign import ForeignScript, foreign_port_error

__all__ = ["ACCEPTED_MODELS", "FRAMEWORKS", "ForeignScript", "detect_framework", "foreign_port_error"]

"""tracetui: find the module where a ported model stops giving the original's numbers.

Python API::

    import tracetui
    comparison = tracetui.compare("original.py", "ported.py", rename_map="map.toml")
    print(comparison.culprit)
    tracetui.assert_match("original.py", "ported.py")      # AssertionError naming the culprit

    tracetui.tap("attention_scores", scores)   # a manual record point inside any forward
"""

from __future__ import annotations

from tracetui.api import assert_match, compare, record
from tracetui.classify import Tolerance
from tracetui.compare import Comparison
from tracetui.errors import TracetuiError
from tracetui.record import tap
from tracetui.rows import Row
from tracetui.trace import CallRecord, Leaf, Trace

__all__ = [
    "CallRecord",
    "Comparison",
    "Leaf",
    "Row",
    "Tolerance",
    "Trace",
    "TracetuiError",
    "assert_match",
    "compare",
    "record",
    "tap",
]
__version__ = "0.1.0"

"""The Textual interface (issue #3). Until it lands, the headless report stands in."""

from __future__ import annotations

from rich.console import Console

from tracetui.compare import Comparison
from tracetui.trace import Trace


def open_comparison(comparison: Comparison) -> None:
    from tracetui.report import print_report

    print_report(comparison, Console())


def open_trace(trace: Trace) -> None:
    from tracetui.cli import print_trace

    print_trace(trace, Console())

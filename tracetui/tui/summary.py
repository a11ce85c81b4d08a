"""The line printed when the interface quits: what it found, and how to get it again headless.

The alternate screen takes the comparison with it when the app quits; this one line stays in
the terminal's scrollback (and a CI log): the verdict, the culprits' names, and the command that
prints the report without the interface. Names and paths come from the user's scripts: they pass
through :func:`~tracetui.safe_text.printable`.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from tracetui.compare import Comparison
from tracetui.safe_text import printable

CULPRITS_NAMED = 3  # in the line; the rest are counted
HEADLESS_OPTION = "--no-tui"


def headless_command(arguments: Sequence[str]) -> str:
    """``tracetui compare a.py b.py --map m.toml --no-tui``: the command as typed, without the interface.

    ``--theme`` (the interface's look) is dropped; ``--no-tui`` is added once."""
    kept: list[str] = []
    skip_next = False
    for argument in arguments:
        if skip_next:
            skip_next = False
            continue
        if argument == "--theme":
            skip_next = True
            continue
        if argument.startswith("--theme=") or argument == HEADLESS_OPTION:
            continue
        kept.append(argument)
    return shlex.join(["tracetui", *kept, HEADLESS_OPTION])


def quit_summary(comparison: Comparison, command: str | None) -> str:
    """``tracetui: DIVERGED · 3 culprits: h.0.attn ↔ layers.0.self_attn, … · headless: tracetui compare … --no-tui``."""
    parts = [f"tracetui: {comparison.verdict.upper()}"]
    culprits = comparison.culprits
    if comparison.verdict != "match" and culprits:
        names = ", ".join(row.label for row in culprits[:CULPRITS_NAMED])
        more = f" and {len(culprits) - CULPRITS_NAMED} more" if len(culprits) > CULPRITS_NAMED else ""
        parts.append(f"{'culprit' if len(culprits) == 1 else f'{len(culprits)} culprits'}: {names}{more}")
    elif comparison.verdict != "match":
        parts.append(comparison.reason)
    else:
        parts.append(f"every paired call agrees within {comparison.tolerance}")
    if command:
        parts.append(f"headless: {command}")
    return printable(" · ".join(parts))

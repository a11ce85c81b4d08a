"""The one machine-readable line every benchmark prints per figure, for ``bench/run_all.py``.

A figure line is five tab-separated fields on one line of standard output::

    FIGURE<TAB>name<TAB>measured<TAB>target<TAB>status

``measured`` and ``target`` are text for people (with units: ``1.07×``, ``≤ 1.10×``, ``412 MB``);
``status`` is ``met``, ``NOT met`` or ``info`` (a figure with no target, printed for context).
``name`` starts with the benchmark's short name (``record:``, ``memory:``, …) so that the
summary groups them. A benchmark may print its own tables as well; only these lines are
collected.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

PREFIX = "FIGURE\t"
STATUSES = ("met", "NOT met", "info")


@dataclass(frozen=True)
class Figure:
    name: str
    measured: str
    target: str
    status: str


def verdict(holds: bool) -> str:
    return "met" if holds else "NOT met"


def figure(name: str, measured: str, target: str = "", status: str = "info") -> None:
    """Print one figure line (flushed, so that a parent reading the stream sees it at once)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    fields = [name, measured, target, status]
    if any("\t" in field or "\n" in field for field in fields):
        raise ValueError(f"a figure's fields cannot hold tabs or newlines: {fields!r}")
    print(PREFIX + "\t".join(fields), flush=True)
    sys.stdout.flush()


def parse(line: str) -> Figure | None:
    """The figure on ``line``, or None when it is not a figure line."""
    if not line.startswith(PREFIX):
        return None
    fields = line.rstrip("\n").split("\t")[1:]
    if len(fields) != 4 or fields[3] not in STATUSES:
        return None
    return Figure(*fields)


def report(rows: list[tuple[str, str, str, str]], prefix: str) -> None:
    """Print ``rows`` (name, measured, target, status) as a table, then one figure line each.

    ``prefix`` (``"record: "``) is left out of the table's names; ``info`` shows as blank.
    """
    header = ("figure", "measured", "target", "")
    shown = [(name.removeprefix(prefix), measured, target, "" if status == "info" else status) for name, measured, target, status in rows]
    widths = [max(len(row[column]) for row in [header, *shown]) for column in range(len(header))]
    print()
    for row in [header, *shown]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print()
    for row in rows:
        figure(*row)

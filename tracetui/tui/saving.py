"""What the interface writes to files (w, S, R): where by default, and how.

Every file goes through :mod:`tracetui.output_files`: checked first (not a folder, its folder
exists, writable), written whole into a temporary file and moved over the old one. A failure is
an :class:`~tracetui.errors.TracetuiError` whose message the interface shows; the session goes on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

from rich.console import Console

from tracetui.compare import Comparison
from tracetui.output_files import check_output_file, write_text_atomically
from tracetui.pairing.map_writer import write_rename_map

MAP_FILE_NAME = "tracetui.map.toml"
SCREENSHOT_FILE_NAME = "tracetui-screenshot.svg"
REPORT_FILE_NAME = "tracetui-report.txt"
REPORT_WIDTH = 160  # the headless report's width when the command's output is not a terminal
MAP_HEADER = "written by tracetui's interface (m pairs by hand)"


def shown_path(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it, else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def default_map_path(comparison: Comparison) -> str:
    """``tracetui.map.toml`` next to the ported script (or trace), shown relative to the working folder;
    in the working folder when the port was not read from a file."""
    source = Path(str(comparison.ported.source))
    folder = source.parent if source.exists() else Path()  # a script, a trace file or a trace folder
    return shown_path(folder / MAP_FILE_NAME)


def given_path(text: str) -> Path:
    """The path typed in a dialog, from the working folder (``~`` expanded)."""
    return Path(os.path.abspath(os.path.expanduser(text.strip())))


def report_paths(path: Path) -> list[Path]:
    """The text report at ``path`` and the JSON report beside it (``report.txt``, ``report.json``)."""
    json_path = path.with_suffix(".json") if path.suffix != ".json" else path.with_name(path.name + ".json")
    return [path, json_path]


def write_map(comparison: Comparison, path: Path, shown: str) -> list[Path]:
    check_output_file(path, "path", example=MAP_FILE_NAME)
    write_rename_map(comparison.alignment, path, header=MAP_HEADER, shown=shown)
    return [path]


def write_screenshot(svg: str, path: Path, shown: str) -> list[Path]:
    check_output_file(path, "path", example=SCREENSHOT_FILE_NAME)
    write_text_atomically(path, svg, shown)
    return [path]


def report_text(comparison: Comparison) -> str:
    """The headless report (``--no-tui``) as plain text."""
    from tracetui.report import print_report

    buffer = io.StringIO()
    console = Console(file=buffer, width=REPORT_WIDTH, color_system=None, emoji=False, highlight=False, force_terminal=False)
    print_report(comparison, console, full=True)
    return buffer.getvalue()


def write_report_files(comparison: Comparison, path: Path, shown: str) -> list[Path]:
    """The report as text at ``path`` (every row, as ``--no-tui --full``) and as JSON beside it (as ``--json``)."""
    from tracetui.json_report import write_report

    text_path, json_path = report_paths(path)
    for target in (text_path, json_path):
        check_output_file(target, "path", example=REPORT_FILE_NAME)
    write_text_atomically(text_path, report_text(comparison), shown)
    write_report(comparison, json_path, shown_path(json_path))
    return [text_path, json_path]

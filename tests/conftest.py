from __future__ import annotations

import io
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def absl_logging_on_the_real_stderr() -> None:
    """JAX imports absl, whose log handler keeps the ``sys.stderr`` of that moment: in a test, one
    of pytest's capture files. When ipdb starts in a later test, IPython's logging set-up closes
    every handler, and absl's closes that file (it spares only the real stderr), which breaks
    pytest's capture for every test after. Outside pytest the handler holds the real stderr."""
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.stream = sys.__stderr__


@pytest.fixture
def write_script(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a model script into a temporary folder and return its path."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def typed_at_prompt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """Feed ipdb's plain prompt (``input()``) from a string instead of the terminal."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    import IPython.terminal.debugger

    monkeypatch.setattr(IPython.terminal.debugger, "_use_simple_prompt", True)

    def type_lines(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    return type_lines

"""The planted-bug table of a demo or port script, for the tests that plant them."""

from __future__ import annotations

import ast
from pathlib import Path


def read_bugs(script: Path) -> dict[str, str]:
    """The script's ``BUGS`` (planted bug → the ported module it lives in), read without
    importing it: each demo and port pair imports a local ``model`` or ``original`` of its own."""
    for node in ast.parse(script.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id == "BUGS":
            return ast.literal_eval(node.value)
    raise AssertionError(f"{script} defines no BUGS")

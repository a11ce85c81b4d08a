"""A model pair whose names carry terminal escape sequences and Rich markup, for the tests that
check such text is shown escaped (tests/test_untrusted_text.py, tests/tui/test_untrusted_names.py).

Written into a folder whose own name holds markup and an escape sequence (its ``/`` make it
several folders), so that the scripts' paths test that too.
"""

from __future__ import annotations

from pathlib import Path

# What the scripts name their module, their class and an output leaf (as Python escapes).
MODULE_NAME = "weird\x1b]0;pwned\x07[link=http://evil]x[/link]\nnext\x1b[2J[/x]"
CLASS_NAME = "Weird\x1b]0;pwned\x07[/x]\x1b[2JLinear"
OUTPUT_KEY = "out\x1b[2J[/x]"
FOLDER_NAME = "models [/x] \x1b]0;pwned\x07[link=evil.example]here[/link]"
SHOWN_FOLDER_NAME = r"models [/x] \x1b]0;pwned\x07[link=evil.example]here[/link]"

# The sequences that must never reach the terminal raw.
INJECTED = ("\x1b]", "\x1b[2J", "\x07")
# How the names read when shown: control characters as Python escapes, markup as itself.
SHOWN_MODULE_NAME = r"weird\x1b]0;pwned\x07[link=http://evil]x[/link]\nnext\x1b[2J[/x]"
SHOWN_CLASS_NAME = r"Weird\x1b]0;pwned\x07[/x]\x1b[2JLinear"
SHOWN_OUTPUT_KEY = r"out\x1b[2J[/x]"
# Its start and end, which a table that folds the name in its column keeps whole.
SHOWN_NAME_PIECES = (r"weird\x1b]0;pwned\x07", r"\nnext\x1b[2J[/x]")

SCRIPT = r'''
import torch

MODULE_NAME = "weird\x1b]0;pwned\x07[link=http://evil]x[/link]\nnext\x1b[2J[/x]"
SCALE = {scale}


class Weird(torch.nn.Linear):
    def forward(self, x):
        return super().forward(x) * SCALE


Weird.__name__ = Weird.__qualname__ = "Weird\x1b]0;pwned\x07[/x]\x1b[2JLinear"


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(MODULE_NAME, Weird(4, 4))
        self.activation = torch.nn.GELU()

    def forward(self, x):
        return {{"out\x1b[2J[/x]": self.activation(getattr(self, MODULE_NAME)(x))}}


def build():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 4)
'''

RAISING_SCRIPT = r'''
def build():
    raise RuntimeError("checkpoint [/x] missing\x1b]0;pwned\x07 [link=http://evil]here[/link]\x1b[2J")
'''
SHOWN_ERROR = r"checkpoint [/x] missing\x1b]0;pwned\x07 [link=http://evil]here[/link]\x1b[2J"


def write_untrusted_pair(folder: Path) -> tuple[Path, Path]:
    """``original.py`` and ``ported.py`` in a markup-named folder under ``folder``; the port's
    weirdly named module doubles its output, so it is the culprit."""
    scripts = folder / FOLDER_NAME
    scripts.mkdir(parents=True, exist_ok=True)
    original = scripts / "original.py"
    ported = scripts / "ported.py"
    original.write_text(SCRIPT.format(scale=1))
    ported.write_text(SCRIPT.format(scale=2))
    return original, ported


def assert_no_injected_sequence(text: str) -> None:
    for sequence in INJECTED:
        assert sequence not in text, f"{sequence!r} reached the output: {text!r}"

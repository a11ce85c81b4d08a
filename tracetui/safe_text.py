"""Text from outside tracetui, made safe to show in a terminal.

Module and class names, leaf names, value reprs, paths, tensor names and exception messages
come from the user's scripts and from trace and state-dict files that others send; any of them
can hold an escape sequence (``\\x1b]0;…\\x07`` renames the terminal window, ``\\x1b[2J``
blanks the screen), a newline that splits a row, or Rich markup (``[link=…]``, or an unbalanced
``[/x]`` that makes Rich and Textual raise). Every place that shows such text in the terminal
(headless reports, the command line's messages, the interface, the debugger's banner) passes
it through one of the two functions here, so that ``grep -rn "printable(\\|for_markup(" tracetui``
lists them all:

- :func:`printable` for text that is shown as it is: a ``rich.text.Text``, a Textual widget
  with ``markup=False``, a Line API segment, ``print()``;
- :func:`for_markup` for text placed inside a Rich markup string (``console.print(f"…")``,
  a table cell or a status given as a ``str``).

The JSON reports, the trace files and the rename maps keep the exact text.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls, DEL and C1 controls (ESC and CSI start escape sequences), the Unicode line and
# paragraph separators, the bidirectional overrides that can make a name read as another, and
# lone surrogates (a file name that is not UTF-8, a trace's JSON): writing one to the terminal raises.
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
# The same but newline and tab, which a multi-line text (a traceback, an error message) keeps.
UNPRINTABLE_IN_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_escape(character: str) -> str:
    """``\\x1b``, ``\\n``, ``\\u202e``: the character written the way Python's repr writes it."""
    code = ord(character)
    return NAMED_ESCAPES.get(character) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object, multiline: bool = False) -> str:
    """``text`` with every control character written as a visible escape (ESC as ``\\x1b``).

    A name keeps to one line (a newline shows as ``\\n``); ``multiline`` keeps newlines and
    tabs, for a traceback or an error message. Markup is left as it is: use this where the text
    is not parsed as markup, :func:`for_markup` where it is. A backslash is not doubled, so that
    a Windows path reads as itself: ``\\x1b`` in the output may also be those four characters.
    """
    text = str(text)
    if text.isprintable():  # the usual name: nothing to look for
        return text
    pattern = UNPRINTABLE_IN_LINES if multiline else UNPRINTABLE
    return pattern.sub(lambda match: visible_escape(match.group()), text)


def for_markup(text: object, multiline: bool = False) -> str:
    """:func:`printable`, with Rich markup escaped: ``[link=…]`` shows as those characters."""
    return escape(printable(text, multiline))

"""Fix suggestions: the usual porting mistakes tried on each culprit alone (issue 18).

:mod:`~tracetui.fixes.patches` holds the reversible changes, :mod:`~tracetui.fixes.library` the
mistakes (which patches undo each, and where they apply), :mod:`~tracetui.fixes.search` the
search that tries them on the original's recorded inputs and ranks what it finds.
"""

from tracetui.fixes.search import Attempt, FixSearch, search_fixes

__all__ = ["Attempt", "FixSearch", "search_fixes"]

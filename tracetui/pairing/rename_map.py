"""The rename map (``--map``): regex rules that turn ORIGINAL module names into PORTED names.

TOML, ``rename = [["regex", "replacement"], ...]``; each rule is ``re.sub(pattern, replacement,
name)``, applied in order — the same direction as a weight-conversion script's ``rename_keys``.
This module reads and checks such a map; :mod:`tracetui.pairing.map_writer` writes one from an
alignment.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tracetui.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = 'rename = [["^h\\\\.(\\\\d+)", "model.layers.\\\\1"], ["\\\\.attn$", ".self_attn"]]'


@dataclass
class RenameMap:
    rules: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    source: str = ""

    def apply(self, name: str) -> str:
        for pattern, replacement in self.rules:
            name = pattern.sub(replacement, name)
        return name

    def __bool__(self) -> bool:
        return bool(self.rules)


def load_rename_map(path: str | Path) -> RenameMap:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UsageError(f"{path}: cannot read the rename map ({error.strerror}).") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: the rename map is not valid TOML ({error}). Expected, for example: {EXAMPLE}") from error
    return parse_rename_rules(document.get("rename"), str(path))


def parse_rename_rules(rules: object, source: str) -> RenameMap:
    if not isinstance(rules, list):
        raise UsageError(f"{source}: the rename map needs a `rename` list of [regex, replacement] pairs, e.g. {EXAMPLE}")
    rename_map = RenameMap(source=source)
    for position, rule in enumerate(rules):
        if not (isinstance(rule, list) and len(rule) == 2 and all(isinstance(part, str) for part in rule)):
            raise UsageError(f"{source}: rename rule {position + 1} is {rule!r}; each rule is a pair of strings [regex, replacement].")
        pattern_text, replacement = rule
        try:
            pattern = re.compile(pattern_text)
        except re.error as error:
            raise UsageError(f"{source}: rename rule {position + 1} has an invalid regex {pattern_text!r}: {error}.") from error
        try:
            # re compiles the replacement template even with no match: catches \3 with one group.
            pattern.sub(replacement, "")
        except (re.error, IndexError) as error:
            raise UsageError(f"{source}: rename rule {position + 1} has an invalid replacement {replacement!r}: {error}.") from error
        rename_map.rules.append((pattern, replacement))
    return rename_map

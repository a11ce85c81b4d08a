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
from tracetui.layouts import LayoutRule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXAMPLE = 'rename = [["^h\\\\.(\\\\d+)", "model.layers.\\\\1"], ["\\\\.attn$", ".self_attn"]]'


@dataclass
class RenameMap:
    rules: list[tuple[re.Pattern[str], str]] = field(default_factory=list)
    source: str = ""
    # ``[[layout]]`` entries: the transform of the original's tensors into the port's layout, stated
    # for the modules whose (original) name matches (see :mod:`tracetui.layouts`).
    layouts: list[LayoutRule] = field(default_factory=list)

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
    layouts = document.get("layout")
    if "rename" not in document and layouts is not None:  # a map that only states layouts
        rename_map = RenameMap(source=str(path))
    else:
        rename_map = parse_rename_rules(document.get("rename"), str(path))
    rename_map.layouts = parse_layout_rules(layouts, str(path))
    return rename_map


LAYOUT_EXAMPLE = '[[layout]]\noriginal = "conv"\npermute = [0, 3, 1, 2]   # or reshape = [2, 7, -1]'


def parse_layout_rules(entries: object, source: str) -> list[LayoutRule]:
    """The map's ``[[layout]]`` tables: ``original`` (a regex over original module names) and
    exactly one of ``permute`` (a dimension order) or ``reshape`` (the port's shape, one -1 allowed)."""
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise UsageError(f"{source}: `layout` must be a list of [[layout]] tables, e.g.\n{LAYOUT_EXAMPLE}")
    rules = []
    for position, entry in enumerate(entries, start=1):
        where = f"{source}: layout rule {position}"
        unknown = sorted(set(entry) - {"original", "permute", "reshape"})
        if unknown:
            keys = ", ".join(unknown)
            raise UsageError(f"{where} has unknown key(s) {keys}; it takes original and permute or reshape, e.g.\n{LAYOUT_EXAMPLE}")
        pattern_text = entry.get("original")
        if not isinstance(pattern_text, str):
            raise UsageError(f"{where} needs `original`, a regex over the original's module names, e.g.\n{LAYOUT_EXAMPLE}")
        try:
            pattern = re.compile(pattern_text)
        except re.error as error:
            raise UsageError(f"{where} has an invalid regex {pattern_text!r}: {error}.") from error
        if ("permute" in entry) == ("reshape" in entry):
            raise UsageError(
                f"{where} needs exactly one of `permute` (a dimension order) or `reshape` (the port's shape), e.g.\n{LAYOUT_EXAMPLE}"
            )
        if "permute" in entry:
            order = entry["permute"]
            if not (isinstance(order, list) and all(type(axis) is int for axis in order) and sorted(order) == list(range(len(order)))):
                raise UsageError(f"{where}: permute = {order!r} is not an order of dimensions 0..n-1, such as [0, 3, 1, 2].")
            rules.append(LayoutRule(pattern, permute=tuple(order)))
        else:
            shape = entry["reshape"]
            sizes_valid = isinstance(shape, list) and all(type(size) is int and (size > 0 or size == -1) for size in shape)
            if not (sizes_valid and shape and shape.count(-1) <= 1):
                raise UsageError(f"{where}: reshape = {shape!r} is not a shape (positive sizes, at most one -1), such as [2, 7, -1].")
            rules.append(LayoutRule(pattern, reshape=tuple(shape)))
    return rules


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

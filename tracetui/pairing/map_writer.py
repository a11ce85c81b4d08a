"""Turn an alignment into a rename map (``--map``), and write it as readable TOML.

The rules follow the contract: ``rename = [["regex", "replacement"], ...]``, each applied with
``re.sub`` in order to ORIGINAL module names to give PORTED names. One rule per name template,
generalised over layer indices when every instance pairs the same way
(``^transformer\\.h\\.(\\d+)\\.attn$`` → ``model.layers.\\1.self_attn``), one rule per name
otherwise. Names the two models share need no rule. Passing the map back with ``--map``
reproduces the pairing: only names that are paired are renamed, and a rule is checked against
every original name before it is written.

Names are the models' own (a trace file's, say) and may hold any character: strings keep them
exactly, with control characters as TOML escapes, and the comments show them through
:func:`~tracetui.safe_text.printable`, so that a newline in a name cannot end a comment and the
map holds nothing that acts on a terminal when `tracetui align` prints it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tracetui.output_files import write_text_atomically
from tracetui.pairing.alignment import Alignment, Pair
from tracetui.pairing.names import indexed_components, template_of
from tracetui.pairing.rename_map import RenameMap, parse_rename_rules
from tracetui.safe_text import UNPRINTABLE, printable
from tracetui.sides import SIDES, Side, pick

PLACEHOLDER = "@@"  # never part of a module name; used only when two rules would chain


@dataclass
class RenameRule:
    pattern: str
    replacement: str
    comment: str = ""


def indexed_pattern(name: str) -> tuple[str, int]:
    """``transformer.h.3.attn`` → (``^transformer\\.h\\.(\\d+)\\.attn$``, 1 group); Flax's ``h_3`` → ``h_(\\d+)``."""
    parts = []
    groups = 0
    for word, index in indexed_components(name):
        if index is None:
            parts.append(re.escape(word))
        else:
            parts.append(f"{re.escape(word)}_(\\d+)" if word else r"(\d+)")
            groups += 1
    return "^" + r"\.".join(parts) + "$", groups


def indexed_replacement(name: str) -> str:
    """``model.layers.3.self_attn`` → ``model.layers.\\1.self_attn`` (indices in order)."""
    parts = []
    group = 0
    for word, index in indexed_components(name):
        if index is None:
            parts.append(word.replace("\\", "\\\\"))
        else:
            group += 1
            parts.append(f"{word}_\\{group}" if word else f"\\{group}")
    text = ".".join(parts)
    # \1 followed by a digit would read as \10: spell such references \g<1>.
    return re.sub(r"\\(\d+)(?=\d)", r"\\g<\1>", text)


def literal_rule(original: str, ported: str) -> tuple[str, str]:
    return "^" + re.escape(original) + "$", ported.replace("\\", "\\\\")


def numbers(name: str) -> list[str]:
    return [index for _, index in indexed_components(name) if index is not None]


def name_pairs(alignment: Alignment) -> tuple[dict[str, str], dict[str, list[Pair]]]:
    """Original module name → ported name (its first call's partner), and the pairs behind each."""
    partner: dict[str, str] = {}
    behind: dict[str, list[Pair]] = defaultdict(list)
    for pair in alignment.paired():
        assert pair.original is not None and pair.ported is not None
        original = alignment.original.records[pair.original]
        ported = alignment.ported.records[pair.ported]
        if original.kind != "module" or ported.kind != "module":
            continue
        behind[original.name].append(pair)
        partner.setdefault(original.name, ported.name)
    return partner, behind


def describe(pairs: list[Pair]) -> str:
    methods = sorted({pair.method for pair in pairs})
    confidences = [pair.confidence for pair in pairs]
    low, high = min(confidences), max(confidences)
    spread = f"{low:.2f}" if low == high else f"{low:.2f}–{high:.2f}"
    calls = f"{len(pairs)} calls, " if len(pairs) > 1 else ""
    return f"{calls}{'/'.join(methods)}, confidence {spread}"


def rename_rules(alignment: Alignment) -> list[RenameRule]:
    """The rules that rename every paired original module name to its partner's name."""
    partner, behind = name_pairs(alignment)
    original_names: list[str] = []
    for record in alignment.original.records:
        if record.kind == "module" and record.name not in original_names:
            original_names.append(record.name)
    by_template: dict[str, list[str]] = defaultdict(list)
    for name in original_names:
        by_template[template_of(name)].append(name)

    rules: list[RenameRule] = []
    for template, names in by_template.items():
        paired = [name for name in names if name in partner]
        if not paired or all(partner[name] == name for name in paired):
            continue
        ported_templates = {template_of(partner[name]) for name in paired}
        generalises = (
            "#" in template
            and len(paired) == len(names)
            and len(ported_templates) == 1
            and all(numbers(partner[name]) == numbers(name) for name in paired)
        )
        if generalises:
            pattern, _ = indexed_pattern(paired[0])
            replacement = indexed_replacement(partner[paired[0]])
            pairs = [pair for name in paired for pair in behind[name]]
            rules.append(RenameRule(pattern, replacement, describe(pairs)))
            continue
        for name in paired:
            if partner[name] != name:
                pattern, replacement = literal_rule(name, partner[name])
                rules.append(RenameRule(pattern, replacement, describe(behind[name])))
    if not reproduces(rules, original_names, partner):
        rules = [
            *(RenameRule(rule.pattern, PLACEHOLDER + rule.replacement, rule.comment) for rule in rules),
            RenameRule("^" + re.escape(PLACEHOLDER), "", "the rules above mark what they renamed; this removes the mark"),
        ]
    return rules


def as_rename_map(rules: list[RenameRule], source: str = "<inferred>") -> RenameMap:
    return parse_rename_rules([[rule.pattern, rule.replacement] for rule in rules], source)


def reproduces(rules: list[RenameRule], original_names: list[str], partner: dict[str, str]) -> bool:
    """Applying the rules in order gives each paired name its partner and leaves the rest alone."""
    rename_map = as_rename_map(rules)
    return all(rename_map.apply(name) == partner.get(name, name) for name in original_names)


def alignment_rename_map(alignment: Alignment) -> RenameMap:
    """The alignment's pairing as a rename map, ready for :func:`tracetui.pairing.alignment.align`."""
    return as_rename_map(rename_rules(alignment))


def toml_string(text: str) -> str:
    """``text`` as a TOML string: literal (``'…'``, regexes read as written) where it can be, else
    basic, with every control character escaped (TOML forbids them raw)."""
    if "'" not in text and UNPRINTABLE.search(text) is None:
        return f"'{text}'"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = UNPRINTABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", escaped)
    return f'"{escaped}"'


# A layer index within a name quoted in a reason, written as ".#" like the templates beside it.
NUMBER_IN_NAME = re.compile(r"\.\d+(?=[.'\s])")


def unpaired_names(alignment: Alignment, side: Side) -> list[tuple[str, str]]:
    """(name template, why it was left unpaired or "") for one side's unpaired module calls."""
    trace = pick(alignment, side)
    paired = {pick(pair, side) for pair in alignment.paired()}
    templates: dict[str, str] = {}
    for record in trace.records:
        if record.kind == "module" and record.index not in paired:
            template = template_of(record.name) if record.name else "(root)"
            reason = alignment.unpaired_reasons.get((side, record.index), "")
            if template not in templates or (reason and not templates[template]):
                templates[template] = NUMBER_IN_NAME.sub(".#", reason)
    return list(templates.items())


def render_rename_map(alignment: Alignment, header: str = "") -> str:
    """The rename map as TOML: the rules with a comment each, then what was left unpaired."""
    rules = rename_rules(alignment)
    lines = [f"# {printable(line)}" if line else "#" for line in header.splitlines()]
    lines += [
        "# Each rule is re.sub(pattern, replacement, name), applied in order to the ORIGINAL model's",
        "# module names to give the PORTED model's names. Names both models share need no rule.",
        "rename = [",
    ]
    for rule in rules:
        lines.append(f"    [{toml_string(rule.pattern)}, {toml_string(rule.replacement)}],  # {printable(rule.comment)}")
    lines.append("]")
    for side in SIDES:
        names = unpaired_names(alignment, side)
        if names:
            lines.append(f"# Left unpaired in the {side} ({len(names)} name templates, # = any layer index):")
            lines += [f"#   {printable(name)}" + (f"  ({printable(reason)})" if reason else "") for name, reason in names]
    return "\n".join(lines) + "\n"


def write_rename_map(alignment: Alignment, path: str | Path, header: str = "", shown: str | None = None) -> Path:
    """Write the map whole or not at all; a failure is an OutputError naming ``shown`` (default: the path)."""
    path = Path(path)
    write_text_atomically(path, render_rename_map(alignment, header), shown)
    return path

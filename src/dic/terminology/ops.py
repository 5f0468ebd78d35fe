"""OPS (Operationen- und Prozedurenschlüssel) from the shipped `data/ops.yaml`.

    build_ops(declaration)  -> CodeSystem: chapters ("5"), groups ("5-42...5-54"), three-character
                               codes ("8-54"), four- to six-character codes ("5-470.11")
    normalize_ops(code)     -> ("5-378.c0", None) for "5-378.c0", "5378c0", "5-378C0", "5378.c0"

No package carries OPS, so the file holds the chapters, the groups, and the codes our sources
use plus common ones; a code's parent is its longest shipped prefix, else its group, else its
chapter, so the file never repeats the hierarchy.
"""

from __future__ import annotations

import re

from dic.errors import DefinitionError, Problem
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.declarations import (
    OpsCode,
    OpsGroup,
    SystemDeclaration,
    check_unique,
    load_declarations,
)

FILE = "ops.yaml"
_CODE = re.compile(r"([1-9])([0-9][0-9a-z](?:[0-9a-z])?)([0-9a-z]{0,2})")


def normalize_ops(code: str) -> tuple[str, str | None]:
    text = code.strip()
    if "..." in text:
        return text, None
    bare = text.replace("-", "").replace(".", "").replace(" ", "").lower()
    match = _CODE.fullmatch(bare)
    if not match:
        return text, None
    chapter, middle, tail = match.groups()
    if tail and len(middle) < 3:
        return text, None
    return f"{chapter}-{middle}" + (f".{tail}" if tail else ""), None


def _prefixes(code: str) -> list[str]:
    """Shorter forms of a code, longest first: 5-470.11 -> 5-470.1, 5-470, 5-47."""
    found = []
    head, _, tail = code.partition(".")
    for n in range(len(tail) - 1, 0, -1):
        found.append(f"{head}.{tail[:n]}")
    if tail:
        found.append(head)
    if len(head) == 5:  # "5-470" -> "5-47"
        found.append(head[:4])
    return found


def _group_of(code: str, groups: list[tuple[str, str, str]]) -> str | None:
    three = code.split(".")[0][:4]
    for group, low, high in groups:
        if low <= three <= high:
            return group
    return None


def build_ops(declaration: SystemDeclaration) -> CodeSystem:
    chapters = load_declarations(FILE, OpsGroup, key="chapters")
    groups = load_declarations(FILE, OpsGroup, key="groups")
    codes = load_declarations(FILE, OpsCode, key="codes")
    problems: list[Problem] = []
    check_unique(FILE, [c.code for c in codes], problems, key="codes")
    concepts = {c.code: Concept(c.code, c.display, None, "chapter") for c in chapters}
    ranges = []
    for n, group in enumerate(groups):
        low, _, high = group.code.partition("...")
        if not (low and high and low[0] == high[0] and low[0] in concepts and low <= high):
            problems.append(Problem(f"/groups/{n}/code", f"{group.code!r} is not a range FIRST...LAST in one chapter"))
            continue
        ranges.append((group.code, low, high))
        concepts[group.code] = Concept(group.code, group.display, low[0], "group")
    shipped = {c.code for c in codes}
    for n, entry in enumerate(codes):
        code, _ = normalize_ops(entry.code)
        if code != entry.code:
            problems.append(Problem(f"/codes/{n}/code", f"not an OPS code as the catalogue writes it: {entry.code!r}"))
            continue
        parent = next((p for p in _prefixes(code) if p in shipped), None) or _group_of(code, ranges)
        if parent is None:
            problems.append(Problem(f"/codes/{n}/code", f"{code} falls in no group of chapter {code[0]}"))
            continue
        kind = {4: "three-character", 5: "four-character"}.get(len(code), f"{len(code) - 2}-character")
        concepts[code] = Concept(code, entry.display, parent, kind)
    if problems:
        raise DefinitionError(f"terminology/data/{FILE}", problems)
    return CodeSystem(declaration.uri, declaration.name, declaration.title, tuple(declaration.versions),
                      declaration.source, concepts, normalize_ops, tuple(declaration.aliases))

"""One code system in memory: concepts, their single parent, children and the is-a closure.

    Concept          a code with display, parent, kind, designations and properties
    CodeSystem       the concepts of one system plus how its codes are normalized for lookup
        .find(code)          -> (Concept | None, mark): normalizes first (dots, dashes, GM marks)
        .ancestors(code)     -> tuple of codes, nearest first
        .descendants(code)   -> list of codes, depth first in code order
        .subsumption(a, b)   -> "equivalent" | "subsumes" | "subsumed-by" | "not-subsumed"

Every system we ship is a mono-hierarchy (ICD-10, OPS, ATC) or flat (LOINC, ORPHAcodes as
used here), so one parent per concept is enough. Lookups are plain dicts built once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True, slots=True)
class Concept:
    code: str
    display: str
    parent: str | None = None
    kind: str = "code"  # chapter, block, category, group, level-1 ... as the system names its levels
    designations: tuple[tuple[str, str], ...] = ()  # (language, value)
    properties: tuple[tuple[str, Any], ...] = ()


def keep_code(code: str) -> tuple[str, str | None]:
    """The identity normalization: codes are compared exactly, no mark."""
    return code.strip(), None


@dataclass
class CodeSystem:
    uri: str
    name: str  # short alias: icd10gm, ops, atc, loinc, orpha
    title: str
    versions: tuple[str, ...]  # accepted Coding.version values; empty = any
    source: str  # where the content comes from, for `dic term systems`
    concepts: dict[str, Concept]
    normalize: Callable[[str], tuple[str, str | None]] = keep_code
    aliases: tuple[str, ...] = ()
    hierarchical: bool = True
    _ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)

    @cached_property
    def children(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for concept in self.concepts.values():
            if concept.parent is not None:
                found.setdefault(concept.parent, []).append(concept.code)
        return {parent: sorted(codes) for parent, codes in found.items()}

    def find(self, code: str) -> tuple[Concept | None, str | None]:
        normalized, mark = self.normalize(code)
        return self.concepts.get(normalized), mark

    def ancestors(self, code: str) -> tuple[str, ...]:
        cached = self._ancestors.get(code)
        if cached is None:
            chain = []
            parent = self.concepts[code].parent
            while parent is not None and parent not in chain:
                chain.append(parent)
                parent = self.concepts[parent].parent if parent in self.concepts else None
            cached = self._ancestors[code] = tuple(chain)
        return cached

    def descendants(self, code: str) -> list[str]:
        found, stack = [], list(reversed(self.children.get(code, [])))
        while stack:
            current = stack.pop()
            found.append(current)
            stack.extend(reversed(self.children.get(current, [])))
        return found

    def subsumption(self, code_a: str, code_b: str) -> str:
        if code_a == code_b:
            return "equivalent"
        if code_a in self.ancestors(code_b):
            return "subsumes"
        if code_b in self.ancestors(code_a):
            return "subsumed-by"
        return "not-subsumed"

    def version_accepted(self, version: str | None) -> bool:
        return version is None or not self.versions or version in self.versions


def index_concepts(concepts: Iterable[Concept]) -> dict[str, Concept]:
    return {concept.code: concept for concept in concepts}

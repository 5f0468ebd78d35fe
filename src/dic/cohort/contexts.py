"""The declarations of contexts.yaml: how a CCDL criterion's context and codes become a kind.

    Contexts                      the validated file (Pydantic), with look-ups by name
    load_contexts(path=CONTEXTS)  -> Contexts; DefinitionError naming every problem (file, JSON pointer)
    contexts()                    -> the shipped declarations, loaded once
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dic.errors import DefinitionError, Problem
from dic.terminology import resolve_system

CONTEXTS = Path(__file__).with_name("contexts.yaml")
KindName = Literal["diagnosis", "procedure", "observation", "medication", "specimen", "consent", "encounter",
                   "age", "gender"]


class Declaration(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContextDeclaration(Declaration):
    kind: KindName | None  # None: read by term code (Patient)
    names: list[str]
    resource_types: list[str] = []  # narrows the kind's resources


class AttributeDeclaration(Declaration):
    name: str
    aliases: list[str] = []
    type: Literal["concept", "quantity", "reference"]
    match_code_only: bool = False
    references: list[KindName] = []


class KindDeclaration(Declaration):
    resource_types: list[str]
    has_value: bool = False
    attributes: list[AttributeDeclaration] = []

    def attribute(self, code: str) -> AttributeDeclaration | None:
        wanted = code.casefold()
        return next((a for a in self.attributes
                     if wanted in {n.casefold() for n in (a.name, *a.aliases)}), None)


class CodeRef(Declaration):
    system: str | None = None  # None: any system
    code: str

    def matches(self, system: str, code: str) -> bool:
        return code == self.code and (self.system is None or resolve_system(system) == resolve_system(self.system))


class CodeSystemDeclaration(Declaration):
    name: str  # dic.terminology's short name
    kind: KindName
    complete: bool = False
    pattern: str | None = None

    @property
    def uri(self) -> str:
        return resolve_system(self.name) or self.name

    def well_formed(self, code: str) -> bool:
        return self.pattern is None or re.fullmatch(self.pattern, code) is not None


class Contexts(Declaration):
    contexts: list[ContextDeclaration]
    kinds: dict[KindName, KindDeclaration]
    age_codes: list[CodeRef]
    gender_codes: list[CodeRef]
    gender_map: dict[str, list[str]]
    age_units: dict[str, list[str]]
    code_systems: list[CodeSystemDeclaration]
    literal_systems: list[str]

    def context(self, code: str) -> ContextDeclaration | None:
        wanted = code.casefold()
        return next((c for c in self.contexts if wanted in {n.casefold() for n in c.names}), None)

    def code_system(self, uri: str | None) -> CodeSystemDeclaration | None:
        return next((s for s in self.code_systems if uri is not None and s.uri == uri), None)

    def gender(self, code: str) -> str | None:
        wanted = code.casefold()
        return next((g for g, names in self.gender_map.items() if wanted in {n.casefold() for n in names}), None)

    def age_unit(self, code: str) -> str | None:
        wanted = code.casefold()
        return next((u for u, names in self.age_units.items() if wanted in {n.casefold() for n in names}), None)

    def problems(self) -> list[Problem]:
        found = [Problem(f"/code_systems/{n}/name", f"dic.terminology knows no code system {s.name!r}")
                 for n, s in enumerate(self.code_systems) if resolve_system(s.name) is None]
        for n, declared in enumerate(self.code_systems):
            try:
                re.compile(declared.pattern or "")
            except re.error as error:
                found.append(Problem(f"/code_systems/{n}/pattern", f"not a regular expression: {error}"))
        names = [name.casefold() for c in self.contexts for name in c.names]
        found += [Problem("/contexts", f"context name {name!r} is declared twice")
                  for name in sorted({n for n in names if names.count(n) > 1})]
        return found


def load_contexts(path: Path = CONTEXTS) -> Contexts:
    try:
        declared = Contexts.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(path), problems) from error
    if problems := declared.problems():
        raise DefinitionError(str(path), problems)
    return declared


@cache
def contexts() -> Contexts:
    return load_contexts()

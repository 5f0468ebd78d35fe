"""$translate with FHIR R4 ConceptMaps: the shipped ones (data/concept_maps/*.json) or a given one.

    concept_maps()                                  -> {url: ConceptMap} shipped with the package
    translate(concept_map_or_url, system, code)     -> TranslationResult(result, message, matches)

A group's `unmapped.mode: provided` maps every valid source code to the same code in the target
system (the ATC bfarm <-> whocc maps: one catalogue under two URIs); `fixed` maps it to
`unmapped.code`. Without a map, every shipped map with a group whose source is `system` is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from dic.errors import InputError
from dic.terminology.declarations import DATA, read_data
from dic.terminology.operations import parameter, parameters
from dic.terminology.systems import code_system, resolve_system

NOT_A_MATCH = {"unmatched", "disjoint"}


@dataclass(frozen=True)
class Match:
    equivalence: str
    system: str
    code: str
    display: str | None
    source: str  # the ConceptMap's url

    def as_part(self) -> dict[str, Any]:
        coding = {"system": self.system, "code": self.code} | ({"display": self.display} if self.display else {})
        return {"name": "match", "part": [parameter("equivalence", self.equivalence, "valueCode"),
                                          parameter("concept", coding, "valueCoding"),
                                          parameter("source", self.source, "valueUri")]}


@dataclass(frozen=True)
class TranslationResult:
    result: bool
    message: str | None
    matches: tuple[Match, ...]

    def as_parameters(self) -> dict[str, Any]:
        return parameters(parameter("result", self.result),
                          parameter("message", self.message) if self.message else None,
                          *[m.as_part() for m in self.matches])


@cache
def concept_maps() -> dict[str, dict[str, Any]]:
    maps = {}
    for path in sorted((DATA / "concept_maps").glob("*.json")):
        concept_map = read_data(f"concept_maps/{path.name}")
        maps[concept_map["url"]] = concept_map
    return maps


def translate(concept_map_or_url: dict[str, Any] | str | None, system: str, code: str) -> TranslationResult:
    if isinstance(concept_map_or_url, dict):
        chosen = [concept_map_or_url]
    elif concept_map_or_url:
        if concept_map_or_url not in concept_maps():
            raise InputError(f"unknown ConceptMap {concept_map_or_url!r} (shipped: {', '.join(concept_maps())})")
        chosen = [concept_maps()[concept_map_or_url]]
    else:
        chosen = list(concept_maps().values())
    groups = [(m, g) for m in chosen for g in m.get("group", []) if g.get("source") == system]
    if not groups:  # an alias URI or short name: compare canonical systems
        wanted = resolve_system(system)
        groups = [(m, g) for m in chosen for g in m.get("group", [])
                  if wanted and resolve_system(g.get("source", "")) == wanted]
    if not groups:
        return TranslationResult(False, f"no ConceptMap translates from {system!r}", ())
    matches: list[Match] = []
    for concept_map, group in groups:
        matches += _translate_in(concept_map, group, system, code)
    good = tuple(m for m in matches if m.equivalence not in NOT_A_MATCH)
    message = None if good else f"no mapping for {system} {code!r}"
    return TranslationResult(bool(good), message, tuple(matches))


def _translate_in(concept_map: dict[str, Any], group: dict[str, Any], system: str, code: str) -> list[Match]:
    source_code, valid = code, True
    if resolve_system(group["source"]):
        concept, _ = code_system(group["source"]).find(code)
        valid = concept is not None
        source_code = concept.code if concept else code
    url, target = concept_map.get("url", ""), group.get("target", "")
    found = []
    for element in group.get("element", []):
        if element.get("code") == source_code:
            found += [Match(t.get("equivalence", "equivalent"), target, t.get("code", ""), t.get("display"), url)
                      for t in element.get("target", [])]
    if found or not valid:
        return found
    unmapped = group.get("unmapped") or {}
    if unmapped.get("mode") == "provided":
        return [Match("equal", target, source_code, _display(target, source_code), url)]
    if unmapped.get("mode") == "fixed":
        return [Match("wider", target, unmapped["code"], unmapped.get("display"), url)]
    return []


def _display(system: str, code: str) -> str | None:
    if resolve_system(system) is None:
        return None
    concept, _ = code_system(system).find(code)
    return concept.display if concept else None

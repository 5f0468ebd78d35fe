"""The FHIR terminology operations $lookup, $validate-code and $subsumes on our code systems.

    lookup(system, code, version=None)                        -> LookupResult; InputError if unknown
    validate_code(system, code, display=None, version=None)   -> ValidationResult (never raises)
    subsumes(system, code_a, code_b)                          -> Subsumption ("subsumes", ...)
    validate_unit(code)                                       -> ValidationResult for a UCUM code

Each result has `.as_parameters()`: the FHIR R4 Parameters resource that operation returns.
Systems are named by canonical URI, alias URI or short name (icd10gm, ops, atc, loinc, orpha, ucum).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dic.errors import InputError
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.systems import UCUM, code_system, resolve_system
from dic.terminology.units import describe_unit, unit_problem

VALUE_TYPES = {bool: "valueBoolean", int: "valueInteger", float: "valueDecimal", str: "valueString"}


def parameter(name: str, value: Any, value_type: str | None = None) -> dict[str, Any]:
    return {"name": name, value_type or VALUE_TYPES[type(value)]: value}


def parameters(*entries: dict[str, Any] | None) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [e for e in entries if e is not None]}


@dataclass(frozen=True)
class LookupResult:
    system: str
    code: str
    display: str
    name: str
    version: str | None = None
    kind: str = "code"
    mark: str | None = None  # ICD-10-GM † * ! as written in the request
    designations: tuple[tuple[str, str], ...] = ()
    properties: tuple[tuple[str, Any], ...] = ()
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()

    def as_parameters(self) -> dict[str, Any]:
        entries = [parameter("name", self.name), parameter("version", self.version) if self.version else None,
                   parameter("display", self.display)]
        entries += [{"name": "designation", "part": [parameter("language", lang, "valueCode"),
                                                     parameter("value", value)]}
                    for lang, value in self.designations]
        props = [("kind", self.kind, "valueCode")] + [("parent", p, "valueCode") for p in self.parents]
        props += [("child", c, "valueCode") for c in self.children]
        props += [(name, value, None) for name, value in self.properties]
        if self.mark:
            props.append(("mark", self.mark, "valueString"))
        entries += [{"name": "property", "part": [parameter("code", name, "valueCode"),
                                                  parameter("value", value, value_type)]}
                    for name, value, value_type in props]
        return parameters(*entries)


@dataclass(frozen=True)
class ValidationResult:
    valid: bool
    message: str | None = None
    display: str | None = None
    system: str | None = None
    code: str | None = None

    def as_parameters(self) -> dict[str, Any]:
        return parameters(parameter("result", self.valid),
                          parameter("message", self.message) if self.message else None,
                          parameter("display", self.display) if self.display else None,
                          parameter("code", self.code, "valueCode") if self.code else None,
                          parameter("system", self.system, "valueUri") if self.system else None)


class Subsumption(StrEnum):
    equivalent = "equivalent"
    subsumes = "subsumes"
    subsumed_by = "subsumed-by"
    not_subsumed = "not-subsumed"

    def as_parameters(self) -> dict[str, Any]:
        return parameters(parameter("outcome", self.value, "valueCode"))


@dataclass(frozen=True)
class _Found:
    system: CodeSystem
    concept: Concept
    mark: str | None = field(default=None)


def _find(system: str, code: str) -> _Found:
    cs = code_system(system)
    concept, mark = cs.find(code)
    if concept is None:
        raise InputError(f"{cs.title} ({cs.uri}) has no code {code!r}")
    return _Found(cs, concept, mark)


def lookup(system: str, code: str, version: str | None = None) -> LookupResult:
    if resolve_system(system) == UCUM:
        problem = unit_problem(code)
        if problem:
            raise InputError(problem)
        return LookupResult(UCUM, code, describe_unit(code), "UCUM", kind="unit")
    found = _find(system, code)
    cs, concept = found.system, found.concept
    if not cs.version_accepted(version):
        raise InputError(f"{cs.title} version {version!r} is not known (known: {', '.join(cs.versions)})")
    return LookupResult(cs.uri, concept.code, concept.display, cs.title, version, concept.kind, found.mark,
                        concept.designations, concept.properties,
                        (concept.parent,) if concept.parent else (), tuple(cs.children.get(concept.code, ())))


def validate_unit(code: str) -> ValidationResult:
    problem = unit_problem(code)
    return ValidationResult(problem is None, problem, None, UCUM, code)


def validate_code(system: str, code: str, display: str | None = None,
                  version: str | None = None) -> ValidationResult:
    uri = resolve_system(system)
    if uri is None:
        return ValidationResult(False, f"unknown code system {system!r}: cannot validate {code!r}", None, system, code)
    if uri == UCUM:
        return validate_unit(code)
    cs = code_system(uri)
    if not cs.version_accepted(version):
        return ValidationResult(False, f"{cs.title} version {version!r} is not known "
                                       f"(known: {cs.versions[0]}–{cs.versions[-1]})", None, system, code)
    concept, _ = cs.find(code)
    if concept is None:
        return ValidationResult(False, f"{code!r} is not a code of {cs.title} ({system})", None, system, code)
    if display is not None and not _display_matches(concept, display):
        return ValidationResult(False, f"wrong display {display!r} for {cs.title} {concept.code}: "
                                       f"expected {concept.display!r}", concept.display, system, code)
    message = None if concept.code == code else f"{code!r} is written {concept.code!r} in {cs.title}"
    return ValidationResult(True, message, concept.display, system, code)


def _display_matches(concept: Concept, display: str) -> bool:
    wanted = " ".join(display.split()).casefold()
    return any(wanted == " ".join(text.split()).casefold()
               for text in (concept.display, *(value for _, value in concept.designations)))


def subsumes(system: str, code_a: str, code_b: str) -> Subsumption:
    a, b = _find(system, code_a), _find(system, code_b)
    return Subsumption(a.system.subsumption(a.concept.code, b.concept.code))

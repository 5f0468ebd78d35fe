"""Which code systems we know, by URI or short alias, each built once on first use.

    UCUM                       "http://unitsofmeasure.org": a grammar, served by dic.terminology.units
    system_declarations()      -> the entries of data/systems.yaml
    resolve_system(text)       -> canonical URI for a URI, an alias URI or a short name; None if unknown
    code_system(text)          -> CodeSystem (built and cached); InputError if unknown
    all_code_systems()         -> every enumerable CodeSystem, built
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from dic.errors import InputError
from dic.terminology.catalogs import build_atc, build_loinc, build_orpha
from dic.terminology.code_system import CodeSystem
from dic.terminology.declarations import SystemDeclaration, load_declarations
from dic.terminology.icd10gm import build_icd10gm
from dic.terminology.ops import build_ops

UCUM = "http://unitsofmeasure.org"
BUILDERS: dict[str, Callable[[SystemDeclaration], CodeSystem]] = {
    "icd10gm": build_icd10gm, "ops": build_ops, "atc": build_atc, "loinc": build_loinc, "orpha": build_orpha,
}


@cache
def system_declarations() -> tuple[SystemDeclaration, ...]:
    return tuple(load_declarations("systems.yaml", SystemDeclaration))


@cache
def _names() -> dict[str, str]:
    names = {}
    for d in system_declarations():
        for name in (d.uri, d.name, *d.aliases):
            names[name] = d.uri
            names[name.lower()] = d.uri
    return names


def resolve_system(text: str) -> str | None:
    names = _names()
    return names.get(text) or names.get(text.strip().lower())


@cache
def _build(uri: str) -> CodeSystem:
    declaration = next(d for d in system_declarations() if d.uri == uri)
    return BUILDERS[declaration.name](declaration)


def code_system(text: str) -> CodeSystem:
    uri = resolve_system(text)
    if uri is None or uri == UCUM:
        known = ", ".join(d.name for d in system_declarations())
        what = "UCUM is a unit grammar, not an enumerable code system:" if uri == UCUM else "unknown code system"
        raise InputError(f"{what} {text!r} (known: {known})")
    return _build(uri)


def all_code_systems() -> list[CodeSystem]:
    return [code_system(d.uri) for d in system_declarations() if d.uri != UCUM]

"""The code systems shipped as plain data: ATC, LOINC and ORPHAcodes.

    build_atc(declaration)    -> CodeSystem: five levels (A, A10, A10B, A10BA, A10BA02); the parent
                                 of a code is given by its length, so `data/atc.yaml` is code: title
    build_loinc(declaration)  -> CodeSystem (flat): the six LOINC axes, class, example unit and,
                                 for molar <-> mass conversions, the molar mass as properties
    build_orpha(declaration)  -> CodeSystem: the ORPHAcodes our data uses (`data/orpha.yaml`)
"""

from __future__ import annotations

from dic.errors import DefinitionError, Problem
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.declarations import (
    LoincCode,
    OrphaCode,
    SystemDeclaration,
    check_unique,
    load_declarations,
    read_data,
)

ATC_LEVELS = {1: 1, 3: 2, 4: 3, 5: 4, 7: 5}  # code length -> ATC level
LOINC_PROPERTIES = {  # our field -> the LOINC property name ($lookup reports these)
    "component": "COMPONENT", "property": "PROPERTY", "time": "TIME_ASPCT", "system": "SYSTEM",
    "scale": "SCALE_TYP", "method": "METHOD_TYP", "loinc_class": "CLASS", "unit": "EXAMPLE_UCUM_UNITS",
    "molar_mass_g_per_mol": "MOLAR_MASS",
}


def _system(declaration: SystemDeclaration, concepts: dict[str, Concept], **options: object) -> CodeSystem:
    return CodeSystem(declaration.uri, declaration.name, declaration.title, tuple(declaration.versions),
                      declaration.source, concepts, aliases=tuple(declaration.aliases), **options)  # type: ignore[arg-type]


def build_atc(declaration: SystemDeclaration) -> CodeSystem:
    entries = read_data("atc.yaml")
    problems: list[Problem] = []
    concepts: dict[str, Concept] = {}
    parents = {5: 4, 4: 3, 3: 1, 7: 5}
    for code, display in (entries or {}).items():
        code = str(code)
        level = ATC_LEVELS.get(len(code))
        if level is None or not code[0].isalpha():
            problems.append(Problem(f"/{code}", "an ATC code has 1, 3, 4, 5 or 7 characters"))
            continue
        parent = code[: parents[len(code)]] if len(code) > 1 else None
        concepts[code] = Concept(code, str(display), parent, f"level-{level}")
    for code, concept in concepts.items():
        if concept.parent is not None and concept.parent not in concepts:
            problems.append(Problem(f"/{code}", f"its level {ATC_LEVELS[len(code)] - 1} group {concept.parent} is missing"))
    if problems:
        raise DefinitionError("terminology/data/atc.yaml", problems)
    return _system(declaration, concepts, normalize=_normalize_atc)


def build_loinc(declaration: SystemDeclaration) -> CodeSystem:
    entries = load_declarations("loinc.yaml", LoincCode)
    problems: list[Problem] = []
    check_unique("loinc.yaml", [e.code for e in entries], problems)
    if problems:
        raise DefinitionError("terminology/data/loinc.yaml", problems)
    concepts = {}
    for e in entries:
        properties = tuple((LOINC_PROPERTIES[k], v) for k, v in e.model_dump().items()
                           if k in LOINC_PROPERTIES and v is not None)
        concepts[e.code] = Concept(e.code, e.display, None, "term", (), properties)
    return _system(declaration, concepts, hierarchical=False)


def build_orpha(declaration: SystemDeclaration) -> CodeSystem:
    entries = load_declarations("orpha.yaml", OrphaCode)
    problems: list[Problem] = []
    check_unique("orpha.yaml", [e.code for e in entries], problems)
    concepts = {e.code: Concept(e.code, e.display, e.parent, "disorder") for e in entries}
    problems += [Problem(f"/{n}/parent", f"unknown parent {e.parent!r}")
                 for n, e in enumerate(entries) if e.parent is not None and e.parent not in concepts]
    if problems:
        raise DefinitionError("terminology/data/orpha.yaml", problems)
    return _system(declaration, concepts, normalize=_normalize_orpha)


def _normalize_atc(code: str) -> tuple[str, str | None]:
    return code.strip().upper(), None


def _normalize_orpha(code: str) -> tuple[str, str | None]:
    text = code.strip()
    return (text[6:] if text.upper().startswith("ORPHA:") else text), None

"""$expand: a FHIR R4 ValueSet's compose turned into its expansion.

    expand(value_set)  -> the ValueSet with `expansion.total` and `expansion.contains`
                          (system, code, display); DefinitionError listing every problem

Supported: `compose.include[]` and `compose.exclude[]` with `system`, `concept` (extensional) and
`filter` with op `is-a`, `descendent-of`, `is-not-a`, `generalizes`, `=`, `in`, `not-in`, `regex`,
`exists`. Filter property `concept` (or `code`) means the code itself; any other property is a
concept property (LOINC `CLASS`, `COMPONENT`, ...), or `parent`. Includes by `valueSet`
are not supported (nothing resolves canonical ValueSet URLs yet).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from dic.errors import DefinitionError, InputError, Problem
from dic.terminology.code_system import CodeSystem, Concept
from dic.terminology.systems import code_system, resolve_system


def expand(value_set: dict[str, Any]) -> dict[str, Any]:
    problems: list[Problem] = []
    compose = value_set.get("compose") or {}
    if not compose.get("include"):
        problems.append(Problem("/compose/include", "a ValueSet to expand needs compose.include"))
    included = _select(compose.get("include") or [], "/compose/include", problems)
    excluded = _select(compose.get("exclude") or [], "/compose/exclude", problems)
    if problems:
        raise DefinitionError(f"ValueSet {value_set.get('url') or value_set.get('id') or '(no url)'}", problems)
    drop = {(system, code) for system, code, _ in excluded}
    contains, seen = [], set()
    for system, code, display in included:
        if (system, code) not in drop and (system, code) not in seen:
            seen.add((system, code))
            contains.append({"system": system, "code": code, "display": display})
    result = {key: value for key, value in value_set.items() if key != "expansion"}
    result.setdefault("resourceType", "ValueSet")
    result.setdefault("status", "active")
    result["expansion"] = {"timestamp": datetime.now(UTC).replace(microsecond=0).isoformat(),
                           "total": len(contains), "contains": contains}
    return result


def _select(parts: list[dict[str, Any]], where: str, problems: list[Problem]) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for n, part in enumerate(parts):
        path = f"{where}/{n}"
        if part.get("valueSet"):
            problems.append(Problem(f"{path}/valueSet", "including other ValueSets is not supported"))
        system = part.get("system")
        if not system or resolve_system(system) is None:
            problems.append(Problem(f"{path}/system", f"unknown or missing code system {system!r}"))
            continue
        try:
            cs = code_system(system)
        except InputError as error:  # UCUM: a grammar, nothing to enumerate
            problems.append(Problem(f"{path}/system", str(error)))
            continue
        codes = _codes(cs, part, path, problems)
        named = system if ":" in system else cs.uri  # a short name (icd10gm) becomes the canonical URI
        found += [(named, c.code, d) for c, d in codes]
    return found


def _codes(cs: CodeSystem, part: dict[str, Any], path: str,
           problems: list[Problem]) -> list[tuple[Concept, str]]:
    selected: list[tuple[Concept, str]] | None = None
    if part.get("concept"):
        selected = []
        for n, entry in enumerate(part["concept"]):
            concept, _ = cs.find(str(entry.get("code", "")))
            if concept is None:
                problems.append(Problem(f"{path}/concept/{n}/code", f"{cs.title} has no code {entry.get('code')!r}"))
            else:
                selected.append((concept, entry.get("display") or concept.display))
    candidates = [c for c, _ in selected] if selected is not None else None
    for n, rule in enumerate(part.get("filter") or []):
        matched = _filter(cs, rule, f"{path}/filter/{n}", problems, candidates)
        candidates = matched if candidates is None else [c for c in candidates if c.code in {m.code for m in matched}]
    if candidates is None:
        candidates = sorted(cs.concepts.values(), key=lambda c: c.code)
    if selected is not None:
        keep = {c.code for c in candidates}
        return [(c, d) for c, d in selected if c.code in keep]
    return [(c, c.display) for c in candidates]


def _filter(cs: CodeSystem, rule: dict[str, Any], path: str, problems: list[Problem],
            among: list[Concept] | None) -> list[Concept]:
    prop, op, value = rule.get("property"), rule.get("op"), str(rule.get("value", ""))
    if op in ("is-a", "descendent-of", "is-not-a", "generalizes"):
        if prop not in ("concept", "code"):
            problems.append(Problem(f"{path}/property", f"op {op!r} needs property 'concept', not {prop!r}"))
            return []
        root, _ = cs.find(value)
        if root is None:
            problems.append(Problem(f"{path}/value", f"{cs.title} has no code {value!r}"))
            return []
        below = cs.descendants(root.code)
        codes = {"is-a": [root.code, *below], "descendent-of": below,
                 "generalizes": [root.code, *cs.ancestors(root.code)]}.get(op)
        if codes is None:  # is-not-a
            skip = {root.code, *below}
            return [c for c in (among if among is not None else _all(cs)) if c.code not in skip]
        return [cs.concepts[c] for c in codes]
    values = [v.strip() for v in value.split(",")] if op in ("in", "not-in") else [value]
    tests = {"=": lambda v: v in values, "in": lambda v: v in values, "not-in": lambda v: v not in values,
             "exists": lambda v: (v is not None) == (value.lower() == "true")}
    if op == "regex":
        try:
            pattern = re.compile(value)
        except re.error as error:
            problems.append(Problem(f"{path}/value", f"not a regular expression: {error}"))
            return []
        tests["regex"] = lambda v: v is not None and pattern.fullmatch(v) is not None
    if op not in tests:
        problems.append(Problem(f"{path}/op", f"unsupported filter op {op!r}"))
        return []
    return [c for c in (among if among is not None else _all(cs)) if tests[op](_property(cs, c, str(prop)))]


def _property(cs: CodeSystem, concept: Concept, name: str) -> str | None:
    if name in ("concept", "code"):
        return concept.code
    if name == "parent":
        return concept.parent
    if name == "display":
        return concept.display
    value = dict(concept.properties).get(name, dict(concept.properties).get(name.upper()))
    return None if value is None else str(value)


def _all(cs: CodeSystem) -> list[Concept]:
    return sorted(cs.concepts.values(), key=lambda c: c.code)

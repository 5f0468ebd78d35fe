"""One CCDL criterion (JSON) resolved into `model.Criterion`s: kind, resources, expanded codes, filters.

    resolve_criterion(raw, path, found)          -> tuple of Criterion (empty if the criterion is invalid)
    time_restriction(raw, path, found)           -> TimeRestriction | None

The kind comes from the context, or from the term code (age, gender) or its code system
(contexts.yaml). Codes are expanded by dic.terminology (a code and its descendants); quantity
filters on a LOINC code are converted into the code's canonical UCUM unit. An observation
criterion whose codes have different canonical units becomes one criterion per unit (an OR in
the same clause, so the meaning is unchanged): a filter holds its numbers in one unit.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from dic.cohort.contexts import contexts
from dic.cohort.filters import FILTER_KEYS, TERM_CODE_KEYS, concept_filter, quantity_filter, value_filter
from dic.cohort.findings import Findings
from dic.cohort.model import AttributeFilter, Coding, Criterion, TimeRestriction
from dic.terminology import canonical_unit, code_system, expand, lookup, resolve_system

CRITERION_KEYS = ("context", "termCodes", "valueFilter", "attributeFilters", "timeRestriction")
LOINC = "http://loinc.org"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def resolve_criterion(raw: Any, path: str, found: Findings, referenced: bool = False) -> tuple[Criterion, ...]:
    before = len(found.problems)
    if not found.keys(raw, path, CRITERION_KEYS, ("context", "termCodes"), "a criterion"):
        return ()
    terms = [(f"{path}/termCodes/{n}", t) for n, t in enumerate(found.array(raw.get("termCodes"), f"{path}/termCodes"))
             if found.keys(t, f"{path}/termCodes/{n}", TERM_CODE_KEYS, ("code", "system"), "a term code")]
    terms = [(p, found.text(t, "system", p, empty=True), found.text(t, "code", p)) for p, t in terms]
    terms = [(p, system, code) for p, system, code in terms if system is not None and code is not None]
    context = raw.get("context")
    context_code = found.text(context, "code", f"{path}/context") if "context" in raw and found.keys(
        context, f"{path}/context", TERM_CODE_KEYS, ("code",), "a context") else None
    kind, resource_types = _kind(context_code, terms, path, found)
    if kind is None:
        return ()
    declared = contexts().kinds[kind]
    by_unit: dict[tuple[str | None, Any], list[Coding]] = {}  # (canonical unit, molar mass) -> codes
    for term_path, system, code in terms:
        codings = [] if kind in ("age", "gender") else _codes(system, code, term_path, found)
        by_unit.setdefault(_unit_key(kind, system, code), []).extend(codings)
    value = raw.get("valueFilter")
    if value is not None and not declared.has_value:
        found.problem(f"{path}/valueFilter", f"a {kind} criterion has no value to filter")
    attributes = _attributes(raw.get("attributeFilters"), f"{path}/attributeFilters", kind, referenced, found)
    time = time_restriction(raw.get("timeRestriction"), f"{path}/timeRestriction", found)
    first = raw["termCodes"][0] if isinstance(raw.get("termCodes"), list) and raw["termCodes"] else {}
    display = str(first.get("display") or first.get("code") or "") if isinstance(first, dict) else ""
    quantity = isinstance(value, dict) and str(value.get("type", "")).startswith("quantity")
    if not (kind == "observation" and quantity):
        by_unit = {(None, None): [c for codes in by_unit.values() for c in codes]}
    loinc = {key: code for _, system, code in terms if (key := _unit_key(kind, system, code))[0]}
    criteria = []
    for key, codes in by_unit.items():
        filter_ = None
        if value is not None and declared.has_value:
            filter_ = value_filter(value, f"{path}/valueFilter", kind, key[0], loinc.get(key), found)
        criteria.append(Criterion(path, kind, resource_types, tuple(dict.fromkeys(codes)), filter_, attributes,
                                  time, display))
    return tuple(criteria) if len(found.problems) == before else ()


def _unit_key(kind: str, system: str, code: str) -> tuple[str | None, Any]:
    """Codes compared in one unit: the LOINC code's canonical unit and molar mass (for mmol <-> mg)."""
    if kind != "observation" or resolve_system(system) != LOINC or canonical_unit(code) is None:
        return None, None
    return canonical_unit(code), dict(lookup(LOINC, code).properties).get("MOLAR_MASS")


def _kind(context: str | None, terms: list[tuple[str, str, str]], path: str,
          found: Findings) -> tuple[str | None, tuple[str, ...]]:
    declared = contexts()
    for kind, refs in (("age", declared.age_codes), ("gender", declared.gender_codes)):
        hits = [any(r.matches(s, c) for r in refs) for _, s, c in terms]
        if any(hits) and not all(hits):
            found.problem(f"{path}/termCodes", f"{kind} term codes cannot be mixed with other term codes")
            return None, ()
        if terms and all(hits):
            return kind, tuple(declared.kinds[kind].resource_types)
    if context is None or not terms:
        return None, ()
    named = declared.context(context)
    if named is not None and named.kind is not None:
        return named.kind, tuple(named.resource_types or declared.kinds[named.kind].resource_types)
    systems = [declared.code_system(resolve_system(s)) for _, s, _ in terms]
    kinds = {s.kind for s in systems if s is not None}
    if len(kinds) != 1 or None in systems:
        unknown = f"unknown context {context!r}" if named is None else f"context {context!r}"
        found.problem(f"{path}/context/code", f"{unknown} and no code system to tell the criterion's kind"
                      + (f" (the term codes mean {' and '.join(sorted(kinds))})" if len(kinds) > 1 else ""))
        return None, ()
    kind = kinds.pop()
    found.warn(f"{path}/context/code", f"context {context!r}: kind {kind!r} taken from the code system of the term codes")
    return kind, tuple(declared.kinds[kind].resource_types)


def _codes(system: str, code: str, path: str, found: Findings) -> list[Coding]:
    """A term code and its descendants; a code we cannot check is matched literally (with a warning)."""
    uri = resolve_system(system) if system else None
    declared = contexts().code_system(uri)
    if declared is None:
        if not system:
            found.warn(f"{path}/system", f"no code system: code {code!r} is matched in any system")
        elif uri is None and system not in contexts().literal_systems:
            found.warn(f"{path}/system", f"unknown code system {system!r}: code {code!r} matched literally")
        return [Coding(uri or system, code)]
    catalogue = code_system(declared.uri)
    concept, _ = catalogue.find(code)
    if concept is None:
        if declared.complete:
            found.problem(f"{path}/code", f"{catalogue.title} code {code!r} does not exist")
        elif not declared.well_formed(code):
            found.problem(f"{path}/code", f"{code!r} is not a well-formed {catalogue.title} code")
        else:
            found.warn(f"{path}/code", f"{catalogue.title} code {code!r} is not in our catalogue: "
                                       "matched literally, without descendants")
        return [Coding(declared.uri, code)]
    value_set = {"resourceType": "ValueSet", "compose": {"include": [
        {"system": declared.uri, "filter": [{"property": "concept", "op": "is-a", "value": concept.code}]}]}}
    return [Coding(c["system"], c["code"]) for c in expand(value_set)["expansion"]["contains"]]


def _attributes(raw: Any, path: str, kind: str, referenced: bool, found: Findings) -> tuple[AttributeFilter, ...]:
    if raw is None:
        return ()
    declared, result = contexts().kinds[kind], []
    for n, entry in enumerate(found.array(raw, path, required=False)):
        where = f"{path}/{n}"
        type_ = entry.get("type") if isinstance(entry, dict) else None
        if type_ not in FILTER_KEYS:
            found.problem(f"{where}/type", f"attribute filter type must be one of {', '.join(FILTER_KEYS)}")
            continue
        if not found.keys(entry, where, (*FILTER_KEYS[type_], "attributeCode"), ("type", "attributeCode")):
            continue
        code_raw = entry["attributeCode"]
        code = found.text(code_raw, "code", f"{where}/attributeCode") if found.keys(
            code_raw, f"{where}/attributeCode", TERM_CODE_KEYS, ("code",), "an attribute code") else None
        attribute = declared.attribute(code) if code else None
        if code and attribute is None:
            known = ", ".join(a.name for a in declared.attributes) or "none"
            found.problem(f"{where}/attributeCode/code", f"{code!r} is not an attribute of {kind} criteria "
                                                         f"(known: {known})")
        if attribute is None:
            continue
        if type_.startswith("quantity") and attribute.type == "quantity":
            if quantity := quantity_filter(entry, where, found):
                result.append(AttributeFilter(attribute.name, where, quantity))
        elif type_ == "concept" and attribute.type == "concept":
            concepts = concept_filter(entry, where, False, found, attribute.match_code_only)
            result.append(AttributeFilter(attribute.name, where, concepts))
        elif type_ == "reference" and attribute.type == "reference" and referenced:
            found.problem(f"{where}/type", "a referenced criterion cannot have a reference filter of its own")
        elif type_ == "reference" and attribute.type == "reference":
            targets = []
            for m, target in enumerate(found.array(entry.get("criteria"), f"{where}/criteria")):
                for criterion in resolve_criterion(target, f"{where}/criteria/{m}", found, referenced=True):
                    if criterion.kind not in attribute.references:
                        found.problem(f"{where}/criteria/{m}", f"{kind} {attribute.name} references "
                                      f"{' or '.join(attribute.references)} criteria, not {criterion.kind}")
                    targets.append(criterion)
            result.append(AttributeFilter(attribute.name, where, references=tuple(targets)))
        else:
            found.problem(f"{where}/type", f"{kind} attribute {attribute.name!r} takes a {attribute.type} "
                                           f"filter, not {type_!r}")
    return tuple(result)


def time_restriction(raw: Any, path: str, found: Findings) -> TimeRestriction | None:
    if raw is None or not found.keys(raw, path, ("afterDate", "beforeDate"), (), "a time restriction"):
        return None
    if not raw:
        found.problem(path, "a timeRestriction needs afterDate, beforeDate or both")
    days: dict[str, date | None] = {}
    for name in ("afterDate", "beforeDate"):
        text = raw.get(name)
        days[name] = None
        if text is None:
            continue
        try:
            if not isinstance(text, str) or not _DATE.fullmatch(text):
                raise ValueError
            days[name] = date.fromisoformat(text)
        except ValueError:
            found.problem(f"{path}/{name}", f"{name} {text!r} is not a date (YYYY-MM-DD)")
    after, before = days["afterDate"], days["beforeDate"]
    if after and before and after > before:
        found.problem(path, f"afterDate {after} is after beforeDate {before}")
    return TimeRestriction(after, before)

"""CCDL value filters read into `model.ValueFilter`: concepts, comparators and ranges, in which unit.

    value_filter(raw, path, kind, canonical, loinc, found)   -> ValueFilter | None (a criterion's valueFilter)
    concept_filter(raw, path, gender, found, code_only)      -> ValueFilter of selectedConcepts
    quantity_filter(raw, path, found)                        -> ValueFilter as written (attribute filters)

Observation quantities are converted into the LOINC code's canonical UCUM unit (dic.terminology,
molar masses included) and marked normalized; without a canonical unit the numbers stay as written.
Ages keep their unit (a, mo, wk, d); gender concepts become Patient.gender codes.
"""

from __future__ import annotations

from typing import Any

from dic.cohort.contexts import contexts
from dic.cohort.findings import Findings
from dic.cohort.model import Coding, ValueFilter
from dic.errors import InputError
from dic.terminology import convert, resolve_system, validate_unit

TERM_CODE_KEYS = ("code", "system", "version", "display")
FILTER_KEYS = {"concept": ("type", "selectedConcepts"),
               "quantity-comparator": ("type", "comparator", "value", "unit"),
               "quantity-range": ("type", "minValue", "maxValue", "unit"),
               "reference": ("type", "criteria")}
COMPARATORS = ("gt", "ge", "lt", "le", "eq", "ne")


def value_filter(raw: Any, path: str, kind: str, canonical: str | None, loinc: str | None,
                 found: Findings) -> ValueFilter | None:
    type_ = raw.get("type") if isinstance(raw, dict) else None
    wanted = {"age": ("quantity-comparator", "quantity-range"), "gender": ("concept",)}.get(
        kind, ("concept", "quantity-comparator", "quantity-range"))
    if type_ not in wanted:
        found.problem(f"{path}/type", f"a {kind} criterion's valueFilter has type {' or '.join(wanted)}, "
                                      f"not {type_!r}")
        return None
    if not found.keys(raw, path, FILTER_KEYS[type_], ("type",)):
        return None
    if type_ == "concept":
        return concept_filter(raw, path, kind == "gender", found)
    if kind == "age":
        return _age(raw, path, found)
    return _quantity(raw, path, canonical, loinc, found)


def concept_filter(raw: dict[str, Any], path: str, gender: bool, found: Findings,
                   code_only: bool = False) -> ValueFilter:
    codings = []
    for n, concept in enumerate(found.array(raw.get("selectedConcepts"), f"{path}/selectedConcepts")):
        where = f"{path}/selectedConcepts/{n}"
        if not found.keys(concept, where, TERM_CODE_KEYS, ("code",), "a concept"):
            continue
        code, system = found.text(concept, "code", where), found.text(concept, "system", where, empty=True) or ""
        if code is None:
            continue
        if gender:
            mapped = contexts().gender(code)
            if mapped is None:
                known = ", ".join(name for names in contexts().gender_map.values() for name in names)
                found.problem(f"{where}/code", f"{code!r} is not a gender code (known: {known})")
                continue
            codings.append(Coding("", mapped))
        else:
            codings.append(Coding("", code) if code_only else Coding(resolve_system(system) or system, code))
    return ValueFilter("concept", path, concepts=tuple(dict.fromkeys(codings)))


def _numbers(raw: dict[str, Any], path: str, found: Findings) -> dict[str, float] | None:
    names = ("value",) if raw["type"] == "quantity-comparator" else ("minValue", "maxValue")
    numbers = {}
    for name in names:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            found.problem(f"{path}/{name}", f"{name!r} must be a number")
        else:
            numbers[name] = float(value)
    if raw["type"] == "quantity-comparator" and raw.get("comparator") not in COMPARATORS:
        found.problem(f"{path}/comparator", f"comparator must be one of {', '.join(COMPARATORS)}")
    if len(numbers) == 2 and numbers["minValue"] > numbers["maxValue"]:
        found.problem(path, f"minValue {raw['minValue']} is above maxValue {raw['maxValue']}")
    return numbers if len(numbers) == len(names) else None


def _unit(raw: dict[str, Any], path: str, found: Findings) -> str | None:
    unit = raw.get("unit")
    if unit is None or not found.keys(unit, f"{path}/unit", ("code", "display"), ("code",), "a unit"):
        return None
    return found.text(unit, "code", f"{path}/unit")


def _filter(raw: dict[str, Any], path: str, numbers: dict[str, float], unit: str | None,
            normalized: bool = False) -> ValueFilter:
    if raw["type"] == "quantity-comparator":
        return ValueFilter("quantity-comparator", path, comparator=raw["comparator"], value=numbers["value"],
                           unit=unit, normalized=normalized)
    return ValueFilter("quantity-range", path, low=numbers["minValue"], high=numbers["maxValue"], unit=unit,
                       normalized=normalized)


def _age(raw: dict[str, Any], path: str, found: Findings) -> ValueFilter | None:
    numbers, written = _numbers(raw, path, found), _unit(raw, path, found)
    unit = contexts().age_unit(written) if written else "a"  # ages are counted in years unless told
    if unit is None:
        found.problem(f"{path}/unit/code", f"{written!r} is not an age unit (a, mo, wk or d)")
    return _filter(raw, path, numbers, unit) if numbers and unit else None


def _quantity(raw: dict[str, Any], path: str, canonical: str | None, loinc: str | None,
              found: Findings) -> ValueFilter | None:
    numbers, unit = _numbers(raw, path, found), _unit(raw, path, found)
    if unit is not None and not validate_unit(unit).valid:
        found.problem(f"{path}/unit/code", f"{unit!r} is not a UCUM unit")
        return None
    if numbers is None:
        return None
    if canonical is None:
        if unit is not None:  # then only observations in exactly this unit can match
            found.warn(f"{path}/unit/code", f"no canonical unit known for the codes: values compared as written, "
                                            f"only against observations in {unit!r}")
        return _filter(raw, path, numbers, unit)
    if unit is not None and unit != canonical:
        try:
            numbers = {name: convert(v, unit, canonical, loinc) for name, v in numbers.items()}
        except InputError:
            found.problem(f"{path}/unit/code", f"{unit!r} cannot be compared with LOINC {loinc}, whose values "
                                               f"are in {canonical!r}: a different kind of quantity")
            return None
    return _filter(raw, path, numbers, canonical, normalized=True)


def quantity_filter(raw: dict[str, Any], path: str, found: Findings) -> ValueFilter | None:
    numbers, unit = _numbers(raw, path, found), _unit(raw, path, found)
    if unit is not None and not validate_unit(unit).valid:
        found.problem(f"{path}/unit/code", f"{unit!r} is not a UCUM unit")
        return None
    return _filter(raw, path, numbers, unit) if numbers else None

"""UCUM units through ucumvert's PintUcumRegistry: validation and conversion.

    unit_problem(code)                          -> None if valid UCUM, else why not
    describe_unit(code)                         -> the unit in words
    convert(value, from_unit, to_unit, loinc)   -> float; InputError if not convertible
    conversion(from_unit, to_unit, loinc)       -> (scale, offset) with to = scale * from + offset, or None
    canonical_unit(loinc)                       -> the LOINC code's example UCUM unit, or None
    normalize_quantity(value, unit, loinc)      -> (value, canonical unit) or None

The registry takes about 2 s to build and a parse about 3 ms, so both are cached: the registry
once, each unit and each (from, to, LOINC) pair once. A molar <-> mass conversion uses the molar
mass declared for the LOINC code in data/loinc.yaml. Curly-brace annotations ({score}) are
valid UCUM (alone they mean 1); ucumvert does not parse them, so they are replaced first.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from pint.errors import DimensionalityError, OffsetUnitCalculusError

from dic.errors import InputError

_ANNOTATION = re.compile(r"\{[^{}]*\}")
_ATTACHED_ANNOTATION = re.compile(r"(?<=[\w\])])\{[^{}]*\}")


@cache
def registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@cache
def _units(code: str) -> Any:
    """Pint units of a UCUM code; raises ValueError with the reason if the code is not UCUM."""
    if not code or code != code.strip() or " " in code:
        raise ValueError("a UCUM code has no spaces")
    bare = _ATTACHED_ANNOTATION.sub("", code)  # "10*3{cells}/uL" -> "10*3/uL"
    bare = _ANNOTATION.sub("1", bare)  # a term that is only an annotation means 1: "{score}", "/{1.73_m2}"
    if "{" in bare or "}" in bare:
        raise ValueError("unbalanced curly braces")
    try:
        return registry().from_ucum(bare).units
    except Exception as error:  # ucumvert raises its own and lark's errors
        reason = str(error).split("\n")[0]
        raise ValueError(reason.split("is not a valid UCUM unit:", 1)[-1].strip()) from error


def describe_unit(code: str) -> str:
    """The unit in words ("milligram / deciliter"); ValueError if not UCUM."""
    return str(_units(code))


@cache
def unit_problem(code: str) -> str | None:
    try:
        _units(code)
    except ValueError as error:
        return f"{code!r} is not a valid UCUM unit: {error}"
    return None


@cache
def _molar_mass(loinc: str | None) -> float | None:
    if loinc is None:
        return None
    from dic.terminology.systems import code_system

    concept = code_system("loinc").concepts.get(loinc)
    return dict(concept.properties).get("MOLAR_MASS") if concept else None


@cache
def canonical_unit(loinc: str) -> str | None:
    from dic.terminology.systems import code_system

    concept = code_system("loinc").concepts.get(loinc)
    return dict(concept.properties).get("EXAMPLE_UCUM_UNITS") if concept else None


@cache
def conversion(from_unit: str, to_unit: str, loinc: str | None = None) -> tuple[float, float] | None:
    if from_unit == to_unit:
        return (1.0, 0.0) if unit_problem(from_unit) is None else None
    try:
        source, target = _units(from_unit), _units(to_unit)
    except ValueError:
        return None
    ureg = registry()
    candidates: list[Any] = [None]
    molar_mass = _molar_mass(loinc)
    if molar_mass:  # mass = substance x molar mass
        candidates += [ureg.Quantity(molar_mass, "g/mol"), ureg.Quantity(1 / molar_mass, "mol/g")]

    def at(x: float, factor: Any) -> float:  # an offset unit (Cel) cannot be multiplied, so only if needed
        quantity = ureg.Quantity(x, source)
        return (quantity if factor is None else quantity * factor).to(target).magnitude

    for factor in candidates:
        try:
            zero, one = at(0.0, factor), at(1.0, factor)
        except (DimensionalityError, OffsetUnitCalculusError):
            continue  # not this way round: try the next molar-mass factor
        return float(one - zero), float(zero)
    return None


def convert(value: float, from_unit: str, to_unit: str, loinc: str | None = None) -> float:
    for unit in (from_unit, to_unit):
        problem = unit_problem(unit)
        if problem:
            raise InputError(problem)
    linear = conversion(from_unit, to_unit, loinc)
    if linear is None:
        hint = f" (no molar mass declared for LOINC {loinc})" if loinc and not _molar_mass(loinc) else ""
        raise InputError(f"cannot convert {from_unit!r} to {to_unit!r}: different kinds of quantity{hint}")
    return tidy(value * linear[0] + linear[1])


def normalize_quantity(value: float, ucum_code: str, loinc: str | None = None) -> tuple[float, str] | None:
    target = canonical_unit(loinc) if loinc else None
    if target is None:
        return None
    linear = conversion(ucum_code, target, loinc)
    if linear is None:
        return None
    return tidy(value * linear[0] + linear[1]), target


def tidy(value: float) -> float:
    """Drop binary float noise (0.1 * 3 = 0.30000000000000004) by keeping 12 significant digits."""
    return float(f"{value:.12g}")

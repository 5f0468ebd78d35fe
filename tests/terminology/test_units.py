"""UCUM validation and conversion (ucumvert), checked against hand-computed values."""

from __future__ import annotations

import pytest

from dic.errors import InputError
from dic.terminology import canonical_unit, convert, normalize_quantity, validate_unit


@pytest.mark.parametrize(("value", "source", "target", "loinc", "expected"), [
    (5.5, "mmol/L", "mg/dL", "2345-7", 5.5 * 180.16 / 10),       # glucose: 99.088 mg/dL
    (88.4, "umol/L", "mg/dL", "2160-0", 88.4 * 113.12 / 10_000),  # creatinine: 0.99998 mg/dL
    (1.0, "mg/dL", "umol/L", "2160-0", 10_000 / 113.12),         # and back: 88.40 umol/L
    (5.0, "mmol/L", "mg/dL", "2093-3", 5.0 * 386.65 / 10),       # cholesterol: 193.325 mg/dL
    (140, "g/L", "g/dL", None, 14.0),
    (1.2, "mg/dL", "mg/L", None, 12.0),
    (7.5, "10*9/L", "10*3/uL", None, 7.5),
    (37.0, "Cel", "[degF]", None, 98.6),
    (120, "mm[Hg]", "kPa", None, 120 * 0.133322),
])
def test_convert_matches_hand_computed_values(value: float, source: str, target: str, loinc: str | None,
                                              expected: float) -> None:
    assert convert(value, source, target, loinc) == pytest.approx(expected, rel=1e-4)


def test_normalize_quantity_goes_to_the_loinc_example_unit() -> None:
    assert canonical_unit("2345-7") == "mg/dL"
    assert normalize_quantity(5.5, "mmol/L", "2345-7") == (99.088, "mg/dL")
    assert normalize_quantity(100, "mg/dL", "2345-7") == (100.0, "mg/dL")
    assert normalize_quantity(140, "g/L", "718-7") == (14.0, "g/dL")
    assert normalize_quantity(5.5, "mmol/L", "1742-6") is None  # an enzyme activity is not a concentration
    assert normalize_quantity(5.5, "mmol/L", None) is None
    assert normalize_quantity(5.5, "kg", "2345-7") is None


def test_molar_conversion_needs_the_molar_mass() -> None:
    with pytest.raises(InputError, match="different kinds of quantity.*no molar mass declared for LOINC 1988-5"):
        convert(5.0, "mmol/L", "mg/L", "1988-5")
    with pytest.raises(InputError, match="'mg/dL/' is not a valid UCUM unit"):
        convert(1.0, "mg/dL/", "mg/L")


@pytest.mark.parametrize("code", ["mg/dL", "10*3/uL", "m[IU]/L", "mm[Hg]", "/min", "kg/m2", "%", "[IU]", "{score}",
                                  "{Breaths}/min", "mL/min/{1.73_m2}", "1", "Cel"])
def test_valid_ucum_units(code: str) -> None:
    assert validate_unit(code).valid, validate_unit(code).message


@pytest.mark.parametrize("code", ["mg/dL/", "foo", "mg dL", "", "{score"])
def test_invalid_ucum_units_say_why(code: str) -> None:
    result = validate_unit(code)
    assert not result.valid and result.message.startswith(f"{code!r} is not a valid UCUM unit")

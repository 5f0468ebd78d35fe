"""The reference evaluator on hand-made cases: one per construct of docs/cohorts.md.

Each expected set is worked out by hand in the comment above it, from the semantics doc and
the CCDL documents, never by running anything.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from cohort_reference import add_months, evaluate, fhir_span, parse_offset, ucum_convert
from cohort_strategies import (
    ATC,
    ICD,
    ICD_DIMDI,
    LOINC,
    administration,
    condition,
    consent,
    observation,
    patient,
    specimen,
)

REF = date(2021, 4, 15)
CCDL_DOCS = Path(__file__).resolve().parents[2] / ".." / "shared" / "docs" / "ccdl"


# ---------------------------------------------------------------- query builders
def term(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": code}


def crit(context: str, system: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"context": {"code": context, "system": "fdpg.mii.cds", "display": context},
            "termCodes": [term(system, code)], **extra}


def dx(code: str, **extra: Any) -> dict[str, Any]:
    return crit("Diagnose", ICD, code, **extra)


def lab(loinc: str, **extra: Any) -> dict[str, Any]:
    return crit("Laboruntersuchung", LOINC, loinc, **extra)


def between(after: str | None = None, before: str | None = None) -> dict[str, Any]:
    return {"timeRestriction": {**({"afterDate": after} if after else {}), **({"beforeDate": before} if before else {})}}


def v2(inclusion: list[list[dict]], exclusion: list[list[dict]] | None = None) -> dict[str, Any]:
    return {"version": "2", "inclusionCriteria": inclusion, **({"exclusionCriteria": exclusion} if exclusion else {})}


def group(gid: str, *clauses: list[dict], rel: list[tuple] = (), occ: str | None = None,
          point: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"id": gid, "criteria": list(clauses)}
    if rel:
        found["relativeTimeRestrictions"] = [
            {"anchorRef": a, **({"minOffset": lo} if lo else {}), **({"maxOffset": hi} if hi else {})}
            for a, lo, hi in rel]
    if occ:
        found["anchorOccurrence"] = occ
    if point:
        found["anchorPoint"] = point
    return found


def v3(inclusion: list[list[dict]], exclusion: list[list[dict]] | None = None) -> dict[str, Any]:
    return {"version": "3", "inclusionCriteria": inclusion, **({"exclusionCriteria": exclusion} if exclusion else {})}


NOW = group("now", [{"type": "now"}])


def people(*pids: str) -> list[dict]:
    return [patient(p) for p in pids]


# ---------------------------------------------------------------- time, offsets, units
def test_a_date_covers_its_precision_in_utc() -> None:
    assert fhir_span("2021") == (fhir_span("2021-01-01")[0], fhir_span("2022-01-01")[0])
    assert fhir_span("2021-02") == (fhir_span("2021-02-01")[0], fhir_span("2021-03-01")[0])
    lo, hi = fhir_span("2021-05-03T10:00:00.75+02:00")
    assert (lo.isoformat(), hi.isoformat()) == ("2021-05-03T08:00:00+00:00", "2021-05-03T08:00:01+00:00")


def test_offsets_are_signed_iso_durations_with_calendar_months() -> None:
    assert parse_offset("-P3D").seconds == -3 * 86400
    assert parse_offset("PT24H").seconds == 86400
    assert (parse_offset("P1Y2M").months, parse_offset("-P1W").seconds) == (14, -7 * 86400)
    assert add_months(fhir_span("2021-01-31")[0], 1).date() == date(2021, 2, 28)  # clamped
    assert add_months(fhir_span("2021-03-31")[0], -1).date() == date(2021, 2, 28)


def test_units_convert_by_ucum_and_molar_mass() -> None:
    assert ucum_convert(130, "g/L", "g/dL", "718-7") == pytest.approx(13)
    assert ucum_convert(5.5, "mmol/L", "mg/dL", "2345-7") == pytest.approx(99.088)  # 5.5 × 180.16 / 10
    assert ucum_convert(1, "mmol/L", "g/dL", None) is None  # no molar mass: not commensurable
    assert ucum_convert(1, "not a unit", "g/dL", "718-7") is None


# ---------------------------------------------------------------- v2 structure
def test_v2_inclusion_is_and_of_ors_and_exclusion_or_of_ands() -> None:
    # inclusion E11 AND (I10 OR J45); exclusion (J45.9) OR (I10 AND E11.90)
    # a: E11.9 + I10.00            -> in
    # b: E11.9 + J45.0             -> in
    # c: E11.9 only                -> not in (second clause)
    # d: E11.9 + J45.9             -> excluded by the first exclusion clause
    # e: E11.90 + I10.00           -> excluded: both parts of the second exclusion clause
    # f: E11.91 + I10.00           -> in (E11.91 is not E11.90)
    data = people("a", "b", "c", "d", "e", "f") + [
        condition("a", 0, "E11.9"), condition("a", 1, "I10.00"), condition("b", 0, "E11.9"),
        condition("b", 1, "J45.0"), condition("c", 0, "E11.9"), condition("d", 0, "E11.9"),
        condition("d", 1, "J45.9"), condition("e", 0, "E11.90"), condition("e", 1, "I10.00"),
        condition("f", 0, "E11.91"), condition("f", 1, "I10.00")]
    query = v2([[dx("E11")], [dx("I10"), dx("J45")]], [[dx("J45.9")], [dx("I10"), dx("E11.90")]])
    assert evaluate(query, data, REF) == {"a", "b", "f"}


def test_term_codes_select_their_descendants_and_old_system_uris_mean_bfarm() -> None:
    # E11.9 selects E11.9 and E11.90 (child), not E11.20 (sibling branch); the dimdi URI is the same system
    data = people("parent", "child", "sibling") + [
        condition("parent", 0, "E11.9"), condition("child", 0, "E11.90"), condition("sibling", 0, "E11.20")]
    assert evaluate(v2([[dx("E11.9")]]), data, REF) == {"parent", "child"}
    assert evaluate(v2([[crit("Diagnosis", ICD_DIMDI, "E11.9")]]), data, REF) == {"parent", "child"}
    assert evaluate(v2([[dx("E11.90")]]), data, REF) == {"child"}
    with pytest.raises(ValueError, match="no code"):
        evaluate(v2([[dx("X99.99")]]), data, REF)


# ---------------------------------------------------------------- time restrictions
def test_time_restriction_is_overlap_with_the_precision_interval() -> None:
    # window [2021-03-10, 2021-03-21) (beforeDate 03-20 inclusive)
    # year "2021" overlaps; month "2021-02" does not; "2021-03-20" overlaps (last day);
    # 2021-03-21T00:30+01:00 is 03-20T23:30Z: inside; 2021-03-09T23:30-00:00... use Z: 03-09T23:59:59Z outside
    # Period 02-01..03-10 (end day covers 03-10) overlaps; Period start 03-21 open end: outside;
    # Period with only an end 03-09: outside; undated: passes no time restriction
    times = {"year": "2021", "month": "2021-02", "lastday": "2021-03-20", "tz": "2021-03-21T00:30:00+01:00",
             "before": "2021-03-09T23:59:59Z", "period": ("2021-02-01", "2021-03-10"),
             "later": ("2021-03-21", None), "endonly": (None, "2021-03-09"), "undated": None}
    data = people(*times) + [condition(p, 0, "E11.90", when) for p, when in times.items()]
    query = v2([[dx("E11", **between("2021-03-10", "2021-03-20"))]])
    assert evaluate(query, data, REF) == {"year", "lastday", "tz", "period"}
    # only afterDate: [03-10, +inf): the open-ended period and the year, the last day, tz, period
    query = v2([[dx("E11", **between(after="2021-03-10"))]])
    assert evaluate(query, data, REF) == {"year", "lastday", "tz", "period", "later"}
    # without a restriction an undated event counts
    assert evaluate(v2([[dx("E11")]]), data, REF) == set(times)


def test_condition_time_is_onset_else_recorded_date() -> None:
    # onset 2021-01-05, recorded 2021-03-15: onset wins -> outside [03-10, 03-20]
    # no onset, recorded 2021-03-15 -> inside
    data = people("onset", "recorded") + [condition("onset", 0, "I10.00", "2021-01-05", recorded="2021-03-15"),
                                          condition("recorded", 0, "I10.00", None, recorded="2021-03-15")]
    assert evaluate(v2([[dx("I10", **between("2021-03-10", "2021-03-20"))]]), data, REF) == {"recorded"}


def test_observation_time_is_effective_else_issued() -> None:
    data = people("effective", "issued") + [
        observation("effective", 0, "718-7", 12, "g/dL", "2021-01-05", issued="2021-03-15T10:00:00Z"),
        observation("issued", 0, "718-7", 12, "g/dL", None, issued="2021-03-15T10:00:00Z")]
    assert evaluate(v2([[lab("718-7", **between("2021-03-10", "2021-03-20"))]]), data, REF) == {"issued"}


# ---------------------------------------------------------------- values
def comparator(op: str, value: float, unit: str | None) -> dict[str, Any]:
    return {"valueFilter": {"type": "quantity-comparator", "comparator": op, "value": value,
                            **({"unit": {"code": unit, "display": unit}} if unit else {})}}


@pytest.mark.parametrize(("op", "expected"), [
    # values: 11.9 g/dL, 12 g/dL, 120 g/L (=12 g/dL), 125 g/L (=12.5 g/dL); filter 12 g/dL (= 120 g/L)
    ("gt", {"p125"}), ("ge", {"p12", "p120", "p125"}), ("lt", {"p119"}), ("le", {"p119", "p12", "p120"}),
    ("eq", {"p12", "p120"}), ("ne", {"p119", "p125"}),
])
@pytest.mark.parametrize("unit", ["g/dL", "g/L"])
def test_quantity_comparators_convert_units(op: str, expected: set[str], unit: str) -> None:
    data = people("p119", "p12", "p120", "p125", "none") + [
        observation("p119", 0, "718-7", 11.9, "g/dL"), observation("p12", 0, "718-7", 12, "g/dL"),
        observation("p120", 0, "718-7", 120, "g/L"), observation("p125", 0, "718-7", 125, "g/L"),
        observation("none", 0, "718-7", None, "g/dL")]  # no value: dropped by every filter
    limit = 12 if unit == "g/dL" else 120
    assert evaluate(v2([[lab("718-7", **comparator(op, limit, unit))]]), data, REF) == expected


def test_quantity_range_is_inclusive_and_eq_survives_molar_conversion() -> None:
    # 5.5 mmol/L glucose = 99.088 mg/dL exactly in decimals; 7 mmol/L = 126.112 mg/dL
    data = people("mg", "mmol", "high") + [observation("mg", 0, "2345-7", 99.088, "mg/dL"),
                                           observation("mmol", 0, "2345-7", 5.5, "mmol/L"),
                                           observation("high", 0, "2345-7", 7, "mmol/L")]
    assert evaluate(v2([[lab("2345-7", **comparator("eq", 5.5, "mmol/L"))]]), data, REF) == {"mg", "mmol"}
    in_range = {"valueFilter": {"type": "quantity-range", "minValue": 99.088, "maxValue": 126.112,
                                "unit": {"code": "mg/dL"}}}
    assert evaluate(v2([[lab("2345-7", **in_range)]]), data, REF) == {"mg", "mmol", "high"}
    # no unit in the filter: the canonical unit (mg/dL) is meant
    assert evaluate(v2([[lab("2345-7", **comparator("gt", 100, None))]]), data, REF) == {"high"}


def test_concept_value_and_attribute_filters() -> None:
    smoker = {"resourceType": "Observation", "id": "s-o0", "status": "final", "subject": {"reference": "Patient/s"},
              "code": {"coding": [{"system": LOINC, "code": "72166-2"}]},
              "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "77176002"}]}}
    data = people("s", "a", "r") + [smoker, condition("a", 0, "E11.90", status="active"),
                                    condition("r", 0, "E11.90", status="resolved")]
    concept = {"valueFilter": {"type": "concept", "selectedConcepts": [term("http://snomed.info/sct", "77176002")]}}
    assert evaluate(v2([[lab("72166-2", **concept)]]), data, REF) == {"s"}
    wrong_system = {"valueFilter": {"type": "concept", "selectedConcepts": [term("http://loinc.org", "77176002")]}}
    assert evaluate(v2([[lab("72166-2", **wrong_system)]]), data, REF) == set()
    active = {"attributeFilters": [{"type": "concept", "attributeCode": term("mii.abide", "clinicalStatus"),
                                    "selectedConcepts": [term("", "active")]}]}
    assert evaluate(v2([[dx("E11", **active)]]), data, REF) == {"a"}


def test_specimen_reference_to_a_diagnosis_with_its_own_time_restriction() -> None:
    # a: specimen -> C50.0 diagnosed 2021-03-12 (inside) ; b: -> C50.0 on 2020-01-01 (outside)
    # c: specimen without the extension; d: the right diagnosis but not referenced by the specimen
    data = people("a", "b", "c", "d") + [
        condition("a", 0, "C50.0", "2021-03-12"), specimen("a", 0, "119376003", "2021-03-13", "a-c0"),
        condition("b", 0, "C50.0", "2020-01-01"), specimen("b", 0, "119376003", "2021-03-13", "b-c0"),
        condition("c", 0, "C50.0", "2021-03-12"), specimen("c", 0, "119376003", "2021-03-13"),
        condition("d", 0, "C50.0", "2021-03-12"), condition("d", 1, "E11.90", "2021-03-12"),
        specimen("d", 0, "119376003", "2021-03-13", "d-c1")]
    reference = {"type": "reference", "attributeCode": term("mii.abide", "diagnose"),
                 "criteria": [dx("C50", **between("2021-03-01", "2021-03-31"))]}
    query = v2([[crit("Specimen", "http://snomed.info/sct", "119376003", attributeFilters=[reference])]])
    assert evaluate(query, data, REF) == {"a"}


def test_medication_by_reference_and_by_resource_type() -> None:
    # a: aspirin by code; b: warfarin through a Medication resource; c: a MedicationStatement of aspirin
    statement = {"resourceType": "MedicationStatement", "id": "c-ms", "status": "active",
                 "subject": {"reference": "Patient/c"}, "effectiveDateTime": "2021-03-02",
                 "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "B01AC06"}]}}
    data = people("a", "b", "c") + administration("a", 0, "B01AC06", "2021-03-02") + \
        administration("b", 0, "B01AA03", "2021-03-02", by_reference=True) + [statement]
    assert evaluate(v2([[crit("Medikation", ATC, "B01A")]]), data, REF) == {"a", "b", "c"}
    assert evaluate(v2([[crit("Medikamentenverabreichung", ATC, "B01A")]]), data, REF) == {"a", "b"}
    assert evaluate(v2([[crit("Medikamentenverabreichung", ATC, "B01AA")]]), data, REF) == {"b"}
    assert evaluate(v2([[crit("Medikamentenverordnung", ATC, "B01A")]]), data, REF) == set()


def test_consent_permit_provisions_and_their_periods() -> None:
    code = "2.16.840.1.113883.3.1937.777.24.5.3.8"  # MDAT_wissenschaftlich_nutzen_EU_DSGVO_NIVEAU
    data = people("yes", "deny", "inactive", "old") + [
        consent("yes", 0, [("permit", code, ("2021-01-01", "2026-01-01"))]),
        consent("deny", 0, [("deny", code, ("2021-01-01", "2026-01-01"))]),
        consent("inactive", 0, [("permit", code, ("2021-01-01", "2026-01-01"))], status="inactive"),
        consent("old", 0, [("permit", code, ("2015-01-01", "2020-01-01"))])]
    query = crit("Einwilligung", "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3", code)
    assert evaluate(v2([[query]]), data, REF) == {"yes", "old"}
    assert evaluate(v2([[{**query, **between("2021-04-15", "2021-04-15")}]]), data, REF) == {"yes"}


# ---------------------------------------------------------------- age, gender, dispatch
def test_age_in_completed_units_at_the_reference_date() -> None:
    # reference 2021-04-15: born 2003-04-15 -> 18 today; 2003-04-16 -> 17; "2003" -> from 2003-01-01: 18;
    # "1980-07" -> from 1980-07-01: 40 (40 years 9 months = 489 months)
    data = [patient("today", birth_date="2003-04-15"), patient("tomorrow", birth_date="2003-04-16"),
            patient("year", birth_date="2003"), patient("month", birth_date="1980-07"), patient("none")]
    age = {"context": {"code": "Patient"}, "termCodes": [term(LOINC, "30525-0")]}

    def older(op: str, value: int, unit: str = "a") -> set[str]:
        return evaluate(v2([[{**age, "valueFilter": {"type": "quantity-comparator", "comparator": op,
                                                        "value": value, "unit": {"code": unit}}}]]), data, REF)

    assert older("ge", 18) == {"today", "year", "month"}
    assert older("lt", 18) == {"tomorrow"}
    assert older("eq", 40, "year") == {"month"}
    assert older("eq", 489, "mo") == {"month"}
    snomed_age = {**age, "termCodes": [term("http://snomed.info/sct", "424144002")],
                  "valueFilter": {"type": "quantity-range", "minValue": 18, "maxValue": 40, "unit": {"code": "a"}}}
    assert evaluate(v2([[snomed_age]]), data, REF) == {"today", "year", "month"}


def test_gender_codes_map_onto_patient_gender() -> None:
    data = [patient("m", "male"), patient("f", "female"), patient("o", "other"), patient("u", "unknown"),
            patient("x")]

    def gender(*codes: str) -> set[str]:
        concepts = [term("https://fhir.loinc.org/CodeSystem/$lookup", c) for c in codes]
        return evaluate(v2([[{"context": {"code": "Patient"}, "termCodes": [term(LOINC, "LL2191-6")],
                              "valueFilter": {"type": "concept", "selectedConcepts": concepts}}]]), data, REF)

    assert gender("F", "M") == {"m", "f"}
    assert gender("LA3-6") == {"f"}
    assert gender("D") == {"o"}
    assert gender("UNK", "diverse") == {"u", "o"}


def test_patient_context_criteria_are_dispatched_by_code_system() -> None:
    # the v2 example's body temperature under context "Patient": an observation
    data = people("warm", "cold") + [observation("warm", 0, "8310-5", 37.5, "Cel", "2021-09-20"),
                                     observation("cold", 0, "8310-5", 95, "[degF]", "2021-09-20")]  # 35 °C
    temperature = crit("Patient", LOINC, "8310-5", valueFilter={"type": "quantity-range", "minValue": 36,
                                                                "maxValue": 39, "unit": {"code": "Cel"}})
    assert evaluate(v2([[temperature]]), data, REF) == {"warm"}


def test_the_v2_example_document_evaluates() -> None:
    path = CCDL_DOCS / "ccdl-all-properties.json"
    if not path.is_file():
        pytest.skip(f"CCDL documents not found at {path}")
    query = json.loads(path.read_text())
    # every inclusion clause: female, age > 18, F00 (no time) or F09 in Sept 2021, a specimen of
    # OPS-coded type with an icd-o-3 C50.0 diagnosis (the example's own, literal codes)
    def person(pid: str, gender: str, birth: str) -> list[dict]:
        dementia = condition(pid, 0, "F00.1")
        tumour = {**condition(pid, 1, "C50.0"), "code": {"coding": [{"system": "icd-o-3", "code": "C50.0"}]},
                  "clinicalStatus": {"coding": [{"system": "http://hl7.org/fhir/", "code": "active"}]}}
        sample = {**specimen(pid, 0, "x", "2021-01-01", f"{pid}-c1"),
                  "type": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/ops", "code": "5-016.0"}]}}
        return [patient(pid, gender, birth), dementia, tumour, sample]

    # in: female 50; old: female 70 (excluded: age > 65); male: excluded; young: 17 (not > 18)
    data = person("in", "female", "1971-01-01") + person("old", "female", "1951-01-01") + \
        person("male", "male", "1971-01-01") + person("young", "female", "2004-01-01")
    assert evaluate(query, data, REF) == {"in"}


# ---------------------------------------------------------------- v3
def test_group_arrays_are_or_and_groups_in_an_array_are_and() -> None:
    # [[E11, I10]] OR [[J45]]: a has E11+I10, b only E11, c J45
    data = people("a", "b", "c") + [condition("a", 0, "E11.90"), condition("a", 1, "I10.00"),
                                    condition("b", 0, "E11.90"), condition("c", 0, "J45.0")]
    query = v3([[group("x", [dx("E11")]), group("y", [dx("I10")])], [group("z", [dx("J45")])]])
    assert evaluate(query, data, REF) == {"a", "c"}
    # the same groups as exclusion: [[E11 AND I10]] excludes a only
    excluding = v3([[group("all", [dx("E11"), dx("I10"), dx("J45")])]],
                   [[group("x", [dx("E11")]), group("y", [dx("I10")])]])
    assert evaluate(excluding, data, REF) == {"b", "c"}


def anchored(occ: str, lo: str | None = "P0D", hi: str | None = "P3D", point: str | None = None) -> dict:
    """Hemoglobin within [lo, hi] of the E11 anchor, one group array."""
    return v3([[group("dm", [dx("E11")], occ=occ, point=point), group("hb", [lab("718-7")], rel=[("dm", lo, hi)])]])


def test_first_last_and_any_anchors() -> None:
    # p: E11 on 03-01 and 03-10, Hb on 03-11 -> only after the last diagnosis
    # q: E11 on 03-01 and 03-10, Hb on 03-02 -> only after the first
    # r: Hb on 03-02 but no E11 -> the anchor is unresolved: nobody
    data = people("p", "q", "r") + [condition(x, n, "E11.90", d) for x in "pq" for n, d in
                                    enumerate(["2021-03-01", "2021-03-10"])] + [
        observation("p", 0, "718-7", 12, "g/dL", "2021-03-11"), observation("q", 0, "718-7", 12, "g/dL", "2021-03-02"),
        observation("r", 0, "718-7", 12, "g/dL", "2021-03-02")]
    # window for a day anchor d and P0D..P3D: [d, d + 1 day + 3 days)
    assert evaluate(anchored("first"), data, REF) == {"q"}
    assert evaluate(anchored("last"), data, REF) == {"p"}
    assert evaluate(anchored("any"), data, REF) == {"p", "q"}


def test_offsets_apply_to_the_anchor_interval_and_are_half_open() -> None:
    # anchor E11 at 2021-03-10T12:00:00Z = [12:00:00, 12:00:01); window PT24H..PT48H = [03-11T12:00:00, 03-12T12:00:01)
    # Hb at 03-11T12:00:00Z in; 03-11T11:59:59Z out; 03-12T12:00:00Z in; 03-12T12:00:01Z out;
    # Hb dated "2021-03-11" (a day) overlaps the window: in; a Period 03-01..03-20 overlaps: in
    when = {"a": "2021-03-11T12:00:00Z", "b": "2021-03-11T11:59:59Z", "c": "2021-03-12T12:00:00Z",
            "d": "2021-03-12T12:00:01Z", "e": "2021-03-11", "f": ("2021-03-01", "2021-03-20")}
    data = people(*when) + [condition(p, 0, "E11.90", "2021-03-10T12:00:00Z") for p in when] + \
        [observation(p, 0, "718-7", 12, "g/dL", w) for p, w in when.items()]
    assert evaluate(anchored("first", "PT24H", "PT48H"), data, REF) == {"a", "c", "e", "f"}


def test_anchor_point_end_and_periods() -> None:
    # E11 as a Period 03-01..03-05 (end day = [03-05, 03-06)); Hb on 03-07
    # start: [03-01, 03-02) + P0D..P3D = [03-01, 03-05) -> out; end: [03-05, 03-09) -> in
    # a Period without an end is no "end" anchor: nobody for patient o
    data = people("p", "o") + [condition("p", 0, "E11.90", ("2021-03-01", "2021-03-05")),
                               condition("o", 0, "E11.90", ("2021-03-01", None)),
                               observation("p", 0, "718-7", 12, "g/dL", "2021-03-07"),
                               observation("o", 0, "718-7", 12, "g/dL", "2021-03-07")]
    assert evaluate(anchored("first", point="start"), data, REF) == set()
    assert evaluate(anchored("first", point="end"), data, REF) == {"p"}
    # an undated diagnosis is never a candidate
    undated = people("u") + [condition("u", 0, "E11.90"), observation("u", 0, "718-7", 12, "g/dL", "2021-03-07")]
    assert evaluate(anchored("any", None, "P400D"), undated, REF) == set()


def test_now_and_calendar_months() -> None:
    # now = [04-15, 04-16); -P1M..P0D = [03-15, 04-16): Hb on 03-15 in, on 03-14 out, on 04-15T23:00Z in
    data = people("in", "out", "today") + [observation("in", 0, "718-7", 12, "g/dL", "2021-03-15"),
                                           observation("out", 0, "718-7", 12, "g/dL", "2021-03-14"),
                                           observation("today", 0, "718-7", 12, "g/dL", "2021-04-15T23:00:00Z")]
    query = v3([[NOW, group("hb", [lab("718-7")], rel=[("now", "-P1M", "P0D")])]])
    assert evaluate(query, data, REF) == {"in", "today"}
    # a now-only array matches everyone
    assert evaluate(v3([[NOW]]), data, REF) == {"in", "out", "today"}


def test_chained_anchor_candidates_are_its_own_qualifying_matches() -> None:
    # dementia (first) -> delirium within 30 days (any) -> haloperidol within 3 days of that delirium
    # p: F00 03-01, F05 03-20 (in window), B01AA03 03-21 -> in
    # q: F00 03-01, F05 2020-12-01 (before the window, so not a candidate), drug 2020-12-02 -> out
    def history(pid: str, delirium: str, drug: str) -> list[dict]:
        return [patient(pid), condition(pid, 0, "F00.1", "2021-03-01"), condition(pid, 1, "F05.1", delirium),
                *administration(pid, 0, "B01AA03", drug)]

    data = history("p", "2021-03-20", "2021-03-21") + history("q", "2020-12-01", "2020-12-02")
    query = v3([[group("dementia", [dx("F00")], occ="first"),
                 group("delirium", [dx("F05")], rel=[("dementia", "P0D", "P30D")], occ="any"),
                 group("drug", [crit("Medikation", ATC, "B01A")], rel=[("delirium", "P0D", "P3D")])]])
    assert evaluate(query, data, REF) == {"p"}


def test_any_shares_one_witness_per_group_array() -> None:
    # two delirium episodes 03-01 and 03-20; "split" has the drug after the first and sodium...
    # here Hb after the second: no single episode has both -> out; "same" has both after 03-20 -> in
    def history(pid: str, drug: str, hb: str) -> list[dict]:
        return [patient(pid), condition(pid, 0, "F05.1", "2021-03-01"), condition(pid, 1, "F05.1", "2021-03-20"),
                *administration(pid, 0, "B01AA03", drug), observation(pid, 0, "718-7", 12, "g/dL", hb)]

    data = history("split", "2021-03-02", "2021-03-21") + history("same", "2021-03-21", "2021-03-21")
    delirium = group("delirium", [dx("F05")], occ="any")
    drug = group("drug", [crit("Medikation", ATC, "B01A")], rel=[("delirium", "P0D", "P3D")])
    hb = group("hb", [lab("718-7")], rel=[("delirium", "-P1D", "P1D")])
    assert evaluate(v3([[delirium, drug, hb]]), data, REF) == {"same"}
    # in two group arrays the witnesses are independent... but each array needs all its members:
    # [[delirium, drug]] OR [[hb]] (hb referencing across arrays, delirium's date only) -> both
    assert evaluate(v3([[delirium, drug], [hb]]), data, REF) == {"split", "same"}
    # duplicating the anchor under a second id gives independent witnesses in one array
    copy = group("delirium2", [dx("F05")], occ="any")
    hb2 = group("hb", [lab("718-7")], rel=[("delirium2", "-P1D", "P1D")])
    assert evaluate(v3([[delirium, copy, drug, hb2]]), data, REF) == {"split", "same"}


def test_a_cross_array_reference_takes_only_the_date() -> None:
    # array 2 references the E11 anchor listed in array 1 (which also requires J45, absent for p):
    # p has E11 and Hb 2 days later but no J45 -> array 1 fails, array 2 holds on the anchor's date
    data = people("p") + [condition("p", 0, "E11.90", "2021-03-01"), observation("p", 0, "718-7", 12, "g/dL",
                                                                                   "2021-03-03")]
    query = v3([[group("dm", [dx("E11")], occ="first"), group("asthma", [dx("J45")])],
                [group("hb", [lab("718-7")], rel=[("dm", "P0D", "P3D")])]])
    assert evaluate(query, data, REF) == {"p"}


def test_multi_clause_anchor_windows_come_from_the_tuple_extremes() -> None:
    # anchor clauses E11 and I10 (any); Hb within P0D..P7D: window [max lo, min hi + 7 days)
    # near: E11 03-01, I10 03-04, Hb 03-05 -> [03-04, 03-09): in
    # early: E11 03-01, I10 03-04, Hb 03-02 -> before the later clause: out
    # far: E11 03-01, I10 03-20 -> [03-20, 03-09): inverted, nobody
    # pick: E11 03-01 and 03-15, I10 03-16, Hb 03-17: the tuple (03-15, 03-16) -> [03-16, 03-23): in
    def history(pid: str, e11: list[str], i10: str, hb: str) -> list[dict]:
        return [patient(pid), *[condition(pid, n, "E11.90", d) for n, d in enumerate(e11)],
                condition(pid, 9, "I10.00", i10), observation(pid, 0, "718-7", 12, "g/dL", hb)]

    data = history("near", ["2021-03-01"], "2021-03-04", "2021-03-05") + \
        history("early", ["2021-03-01"], "2021-03-04", "2021-03-02") + \
        history("far", ["2021-03-01"], "2021-03-20", "2021-03-21") + \
        history("pick", ["2021-03-01", "2021-03-15"], "2021-03-16", "2021-03-17")
    query = v3([[group("a", [dx("E11")], [dx("I10")], occ="any"), group("hb", [lab("718-7")], rel=[("a", "P0D", "P7D")])]])
    assert evaluate(query, data, REF) == {"near", "pick"}
    first = v3([[group("a", [dx("E11")], [dx("I10")], occ="first"), group("hb", [lab("718-7")],
                                                                          rel=[("a", "P0D", "P7D")])]])
    assert evaluate(first, data, REF) == {"near"}  # pick's first E11 is 03-01: [03-16, 03-09) inverted


def test_two_entries_need_one_event_between_both_anchors() -> None:
    # between: E11 03-01 (minOffset P0D) and J45 03-10 (maxOffset P0D): window [03-01, 03-11)
    # p: Hb 03-05 -> in; q: Hb 02-20 and 03-15, each inside one of two separate groups' windows only
    data = people("p", "q") + [condition(x, 0, "E11.90", "2021-03-01") for x in "pq"] + \
        [condition(x, 1, "J45.0", "2021-03-10") for x in "pq"] + [
        observation("p", 0, "718-7", 12, "g/dL", "2021-03-05"),
        observation("q", 0, "718-7", 12, "g/dL", "2021-02-20"), observation("q", 1, "718-7", 12, "g/dL", "2021-03-15")]
    anchors = [group("dm", [dx("E11")], occ="first"), group("asthma", [dx("J45")], occ="first")]
    one = group("hb", [lab("718-7")], rel=[("dm", "P0D", None), ("asthma", None, "P0D")])
    assert evaluate(v3([[*anchors, one]]), data, REF) == {"p"}
    # two groups: Hb after E11 (03-15 will do) and Hb before J45 (02-20 will do): both patients
    after = group("hb1", [lab("718-7")], rel=[("dm", "P0D", None)])
    before = group("hb2", [lab("718-7")], rel=[("asthma", None, "P0D")])
    assert evaluate(v3([[*anchors, after, before]]), data, REF) == {"p", "q"}


def test_absolute_and_relative_restrictions_hold_on_the_same_event() -> None:
    # Hb within 10 days after E11 (03-01) AND in March 2021 from the 8th: Hb 03-05 fails the absolute one,
    # Hb 03-09 passes both; r has Hb 03-05 and 03-20 (one passes each, none both) -> out
    data = people("p", "r") + [condition(x, 0, "E11.90", "2021-03-01") for x in "pr"] + [
        observation("p", 0, "718-7", 12, "g/dL", "2021-03-09"),
        observation("r", 0, "718-7", 12, "g/dL", "2021-03-05"), observation("r", 1, "718-7", 12, "g/dL", "2021-03-20")]
    query = v3([[group("dm", [dx("E11")], occ="first"),
                 group("hb", [lab("718-7", **between("2021-03-08", "2021-03-31"))], rel=[("dm", "P0D", "P10D")])]])
    assert evaluate(query, data, REF) == {"p"}


def test_an_exclusion_group_anchored_to_an_inclusion_anchor() -> None:
    # include E11 (first); exclude warfarin within 2 days after it
    data = people("kept", "gone") + [condition(x, 0, "E11.90", "2021-03-01") for x in ("kept", "gone")] + \
        administration("kept", 0, "B01AA03", "2021-03-05") + administration("gone", 0, "B01AA03", "2021-03-02")
    query = v3([[group("dm", [dx("E11")], occ="first")]],
               [[group("drug", [crit("Medikation", ATC, "B01AA03")], rel=[("dm", "P0D", "P2D")])]])
    assert evaluate(query, data, REF) == {"kept"}

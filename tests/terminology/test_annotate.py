"""Load-time annotation: synth data passes clean, planted wrong codes are flagged, lab values normalized."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

from dic.fhir import check_resource
from dic.sources import Rejection, SourceResource
from dic.terminology import CODE_CHECK, INVALID_CODE, NORMALIZED_VALUE, annotate, annotate_resource

ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"


def _resources(world: Path) -> list[dict]:
    return [orjson.loads(line) for path in sorted(world.glob("*/his-fhir/*.ndjson")) for line in path.open("rb")]


def test_every_resource_of_a_synth_world_passes_without_a_flag(world: Path) -> None:
    resources = _resources(world)
    assert len(resources) > 1000
    flagged = [r for r in resources if annotate_resource(r)]
    assert flagged == []
    observations = [r for r in resources if r["resourceType"] == "Observation" and "valueQuantity" in r]
    assert observations and all(r["valueQuantity"]["extension"][0]["url"] == NORMALIZED_VALUE for r in observations)
    assert all(check_resource(r) is None for r in resources[:300])


def test_annotation_is_deterministic_and_idempotent(world: Path) -> None:
    original = _resources(world)[:500]
    once = copy.deepcopy(original)
    for r in once:
        annotate_resource(r)
    twice = copy.deepcopy(once)
    for r in twice:
        annotate_resource(r)
    again = copy.deepcopy(original)
    for r in again:
        annotate_resource(r)
    assert orjson.dumps(once) == orjson.dumps(twice) == orjson.dumps(again)


def _observation(value: float, unit: str, loinc: str = "2345-7") -> dict:
    return {"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def test_lab_values_get_the_canonical_unit_beside_the_original() -> None:
    glucose = _observation(5.5, "mmol/L")
    annotate_resource(glucose)
    assert glucose["valueQuantity"]["value"] == 5.5 and glucose["valueQuantity"]["code"] == "mmol/L"
    assert glucose["valueQuantity"]["extension"] == [{"url": NORMALIZED_VALUE, "valueQuantity": {
        "value": 99.088, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}}]
    creatinine = _observation(88.4, "umol/L", "2160-0")
    annotate_resource(creatinine)
    assert creatinine["valueQuantity"]["extension"][0]["valueQuantity"]["value"] == 0.9999808  # 88.4 x 113.12 / 10^4
    hemoglobin = _observation(140, "g/L", "718-7")
    annotate_resource(hemoglobin)
    assert hemoglobin["valueQuantity"]["extension"][0]["valueQuantity"]["value"] == 14.0
    unknown_loinc = _observation(1.0, "mg/dL", "99999-9")
    annotate_resource(unknown_loinc)
    assert "extension" not in unknown_loinc["valueQuantity"]
    assert check_resource(glucose) is None


def test_blood_pressure_components_are_normalized_each() -> None:
    panel = {"resourceType": "Observation", "id": "bp", "status": "final",
             "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
             "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                            "valueQuantity": {"value": 16, "unit": "kPa", "system": "http://unitsofmeasure.org",
                                              "code": "kPa"}}]}
    annotate_resource(panel)
    normalized = panel["component"][0]["valueQuantity"]["extension"][0]["valueQuantity"]
    assert normalized["code"] == "mm[Hg]" and abs(normalized["value"] - 16 / 0.133322) < 0.01


def test_planted_wrong_codes_and_units_are_flagged_never_dropped() -> None:
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": ICD, "version": "2024", "code": "E11.99"},
                                     {"system": "http://snomed.info/sct", "code": "44054006"}]}}
    medication = {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
                  "subject": {"reference": "Patient/p1"},
                  "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA99"}]}}
    bad_unit = _observation(5.5, "mmol/l/")
    records = [SourceResource(r, "test", f"line {n}") for n, r in enumerate([condition, medication, bad_unit])]
    rejection = Rejection("test", "line 9", "broken", b"x", 1)
    out = list(annotate([*records, rejection]))
    assert out == [*records, rejection]
    icd_coding = condition["code"]["coding"][0]
    assert icd_coding["extension"] == [{"url": CODE_CHECK, "valueString": f"'E11.99' is not a code of ICD-10-GM ({ICD})"}]
    assert "extension" not in condition["code"]["coding"][1]  # SNOMED CT is not ours to check
    assert condition["meta"]["tag"] == [INVALID_CODE]
    assert "A10BA99" in medication["medicationCodeableConcept"]["coding"][0]["extension"][0]["valueString"]
    quantity = bad_unit["valueQuantity"]
    assert quantity["extension"][0]["url"] == CODE_CHECK and "not a valid UCUM unit" in quantity["extension"][0][
        "valueString"]
    assert bad_unit["meta"]["tag"] == [INVALID_CODE]
    assert check_resource(condition) is None


def test_a_fixed_code_loses_its_flag_on_the_next_load() -> None:
    condition = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                 "code": {"coding": [{"system": ICD, "code": "E11.99"}]}}
    assert annotate_resource(condition)
    condition["code"]["coding"][0]["code"] = "E11.90"
    assert not annotate_resource(condition)
    assert "extension" not in condition["code"]["coding"][0] and "tag" not in condition["meta"]

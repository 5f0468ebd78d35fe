"""Identifying elements never reach the repository: removed at load, declared as data."""

from __future__ import annotations

from pathlib import Path

import orjson

from dic.fhir import remove_identifying
from dic.sources import read_fhir

PATIENT = {
    "resourceType": "Patient", "id": "p1", "text": {"status": "generated", "div": "<div>Erika Mustermann</div>"},
    "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456780"}],
    "name": [{"family": "Mustermann", "given": ["Erika"]}], "telecom": [{"system": "phone", "value": "0341 1234"}],
    "gender": "female", "birthDate": "1964-08-12",
    "address": [{"type": "both", "line": ["Heidestraße 17"], "city": "Köln", "postalCode": "51147", "country": "DE"},
                {"line": ["Postfach 12"], "city": "Köln"}],
}


def test_patient_keeps_medical_data_and_a_coarse_region_only() -> None:
    cleaned = remove_identifying(PATIENT)
    assert cleaned == {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1964-08-12",
                       "address": [{"type": "both", "postalCode": "51", "country": "DE"}]}
    assert PATIENT["name"], "the input is not modified"


def test_identifiers_of_other_resources_are_removed_and_clean_resources_are_untouched() -> None:
    specimen = {"resourceType": "Specimen", "id": "s1", "accessionIdentifier": {"value": "L123"},
                "identifier": [{"value": "x"}], "status": "available"}
    assert remove_identifying(specimen) == {"resourceType": "Specimen", "id": "s1", "status": "available"}
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}
    assert remove_identifying(observation) is observation


def test_reader_removes_identifying_data_unless_asked_to_keep_it(tmp_path: Path) -> None:
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(orjson.dumps(PATIENT) + b"\n")
    (entry,) = read_fhir(path)
    stored = orjson.loads(entry.content)
    assert "name" not in stored and "identifier" not in stored and b"Mustermann" not in entry.content.encode()
    assert entry.content_hash != next(read_fhir(path, keep_identifying=True)).content_hash
    (kept,) = read_fhir(path, keep_identifying=True)
    assert orjson.loads(kept.content)["name"][0]["family"] == "Mustermann"

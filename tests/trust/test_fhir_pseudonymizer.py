"""FHIR loads through the trust center: no IDAT and no source id reaches the repository,
references still resolve, reloads change nothing, merges and splits round-trip."""

from __future__ import annotations

import csv
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from sqlglot import exp

from dic.engines import Database, Engine, column, table
from dic.errors import ConfigError
from dic.repository import SOURCE_RECORD_TAG, Move, load_records, reattribute, record_tags
from dic.sources import Entry, Rejection, find_fhir_files, read_fhir
from dic.synth import write_world
from dic.trust.fhir_pseudonymizer import (
    SourceResource,
    patients_first,
    pseudonymize,
    read_pseudonymized,
    resource_pseudonym,
)
from dic.trust.identity import Idat
from dic.trust.pseudonym import Pid, derive_pseudonym, is_valid_pseudonym
from dic.trust.registry import Registration
from dic.views import load_catalog, refresh_views

KEY = b"resource-key-of-the-dic-32-bytes!"
REGISTRY_KEY = b"the-trust-centers-own-secret-key!"
SOURCE = "site-a/his-fhir"


class FakeRegistry:
    """A `PatientRegistry` as the protocol describes it. A person is whoever has the same KVNR
    (else the same names and birth date); IDAT that `Idat` refuses is refused with the fields."""

    def __init__(self, source: str = SOURCE):
        self.source = source
        self.registrations: dict[str, Registration] = {}
        self.calls: list[tuple[str, int]] = []

    def register(self, records: Sequence[tuple[str, dict[str, str]]]) -> list[Registration | str]:
        assert len(records) <= 1000
        self.calls.append(("register", len(records)))
        answers: list[Registration | str] = []
        for source_id, idat in records:
            try:
                Idat(**idat)
            except ValidationError as error:
                answers.append("malformed IDAT: " + ", ".join(str(e["loc"][0]) for e in error.errors()))
                continue
            known = self.registrations.get(source_id)
            if known is not None:
                answers.append(replace(known, outcome="known"))
                continue
            person = idat.get("insurance_number") or "|".join(idat.get(f, "") for f in ("family_name", "birth_date"))
            registration = Registration(derive_pseudonym(REGISTRY_KEY, "DIC", Pid(person)),
                                        derive_pseudonym(REGISTRY_KEY, "REC", Pid(f"{self.source}|{source_id}")), "new")
            self.registrations[source_id] = registration
            answers.append(registration)
        return answers

    def lookup(self, source_ids: Sequence[str]) -> dict[str, Registration]:
        self.calls.append(("lookup", len(source_ids)))
        return {i: self.registrations[i] for i in source_ids if i in self.registrations}

    def move(self, source_id: str, pseudonym: str) -> None:
        """What a merge or split in the trust center does to one source record."""
        self.registrations[source_id] = replace(self.registrations[source_id], pseudonym=pseudonym)


# ---------------------------------------------------------------- a small synth world
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, sites=1, patients=30, seed=11, formats=["his-fhir"])
    return out


def his_files(world: Path) -> list[Path]:
    return patients_first(find_fhir_files([world / "site-a" / "his-fhir"]))


def load_pseudonymized(db: Database, world: Path, registry: FakeRegistry) -> list:
    return [load_records(db, str(path), read_pseudonymized(path, registry, KEY, source_system=SOURCE))
            for path in his_files(world)]


def source_resources(world: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in his_files(world) for line in path.read_bytes().splitlines()]


def all_text(db: Database) -> str:
    """Every value of every repository table, as text."""
    parts = []
    for name in ("resource", "resource_history", "quarantine", "load_batch"):
        for row in db.fetch(exp.select("*").from_(table(name)), f"dump {name}").rows:
            parts.extend(orjson.dumps(v).decode() if isinstance(v, dict | list) else str(v) for v in row)
    return "\n".join(parts)


def count(db: Database, name: str) -> int:
    return int(db.scalar(exp.select(exp.func("count", exp.Star())).from_(table(name)), f"count {name}"))


def current(db: Database) -> dict[tuple[str, str], dict[str, Any]]:
    query = exp.select(column("resource_type"), column("id"), column("content")).from_(table("resource")) \
        .where(exp.not_(column("deleted")))
    return {(t, i): (orjson.loads(c) if isinstance(c, str) else c) for t, i, c in db.fetch(query, "current").rows}


def references(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return own + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def found_in(text: str, strings: set[str]) -> list[str]:
    tokens = set(re.findall(r"[\w-]+", text))  # whole words: a name inside a longer word is no leak
    return sorted(s for s in strings if (s in text if " " in s else s in tokens))


def identifying_strings(world: Path) -> set[str]:
    """Names, streets, cities, KVNRs of the truth, and every id and identifier value of the export."""
    found = set()
    with (world / "truth" / "persons.csv").open(encoding="utf-8") as handle:
        for person in csv.DictReader(handle):
            for field in ("given_names", "family", "birth_name", "street", "city", "insurance_number"):
                found.update(person[field].split(" ") if field == "given_names" else [person[field]])
    for resource in source_resources(world):
        found.add(resource["id"])
        for identifier in resource.get("identifier", []):
            found.add(identifier["value"])
        for name in resource.get("name", []):
            found.update([name.get("family", ""), *name.get("given", [])])
    return {s for s in found if len(s) >= 3}


# ---------------------------------------------------------------- the whole load
def test_no_identifying_data_and_no_source_id_is_stored(db: Database, world: Path) -> None:
    reports = load_pseudonymized(db, world, FakeRegistry())
    assert sum(r.loaded for r in reports) == len(source_resources(world))
    assert sum(r.quarantined for r in reports) == 0
    searched = identifying_strings(world)
    export = b"".join(p.read_bytes() for p in his_files(world)).decode()
    assert len(found_in(export, searched)) > 0.99 * len(searched) > 2000  # the search finds them in the export
    # (the truth spells a few values the HIS misspelt)
    text = all_text(db)
    assert found_in(text, searched) == []
    assert "kvid-10" not in text and "patient-number" not in text  # no identifier system either


def test_ids_are_pseudonyms_and_every_reference_resolves(db: Database, world: Path) -> None:
    registry = FakeRegistry()
    load_pseudonymized(db, world, registry)
    stored = current(db)
    patients = {i for t, i in stored if t == "Patient"}
    assert patients == {r.pseudonym for r in registry.registrations.values()}
    assert all(is_valid_pseudonym(i) for i in patients)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for t, i in stored if t != "Patient")
    tag_of = {i: record_tags(r) for (t, i), r in stored.items() if t == "Patient"}
    checked = 0
    for resource in stored.values():
        for reference in references(resource):
            target_type, target_id = reference.split("/")
            assert (target_type, target_id) in stored, reference
            if target_type == "Patient":  # about that patient: carries its record tag
                assert tag_of[target_id] <= record_tags(resource)
                checked += 1
    assert checked >= len(stored) - len(patients)  # every resource of the HIS is about a patient


def test_reload_changes_nothing(db: Database, world: Path) -> None:
    registry = FakeRegistry()
    load_pseudonymized(db, world, registry)
    before = (current(db), count(db, "resource_history"), count(db, "quarantine"))
    again = load_pseudonymized(db, world, registry)
    assert [(r.loaded, r.updated, r.deleted, r.quarantined) for r in again] == [(0, 0, 0, 0)] * len(again)
    assert sum(r.unchanged for r in again) == len(source_resources(world))
    assert (current(db), count(db, "resource_history"), count(db, "quarantine")) == before


def test_views_give_the_same_row_counts_as_a_plain_load(
        make_database: Callable[[Engine], Database], world: Path) -> None:
    plain, pseudonymized = make_database(Engine.duckdb), make_database(Engine.duckdb)
    for path in his_files(world):
        load_records(plain, str(path), read_fhir(path))
    load_pseudonymized(pseudonymized, world, FakeRegistry())
    catalog = load_catalog()
    rows = [{r.name: r.rows for r in refresh_views(db, catalog)} for db in (plain, pseudonymized)]
    assert rows[0] == rows[1]
    assert rows[0]["observation"] > 0 and rows[0]["encounter_diagnosis"] > 0


def test_merge_and_split_round_trip(db: Database, world: Path) -> None:
    registry = FakeRegistry()
    load_pseudonymized(db, world, registry)
    original = current(db)
    by_person: dict[str, list[str]] = {}
    for source_id, registration in registry.registrations.items():
        by_person.setdefault(registration.pseudonym, []).append(source_id)
    (a, [a_id]), (b, _) = sorted(by_person.items(), key=lambda kv: len(kv[1]))[:2]
    a_record = registry.registrations[a_id].record
    under = {p: {k for k, r in original.items() if f"Patient/{p}" in references(r)} for p in (a, b)}
    assert under[a] and under[b]

    # the trust center merges a into b
    merged = reattribute(db, [Move(None, a, b)])
    assert (merged.updated, merged.deleted) == (len(under[a]) + 1, 1)  # and Patient/b lists a's record
    assert record_tags(current(db)[("Patient", b)]) == record_tags(original[("Patient", b)]) | {a_record}
    after = current(db)
    assert ("Patient", a) not in after and ("Patient", b) in after
    assert all(f"Patient/{a}" not in references(r) for r in after.values())
    assert {k for k, r in after.items() if f"Patient/{b}" in references(r)} == under[a] | under[b]
    assert sum(1 for v in after.values() if record_tags(v) & {a_record}) == len(under[a]) + 1  # tags stay
    again = reattribute(db, [Move(None, a, b)])
    assert (again.loaded, again.updated, again.deleted) == (0, 0, 0)

    # loading the source again after the trust center merged gives the same resources
    registry.move(a_id, b)
    reload = load_pseudonymized(db, world, registry)
    assert all((r.loaded, r.updated) == (0, 0) for r in reload if "Patient" not in r.source)

    # and the split puts everything back as it was, as new versions
    registry.move(a_id, a)
    split = reattribute(db, [Move(a_record, b, a)])
    assert split.loaded == 1  # Patient/a again, from its stored version
    restored = current(db)
    assert restored.keys() == original.keys()
    assert [k for k in original if restored[k] != original[k]] == []
    history = db.fetch(exp.select(column("version_id")).from_(table("resource_history")).where(
        exp.and_(column("resource_type").eq(exp.Literal.string("Patient")), column("id").eq(exp.Literal.string(a)))),
        "versions").rows
    assert sorted(v for (v,) in history) == [1, 2, 3]  # loaded, tombstone, restored: nothing lost


# ---------------------------------------------------------------- one resource at a time
PATIENT = {
    "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05-01",
    "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "A123456789"}],
    "name": [{"use": "official", "family": "Mustermann", "given": ["Erika"]}],
    "address": [{"line": ["Hauptstraße 5"], "city": "Jena", "postalCode": "07743", "country": "DE"}],
}


def observation(id: str = "o1", patient: str = "p1", **more: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
            "subject": {"reference": f"Patient/{patient}", "display": "Erika Mustermann"}, **more}


def run(resources: list[dict[str, Any] | Entry | Rejection], registry: FakeRegistry | None = None,
        **options: Any) -> list[Entry | Rejection]:
    records = [SourceResource(r, "test.ndjson", f"line {n}") if isinstance(r, dict) else r
               for n, r in enumerate(resources, 1)]
    return list(pseudonymize(records, registry or FakeRegistry(), KEY, source_system=SOURCE, **options))


def content(record: Entry | Rejection) -> dict[str, Any]:
    assert isinstance(record, Entry), record
    return orjson.loads(record.content)


def test_resource_ids_are_a_keyed_hash_of_source_type_and_id() -> None:
    expected = hmac.new(KEY, b"site-a/his-fhir\x1fEncounter\x1fp1-e0", hashlib.sha256).hexdigest()[:32]
    assert resource_pseudonym(KEY, SOURCE, "Encounter", "p1-e0") == expected
    assert resource_pseudonym(KEY, "site-b/his-fhir", "Encounter", "p1-e0") != expected
    assert resource_pseudonym(b"another-key-of-thirty-two-bytes!!", SOURCE, "Encounter", "p1-e0") != expected


def test_every_reference_form_is_rewritten_and_reference_idat_removed() -> None:
    encounter = {
        "resourceType": "Encounter", "id": "p1-e0", "status": "finished", "class": {"code": "AMB"},
        "subject": {"reference": "https://his.example.org/fhir/Patient/p1/_history/3"},
        "diagnosis": [{"condition": {"reference": "Condition/c1", "display": "Dr. Zweifel"}}],
        "participant": [{"individual": {"identifier": {"value": "LANR 123"}, "display": "Dr. Zweifel"}}],
        "extension": [{"url": "http://example.org/x", "valueReference": {"reference": "Practitioner/dr7"}}],
        "contained": [{"resourceType": "Patient", "id": "c", "name": [{"family": "Mustermann"}]}],
        "serviceProvider": {"reference": "#c"},
    }
    patient, stored = run([PATIENT, encounter])
    pseudonym = content(patient)["id"]
    result = content(stored)
    assert result["subject"] == {"reference": f"Patient/{pseudonym}"}
    assert result["diagnosis"][0]["condition"] == {"reference": f"Condition/{resource_pseudonym(KEY, SOURCE, 'Condition', 'c1')}"}
    assert result["participant"] == [{"individual": {}}]
    assert result["extension"][0]["valueReference"]["reference"] == \
        f"Practitioner/{resource_pseudonym(KEY, SOURCE, 'Practitioner', 'dr7')}"
    assert result["contained"] == [{"resourceType": "Patient", "id": "c"}]
    assert result["serviceProvider"] == {"reference": "#c"}
    assert result["id"] == resource_pseudonym(KEY, SOURCE, "Encounter", "p1-e0")
    assert "Mustermann" not in stored.content and "Zweifel" not in stored.content and "p1" not in stored.content


def test_the_patient_keeps_only_the_data_model_and_carries_its_record() -> None:
    registry = FakeRegistry()
    [patient] = run([PATIENT], registry)
    registration = registry.registrations["p1"]
    assert content(patient) == {
        "resourceType": "Patient", "id": registration.pseudonym, "gender": "female", "birthDate": "1970-05-01",
        "address": [{"postalCode": "07", "country": "DE"}],
        "meta": {"tag": [{"system": SOURCE_RECORD_TAG, "code": registration.record}]},
    }


def test_a_reference_to_an_unregistered_patient_is_rejected_without_source_ids() -> None:
    [rejection] = run([observation(patient="p-unknown")])
    assert isinstance(rejection, Rejection)
    hashed = resource_pseudonym(KEY, SOURCE, "Patient", "p-unknown")
    assert rejection.reason == (f"Observation/{resource_pseudonym(KEY, SOURCE, 'Observation', 'o1')}: subject: "
                                f"Patient/{hashed} is not registered; load its Patient first")
    assert b"p-unknown" not in rejection.raw and b"Erika" not in rejection.raw
    assert orjson.loads(rejection.raw)["subject"] == {"reference": f"Patient/{hashed}"}


def test_refused_idat_and_unreadable_records_leave_no_idat_in_quarantine(tmp_path: Path) -> None:
    refused = {**PATIENT, "id": "p2", "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10", "value": "bad"}]}
    [rejection] = run([refused])
    assert rejection.reason.endswith("the trust center refused its identifying data: malformed IDAT: insurance_number")
    assert orjson.loads(rejection.raw) == {
        "resourceType": "Patient", "id": resource_pseudonym(KEY, SOURCE, "Patient", "p2"), "gender": "female",
        "birthDate": "1970-05-01", "address": [{"postalCode": "07", "country": "DE"}]}
    # rejected by the reader: a malformed Patient (raw text scrubbed) and a broken line (raw withheld)
    path = tmp_path / "Patient.ndjson"
    path.write_bytes(orjson.dumps({**PATIENT, "birthDate": 19700501}) + b"\n" + b'{"name": "Erika Mustermann"\n')
    malformed, broken = pseudonymize(read_fhir(path, prepare=SourceResource), FakeRegistry(), KEY, source_system=SOURCE)
    assert malformed.reason == "Patient.birthDate: expected date, got a JSON integer"
    assert b"Mustermann" not in malformed.raw and b"A123456789" not in malformed.raw and b"p1" not in malformed.raw
    assert broken.reason.startswith("invalid JSON") and broken.reason.endswith("(raw text withheld: it may hold "
                                                                               "identifying data)")
    assert (broken.raw, broken.raw_bytes) == (b"", 27)  # the line, stripped


def test_conditional_references_cannot_be_pseudonymized() -> None:
    [rejection] = run([observation(subject={"reference": "Patient?identifier=http://fhir.de/sid/gkv/kvid-10|A123456789"})])
    assert "subject: not a literal reference" in rejection.reason
    assert b"A123456789" not in rejection.raw


def test_patients_are_registered_in_chunks_before_the_window_is_written() -> None:
    registry = FakeRegistry()
    patients = [{**PATIENT, "id": f"p{n}", "identifier": [{"system": "http://fhir.de/sid/gkv/kvid-10",
                                                            "value": f"A{n:09d}"}]} for n in range(2_500)]
    # in a Bundle the Observation may come first; it resolves because its window registers first
    records = run([observation(patient="p7"), *patients], registry, window=3_000)
    assert [c for c in registry.calls if c[0] == "register"] == [("register", 1000)] * 2 + [("register", 500)]
    assert content(records[0])["subject"]["reference"] == f"Patient/{registry.registrations['p7'].pseudonym}"
    # a later load (a new pseudonymize run) finds the Patient through lookup
    [later] = run([observation(id="o2", patient="p7")], registry)
    assert content(later)["subject"] == content(records[0])["subject"]
    assert registry.calls[-1] == ("lookup", 1)


def test_deletions_use_the_stored_id_and_a_patient_deletion_is_refused() -> None:
    gone = Entry.deletion("Observation", "o1", "bulk-deleted.ndjson", "line 1 entry 0")
    patient_gone = Entry.deletion("Patient", "p1", "bulk-deleted.ndjson", "line 1 entry 1")
    deletion, refused = run([gone, patient_gone])
    assert (deletion.delete, deletion.id) == (True, resource_pseudonym(KEY, SOURCE, "Observation", "o1"))
    assert isinstance(refused, Rejection) and refused.raw == b"" and "p1" not in refused.reason


def test_settings_are_checked_and_patient_files_come_first() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        list(pseudonymize([], FakeRegistry(), b"short", source_system=SOURCE))
    with pytest.raises(ConfigError, match="source_system"):
        list(pseudonymize([], FakeRegistry(), KEY, source_system=""))
    paths = [Path("x/Observation.ndjson"), Path("x/Patient-2.ndjson.gz"), Path("x/PatientConsent.ndjson"),
             Path("x/Patient.ndjson")]
    assert patients_first(paths) == [paths[1], paths[3], paths[0], paths[2]]

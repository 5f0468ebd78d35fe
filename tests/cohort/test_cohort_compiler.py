"""The CCDL → SQL compiler on hand-built patients, one family of patients per construct.

One small world (below) is loaded once per engine (DuckDB and a real PostgreSQL; Spark runs a
few queries in its own test) and every test runs model.Query objects built here against it.
Each family's patients share an id prefix; a test asserts the exact set within its family,
worked out by hand in the comments from docs/cohorts.md. Reference date: 2024-06-10.
"""

from __future__ import annotations

import uuid
from calendar import monthrange
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlglot import exp

from dic.cohort.compiler import compile_query
from dic.cohort.model import (
    AttributeFilter,
    Coding,
    Criterion,
    Group,
    Offset,
    Query,
    RelativeRestriction,
    TimeRestriction,
    ValueFilter,
)
from dic.cohort.select import cohort_patients
from dic.engines import (
    Database,
    Engine,
    connect,
    fhir_time_after,
    fhir_time_high,
    fhir_time_low,
    parse_sql,
    shift,
)
from dic.errors import DefinitionError
from dic.repository import load_records
from dic.sources import Entry
from dic.terminology import annotate_resource, convert
from dic.views import load_catalog, refresh_views

REF = date(2024, 6, 10)
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
LOCAL_LAB = "https://lab.example.org/codes"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONSENT_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
MDAT_USE = "2.16.840.1.113883.3.1937.777.24.5.3.8"
DIAGNOSE = "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Diagnose"


# ---------------------------------------------------------------------------- FHIR builders
def _time(prefix: str, when: Any) -> dict[str, Any]:
    """`when`: a date/dateTime text, a (start, end) Period (either may be None), or None."""
    if when is None:
        return {}
    if isinstance(when, tuple):
        return {f"{prefix}Period": {k: v for k, v in zip(("start", "end"), when, strict=True) if v}}
    return {f"{prefix}DateTime": when}


def _subject(pid: str) -> dict[str, Any]:
    return {"subject": {"reference": f"Patient/{pid}"}}


def patient(pid: str, gender: str = "female", birth: str | None = "1970-01-01") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": gender, **({"birthDate": birth} if birth else {})}


def condition(pid: str, n: int, code: str, when: Any = None, system: str = ICD, *, recorded: str | None = None,
              status: str | None = None, codings: list[dict] | None = None) -> dict:
    resource = {"resourceType": "Condition", "id": f"{pid}-c{n}", **_subject(pid),
                "code": {"coding": codings or [{"system": system, "code": code}]}, **_time("onset", when)}
    if recorded:
        resource["recordedDate"] = recorded
    if status:
        resource["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": status}]}
    return resource


def observation(pid: str, n: int, code: str, value: float | None = None, unit: str | None = None, when: Any = None,
                *, system: str = LOINC, concept: tuple[str, str] | None = None, status: str = "final") -> dict:
    resource = {"resourceType": "Observation", "id": f"{pid}-o{n}", "status": status, **_subject(pid),
                "code": {"coding": [{"system": system, "code": code}]}, **_time("effective", when)}
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if concept:
        resource["valueCodeableConcept"] = {"coding": [{"system": concept[0], "code": concept[1]}]}
    return resource


def procedure(pid: str, n: int, code: str, when: Any) -> dict:
    return {"resourceType": "Procedure", "id": f"{pid}-p{n}", "status": "completed", **_subject(pid),
            "code": {"coding": [{"system": OPS, "code": code}]}, **_time("performed", when)}


def administration(pid: str, n: int, atc: str, when: Any, *, by_reference: bool = False) -> list[dict]:
    resource = {"resourceType": "MedicationAdministration", "id": f"{pid}-ma{n}", "status": "completed",
                **_subject(pid), **_time("effective", when)}
    if not by_reference:
        return [{**resource, "medicationCodeableConcept": {"coding": [{"system": ATC, "code": atc}]}}]
    medication = {"resourceType": "Medication", "id": f"{pid}-m{n}", "code": {"coding": [{"system": ATC, "code": atc}]}}
    return [medication, {**resource, "medicationReference": {"reference": f"Medication/{pid}-m{n}"}}]


def encounter(pid: str, n: int, start: str, end: str | None) -> dict:
    return {"resourceType": "Encounter", "id": f"{pid}-e{n}", "status": "finished", **_subject(pid),
            "class": {"system": ACT_CODE, "code": "IMP"}, "period": {"start": start, **({"end": end} if end else {})}}


def specimen(pid: str, n: int, when: str, diagnosis: str | None) -> dict:
    resource = {"resourceType": "Specimen", "id": f"{pid}-s{n}", **_subject(pid),
                "type": {"coding": [{"system": SNOMED, "code": "122555007"}]}, "collection": {"collectedDateTime": when}}
    if diagnosis:
        resource["extension"] = [{"url": DIAGNOSE, "valueReference": {"reference": f"Condition/{diagnosis}"}}]
    return resource


def consent(pid: str, n: int, *, status: str = "active", provision: str = "permit") -> dict:
    return {"resourceType": "Consent", "id": f"{pid}-k{n}", "status": status, "patient": {"reference": f"Patient/{pid}"},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
            "category": [{"coding": [{"system": LOINC, "code": "57016-8"}]}],
            "provision": {"type": "deny", "provision": [{
                "type": provision, "period": {"start": "2020-01-01", "end": "2050-01-01"},
                "code": [{"coding": [{"system": CONSENT_SYSTEM, "code": MDAT_USE}]}]}]}}


# ---------------------------------------------------------------------------- the world
def world() -> list[dict]:
    r: list[dict] = []

    def add(pid: str, *resources: dict | list[dict], **person: Any) -> None:
        r.append(patient(pid, **person))
        for item in resources:
            r.extend(item if isinstance(item, list) else [item])

    # codes: ICD descendants on the fast path, SNOMED through the coding view
    add("code-1", condition("code-1", 1, "G35.10", "2021-05-03"))
    add("code-2", condition("code-2", 1, "G35", "2021"))
    add("code-3", condition("code-3", 1, "24700007", "2021", system=SNOMED))
    add("code-4", condition("code-4", 1, "G20", "2021"))
    add("code-5", condition("code-5", 1, "", "2021", codings=[{"system": SNOMED, "code": "24700007"},
                                                             {"system": ICD, "code": "G35.0"}]))
    # lab values: glucose 2345-7 (canonical mg/dL; 5 mmol/L = 90.08 mg/dL), a local code (raw), a concept
    add("lab-1", observation("lab-1", 1, "2345-7", 180, "mg/dL", "2021-01-01"))
    add("lab-2", observation("lab-2", 1, "2345-7", 5.0, "mmol/L", "2021-01-01"))
    add("lab-3", observation("lab-3", 1, "2345-7", 100, "mg/dL", "2021-01-01"))
    add("lab-4", observation("lab-4", 1, "2345-7", 126, "mg/dL", "2021-01-01"))
    add("lab-5", observation("lab-5", 1, "GLU", 7.5, "mmol/L", "2021-01-01", system=LOCAL_LAB))
    add("lab-6", observation("lab-6", 1, "GLU", 150, "mg/dL", "2021-01-01", system=LOCAL_LAB))
    add("lab-7", observation("lab-7", 1, "72166-2", None, None, "2021-01-01", concept=(SNOMED, "77176002")))
    add("lab-8", observation("lab-8", 1, "72166-2", None, None, "2021-01-01", concept=(SNOMED, "8517006")))
    add("lab-9", observation("lab-9", 1, "2345-7", None, None, "2021-01-01"))  # no value: dropped by filters
    # attributes
    add("attr-1", condition("attr-1", 1, "I10.00", "2021", status="active"))
    add("attr-2", condition("attr-2", 1, "I10.00", "2021", status="resolved"))
    add("attr-3", observation("attr-3", 1, "718-7", 13, "g/dL", "2021-01-01", status="final"))
    add("attr-4", observation("attr-4", 1, "718-7", 13, "g/dL", "2021-01-01", status="preliminary"))
    add("attr-5", condition("attr-5", 1, "C50.1", "2021-03-01"), specimen("attr-5", 1, "2021-03-02", "attr-5-c1"))
    add("attr-6", condition("attr-6", 1, "E11.9", "2021-03-01"), specimen("attr-6", 1, "2021-03-02", "attr-6-c1"))
    add("attr-7", condition("attr-7", 1, "C50.1", "2019-03-01"), specimen("attr-7", 1, "2021-03-02", "attr-7-c1"))
    add("attr-8", condition("attr-8", 1, "C50.1", "2021-03-01"), specimen("attr-8", 1, "2021-03-02", None))
    # time restrictions: precision, zones, Periods, the recordedDate fallback, undated
    add("time-1", condition("time-1", 1, "E11.9", "2021"))
    add("time-2", condition("time-2", 1, "E11.9", "2021-01-01T00:30:00+01:00"))  # 2020-12-31T23:30Z
    add("time-3", condition("time-3", 1, "E11.9", ("2019-06-01", None)))
    add("time-4", condition("time-4", 1, "E11.9", ("2020-01-01", "2020-03-01")))
    add("time-5", condition("time-5", 1, "E11.9", None, recorded="2022-02-02"))
    add("time-6", condition("time-6", 1, "E11.9", None))
    # v2 polarity: A = J45.0, B = K57.30, C = N17.0
    add("v2-a", condition("v2-a", 1, "J45.0", "2020-01-01"))
    add("v2-b", condition("v2-b", 1, "K57.30", "2020-05-01"))
    add("v2-c", condition("v2-c", 1, "N17.0", "2020-07-01"))
    add("v2-ab", condition("v2-ab", 1, "J45.0", "2020-01-01"), condition("v2-ab", 2, "K57.30", "2020-05-01"))
    add("v2-ac", condition("v2-ac", 1, "J45.0", "2020-01-01"), condition("v2-ac", 2, "N17.0", "2020-07-01"))
    add("v2-bc", condition("v2-bc", 1, "K57.30", "2020-05-01"), condition("v2-bc", 2, "N17.0", "2020-07-01"))
    add("v2-abc", condition("v2-abc", 1, "J45.0", "2020-01-01"), condition("v2-abc", 2, "K57.30", "2020-05-01"),
        condition("v2-abc", 3, "N17.0", "2020-07-01"))
    add("v2-none")
    # anchors: dementia F00.0, donepezil N06DA02 within [P0D, P1Y] after it
    add("anc-1", condition("anc-1", 1, "F00.0", "2020-01-10"), condition("anc-1", 2, "F00.0", "2021-06-01"),
        administration("anc-1", 1, "N06DA02", "2020-03-01"))
    add("anc-2", condition("anc-2", 1, "F00.0", "2020-01-10"), condition("anc-2", 2, "F00.0", "2022-01-01"),
        administration("anc-2", 1, "N06DA02", "2022-02-01"))
    add("anc-3", administration("anc-3", 1, "N06DA02", "2020-02-01"))
    add("anc-4", condition("anc-4", 1, "F00.0", None), administration("anc-4", 1, "N06DA02", "2020-01-01"))
    add("anc-5", condition("anc-5", 1, "F00.0", "2020-01-10"), administration("anc-5", 1, "N06DA02", "2019-12-01"))
    # chained first anchors: dementia → delirium F05.1 within 30 days → haloperidol N05AD01 within 3 days
    add("chain-1", condition("chain-1", 1, "F00.0", "2021-01-01"), condition("chain-1", 2, "F05.1", "2021-01-15"),
        administration("chain-1", 1, "N05AD01", "2021-01-16"))
    add("chain-2", condition("chain-2", 1, "F00.0", "2021-01-01"), condition("chain-2", 2, "F05.1", "2020-12-01"),
        condition("chain-2", 3, "F05.1", "2021-03-01"), administration("chain-2", 1, "N05AD01", "2021-03-02"))
    add("chain-3", condition("chain-3", 1, "F00.0", "2021-01-01"), condition("chain-3", 2, "F05.1", "2020-12-20"),
        condition("chain-3", 3, "F05.1", "2021-01-20"), administration("chain-3", 1, "N05AD01", "2020-12-21"))
    add("chain-4", condition("chain-4", 1, "F00.0", "2021-01-01"), condition("chain-4", 2, "F05.1", "2020-12-20"),
        condition("chain-4", 3, "F05.1", "2021-01-20"), administration("chain-4", 1, "N05AD01", "2021-01-22"))
    # `any` shares one witness per group array: haloperidol and sodium after the SAME delirium
    add("split-1", condition("split-1", 1, "F05.1", "2021-02-01"), administration("split-1", 1, "N05AD01", "2021-02-02"),
        observation("split-1", 1, "2951-2", 130, "mmol/L", "2021-02-02"))
    add("split-2", condition("split-2", 1, "F05.1", "2021-02-01"), condition("split-2", 2, "F05.1", "2021-03-01"),
        administration("split-2", 1, "N05AD01", "2021-02-02"), observation("split-2", 1, "2951-2", 130, "mmol/L", "2021-03-02"))
    # a two-hop `any` chain: sepsis A41.5 → AKI N17.0 within 7 days → dialysis 8-854 within 2 days
    add("hop-1", condition("hop-1", 1, "A41.5", "2021-01-01"), condition("hop-1", 2, "N17.0", "2021-01-03"),
        procedure("hop-1", 1, "8-854", "2021-01-04"))
    add("hop-2", condition("hop-2", 1, "A41.5", "2021-01-01"), condition("hop-2", 2, "N17.0", "2021-02-01"),
        procedure("hop-2", 1, "8-854", "2021-02-02"))
    add("hop-3", condition("hop-3", 1, "A41.5", "2021-01-01"), condition("hop-3", 2, "A41.5", "2021-01-28"),
        condition("hop-3", 3, "N17.0", "2021-02-01"), procedure("hop-3", 1, "8-854", "2021-02-02"))
    # two entries: hemoglobin 718-7 after procedure 5-470 (A) and before diagnosis K35.8 (B)
    add("multi-1", procedure("multi-1", 1, "5-470", "2021-01-10"), condition("multi-1", 1, "K35.8", "2021-02-10"),
        observation("multi-1", 1, "718-7", 12, "g/dL", "2021-01-20"))
    add("multi-2", procedure("multi-2", 1, "5-470", "2021-01-10"), condition("multi-2", 1, "K35.8", "2021-02-10"),
        observation("multi-2", 1, "718-7", 12, "g/dL", "2021-01-05"),
        observation("multi-2", 2, "718-7", 12, "g/dL", "2021-03-01"))
    add("multi-3", procedure("multi-3", 1, "5-470", "2021-02-10"), condition("multi-3", 1, "K35.8", "2021-01-05"),
        observation("multi-3", 1, "718-7", 12, "g/dL", ("2021-01-01", "2021-03-01")))
    # multi-clause anchor [dementia] AND [delirium]; haloperidol within [P0D, P7D]
    add("mclause-1", condition("mclause-1", 1, "F00.0", "2021-01-01"), condition("mclause-1", 2, "F05.1", "2021-01-03"),
        administration("mclause-1", 1, "N05AD01", "2021-01-05"))
    add("mclause-2", condition("mclause-2", 1, "F00.0", "2021-01-01"), condition("mclause-2", 2, "F05.1", "2021-03-01"),
        administration("mclause-2", 1, "N05AD01", "2021-03-02"))
    add("mclause-3", condition("mclause-3", 1, "F00.0", "2021-01-01"), administration("mclause-3", 1, "N05AD01", "2021-01-02"))
    add("mclause-4", condition("mclause-4", 1, "F00.0", "2021-01-01"), condition("mclause-4", 2, "F00.0", "2021-02-27"),
        condition("mclause-4", 3, "F05.1", "2021-03-01"), administration("mclause-4", 1, "N05AD01", "2021-03-02"))
    # now = [2024-06-10, 2024-06-11): hemoglobin in the last 24 hours
    add("now-1", observation("now-1", 1, "718-7", 12, "g/dL", "2024-06-09T12:00:00Z"))
    add("now-2", observation("now-2", 1, "718-7", 12, "g/dL", "2024-06-07"))
    add("now-3", observation("now-3", 1, "718-7", 12, "g/dL", "2024-06-10T23:00:00+02:00"))
    add("now-4", observation("now-4", 1, "718-7", 12, "g/dL", "2024-06-11T01:00:00+02:00"))  # 2024-06-10T23:00Z
    add("now-5", observation("now-5", 1, "718-7", 12, "g/dL", "2024-04-09"))
    # anchorPoint end of the last inpatient encounter; hemoglobin within 30 days after discharge
    add("end-1", encounter("end-1", 1, "2021-01-01", "2021-01-10"), observation("end-1", 1, "718-7", 12, "g/dL", "2021-01-20"))
    add("end-2", encounter("end-2", 1, "2021-01-01", None), observation("end-2", 1, "718-7", 12, "g/dL", "2021-01-20"))
    add("end-3", encounter("end-3", 1, "2021-01-01", "2021-01-10"), encounter("end-3", 2, "2021-03-01", "2021-03-05"),
        observation("end-3", 1, "718-7", 12, "g/dL", "2021-01-20"))
    # age and gender at 2024-06-10, consent
    add("demo-1", consent("demo-1", 1), gender="female", birth="1980-06-15")  # 43
    add("demo-2", consent("demo-2", 1, status="inactive"), gender="male", birth="2006-06-11")  # 17 (18 tomorrow)
    add("demo-3", consent("demo-3", 1, provision="deny"), gender="female", birth="1990")  # 34
    add("demo-4", gender="male", birth=None)
    # medication by code or by reference, and by resource type
    add("medref-1", administration("medref-1", 1, "N06DA02", "2021-01-01", by_reference=True))
    add("medref-2", {"resourceType": "MedicationRequest", "id": "medref-2-mr1", "status": "active", "intent": "order",
                     **_subject("medref-2"), "authoredOn": "2021-01-01",
                     "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "N06DA02"}]}})
    add("medref-3", {"resourceType": "MedicationStatement", "id": "medref-3-ms1", "status": "active",
                     **_subject("medref-3"), "effectivePeriod": {"start": "2021-01-01", "end": "2021-02-01"},
                     "medicationCodeableConcept": {"coding": [{"system": ATC, "code": "N06DA02"}]}})
    return r


def load_world(db: Database, resources: list[dict], views: list[str] | None = None) -> None:
    entries = []
    for i, resource in enumerate(resources):
        annotate_resource(resource)  # the normalized-value extension, as a load through the pipeline writes it
        entries.append(Entry.of(resource, "test-world", f"entry {i}"))
    load_records(db, "test-world", entries)
    refresh_views(db, load_catalog(), names=views)


@pytest.fixture(scope="module", params=[Engine.duckdb, Engine.postgres], ids=str)
def world_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    """The world on DuckDB and on a real PostgreSQL, loaded once per module."""
    if request.param is Engine.duckdb:
        db = connect(Engine.duckdb, tmp_path_factory.mktemp("cohort") / "world.duckdb")
        drop: Callable[[], None] = lambda: None
    else:
        import psycopg

        admin_url = request.getfixturevalue("postgres_url")
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        db = connect(Engine.postgres, admin_url.rsplit("/", 1)[0] + f"/{name}")

        def drop() -> None:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    load_world(db, world())
    yield db
    db.close()
    drop()


# ---------------------------------------------------------------------------- query builders
def crit(kind: str, *codes: str, system: str = ICD, path: str = "/c", **fields: Any) -> Criterion:
    types = {"diagnosis": ("Condition",), "procedure": ("Procedure",), "observation": ("Observation",),
             "medication": ("MedicationAdministration", "MedicationStatement", "MedicationRequest"),
             "specimen": ("Specimen",), "consent": ("Consent",), "encounter": ("Encounter",)}.get(kind, ("Patient",))
    fields.setdefault("resource_types", types)
    return Criterion(path=path, kind=kind, codes=tuple(Coding(system, c) for c in codes), **fields)  # type: ignore[arg-type]


def days(n: float) -> Offset:
    return Offset(seconds=int(n * 86_400), text=f"P{n}D")


def rel(anchor: str, low: Offset | None = None, high: Offset | None = None) -> RelativeRestriction:
    return RelativeRestriction(path="/r", anchor=anchor, min_offset=low, max_offset=high)


def group(*clauses: Criterion | tuple[Criterion, ...], id: str | None = None, relative: tuple = (),
          occurrence: str | None = None, point: str = "start") -> Group:
    criteria = tuple(c if isinstance(c, tuple) else (c,) for c in clauses)
    return Group(path="/g", id=id, criteria=criteria, relative=relative, occurrence=occurrence, point=point)  # type: ignore[arg-type]


def query(*inclusion: tuple[Group, ...] | Group, exclusion: tuple = ()) -> Query:
    arrays = tuple(a if isinstance(a, tuple) else (a,) for a in inclusion)
    return Query(version="3", inclusion=arrays, exclusion=tuple(a if isinstance(a, tuple) else (a,) for a in exclusion))


def members(db: Database, q: Query, family: str) -> set[str]:
    keys = cohort_patients(db, q, REF)
    assert keys == sorted(keys)
    return {k.removeprefix("Patient/") for k in keys if k.startswith(f"Patient/{family}-")}


def quantity(comparator: str, value: float, unit: str = "mg/dL", normalized: bool = True) -> ValueFilter:
    return ValueFilter(type="quantity-comparator", path="/v", comparator=comparator, value=value,  # type: ignore[arg-type]
                       unit=unit, normalized=normalized)


G35 = ("G35", "G35.0", "G35.1", "G35.10", "G35.11", "G35.2", "G35.20", "G35.21", "G35.3", "G35.30", "G35.31", "G35.9")
DEMENTIA = crit("diagnosis", "F00.0")
DELIRIUM = crit("diagnosis", "F05.1")
DONEPEZIL = crit("medication", "N06DA02", system=ATC)
HALOPERIDOL = crit("medication", "N05AD01", system=ATC)
HEMOGLOBIN = crit("observation", "718-7", system=LOINC)
NOW = Criterion(path="/now", kind="now")


# ---------------------------------------------------------------------------- v2 constructs
def test_codes_match_descendants_on_the_fast_path_and_other_systems_through_the_coding_view(world_db: Database) -> None:
    assert members(world_db, query(group(crit("diagnosis", *G35))), "code") == {"code-1", "code-2", "code-5"}
    assert members(world_db, query(group(crit("diagnosis", "24700007", system=SNOMED))), "code") == {"code-3", "code-5"}
    # a code without a system matches that code in any system
    assert members(world_db, query(group(crit("diagnosis", "G35.10", system=""))), "code") == {"code-1"}
    mixed = Criterion(path="/c", kind="diagnosis", resource_types=("Condition",),
                      codes=(Coding(ICD, "G20"), Coding(SNOMED, "24700007")))
    assert members(world_db, query(group(mixed)), "code") == {"code-3", "code-4", "code-5"}


@pytest.mark.parametrize(("value_filter", "expected"), [
    # normalized values in mg/dL: lab-1 180, lab-2 5 mmol/L = 90.08, lab-3 100, lab-4 126; lab-9 has no value
    (quantity("gt", 126), {"lab-1"}),
    (quantity("ge", 126), {"lab-1", "lab-4"}),
    (quantity("lt", 100), {"lab-2"}),
    (quantity("le", 100), {"lab-2", "lab-3"}),
    (quantity("eq", 126), {"lab-4"}),
    (quantity("ne", 126), {"lab-1", "lab-2", "lab-3"}),
    # 5 mmol/L as the resolver converts it: equal at 9 significant digits
    (quantity("eq", convert(5.0, "mmol/L", "mg/dL", "2345-7")), {"lab-2"}),
    (ValueFilter(type="quantity-range", path="/v", low=90, high=100, unit="mg/dL", normalized=True),
     {"lab-2", "lab-3"}),
])
def test_quantity_filters_compare_normalized_values(world_db: Database, value_filter: ValueFilter,
                                                     expected: set[str]) -> None:
    glucose = crit("observation", "2345-7", system=LOINC, value=value_filter)
    assert members(world_db, query(group(glucose)), "lab") == expected


def test_raw_quantities_compare_only_in_the_filter_unit(world_db: Database) -> None:
    # a local code has no canonical unit: lab-5 7.5 mmol/L, lab-6 150 mg/dL (never converted)
    local = crit("observation", "GLU", system=LOCAL_LAB, value=quantity("gt", 7, "mmol/L", normalized=False))
    assert members(world_db, query(group(local)), "lab") == {"lab-5"}
    unitless = crit("observation", "GLU", system=LOCAL_LAB,
                    value=ValueFilter(type="quantity-comparator", path="/v", comparator="gt", value=7))
    assert members(world_db, query(group(unitless)), "lab") == {"lab-5", "lab-6"}


def test_concept_value_filter(world_db: Database) -> None:
    smoker = ValueFilter(type="concept", path="/v", concepts=(Coding(SNOMED, "77176002"),))
    assert members(world_db, query(group(crit("observation", "72166-2", system=LOINC, value=smoker))), "lab") == {"lab-7"}
    any_system = ValueFilter(type="concept", path="/v", concepts=(Coding("", "8517006"), Coding("", "77176002")))
    assert members(world_db, query(group(crit("observation", "72166-2", system=LOINC, value=any_system))),
                   "lab") == {"lab-7", "lab-8"}


def test_attribute_filters_concept_column_and_reference(world_db: Database) -> None:
    active = AttributeFilter(attribute="clinicalStatus", path="/a",
                             filter=ValueFilter(type="concept", path="/a/f", concepts=(Coding(CLINICAL, "active"),)))
    assert members(world_db, query(group(crit("diagnosis", "I10.00", attributes=(active,)))), "attr") == {"attr-1"}
    final = AttributeFilter(attribute="status", path="/a",
                            filter=ValueFilter(type="concept", path="/a/f", concepts=(Coding("", "final"),)))
    assert members(world_db, query(group(crit("observation", "718-7", system=LOINC, attributes=(final,)))),
                   "attr") == {"attr-3"}
    # the specimen's Diagnose extension names a C50.1 condition of 2020 or later (attr-7's is of 2019)
    breast = crit("diagnosis", "C50.1", time=TimeRestriction(after=date(2020, 1, 1), before=None))
    diagnosis = AttributeFilter(attribute="diagnose", path="/a", references=(breast,))
    sample = crit("specimen", "122555007", system=SNOMED, attributes=(diagnosis,))
    assert members(world_db, query(group(sample)), "attr") == {"attr-5"}


@pytest.mark.parametrize(("after", "before", "expected"), [
    # time-1 "2021"; time-2 2020-12-31T23:30Z; time-3 2019-06-01..open; time-4 2020-01-01..2020-03-01;
    # time-5 recordedDate 2022-02-02 only; time-6 undated
    (date(2021, 12, 31), None, {"time-1", "time-3", "time-5"}),
    (date(2021, 1, 1), date(2021, 1, 1), {"time-1", "time-3"}),
    (None, date(2020, 12, 31), {"time-2", "time-3", "time-4"}),
    (date(2020, 2, 1), date(2020, 2, 1), {"time-3", "time-4"}),
    (None, None, {"time-1", "time-2", "time-3", "time-4", "time-5", "time-6"}),
])
def test_time_restriction_is_overlap_with_the_precision_interval(world_db: Database, after: date | None,
                                                                  before: date | None, expected: set[str]) -> None:
    restricted = crit("diagnosis", "E11.9", time=TimeRestriction(after=after, before=before))
    assert members(world_db, query(group(restricted)), "time") == expected


A, B, C = crit("diagnosis", "J45.0"), crit("diagnosis", "K57.30"), crit("diagnosis", "N17.0")


def test_v2_inclusion_and_of_ors_exclusion_or_of_ands(world_db: Database) -> None:
    # inclusion [[A], [B, C]] = A AND (B OR C)
    assert members(world_db, query(group(A, (B, C))), "v2") == {"v2-ab", "v2-ac", "v2-abc"}
    # exclusion [[A], [B, C]] = A OR (B AND C): split into two group arrays
    q = query(group((A, B, C)), exclusion=(group(A), group(B, C)))
    assert members(world_db, q, "v2") == {"v2-b", "v2-c"}


def test_group_arrays_are_alternatives_and_index_date_comes_from_the_first_that_holds(world_db: Database) -> None:
    q = query((group(A, B),), (group(C),))
    assert members(world_db, q, "v2") == {"v2-ab", "v2-abc", "v2-ac", "v2-bc", "v2-c"}
    rows = dict(world_db.fetch(compile_query(q, REF).select, "index dates").rows)
    assert rows["Patient/v2-abc"] == datetime(2020, 1, 1)  # first array holds: its first clause, A
    assert rows["Patient/v2-c"] == datetime(2020, 7, 1)  # only the second: C


def test_age_gender_and_consent(world_db: Database) -> None:
    def age(value_filter: ValueFilter) -> Query:
        return query(group(Criterion(path="/c", kind="age", value=value_filter)))

    years = {c: ValueFilter(type="quantity-comparator", path="/v", comparator=c, value=v, unit="a")  # type: ignore[arg-type]
             for c, v in (("gt", 18), ("ge", 17), ("lt", 18), ("eq", 43))}
    # demo-1 43 (birthday on 06-15), demo-2 17 (18 tomorrow), demo-3 34 (born "1990"), demo-4 no birthDate
    assert members(world_db, age(years["gt"]), "demo") == {"demo-1", "demo-3"}
    assert members(world_db, age(years["ge"]), "demo") == {"demo-1", "demo-2", "demo-3"}
    assert members(world_db, age(years["lt"]), "demo") == {"demo-2"}
    assert members(world_db, age(years["eq"]), "demo") == {"demo-1"}
    in_range = ValueFilter(type="quantity-range", path="/v", low=34, high=43, unit="a")
    assert members(world_db, age(in_range), "demo") == {"demo-1", "demo-3"}
    months = ValueFilter(type="quantity-comparator", path="/v", comparator="ge", value=215, unit="mo")
    assert "demo-2" in members(world_db, age(months), "demo")  # 17 years 11 months 30 days
    months = ValueFilter(type="quantity-comparator", path="/v", comparator="ge", value=216, unit="mo")
    assert "demo-2" not in members(world_db, age(months), "demo")
    female = ValueFilter(type="concept", path="/v", concepts=(Coding("", "female"),))
    assert members(world_db, query(group(Criterion(path="/c", kind="gender", value=female))), "demo") == {
        "demo-1", "demo-3"}
    # only active consents, only permit provisions; the provision's period is the event
    assert members(world_db, query(group(crit("consent", MDAT_USE, system=CONSENT_SYSTEM))), "demo") == {"demo-1"}
    late = crit("consent", MDAT_USE, system=CONSENT_SYSTEM, time=TimeRestriction(after=date(2055, 1, 1), before=None))
    assert members(world_db, query(group(late)), "demo") == set()


def test_medication_by_reference_and_by_resource_type(world_db: Database) -> None:
    assert members(world_db, query(group(DONEPEZIL)), "medref") == {"medref-1", "medref-2", "medref-3"}
    administered = crit("medication", "N06DA02", system=ATC, resource_types=("MedicationAdministration",))
    assert members(world_db, query(group(administered)), "medref") == {"medref-1"}
    class_code = crit("encounter", "IMP", system=ACT_CODE)
    assert members(world_db, query(group(class_code)), "end") == {"end-1", "end-2", "end-3"}


# ---------------------------------------------------------------------------- v3 anchors
@pytest.mark.parametrize(("occurrence", "expected"), [
    # donepezil within [P0D, P1Y] of the anchor dementia diagnosis
    ("first", {"anc-1"}),  # anc-2's first is 2020-01-10, its donepezil 2022
    ("last", {"anc-2"}),  # anc-1's last is 2021-06-01, after its donepezil
    ("any", {"anc-1", "anc-2"}),  # anc-3 none, anc-4 undated (never a candidate), anc-5 donepezil before
])
def test_first_last_any_anchor(world_db: Database, occurrence: str, expected: set[str]) -> None:
    anchor = group(DEMENTIA, id="dementia", occurrence=occurrence)
    dependent = group(DONEPEZIL, relative=(rel("dementia", days(0), Offset(months=12, text="P1Y")),))
    assert members(world_db, query((anchor, dependent)), "anc") == expected
    # the anchor defined in an exclusion array that never holds: only its date counts
    never = group(crit("diagnosis", "Z99.9"))
    assert members(world_db, Query(version="3", inclusion=((dependent,),), exclusion=((never, anchor),)),
                   "anc") == expected
    # the anchor's own array excludes everyone with a dementia diagnosis
    assert members(world_db, Query(version="3", inclusion=((dependent,),), exclusion=((anchor,),)), "anc") == set()


def test_anchor_only_referenced_and_index_date(world_db: Database) -> None:
    anchor = group(DEMENTIA, id="dementia", occurrence="first")
    dependent = group(DONEPEZIL, relative=(rel("dementia", days(0), Offset(months=12)),))
    q = Query(version="3", inclusion=((dependent,),), exclusion=((group(crit("diagnosis", "Z99.9"), id="zz"), anchor),))
    assert members(world_db, q, "anc") == {"anc-1"}  # the anchor's truth is not required, only its date
    rows = dict(world_db.fetch(compile_query(query((anchor, dependent)), REF).select, "index").rows)
    assert rows["Patient/anc-1"] == datetime(2020, 1, 10)  # earliest event of the first clause of the first group


def test_chained_first_anchors_use_only_qualifying_candidates(world_db: Database) -> None:
    dementia = group(DEMENTIA, id="dementia", occurrence="first")
    delirium = group(DELIRIUM, id="delirium", occurrence="first", relative=(rel("dementia", days(0), days(30)),))
    haloperidol = group(HALOPERIDOL, relative=(rel("delirium", days(0), days(3)),))
    # chain-3's first delirium after dementia is 01-20 (its 2020-12-20 one is outside the window);
    # chain-4 qualifies only through that one; chain-2 has no delirium in the window
    q = Query(version="3", inclusion=((haloperidol,),), exclusion=((dementia, delirium, group(crit("diagnosis", "Z99.9"))),))
    assert members(world_db, q, "chain") == {"chain-1", "chain-4"}


def test_any_shares_one_witness_per_group_array(world_db: Database) -> None:
    delirium = group(DELIRIUM, id="delirium", occurrence="any")
    sodium = crit("observation", "2951-2", system=LOINC)
    after_haloperidol = group(HALOPERIDOL, relative=(rel("delirium", days(0), days(3)),))
    after_sodium = group(sodium, relative=(rel("delirium", days(0), days(2)),))
    assert members(world_db, query((delirium, after_haloperidol, after_sodium)), "split") == {"split-1"}
    # two ids = two events: split-2 qualifies with independent witnesses
    twin = group(DELIRIUM, id="delirium-2", occurrence="any")
    after_twin = group(sodium, relative=(rel("delirium-2", days(0), days(2)),))
    q = Query(version="3", inclusion=((after_haloperidol, after_twin),),
              exclusion=((delirium, twin, group(crit("diagnosis", "Z99.9"))),))
    assert members(world_db, q, "split") == {"split-1", "split-2"}


def test_any_chain_nests(world_db: Database) -> None:
    sepsis = group(crit("diagnosis", "A41.5"), id="sepsis", occurrence="any")
    aki = group(crit("diagnosis", "N17.0"), id="aki", occurrence="any", relative=(rel("sepsis", days(0), days(7)),))
    dialysis = group(crit("procedure", "8-854", system=OPS), relative=(rel("aki", days(0), days(2)),))
    # hop-2's AKI is a month after sepsis; hop-3 qualifies through its second sepsis
    q = Query(version="3", inclusion=((dialysis,),), exclusion=((sepsis, aki, group(crit("diagnosis", "Z99.9"))),))
    assert members(world_db, q, "hop") == {"hop-1", "hop-3"}


def test_two_entries_need_one_event_in_both_windows(world_db: Database) -> None:
    surgery = group(crit("procedure", "5-470", system=OPS), id="surgery", occurrence="first")
    appendicitis = group(crit("diagnosis", "K35.8"), id="appendicitis", occurrence="first")
    between = group(HEMOGLOBIN, relative=(rel("surgery", low=days(0)), rel("appendicitis", high=days(0))))
    unused = (group(crit("diagnosis", "Z99.9")), surgery, appendicitis)
    q = Query(version="3", inclusion=((between,),), exclusion=(unused,))
    # multi-2's values lie outside [surgery, appendicitis]; multi-3's window is inverted although its
    # hemoglobin Period overlaps both half-windows (the explicit lo < hi guard)
    assert members(world_db, q, "multi") == {"multi-1"}
    after = group(HEMOGLOBIN, relative=(rel("surgery", low=days(0)),))
    before = group(HEMOGLOBIN, relative=(rel("appendicitis", high=days(0)),))
    q = Query(version="3", inclusion=((after, before),), exclusion=(unused,))
    assert members(world_db, q, "multi") == {"multi-1", "multi-2", "multi-3"}


@pytest.mark.parametrize(("occurrence", "expected"), [
    # window [max lo, min hi + 7 days): mclause-2's clauses lie two months apart (inverted), mclause-3
    # has no delirium; mclause-4 qualifies only with its second dementia (any)
    ("first", {"mclause-1"}),
    ("any", {"mclause-1", "mclause-4"}),
])
def test_multi_clause_anchor_takes_the_tuple_extremes(world_db: Database, occurrence: str, expected: set[str]) -> None:
    anchor = group(DEMENTIA, DELIRIUM, id="both", occurrence=occurrence)
    dependent = group(HALOPERIDOL, relative=(rel("both", days(0), days(7)),))
    assert members(world_db, query((anchor, dependent)), "mclause") == expected


def test_now_and_calendar_months(world_db: Database) -> None:
    now = group(NOW, id="now")
    last_day = group(HEMOGLOBIN, relative=(rel("now", Offset(seconds=-86_400), days(0)),))
    assert members(world_db, query((now, last_day)), "now") == {"now-1", "now-3", "now-4"}
    two_months = group(HEMOGLOBIN, relative=(rel("now", Offset(months=-2), days(0)),))  # [04-10, 06-11)
    assert members(world_db, query((now, two_months)), "now") == {"now-1", "now-2", "now-3", "now-4"}
    assert members(world_db, query((now,)), "now") == {"now-1", "now-2", "now-3", "now-4", "now-5"}


def test_anchor_point_end(world_db: Database) -> None:
    stay = group(crit("encounter", "IMP", system=ACT_CODE), id="stay", occurrence="last", point="end")
    after = group(HEMOGLOBIN, relative=(rel("stay", days(0), days(30)),))
    # end-2 has no discharge (no end anchor); end-3's last discharge is in March
    assert members(world_db, query((stay, after)), "end") == {"end-1"}
    start = group(crit("encounter", "IMP", system=ACT_CODE), id="stay-start", occurrence="first")
    after_start = group(HEMOGLOBIN, relative=(rel("stay-start", days(0), days(30)),))
    assert members(world_db, query((start, after_start)), "end") == {"end-1", "end-2", "end-3"}


def test_absolute_and_relative_restrictions_hold_on_the_same_event(world_db: Database) -> None:
    # multi-2 has hemoglobin on 01-05 and 03-01; the relative window (after surgery 01-10) and the
    # absolute one (before 2021-02-01) are each met, but by different events; multi-3's hemoglobin
    # Period (01-01..03-01) overlaps both
    surgery = group(crit("procedure", "5-470", system=OPS), id="surgery", occurrence="first")
    early = crit("observation", "718-7", system=LOINC, time=TimeRestriction(after=None, before=date(2021, 2, 1)))
    q = query((surgery, group(early, relative=(rel("surgery", low=days(0)),))))
    assert members(world_db, q, "multi") == {"multi-1", "multi-3"}


# ---------------------------------------------------------------------------- FHIR time bounds
TIME_CASES = [  # text, lo, hi (UTC, half-open)
    ("2021", datetime(2021, 1, 1), datetime(2022, 1, 1)),
    ("2021-05", datetime(2021, 5, 1), datetime(2021, 6, 1)),
    ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
    ("2021-05-03T10:00:00+02:00", datetime(2021, 5, 3, 8), datetime(2021, 5, 3, 8, 0, 1)),
    ("2021-05-03T00:30:00.123-01:30", datetime(2021, 5, 3, 2), datetime(2021, 5, 3, 2, 0, 1)),
    ("2021-12-31T23:59:59Z", datetime(2021, 12, 31, 23, 59, 59), datetime(2022, 1, 1)),
    ("2021-05-03T10:00:00", datetime(2021, 5, 3, 10), datetime(2021, 5, 3, 10, 0, 1)),  # no zone: UTC
    ("not a date", None, None),
    ("2021-13", None, None),
    (None, None, None),
]


def time_bounds(db: Database) -> list[tuple]:
    texts = exp.Values(expressions=[exp.Tuple(expressions=[exp.Literal.number(i), exp.cast(
        exp.Literal.string(t) if t is not None else exp.null(), "TEXT")]) for i, (t, _, _) in enumerate(TIME_CASES)],
        alias=exp.TableAlias(this=exp.to_identifier("x"), columns=[exp.to_identifier("i"), exp.to_identifier("s")]))
    text = exp.column("s", "x")
    select = exp.select(exp.column("i", "x"), fhir_time_low(text).as_("lo"), fhir_time_high(text.copy()).as_("hi"),
                        fhir_time_after(fhir_time_low(text.copy()), exp.Length(this=text.copy())).as_("after"),
                        shift(fhir_time_low(text.copy()), -1, 90_061).as_("shifted")).from_(texts).order_by("i")
    return [tuple(row[1:]) for row in db.fetch(select, "time bounds").rows]


def expected_bounds() -> list[tuple]:
    def shifted(lo: datetime | None) -> datetime | None:
        if lo is None:
            return None
        year, month = (lo.year - 1, 12) if lo.month == 1 else (lo.year, lo.month - 1)
        earlier = lo.replace(year=year, month=month, day=min(lo.day, monthrange(year, month)[1]))  # month ends clamp
        return earlier + timedelta(days=1, hours=1, minutes=1, seconds=1)

    return [(lo, hi, hi, shifted(lo)) for _, lo, hi in TIME_CASES]


def test_fhir_time_bounds(world_db: Database) -> None:
    assert time_bounds(world_db) == expected_bounds()


# ---------------------------------------------------------------------------- refusals and SQL
def test_invalid_anchor_structures_are_refused() -> None:
    dependent = group(DONEPEZIL, relative=(rel("missing", days(0), days(1)),))
    with pytest.raises(DefinitionError, match="names no group"):
        compile_query(query(dependent), REF)
    any_anchor = group(DEMENTIA, id="a", occurrence="any")
    first_off_any = group(DELIRIUM, id="b", occurrence="first", relative=(rel("a", days(0), days(3)),))
    with pytest.raises(DefinitionError, match="depends on an 'any' anchor"):
        compile_query(query((any_anchor, first_off_any, group(HALOPERIDOL, relative=(rel("b", days(0)),)))), REF)
    cycle_a = group(DEMENTIA, id="a", occurrence="first", relative=(rel("b", days(0)),))
    cycle_b = group(DELIRIUM, id="b", occurrence="first", relative=(rel("a", days(0)),))
    with pytest.raises(DefinitionError, match="cycle"):
        compile_query(query((cycle_a, cycle_b)), REF)
    no_occurrence = group(DEMENTIA, id="a")
    with pytest.raises(DefinitionError, match="no anchorOccurrence"):
        compile_query(query((no_occurrence, group(DONEPEZIL, relative=(rel("a", days(0)),)))), REF)
    unknown = AttributeFilter(attribute="colour", path="/x/attributeFilters/0", filter=None)
    with pytest.raises(DefinitionError, match="/x/attributeFilters/0"):
        compile_query(query(group(crit("diagnosis", "E11.9", attributes=(unknown,)))), REF)


def test_user_values_are_literals_and_every_dialect_renders() -> None:
    nasty = crit("diagnosis", "E11'; DROP TABLE resource; --")
    compiled = compile_query(query(group(nasty)), REF)
    for dialect in ("duckdb", "postgres", "spark"):
        parsed = parse_sql(compiled.sql(dialect), dialect=dialect)
        literals = {lit.this for lit in parsed.find_all(exp.Literal) if lit.is_string}
        assert "E11'; DROP TABLE resource; --" in literals
        assert len(list(parsed.find_all(exp.Drop))) == 0
    assert compiled.code_lists == {"/c": [f"{ICD}|E11'; DROP TABLE resource; --"]}
    assert [e.alias_or_name for e in compiled.select.expressions] == ["patient_key", "index_date"]


@pytest.mark.spark
def test_spark_runs_the_same_queries(spark_db: Database) -> None:
    resources = [r for r in world() if r["id"].split("-")[0] in {"anc", "time", "mclause"}]
    # ICD-10-GM and ATC codes on the fast path, administrations only: three views suffice
    load_world(spark_db, resources, ["condition", "medication", "medication_administration"])
    restricted = crit("diagnosis", "E11.9", time=TimeRestriction(after=date(2021, 12, 31), before=None))
    assert members(spark_db, query(group(restricted)), "time") == {"time-1", "time-3", "time-5"}
    administered = ("MedicationAdministration",)
    anchor = group(DEMENTIA, id="dementia", occurrence="first")
    donepezil = crit("medication", "N06DA02", system=ATC, resource_types=administered)
    dependent = group(donepezil, relative=(rel("dementia", days(0), Offset(months=12)),))
    assert members(spark_db, query((anchor, dependent)), "anc") == {"anc-1"}
    both = group(DEMENTIA, DELIRIUM, id="both", occurrence="any")
    haloperidol = crit("medication", "N05AD01", system=ATC, resource_types=administered)
    assert members(spark_db, query((both, group(haloperidol, relative=(rel("both", days(0), days(7)),)))),
                   "mclause") == {"mclause-1", "mclause-4"}
    assert time_bounds(spark_db) == expected_bounds()


def test_event_views_name_columns_the_standard_views_have() -> None:
    from dic.cohort.event_views import load_event_views
    from dic.views import view_columns

    catalog = load_catalog()
    columns = {name: {c.name for c in view_columns(view)} for name, view in catalog.views.items()}
    views = load_event_views()
    named: list[tuple[str, str]] = []
    for kind in ("diagnosis", "procedure", "observation", "medication", "specimen", "consent", "encounter"):
        for source in views.sources(kind):
            times = [c for option in source.time for c in (option.at, option.start, option.end) if c]
            code = source.code
            named += [(source.view, c) for c in [source.key, source.patient, *source.where, *times,
                                                 *[a.column or a.reference for a in source.attributes.values()
                                                   if a.column or a.reference],
                                                 *[c for c in (code.column, code.medication) if c],
                                                 *([code.pair.system, code.pair.code] if code.pair else [])]]
            if source.value and source.value.quantity:
                q = source.value.quantity
                named += [(source.view, c) for c in (q.value, q.unit, q.normalized, q.normalized_unit)]
            for coding_view in {code.coding.view} if code.coding else set():
                named += [(coding_view, c) for c in ("resource_key", "element", "system", "code")]
    named += [(views.patient.view, c) for c in (views.patient.key, views.patient.birth_date, views.patient.gender)]
    assert [(v, c) for v, c in named if c not in columns.get(v, set())] == []


def test_world_is_valid_fhir() -> None:
    from dic.fhir import check_resource

    assert [check_resource(r) for r in world() if check_resource(r)] == []
    assert Path(__file__).name == "test_cohort_compiler.py"

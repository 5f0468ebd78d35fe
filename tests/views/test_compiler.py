"""The view compiler as tables: one input view, then the expected SQL and rows per engine.

SQL snapshots live in tests/snapshots/test_compiler/<case>/<engine>.sql; run with
DIC_UPDATE_SNAPSHOTS=1 to rewrite them after an intended change (and review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlglot import exp

from dic.engines import Database, Engine, render, table
from dic.errors import NotCompilableError
from dic.fhir.elements import choice_types, element
from dic.repository import ensure_schema
from dic.repository.schema import RESOURCE_COLUMNS
from dic.views.compiler import compile_view
from dic.views.fhirpath_syntax import Binary, Call, FhirPathSyntaxError, Literal, Member, parse_fhirpath
from dic.views.view_definition import ViewDefinition

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = ROOT / "tests" / "snapshots" / "test_compiler"
STANDARD_VIEWS = ROOT / "src" / "dic" / "views" / "standard"

PATIENT_VIEW = {
    "resource": "Patient",
    "select": [{"column": [
        {"name": "id", "path": "id", "type": "id"},
        {"name": "patient_key", "path": "getResourceKey()", "type": "string"},
        {"name": "gender", "path": "gender", "type": "code"},
        {"name": "family", "path": "name.where(use = 'official').family.first()", "type": "string"},
        {"name": "active", "path": "active", "type": "boolean"},
    ]}],
    "where": [{"path": "birthDate.exists()"}],
}
NAMES_VIEW = {
    "resource": "Patient",
    "select": [
        {"column": [{"name": "id", "path": "id", "type": "id"}]},
        {"forEachOrNull": "name", "column": [
            {"name": "name_index", "path": "%rowIndex", "type": "integer"},
            {"name": "family", "path": "family", "type": "string"},
            {"name": "given", "path": "given", "type": "string", "collection": True},
        ]},
    ],
}
OBSERVATION_VIEW = {
    "resource": "Observation",
    "select": [{"column": [
        {"name": "id", "path": "id", "type": "id"},
        {"name": "patient_key", "path": "subject.getReferenceKey(Patient)", "type": "string"},
        {"name": "any_key", "path": "subject.getReferenceKey()", "type": "string"},
        {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
        {"name": "high", "path": "value.ofType(Quantity).value > 5"},
        {"name": "extra", "path": "note_extra.code.first()", "type": "string"},
    ]}],
}

PATIENTS = [
    {"resourceType": "Patient", "id": "p1", "gender": "female", "active": True, "birthDate": "1970",
     "name": [{"use": "usual", "family": "U", "given": ["A", "B"]}, {"use": "official", "family": "O"}]},
    {"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1980"},
    {"resourceType": "Patient", "id": "p3", "gender": "other"},  # no birthDate: filtered by `where`
]
OBSERVATIONS = [
    # note_extra is not a FHIR element: an array here, an object below, checked at run time.
    {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
     "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 7.5},
     "note_extra": [{"code": "a"}, {"code": "b"}]},
    {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"},
     "subject": {"reference": "http://example.org/fhir/Patient/p2/_history/3"}, "valueQuantity": {"value": 2},
     "note_extra": {"code": "c"}},
    {"resourceType": "Observation", "id": "o3", "status": "final", "code": {"text": "x"},
     "subject": {"reference": "Group/g1"}, "valueString": "n/a"},
]

# case name → (view, resources, expected rows)
CASES: dict[str, tuple[dict, list[dict], list[dict]]] = {
    "patient": (PATIENT_VIEW, PATIENTS, [
        {"id": "p1", "patient_key": "Patient/p1", "gender": "female", "family": "O", "active": True},
        {"id": "p2", "patient_key": "Patient/p2", "gender": "male", "family": None, "active": None},
    ]),
    "names": (NAMES_VIEW, PATIENTS, [
        {"id": "p1", "name_index": 0, "family": "U", "given": ["A", "B"]},
        {"id": "p1", "name_index": 1, "family": "O", "given": []},
        {"id": "p2", "name_index": 0, "family": None, "given": []},
        {"id": "p3", "name_index": 0, "family": None, "given": []},
    ]),
    "observation": (OBSERVATION_VIEW, OBSERVATIONS, [
        {"id": "o1", "patient_key": "Patient/p1", "any_key": "Patient/p1", "value": 7.5, "high": True, "extra": "a"},
        {"id": "o2", "patient_key": "Patient/p2", "any_key": "Patient/p2", "value": 2.0, "high": False, "extra": "c"},
        {"id": "o3", "patient_key": None, "any_key": "Group/g1", "value": None, "high": None, "extra": None},
    ]),
}


def _view(raw: dict) -> ViewDefinition:
    return ViewDefinition.model_validate(raw)


def _store(db: Database, resources: list[dict]) -> None:
    ensure_schema(db)
    names = [c.name for c in RESOURCE_COLUMNS]
    rows = []
    for resource in resources:
        values = {"resource_type": resource["resourceType"], "id": resource["id"], "version_id": 1,
                  "batch_id": 1, "deleted": False, "content": orjson.dumps(resource).decode()}
        rows.append(tuple(values.get(n) for n in names))
    db.insert_rows("resource", names, rows)


def _rows(db: Database, view: ViewDefinition) -> list[dict[str, Any]]:
    compiled = compile_view(view)
    db.create_table_as("_view_test", compiled.select(with_key=False), "materialize")
    rows = db.fetch(exp.select("*").from_(table("_view_test")), "read").dicts()
    for row in rows:
        for c in compiled.columns:
            if c.sql_type == "JSON" and isinstance(row[c.name], str):
                row[c.name] = json.loads(row[c.name])
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _expected(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


# ------------------------------------------------------------------------------- SQL per engine
@pytest.mark.parametrize("engine", list(Engine), ids=str)
@pytest.mark.parametrize("case", ["patient", "names"])
def test_sql_snapshot(case: str, engine: Engine) -> None:
    sql = render(compile_view(_view(CASES[case][0])).select(with_key=True), engine, pretty=True) + "\n"
    snapshot = SNAPSHOTS / case / f"{engine}.sql"
    if os.environ.get("DIC_UPDATE_SNAPSHOTS") == "1":
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(sql)
    assert snapshot.is_file(), f"missing snapshot {snapshot}; run with DIC_UPDATE_SNAPSHOTS=1"
    assert sql == snapshot.read_text()


def test_scalar_paths_are_direct_json_extraction() -> None:
    sql = render(compile_view(_view(PATIENT_VIEW)).select(), Engine.duckdb)
    # DuckDB: every single-valued path of the resource read in one parse per row
    assert """JSON_EXTRACT_STRING("content", ['$."id"', '$."gender"', '$."active"']) AS "_texts\"""" in sql
    assert "LATERAL" not in sql  # no row generation without forEach
    postgres = render(compile_view(_view(PATIENT_VIEW)).select(), Engine.postgres)
    assert """JSONB_EXTRACT_PATH_TEXT("r"."content", 'gender') AS "gender\"""" in postgres


def test_output_columns_and_types() -> None:
    compiled = compile_view(_view(NAMES_VIEW))
    assert [(c.name, c.sql_type) for c in compiled.columns] == [
        ("id", "TEXT"), ("name_index", "BIGINT"), ("family", "TEXT"), ("given", "JSON")]
    untyped = compile_view(_view(OBSERVATION_VIEW))
    assert [c.sql_type for c in untyped.columns] == ["TEXT", "TEXT", "TEXT", "DOUBLE", "BOOLEAN", "TEXT"]


def test_select_adds_the_resource_filter_and_key() -> None:
    compiled = compile_view(_view(PATIENT_VIEW))
    condition = exp.GT(this=exp.column("batch_id", table="r", quoted=True), expression=exp.Literal.number(7))
    query = compiled.select(resource_filter=condition, with_key=True)
    assert query.named_selects[-1] == "_key"
    assert '("r"."batch_id" > 7)' in render(query, Engine.postgres)
    assert "_key" not in compiled.select().named_selects


# ------------------------------------------------------------------------------- rows per engine
@pytest.mark.parametrize("case", sorted(CASES))
def test_rows(db: Database, case: str) -> None:
    raw, resources, expected = CASES[case]
    _store(db, resources)
    assert _rows(db, _view(raw)) == _expected(expected)


@pytest.mark.spark
@pytest.mark.parametrize("case", ["patient", "names"])
def test_rows_on_spark(spark_db: Database, case: str) -> None:
    raw, resources, expected = CASES[case]
    _store(spark_db, resources)
    assert _rows(spark_db, _view(raw)) == _expected(expected)


# ------------------------------------------------------------------------------- fallbacks
@pytest.mark.parametrize(
    ("select", "pointer", "construct"),
    [
        ({"repeat": ["item"], "column": [{"name": "a", "path": "linkId"}]}, "/select/0/repeat", "repeat"),
        ({"column": [{"name": "a", "path": "birthDate.lowBoundary()"}]}, "/select/0/column/0/path", "lowBoundary"),
        ({"column": [{"name": "a", "path": "name | name"}]}, "/select/0/column/0/path", "'|'"),
        ({"column": [{"name": "a", "path": "deceased"}]}, "/select/0/column/0/path", "choice element"),
    ],
)
def test_not_compilable_names_construct_and_pointer(select: dict, pointer: str, construct: str) -> None:
    with pytest.raises(NotCompilableError) as raised:
        compile_view(_view({"resource": "Patient", "select": [select]}))
    problem = raised.value.problems[0]
    assert problem.path == pointer
    assert construct in problem.message


# ------------------------------------------------------------------------------- parts
def test_fhirpath_syntax() -> None:
    assert parse_fhirpath("name.where(use = 'official').family") == Member(
        Call(Member(None, "name"), "where", (Binary("=", Member(None, "use"), Literal("official", "string")),)),
        "family")
    assert parse_fhirpath("a and b or c") == Binary("or", Binary("and", Member(None, "a"), Member(None, "b")),
                                                    Member(None, "c"))
    assert parse_fhirpath("1 + 2 * 3") == Binary("+", Literal(1, "integer"),
                                                 Binary("*", Literal(2, "integer"), Literal(3, "integer")))
    with pytest.raises(FhirPathSyntaxError):
        parse_fhirpath("name.")


def test_fhir_elements_are_data() -> None:
    assert element("Patient", "name").is_array
    assert not element("Patient", "gender").is_array
    assert element("HumanName", "given").type == "string"
    assert set(choice_types("Observation", "effective")) == {"dateTime", "instant", "Period", "Timing"}
    assert element("Patient", "not_an_element") is None


def test_every_standard_view_compiles_for_every_engine() -> None:
    for path in sorted(STANDARD_VIEWS.glob("*.json")):
        raw = json.loads(path.read_text())
        if raw.get("resourceType") != "ViewDefinition":
            continue
        query = compile_view(_view(raw)).select(with_key=True)
        for engine in Engine:
            assert render(query, engine).startswith("SELECT"), path.name

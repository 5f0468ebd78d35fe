"""Materialized standard views: compiled SQL on every engine equals the reference evaluator,
and a refresh after a load touches only what changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlglot import exp

from dic.engines import Database, column, table
from dic.fhir import remove_identifying
from dic.repository import load_paths
from dic.views import evaluate_view, load_catalog, refresh_views, view_columns
from dic.views.conformance import canonical_value


def mii_resources(shared_data: Path) -> list[dict[str, Any]]:
    """The MII example resources as the repository keeps them (last version per type and id,
    identifying elements removed)."""
    latest: dict[tuple[str, str], dict] = {}
    for path in sorted((shared_data / "mii-testdata" / "bundles").glob("*.json")):
        for entry in json.loads(path.read_bytes())["entry"]:
            resource = remove_identifying(entry["resource"])
            latest[(resource["resourceType"], resource["id"])] = resource
    return list(latest.values())


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(orjson.dumps({k: canonical_value(v) for k, v in row.items()}, option=orjson.OPT_SORT_KEYS).decode()
                  for row in rows)


def view_rows(db: Database, name: str, json_columns: set[str]) -> list[dict[str, Any]]:
    rows = db.fetch(exp.select("*").from_(table(name)), f"read {name}").dicts()
    for row in rows:
        for key in json_columns & row.keys():
            if isinstance(row[key], str):
                row[key] = orjson.loads(row[key])
    return rows


def assert_views_match_evaluator(db: Database, resources: list[dict], names: list[str] | None = None) -> None:
    catalog = load_catalog()
    reports = {r.name: r for r in refresh_views(db, catalog, names=names)}
    checked = 0
    for name, view in catalog.views.items():
        if names and name not in names:
            continue
        expected = list(evaluate_view(view, [r for r in resources if r["resourceType"] == view.resource]))
        json_columns = {c.name for c in view_columns(view) if c.collection}
        actual = view_rows(db, name, json_columns)
        assert reports[name].mode == "compiled", f"{name} fell back: {reports[name].notice}"
        assert reports[name].rows == len(expected)
        assert canonical(actual) == canonical(expected), name
        checked += len(expected)
    assert checked > 0


def test_standard_views_equal_reference_on_mii_data(db: Database, shared_data: Path) -> None:
    resources = mii_resources(shared_data)
    load_paths(db, sorted((shared_data / "mii-testdata" / "bundles").glob("*.json")))
    assert_views_match_evaluator(db, resources)
    coding = db.scalar(exp.select(exp.func("count", exp.Star())).from_(table("coding")), "coding rows")
    assert coding > 300


@pytest.mark.spark
def test_standard_views_on_spark(spark_db: Database, shared_data: Path, tmp_path: Path) -> None:
    # one file, one batch: each Spark batch rebuilds tables, which costs seconds
    resources = mii_resources(shared_data)
    load_paths(spark_db, [ndjson(tmp_path / "mii.ndjson", resources)])
    assert_views_match_evaluator(spark_db, resources, ["patient", "condition", "observation", "consent"])


def ndjson(path: Path, resources: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def test_refresh_after_load_is_incremental(db: Database, tmp_path: Path) -> None:
    patients = [{"resourceType": "Patient", "id": f"p{i}", "gender": "male", "birthDate": "1980-01-01"}
                for i in range(50)]
    load_paths(db, [ndjson(tmp_path / "a.ndjson", patients)])
    [first] = refresh_views(db, load_catalog(), names=["patient"])
    assert (first.strategy, first.rows) == ("full", 50)
    [same] = refresh_views(db, load_catalog(), names=["patient"])
    assert same.strategy == "unchanged"

    changed = [{**patients[0], "gender": "female"}, {"resourceType": "Patient", "id": "p-new", "gender": "other"}]
    load_paths(db, [ndjson(tmp_path / "b.ndjson", changed)])
    deletion = {"resourceType": "Bundle", "type": "transaction",
                "entry": [{"request": {"method": "DELETE", "url": "Patient/p1"}}]}
    (tmp_path / "c.json").write_bytes(orjson.dumps(deletion))
    load_paths(db, [tmp_path / "c.json"])
    [refresh] = refresh_views(db, load_catalog(), names=["patient"])
    assert (refresh.strategy, refresh.rows) == ("incremental", 50)
    genders = dict(db.fetch(exp.select(column("id"), column("gender")).from_(table("patient")), "read").rows)
    assert genders["p0"] == "female" and genders["p-new"] == "other" and "p1" not in genders
    assert len(genders) == 50


def test_a_union_views_members_refresh_again_after_another_load(db: Database, tmp_path: Path) -> None:
    """PostgreSQL refuses to drop a view a union view depends on: the union is dropped first, then rebuilt."""
    def condition(i: int) -> dict:
        return {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"},
                "code": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": "I10"}]}}

    load_paths(db, [ndjson(tmp_path / "a.ndjson", [condition(1)])])
    refresh_views(db, load_catalog())
    load_paths(db, [ndjson(tmp_path / "b.ndjson", [condition(2)])])
    reports = {r.name: r.strategy for r in refresh_views(db, load_catalog())}
    assert reports["coding_condition"] == "incremental"
    codes = db.fetch(exp.select(column("resource_key"), column("code")).from_(table("coding")), "read").rows
    assert sorted(codes) == [("Condition/c1", "I10"), ("Condition/c2", "I10")]


def test_view_beyond_the_compiler_is_evaluated_and_refreshed(db: Database, tmp_path: Path) -> None:
    from dic.views import ViewCatalog, validate_view

    view = validate_view({"resourceType": "ViewDefinition", "name": "answers", "status": "active",
                          "resource": "QuestionnaireResponse",
                          "select": [{"column": [{"name": "id", "path": "id", "type": "id"}]},
                                     {"repeat": ["item"], "column": [{"name": "link_id", "path": "linkId",
                                                                       "type": "string"}]}]})
    catalog = ViewCatalog(views={"answers": view}, origins={"answers": "test"})
    response = {"resourceType": "QuestionnaireResponse", "id": "q1", "status": "completed",
                "item": [{"linkId": "1", "item": [{"linkId": "1.1"}]}, {"linkId": "2"}]}
    load_paths(db, [ndjson(tmp_path / "a.ndjson", [response])])
    [first] = refresh_views(db, catalog)
    assert (first.mode, first.strategy, first.rows) == ("evaluated", "full", 3)
    assert "evaluated in Python" in (first.notice or "")
    load_paths(db, [ndjson(tmp_path / "b.ndjson", [{**response, "item": [{"linkId": "9"}]}])])
    [second] = refresh_views(db, catalog)
    assert (second.strategy, second.rows) == ("incremental", 1)
    assert db.fetch(exp.select(column("id"), column("link_id")).from_(table("answers")), "read").rows == [("q1", "9")]

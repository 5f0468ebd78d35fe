"""The official SQL-on-FHIR v2 test suite through the SQL compiler, on DuckDB and PostgreSQL
(every case) and on Spark (basic and foreach).

Each case loads its resources into a fresh `resource` table, materializes the compiled view
as a table inside the engine and compares the rows (order ignored) with the case's `expect`
and, once the reference evaluator is there, with its rows. Cases the compiler does not cover
must raise NotCompilableError (the materializer then falls back to the evaluator): they are
listed in FALLBACK, so a case that starts or stops compiling turns a test red.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlglot import exp

from dic.engines import Database, table
from dic.errors import DefinitionError, DicError, EngineError, NotCompilableError
from dic.repository import ensure_schema
from dic.repository.schema import RESOURCE_COLUMNS
from dic.views.compiler import compile_view
from dic.views.view_definition import ViewDefinition

SUITE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sql-on-fhir-v2-tests" / "tests"
SPARK_FILES = ("basic.json", "foreach.json")

# Cases outside the compiled subset, by file and title prefix: they fall back to the evaluator.
FALLBACK = {
    ("fn_boundary.json", ""): "lowBoundary()/highBoundary() are not compiled",
    ("repeat.json", ""): "repeat (recursive paths) is not compiled",
    ("row_index.json", "%rowIndex with repeat"): "repeat (recursive paths) is not compiled",
}


# Cases the compiler gets wrong on every engine, by file and title.
WRONG = {
    ("collection.json", "fail when 'collection' is not true"): "a non-collection column over several values "
    "takes the first value in SQL; the spec asks for an error at run time",
}
# Cases the compiler gets wrong on Spark, by file and title prefix.
SPARK_WRONG = {
    ("foreach.json", "forEach"): "Spark cannot resolve a column of an outer lateral join (forEach) inside a "
    "nested lateral UNION ALL subquery (unionAll in a forEach)",
}


def _cases(files: tuple[str, ...] | None = None, wrong: dict | None = None) -> list[Any]:
    if not SUITE.is_dir():
        return [pytest.param(None, None, id="suite-missing")]
    params = []
    for path in sorted(SUITE.glob("*.json")):
        if files is not None and path.name not in files:
            continue
        suite = json.loads(path.read_text())
        for number, case in enumerate(suite["tests"]):
            marks = [
                pytest.mark.xfail(strict=True, raises=EngineError, reason=reason)
                for (name, prefix), reason in (wrong or {}).items()
                if name == path.name and case["title"].startswith(prefix) and "unionAll" in json.dumps(case["view"])
            ]
            if (path.name, case["title"]) in WRONG:
                marks.append(pytest.mark.xfail(strict=True, raises=pytest.fail.Exception,
                                               reason=WRONG[(path.name, case["title"])]))
            params.append(pytest.param(path.name, number, id=f"{path.stem}-{number}-{case['title']}", marks=marks))
    return params


def _load(file: str | None, number: int | None, shared_data: Path) -> tuple[dict, dict]:
    if file is None or number is None:
        pytest.fail(f"suite not found at {SUITE}")  # shared_data exists but the suite does not
    suite = json.loads((SUITE / file).read_text())
    return suite, suite["tests"][number]


def _fallback_reason(file: str, title: str) -> str | None:
    for (name, prefix), reason in FALLBACK.items():
        if name == file and title.startswith(prefix):
            return reason
    return None


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    return value


def _sorted_rows(rows: list[dict]) -> list[str]:
    return sorted(orjson.dumps(_normalize(r), option=orjson.OPT_SORT_KEYS).decode() for r in rows)


def store_resources(db: Database, resources: list[dict]) -> None:
    """A fresh repository holding `resources` as current, undeleted versions (batch 1)."""
    ensure_schema(db)
    names = [c.name for c in RESOURCE_COLUMNS]
    rows = []
    for position, resource in enumerate(resources):
        values = {"resource_type": resource["resourceType"], "id": resource.get("id", f"no-id-{position}"),
                  "version_id": 1, "batch_id": 1, "deleted": False, "content": orjson.dumps(resource).decode()}
        rows.append(tuple(values.get(n) for n in names))
    db.insert_rows("resource", names, rows)


def materialized_rows(db: Database, view: ViewDefinition) -> list[dict]:
    compiled = compile_view(view)
    db.create_table_as("_view_case", compiled.select(resource_filter=None, with_key=True), "materialize case")
    result = db.fetch(exp.select("*").from_(table("_view_case")), "read case").dicts()
    json_columns = {c.name for c in compiled.columns if c.sql_type == "JSON"}
    for row in result:
        assert row.pop("_key").startswith(view.resource + "/")
        for name in json_columns:
            if isinstance(row[name], str):
                row[name] = orjson.loads(row[name])
    return result


def _evaluator_rows(view: ViewDefinition, resources: list[dict]) -> list[dict] | None:
    try:
        from dic.views.evaluator import evaluate_view
    except ImportError:  # the reference evaluator has not landed yet
        return None
    return list(evaluate_view(view, [r for r in resources if r.get("resourceType") == view.resource]))


def run_case(db: Database, file: str, case: dict, suite: dict) -> None:
    if "expectError" in case:
        from dic.views.validation import validate_view

        try:
            view = validate_view(case["view"], f"{file}: {case['title']}")
        except DefinitionError:
            return  # an invalid view, rejected before any SQL
        # a valid view whose evaluation must fail (e.g. several values in a non-collection column)
        with pytest.raises(DicError):
            list(_evaluator_rows(view, suite["resources"]) or [])
        store_resources(db, suite["resources"])
        with pytest.raises((DefinitionError, EngineError)):
            materialized_rows(db, view)
        return
    view = ViewDefinition.model_validate(case["view"])
    reason = _fallback_reason(file, case["title"])
    if reason is not None:
        with pytest.raises(NotCompilableError):
            compile_view(view)
        return
    store_resources(db, suite["resources"])
    rows = materialized_rows(db, view)
    assert _sorted_rows(rows) == _sorted_rows(case["expect"])
    evaluated = _evaluator_rows(view, suite["resources"])
    if evaluated is not None:
        assert _sorted_rows(rows) == _sorted_rows(evaluated)


@pytest.mark.parametrize(("file", "number"), _cases())
def test_case(db: Database, shared_data: Path, file: str | None, number: int | None) -> None:
    suite, case = _load(file, number, shared_data)
    run_case(db, file or "", case, suite)


@pytest.mark.spark
@pytest.mark.parametrize(("file", "number"), _cases(SPARK_FILES, SPARK_WRONG))
def test_case_on_spark(spark_db: Database, shared_data: Path, file: str | None, number: int | None) -> None:
    suite, case = _load(file, number, shared_data)
    run_case(spark_db, file or "", case, suite)

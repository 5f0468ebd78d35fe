"""The SQL cohort against the reference evaluator on random histories and random valid queries.

One generated example is a few independent patient histories (1–6 patients each), ten
queries (v2 and v3) of which the four that split the patients most evenly by the reference
run, and a reference date. Every history gets its own id prefix and all of
them go into one fresh repository in one batch, annotated as a load annotates (the
normalized-value extension the SQL compares), with one view refresh. Each query then runs
once through parse_ccdl and cohort_patients, and per history the members with its prefix
must be exactly the patients `cohort_reference.evaluate` finds in that raw, unannotated
history. The refresh (~1–5 s) is the expensive step; batching histories amortizes it.

A failure prints the engine, the query, the reference date and the one history that
disagrees (ids without prefix), ready for a hand-made test. No shrinking by default (a batch
shrinks slowly and the message already names the one history); DIC_REFERENCE_SHRINK=1 turns
it on, DIC_REFERENCE_EXAMPLES=N sets the examples per engine. Under CI=true the examples are
derandomized, so a failure reproduces.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cohort_reference import evaluate
from cohort_strategies import choice, histories, v2_queries, v3_queries
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from dic.engines import Database, Engine, connect

IN_CI = os.environ.get("CI", "").lower() == "true"
EXAMPLES = int(os.environ.get("DIC_REFERENCE_EXAMPLES", "4"))
PHASES = [Phase.explicit, Phase.generate] + ([Phase.shrink] if os.environ.get("DIC_REFERENCE_SHRINK") else [])
REFERENCE_DATES = [date(2021, 3, 10), date(2021, 3, 25), date(2021, 4, 15)]

QUERIES_RUN = 4  # per example, the most telling of QUERIES_DRAWN
QUERIES_DRAWN = 10

examples = st.tuples(
    st.lists(histories(), min_size=2, max_size=5),
    st.lists(st.one_of(v2_queries(), v3_queries()), min_size=QUERIES_DRAWN, max_size=QUERIES_DRAWN),
    choice(REFERENCE_DATES),
)


def _cohort_api() -> tuple[Any, Any]:
    """parse_ccdl and cohort_patients, imported late: the reference and its tests do not need them."""
    try:
        from dic.cohort import cohort_patients, parse_ccdl
    except (ImportError, AttributeError) as error:
        pytest.skip(f"dic.cohort.parse_ccdl / cohort_patients not available yet: {error}")
    return parse_ccdl, cohort_patients


def relabel(resources: list[dict], prefix: str) -> list[dict]:
    """A copy with every id and every `Type/id` reference prefixed, so histories share a repository."""
    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        found = {key: walk(value) for key, value in node.items()}
        if isinstance(found.get("reference"), str) and "/" in found["reference"]:
            kind, _, key = found["reference"].partition("/")
            found["reference"] = f"{kind}/{prefix}{key}"
        return found

    return [{**walk(resource), "id": prefix + resource["id"]} for resource in resources]


def load_resources(db: Database, resources: list[dict], source: str) -> None:
    """Load as the pipeline would (annotated: codes checked, values normalized) and refresh the views."""
    from dic.repository import ensure_schema, load_records
    from dic.sources import Entry
    from dic.terminology import annotate_resource
    from dic.views import refresh_views

    annotated = copy.deepcopy(resources)
    for resource in annotated:
        annotate_resource(resource)
    ensure_schema(db)
    report = load_records(db, source, [Entry.of(r, source, f"entry {n}") for n, r in enumerate(annotated)])
    assert report.loaded == len(resources), report
    refresh_views(db, _catalog())


@cache
def _catalog() -> Any:
    from dic.views import load_catalog

    return load_catalog()  # validating every view costs ~1 s: once per session


@contextmanager
def fresh_repository(engine: Engine, request: pytest.FixtureRequest, folder: Path) -> Iterator[Database]:
    """An empty database per example (the `db` fixture is one per test, and examples must not mix)."""
    if engine is Engine.duckdb:
        db = connect(engine, folder / f"{uuid.uuid4().hex[:8]}.duckdb")
        try:
            yield db
        finally:
            db.close()
        return
    import psycopg

    server = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db = connect(engine, server.rsplit("/", 1)[0] + f"/{name}")
    try:
        yield db
    finally:
        db.close()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def telling(queries: list[dict], batch: list[list[dict]], reference_date: date) -> list[tuple[dict, list[set]]]:
    """The QUERIES_RUN queries that split the patients most evenly, with the reference's answer per history.

    The reference costs milliseconds and a SQL query up to a second, so the SQL runs only where a
    wrong answer shows: mostly-empty or all-in cohorts hide most mistakes (measured with mutants
    of the reference: choosing doubles the mistakes caught per query run).
    """
    def split(answers: list[set]) -> int:
        inside = sum(len(a) for a in answers)
        return min(inside, sum(1 for h in batch for r in h if r["resourceType"] == "Patient") - inside)

    answered = [(q, [evaluate(q, history, reference_date) for history in batch]) for q in queries]
    return sorted(answered, key=lambda pair: split(pair[1]), reverse=True)[:QUERIES_RUN]


def disagreement(engine: Engine, query: dict, reference_date: date, history: list[dict], sql: set[str],
                 reference: set[str]) -> str:
    lines = "\n".join(json.dumps(r) for r in history)
    return (f"{engine}: SQL {sorted(sql)} != reference {sorted(reference)} (missing {sorted(reference - sql)}, "
            f"unexpected {sorted(sql - reference)})\nreference date {reference_date}\nquery {json.dumps(query)}\n"
            f"history\n{lines}")


@pytest.mark.parametrize("engine", [Engine.duckdb, Engine.postgres], ids=str)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=IN_CI, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(example=examples)
def test_sql_cohort_equals_the_reference(engine: Engine, request: pytest.FixtureRequest, tmp_path: Path,
                                         example: tuple) -> None:
    batch, queries, reference_date = example
    parse_ccdl, cohort_patients = _cohort_api()
    with fresh_repository(engine, request, tmp_path) as db:
        load_resources(db, [r for n, history in enumerate(batch) for r in relabel(history, f"h{n}-")], "examples")
        for query, answers in telling(queries, batch, reference_date):
            members = cohort_patients(db, parse_ccdl(query), reference_date)
            for n, (history, reference) in enumerate(zip(batch, answers, strict=True)):
                prefix = f"Patient/h{n}-"
                sql = {key.removeprefix(prefix) for key in members if key.startswith(prefix)}
                assert sql == reference, disagreement(engine, query, reference_date, history, sql, reference)

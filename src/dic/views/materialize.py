"""Materialize views as tables inside the engine, fully or incrementally.

Each view `name` is stored in table `_view_<name>` (its columns plus `_key`, the resource
key each row came from) and exposed as SQL view `name` without `_key`. A refresh after a
load touches only resources written by batches newer than the view's last refresh; a
changed definition, or an engine without DELETE, rebuilds the view. A view the SQL
compiler cannot handle is evaluated by the reference evaluator, with a notice.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlglot import exp

from dic.engines import ColumnDef, Database, column, table
from dic.errors import NotCompilableError
from dic.views.catalog import ViewCatalog
from dic.views.column_types import sql_type
from dic.views.compiler import RESOURCE_ALIAS, compile_view, resource_key
from dic.views.evaluator import ViewEvaluator, view_columns
from dic.views.view_definition import ViewDefinition

STATE_TABLE = "view_state"
STATE_COLUMNS = [
    ColumnDef("name", "TEXT"),
    ColumnDef("definition_hash", "TEXT"),
    ColumnDef("last_batch_id", "BIGINT"),
    ColumnDef("mode", "TEXT"),
    ColumnDef("rows", "BIGINT"),
    ColumnDef("refreshed_at", "TIMESTAMP"),
]
KEY = "_key"
EVALUATOR_CHUNK = 5_000


@dataclass(frozen=True)
class RefreshReport:
    name: str
    mode: str  # "compiled" (in the engine) or "evaluated" (reference evaluator)
    strategy: str  # "full", "incremental" or "unchanged"
    rows: int
    seconds: float
    notice: str | None = None


def table_name(view_name: str) -> str:
    return f"_view_{view_name}"


def definition_hash(view: ViewDefinition) -> str:
    return hashlib.sha256(orjson.dumps(view.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()


def _max_batch(db: Database) -> int:
    return int(db.scalar(exp.select(exp.func("max", column("batch_id"))).from_(table("load_batch")), "last batch") or 0)


def _states(db: Database) -> dict[str, dict]:
    db.create_table(STATE_TABLE, STATE_COLUMNS, step="create view_state")
    return {row["name"]: row for row in db.fetch(exp.select("*").from_(table(STATE_TABLE)), "read view state").dicts()}


def _save_state(db: Database, name: str, digest: str, batch: int, mode: str, rows: int) -> None:
    staging = "_view_state_new"
    db.create_table_as(staging, exp.select("*").from_(table(STATE_TABLE)).where(exp.false()), "stage view state")
    db.insert_rows(staging, [c.name for c in STATE_COLUMNS],
                   [(name, digest, batch, mode, rows, datetime.now(UTC).replace(tzinfo=None))])
    db.replace_rows(STATE_TABLE, ["name"], staging, [c.name for c in STATE_COLUMNS], "save view state")
    db.drop_table(staging, "drop staged view state")


def _changed_since(batch: int, resource_type: str) -> exp.Condition:
    return exp.and_(
        exp.GT(this=column("batch_id", RESOURCE_ALIAS), expression=exp.Literal.number(batch)),
        column("resource_type", RESOURCE_ALIAS).eq(exp.Literal.string(resource_type)),
    )


def refresh_views(
    db: Database,
    catalog: ViewCatalog,
    *,
    names: list[str] | None = None,
    full: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[RefreshReport]:
    """Bring the chosen views (default: all) up to date with the repository."""
    states = _states(db)
    latest = _max_batch(db)
    reports = []
    wanted = names or catalog.names()
    unions = {union: members for union, members in catalog.unions.items()
              if union in wanted or any(m in wanted for m in members)}
    for union in unions:  # PostgreSQL refuses to drop a member's view while a union view depends on it
        db.execute(exp.Drop(tables=[table(union)], kind="VIEW", exists=True), f"drop union view {union}")
    for name in [n for n in wanted if n in catalog.views]:
        if progress:
            progress(name)
        reports.append(_refresh_one(db, name, catalog.views[name], states.get(name), latest, full))
    for union, members in unions.items():
        parts = [exp.select("*").from_(table(m)) for m in members]
        db.create_view(union, exp.union(*parts, distinct=False), f"create union view {union}")
    return reports


def _refresh_one(
    db: Database, name: str, view: ViewDefinition, state: dict | None, latest: int, full: bool
) -> RefreshReport:
    started = time.perf_counter()
    digest = definition_hash(view)
    target = table_name(name)
    rebuild = (
        full
        or state is None
        or state["definition_hash"] != digest
        or target not in db.table_names()
        or not db.supports_delete
    )
    since = 0 if rebuild else int(state["last_batch_id"])
    if not rebuild and since >= latest:
        return RefreshReport(name, state["mode"], "unchanged", int(state["rows"]), time.perf_counter() - started)
    notice = None
    try:
        compiled = compile_view(view)
        mode = "compiled"
    except NotCompilableError as error:
        compiled, mode = None, "evaluated"
        notice = f"view '{name}' is evaluated in Python: {error.problems[0] if error.problems else error}"
    with db.transaction():
        if rebuild:
            if compiled is not None:
                db.create_table_as(target, compiled.select(resource_filter=None, with_key=True), f"materialize {name}")
            else:
                db.drop_table(target, f"drop {name}")
                _create_evaluated_table(db, view, target)
                _insert_evaluated(db, view, target, None)
        else:
            condition = _changed_since(since, view.resource)
            stale = exp.select(resource_key()).from_(table("resource", RESOURCE_ALIAS)).where(condition)
            db.execute(
                exp.Delete(this=table(target), where=exp.Where(this=exp.In(this=column(KEY), query=exp.Subquery(this=stale)))),
                f"remove changed rows of {name}",
            )
            if compiled is not None:
                db.execute(exp.insert(compiled.select(resource_filter=condition, with_key=True), table(target)),
                           f"refresh {name}")
            else:
                _insert_evaluated(db, view, target, condition)
        columns = [column(c.name) for c in view_columns(view)]
        db.create_view(name, exp.select(*columns).from_(table(target)), f"expose {name}")
        rows = int(db.scalar(exp.select(exp.func("count", exp.Star())).from_(table(target)), f"count {name}"))
        _save_state(db, name, digest, latest, mode, rows)
    return RefreshReport(name, mode, "full" if rebuild else "incremental", rows, time.perf_counter() - started, notice)


def _create_evaluated_table(db: Database, view: ViewDefinition, target: str) -> None:
    columns = [ColumnDef(c.name, sql_type(c.type, bool(c.collection))) for c in view_columns(view)]
    db.create_table(target, [*columns, ColumnDef(KEY, "TEXT")], step=f"create {target}")


def _resources(db: Database, resource_type: str, condition: exp.Condition | None) -> Iterator[dict]:
    """Current resources of one type, fetched in keyset pages so memory stays bounded."""
    last_id = ""
    while True:
        where = exp.and_(
            column("resource_type", RESOURCE_ALIAS).eq(exp.Literal.string(resource_type)),
            exp.not_(column("deleted", RESOURCE_ALIAS)),
            exp.GT(this=column("id", RESOURCE_ALIAS), expression=exp.Literal.string(last_id)),
            *([condition] if condition is not None else []),
        )
        query = (
            exp.select(column("id", RESOURCE_ALIAS), column("content", RESOURCE_ALIAS))
            .from_(table("resource", RESOURCE_ALIAS))
            .where(where)
            .order_by(column("id", RESOURCE_ALIAS))
            .limit(EVALUATOR_CHUNK)
        )
        rows = db.fetch(query, f"read {resource_type} for the evaluator").rows
        for _, content in rows:
            yield orjson.loads(content) if isinstance(content, str | bytes) else content
        if len(rows) < EVALUATOR_CHUNK:
            return
        last_id = rows[-1][0]


def _insert_evaluated(db: Database, view: ViewDefinition, target: str, condition: exp.Condition | None) -> None:
    columns = view_columns(view)
    names = [c.name for c in columns]
    evaluator = ViewEvaluator(view)
    batch: list[tuple] = []
    for resource in _resources(db, view.resource, condition):
        key = f"{resource['resourceType']}/{resource['id']}"
        for row in evaluator.rows(resource):
            values = [
                orjson.dumps(row.get(c.name)).decode() if c.collection else row.get(c.name) for c in columns
            ]
            batch.append((*values, key))
        if len(batch) >= EVALUATOR_CHUNK:
            db.insert_rows(target, [*names, KEY], batch)
            batch.clear()
    db.insert_rows(target, [*names, KEY], batch)


def view_status(db: Database) -> list[dict]:
    """The materialized views with rows, mode and refresh time, by name."""
    return sorted(_states(db).values(), key=lambda s: s["name"])

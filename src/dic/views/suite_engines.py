"""Suite runners that take a view through the real pipeline on an engine.

`run(view_json, resources)` validates the view, loads the resources into a freshly reset
repository with the ordinary loader, compiles the view and runs it inside the engine. A view
beyond the compiler falls back to the reference evaluator, as materialization does, and the
runner counts it, so a report can say how many cases ran as SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from dic.engines import Database, Engine, connect
from dic.errors import NotCompilableError
from dic.repository import drop_schema, ensure_schema, load_records
from dic.sources import Entry
from dic.views.compiler import compile_view
from dic.views.conformance import run_reference
from dic.views.evaluator import evaluate_view
from dic.views.validation import validate_view


@dataclass
class SqlRunner:
    """A suite runner on one engine; `fallbacks` counts cases the evaluator had to run."""

    db: Database
    fallbacks: list[str] = field(default_factory=list)

    def __call__(self, view_json: dict, resources: list[dict]) -> list[dict]:
        view = validate_view(view_json, view_json.get("name") or "<test view>")
        drop_schema(self.db)
        ensure_schema(self.db)
        # The repository stores only resources with an id; a few suite resources have none.
        stored = [r if "id" in r else {**r, "id": f"suite-{i}"} for i, r in enumerate(resources)]
        entries = [Entry.of(r, "suite", f"resource {i}") for i, r in enumerate(stored)]
        load_records(self.db, "suite", entries)
        try:
            compiled = compile_view(view)
        except NotCompilableError as error:
            self.fallbacks.append(str(error.problems[0]) if error.problems else str(error))
            return list(evaluate_view(view, resources))
        result = self.db.fetch(compiled.select(), "suite view")
        json_columns = {c.name for c in compiled.columns if c.sql_type == "JSON"}
        return [
            {name: _plain(value, name in json_columns) for name, value in zip(result.columns, row, strict=True)}
            for row in result.rows
        ]


def _plain(value: Any, is_json: bool) -> Any:
    if is_json and isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def suite_runner(
    engine: Engine | None, url: str | None, scratch: Path
) -> Callable[[dict, list[dict]], list[dict]]:
    """The reference evaluator (engine None) or an SqlRunner on a scratch repository."""
    if engine is None:
        return run_reference
    if engine is Engine.duckdb:
        return SqlRunner(connect(engine, url or scratch / "suite.duckdb"))
    if engine is Engine.spark:
        return SqlRunner(connect(engine, url or f"local[2]?warehouse={scratch / 'warehouse'}&database=suite"))
    if url is None:
        from dic.errors import ConfigError

        raise ConfigError("--engine postgres needs --url postgresql://user@host:port/database")
    return SqlRunner(connect(engine, url))

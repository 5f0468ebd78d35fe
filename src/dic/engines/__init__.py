"""The SQL engines: DuckDB (embedded default), PostgreSQL (server), Spark (distributed)."""

from __future__ import annotations

from pathlib import Path

from dic.engines.database import ColumnDef, Database, Result, column, table
from dic.engines.engine import Engine
from dic.engines.fhir_time import (
    FAR_FUTURE,
    FAR_PAST,
    fhir_time_after,
    fhir_time_high,
    fhir_time_low,
    shift,
    timestamp_literal,
)
from dic.engines.render import parse_sql, render


def connect(engine: Engine | str, url: str | Path, *, read_only: bool = False) -> Database:
    """Open a repository database: a DuckDB file, a PostgreSQL URL, or a Spark master URL
    with its warehouse folder and database (`local[2]?warehouse=/path&database=dic`).

    `read_only` is enforced by DuckDB and PostgreSQL themselves; Spark has no such mode."""
    engine = Engine(engine)
    if engine is Engine.duckdb:
        from dic.engines.duckdb import DuckDBDatabase

        return DuckDBDatabase(url, read_only=read_only)
    if engine is Engine.postgres:
        from dic.engines.postgres import PostgresDatabase

        return PostgresDatabase(str(url), read_only=read_only)
    from urllib.parse import parse_qs

    from dic.engines.spark import SparkDatabase

    master, _, query = str(url).partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    return SparkDatabase(
        master or "local[2]", options.get("warehouse", "spark-warehouse"), options.get("database", "dic")
    )


__all__ = [
    "FAR_FUTURE",
    "FAR_PAST",
    "ColumnDef",
    "Database",
    "Engine",
    "Result",
    "column",
    "connect",
    "fhir_time_after",
    "fhir_time_high",
    "fhir_time_low",
    "parse_sql",
    "render",
    "shift",
    "table",
    "timestamp_literal",
]

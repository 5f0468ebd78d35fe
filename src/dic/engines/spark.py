"""Apache Spark, for sites that outgrow one machine (PySpark; local mode or any master URL).

PySpark is imported lazily so `dic --help` and the other engines never pay for it.
Spark has no transactions and no DELETE on plain Parquet tables: a batch is made visible
by rebuilding the table and swapping names, which is idempotent, so a killed load is
completed by running it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlglot import exp

from dic.engines.database import Database, Result, column, table
from dic.engines.engine import Engine
from dic.errors import ConfigError

_SESSIONS: dict[tuple[str, str], Any] = {}


def spark_session(master: str, warehouse: Path) -> Any:
    """One SparkSession per process (starting one costs ~9 s)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ConfigError("the spark engine needs PySpark: pip install 'dic[spark]'") from error
    key = (master, str(warehouse))
    if key not in _SESSIONS:
        _SESSIONS[key] = (
            SparkSession.builder.master(master)
            .appName("dic")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.warehouse.dir", str(warehouse))
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.memory", "2g")
            .getOrCreate()
        )
    return _SESSIONS[key]


class SparkDatabase(Database):
    engine = Engine.spark
    supports_delete = False
    load_chunk_rows = 1_000_000  # each merge rebuilds the table: few, large rounds

    def __init__(self, master: str, warehouse: Path | str, database: str = "dic"):
        self.warehouse = Path(warehouse).resolve()
        self.warehouse.mkdir(parents=True, exist_ok=True)
        self.session = spark_session(master, self.warehouse)
        self.database = database
        self.session.sql(f"CREATE DATABASE IF NOT EXISTS {exp.to_identifier(database, quoted=True).sql('spark')}")
        self.session.catalog.setCurrentDatabase(database)
        self._attach_existing_tables()

    def _attach_existing_tables(self) -> None:
        # The default catalog lives in memory; the tables themselves are Parquet folders
        # in the repository's warehouse, attached again at every start.
        known = self.table_names()
        folders = self.warehouse / f"{self.database}.db"
        for folder in sorted(folders.iterdir()) if folders.is_dir() else []:
            if folder.is_dir() and folder.name not in known and any(folder.glob("*.parquet")):
                location = exp.Literal.string(str(folder))
                self.session.sql(
                    f"CREATE TABLE `{folder.name}` USING PARQUET LOCATION {location.sql('spark')}"
                )

    def _table_properties(self) -> exp.Properties:
        return exp.Properties(expressions=[exp.FileFormatProperty(this=exp.var("PARQUET"))])

    def _run(self, sql: str, fetch: bool) -> Result | None:
        frame = self.session.sql(sql)
        if not fetch:
            return None
        rows = frame.collect()
        return Result(list(frame.columns), [tuple(r) for r in rows])

    def insert_rows(self, name: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        if not rows:
            return
        target = self.session.table(f"`{name}`")
        frame = self.session.createDataFrame(list(rows), schema=target.select(*columns).schema)
        frame.select(*target.columns).write.insertInto(f"`{name}`")

    def table_names(self) -> set[str]:
        return {t.name for t in self.session.catalog.listTables(self.database) if not t.isTemporary}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield  # no transactions on Parquet; see the module docstring

    def replace_rows(self, name: str, keys: Sequence[str], source: str, columns: Sequence[str], step: str) -> None:
        kept = (
            exp.select(*[column(c, "t") for c in columns])
            .from_(table(name, "t"))
            .join(table(source, "s"), on=exp.and_(*[column(k, "t").eq(column(k, "s")) for k in keys]), join_type="left anti")
        )
        rebuilt = exp.union(kept, exp.select(*[column(c) for c in columns]).from_(table(source)), distinct=False)
        staging = f"{name}__rebuilt"
        self.create_table_as(staging, rebuilt, step)
        self.drop_table(name, step)
        self.execute(exp.Alter(this=table(staging), kind="TABLE", actions=[exp.AlterRename(this=table(name))]), step)

    def close(self) -> None:
        pass  # the session is shared by every repository in the process

"""What every engine offers the layers above: statements in, rows out, bulk load, transactions.

Only what SQL itself cannot express differs per engine (connections, bulk load, DDL types,
transactions, replacing rows on an engine without DELETE); everything else is one sqlglot
tree rendered by `render()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from dic.engines.engine import Engine
from dic.engines.render import render


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class ColumnDef:
    name: str
    type: str  # a sqlglot type name: TEXT, BIGINT, BOOLEAN, TIMESTAMP, JSON, DOUBLE


def table(name: str, alias: str | None = None) -> exp.Table:
    return exp.Table(
        this=exp.to_identifier(name, quoted=True),
        alias=exp.TableAlias(this=exp.to_identifier(alias, quoted=True)) if alias else None,
    )


def column(name: str, table_alias: str | None = None) -> exp.Column:
    return exp.column(name, table=table_alias, quoted=True)


class Database(ABC):
    """A connection to one repository on one engine."""

    engine: Engine
    supports_delete: bool = True
    load_chunk_rows: int = 50_000  # records merged per statement round during a load

    # ---- what each engine implements -------------------------------------------------
    @abstractmethod
    def _run(self, sql: str, fetch: bool) -> Result | None: ...

    @abstractmethod
    def insert_rows(self, name: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        """Bulk-append rows (values already in Python types; JSON as text)."""

    @abstractmethod
    def table_names(self) -> set[str]: ...

    @contextmanager
    @abstractmethod
    def transaction(self) -> Iterator[None]: ...

    @abstractmethod
    def close(self) -> None: ...

    def _table_properties(self) -> exp.Properties | None:
        return None

    # ---- shared on every engine ------------------------------------------------------
    def render(self, expr: exp.Expression, pretty: bool = False) -> str:
        return render(expr, self.engine, pretty=pretty)

    def execute(self, statement: exp.Expression | str, step: str) -> None:
        self._guarded(statement, step, fetch=False)

    def fetch(self, statement: exp.Expression | str, step: str) -> Result:
        result = self._guarded(statement, step, fetch=True)
        assert result is not None
        return result

    def scalar(self, statement: exp.Expression | str, step: str) -> Any:
        rows = self.fetch(statement, step).rows
        return rows[0][0] if rows else None

    def _guarded(self, statement: exp.Expression | str, step: str, fetch: bool) -> Result | None:
        from dic.errors import EngineError

        sql = statement if isinstance(statement, str) else self.render(statement)
        try:
            return self._run(sql, fetch)
        except EngineError:
            raise
        except Exception as error:  # driver errors of three drivers: wrapped once, here
            raise EngineError(str(self.engine), step, sql, error) from error

    def create_table(self, name: str, columns: Sequence[ColumnDef], step: str = "create table") -> None:
        if name in self.table_names():
            return
        schema = exp.Schema(
            this=table(name),
            expressions=[
                exp.ColumnDef(this=exp.to_identifier(c.name, quoted=True), kind=exp.DataType.build(c.type))
                for c in columns
            ],
        )
        create = exp.Create(this=schema, kind="TABLE", properties=self._table_properties())
        self.execute(create, step)

    def create_table_as(self, name: str, query: exp.Query, step: str) -> None:
        """(Re)create table `name` from `query`."""
        self.drop_table(name, step)
        self.execute(
            exp.Create(this=table(name), kind="TABLE", expression=query, properties=self._table_properties()),
            step,
        )

    def drop_table(self, name: str, step: str) -> None:
        self.execute(exp.Drop(tables=[table(name)], kind="TABLE", exists=True), step)

    def create_view(self, name: str, query: exp.Query, step: str) -> None:
        self.execute(exp.Drop(tables=[table(name)], kind="VIEW", exists=True), step)
        self.execute(exp.Create(this=table(name), kind="VIEW", expression=query), step)

    def replace_rows(self, name: str, keys: Sequence[str], source: str, columns: Sequence[str], step: str) -> None:
        """Rows of `name` whose key is in table `source` are replaced by `source`'s `columns`.

        Engines without DELETE override this.
        """
        match = exp.and_(*[column(k, "t").eq(column(k, "s")) for k in keys])
        exists = exp.Exists(this=exp.select("1").from_(table(source, "s")).where(match))
        self.execute(exp.Delete(this=table(name, "t"), where=exp.Where(this=exists)), step)
        self.insert_from(name, source, columns, step)

    def insert_from(self, name: str, source: str, columns: Sequence[str], step: str) -> None:
        """Append `columns` of table `source` to table `name`."""
        target = exp.Schema(this=table(name), expressions=[exp.to_identifier(c, quoted=True) for c in columns])
        self.execute(exp.insert(exp.select(*[column(c) for c in columns]).from_(table(source)), target), step)

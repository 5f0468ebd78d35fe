"""PostgreSQL, the multi-user server (psycopg 3, JSONB)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql as pgsql

from dic.engines.database import Database, Result
from dic.engines.engine import Engine


class PostgresDatabase(Database):
    engine = Engine.postgres
    load_chunk_rows = 20_000

    def __init__(self, url: str, read_only: bool = False):
        self.url = url
        options = "-c default_transaction_read_only=on" if read_only else None
        self.connection = psycopg.connect(url, autocommit=True, options=options)

    def _run(self, sql: str, fetch: bool) -> Result | None:
        with self.connection.cursor() as cursor:
            cursor.execute(sql.encode())  # bytes: rendered SQL has no %-parameters
            if not fetch:
                return None
            columns = [d.name for d in cursor.description or []]
            return Result(columns, cursor.fetchall())

    def insert_rows(self, name: str, columns: Sequence[str], rows: Sequence[tuple]) -> None:
        if not rows:
            return
        copy = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
            pgsql.Identifier(name), pgsql.SQL(", ").join(map(pgsql.Identifier, columns))
        )
        with self.connection.cursor() as cursor, cursor.copy(copy) as writer:
            for row in rows:
                writer.write_row(row)

    def table_names(self) -> set[str]:
        result = self._run(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()", True
        )
        assert result is not None
        return {r[0] for r in result.rows}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.connection.transaction():
            yield

    def close(self) -> None:
        self.connection.close()

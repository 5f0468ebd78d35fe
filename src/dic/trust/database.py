"""The trust center's own database: a SQLite file by default, PostgreSQL by URL. Never the
research repository.

A thin layer on purpose: the trust center runs a few dozen small statements, written once
in portable SQL with `?` placeholders (turned into `%s` for psycopg). Every write runs in
`write()`, which serializes writers across threads (one lock) and across processes (SQLite
`BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so concurrent registrations of the same
person can never both create a PID.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import Any

from dic.errors import ConfigError

_ADVISORY_LOCK = 0x7472_7573_74  # "trust": one lock id for every writer of this database


class TrustDatabase:
    def __init__(self, url: str):
        self.url = url
        self.is_postgres = url.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        self._depth = 0
        if self.is_postgres:
            import psycopg

            self._conn: Any = psycopg.connect(url, autocommit=True)
        else:
            path = Path(url.removeprefix("sqlite:///"))
            if not path.parent.exists():
                raise ConfigError(f"{path.parent}: no such folder for the trust-center database")
            self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=60)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        self._create_schema()

    def _create_schema(self) -> None:
        script = (files("dic.trust") / "schema.sql").read_text()
        dialect = "postgres" if self.is_postgres else "sqlite"
        with self.write():
            for statement in _statements(script, dialect):
                self._conn.execute(statement)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.is_postgres else sql

    @contextmanager
    def write(self) -> Iterator[None]:
        """One serialized transaction: everything inside commits together or not at all."""
        with self._lock:
            if self._depth:  # nested: part of the outer transaction
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN" if self.is_postgres else "BEGIN IMMEDIATE")
            if self.is_postgres:
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK,))
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            if self.is_postgres:
                with self._conn.cursor() as cursor:
                    cursor.executemany(self._sql(sql), [tuple(r) for r in rows])
            else:
                self._conn.executemany(sql, [tuple(r) for r in rows])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return list(self._conn.execute(self._sql(sql), tuple(params)).fetchall())

    def row(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        found = self.row(sql, params)
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _statements(script: str, dialect: str) -> Iterator[str]:
    """The statements of schema.sql for one dialect: blocks headed `-- sqlite:` or `-- postgres:`
    belong to that dialect only (until the next blank line); `;;` ends a statement, since
    trigger bodies contain `;`."""
    for block in script.split(";;"):
        lines = block.strip().splitlines()
        if not lines:
            continue
        head = lines[0].strip()
        if head in ("-- sqlite:", "-- postgres:"):
            if head != f"-- {dialect}:":
                continue
            lines = lines[1:]
        statement = "\n".join(line for line in lines if not line.strip().startswith("--")).strip()
        if statement:
            yield statement

"""The query log: every cohort query answered, append-only and hash-chained, in the repository.

    record(db, actor, action, query_hash, raw_count, released, detail=None) -> QueryLogEntry
    entries(db, since=0, limit=1000, actor=None, action=None) -> list[QueryLogEntry]
    verify(db) -> Verification(entries, intact, first_broken, reason, head)

This is the only place the RAW count of a released answer is kept: to review what was asked and
what came out (a run of queries that differ by one patient shows here). Each entry's hash is
SHA-256 over its predecessor's hash and its own canonical JSON (the idea of the trust center's
audit log), so changing, inserting or deleting an entry breaks every hash after it. What the
chain cannot show is a cut-off tail or a dropped table: keep `head` somewhere else (a report, a
ticket) to anchor it. The repository engines have no portable triggers, so nothing refuses an
UPDATE; `verify` finds it.

`detail` and the timestamp are stored as text: the hash covers their exact bytes, and a JSONB or
TIMESTAMP column would hand back a normalized value that no longer matches.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import astuple, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlglot import exp

from dic.engines import ColumnDef, Database, column, table

TABLE = "query_log"
ACTIONS = frozenset({"count", "members", "characterize"})
GENESIS = "0" * 64
_RETRIES = 50  # a writer that lost the race for a seq tries again on the new head
_RACE_WAIT_S = 0.5  # how long a loser waits for the winner's commit to show

COLUMNS = [
    ColumnDef("seq", "BIGINT"),  # 1, 2, 3, … without gaps
    ColumnDef("at", "TEXT"),  # ISO 8601 UTC, microseconds
    ColumnDef("actor", "TEXT"),
    ColumnDef("action", "TEXT"),  # count | members | characterize
    ColumnDef("query_hash", "TEXT"),
    ColumnDef("raw_count", "BIGINT"),
    ColumnDef("released", "TEXT"),  # what left the site, e.g. "< 5" or "120"
    ColumnDef("detail", "TEXT"),  # canonical JSON (sorted keys)
    ColumnDef("prev_hash", "TEXT"),
    ColumnDef("hash", "TEXT"),
]
_NAMES = [c.name for c in COLUMNS]


@dataclass(frozen=True)
class QueryLogEntry:
    seq: int
    at: str
    actor: str
    action: str
    query_hash: str
    raw_count: int | None
    released: str
    detail: str
    prev_hash: str
    hash: str

    def detail_json(self) -> Any:
        return orjson.loads(self.detail)


@dataclass(frozen=True)
class Verification:
    entries: int  # entries that hold, from the first
    intact: bool
    first_broken: int | None  # seq of the first entry whose link or content does not hold
    reason: str | None
    head: str  # hash of the last entry that holds (GENESIS for none): publish it to anchor the tail


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, action: str, query_hash: str,
               raw_count: int | None, released: str, detail: str) -> str:
    body = orjson.dumps([seq, at, actor, action, query_hash, raw_count, released, detail])
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def ensure_query_log(db: Database) -> None:
    """Create the table and its unique index on `seq` (which makes two writers' race fail loudly)."""
    if TABLE in db.table_names():
        return
    db.create_table(TABLE, COLUMNS, step="create query log")
    index = exp.Create(
        kind="INDEX", unique=True, exists=True,
        this=exp.Index(this=exp.to_identifier(f"{TABLE}_seq", quoted=True), table=table(TABLE),
                       params=exp.IndexParameters(columns=[column("seq")])),
    )
    db.execute(index, step="index query log")


def _head(db: Database) -> tuple[int, str]:
    last = db.fetch(exp.select(column("seq"), column("hash")).from_(table(TABLE))
                    .order_by(exp.Ordered(this=column("seq"), desc=True)).limit(1), step="query log head").rows
    return (last[0][0], last[0][1]) if last else (0, GENESIS)


def record(db: Database, actor: str, action: str, query_hash: str, raw_count: int | None, released: str,
           detail: dict[str, Any] | None = None) -> QueryLogEntry:
    """Append one entry: who asked what (`query_hash`), the raw count and what was released."""
    if action not in ACTIONS:
        raise ValueError(f"query log action must be one of {sorted(ACTIONS)}, not {action!r}")
    ensure_query_log(db)
    text = orjson.dumps(detail or {}, option=orjson.OPT_SORT_KEYS).decode()
    for attempt in range(_RETRIES):
        seq = None
        try:
            with db.transaction():
                seq, prev = _head(db)
                at = datetime.now(UTC).isoformat(timespec="microseconds")
                digest = entry_hash(prev, seq + 1, at, actor, action, query_hash, raw_count, released, text)
                entry = QueryLogEntry(seq + 1, at, actor, action, query_hash, raw_count, released, text, prev,
                                      digest)
                # one row as literals through the guarded path: a driver error comes out as an
                # EngineError naming the step (insert_rows would also pull in pandas on DuckDB: +5 s once)
                row = exp.Schema(this=table(TABLE), expressions=[exp.to_identifier(n, quoted=True) for n in _NAMES])
                db.execute(exp.insert(exp.values([tuple(map(exp.convert, astuple(entry)))]), row),
                           step="append to query log")
            return entry
        except Exception:
            # A writer that read the same head as another loses at its INSERT or COMMIT; the drivers
            # say so differently (a unique violation, a DuckDB conflict, even against the winner's
            # uncommitted row). What a lost race always has is a winner: the head moves within
            # moments. So wait for that; if it does not move, the failure is real and is raised.
            if seq is None or attempt == _RETRIES - 1 or not _head_moves_from(db, seq):
                raise
    raise AssertionError("unreachable")


def _head_moves_from(db: Database, seq: int) -> bool:
    deadline = time.monotonic() + _RACE_WAIT_S
    while time.monotonic() < deadline:
        if _head(db)[0] != seq:
            return True
        time.sleep(random.uniform(0.001, 0.01))  # jitter: two losers do not retry in lockstep
    return False


def entries(db: Database, since: int = 0, limit: int = 1000, actor: str | None = None,
            action: str | None = None) -> list[QueryLogEntry]:
    """Entries with seq > `since`, oldest first, optionally of one actor or action."""
    if TABLE not in db.table_names():
        return []
    conditions = [column("seq") > exp.convert(since)]
    if actor is not None:
        conditions.append(column("actor").eq(exp.convert(actor)))
    if action is not None:
        conditions.append(column("action").eq(exp.convert(action)))
    query = (exp.select(*[column(n) for n in _NAMES]).from_(table(TABLE)).where(exp.and_(*conditions))
             .order_by(column("seq")).limit(limit))
    return [QueryLogEntry(*row) for row in db.fetch(query, step="read query log").rows]


def verify(db: Database, batch: int = 10_000) -> Verification:
    """Walk the whole chain; report the first entry that does not hold."""
    prev, expected_seq, count = GENESIS, 1, 0
    while chunk := entries(db, since=expected_seq - 1, limit=batch):
        for e in chunk:
            if e.seq != expected_seq:
                return Verification(count, False, expected_seq, f"entry {expected_seq} is missing", prev)
            if e.prev_hash != prev:
                return Verification(count, False, e.seq, "does not link to the entry before it", prev)
            if entry_hash(prev, e.seq, e.at, e.actor, e.action, e.query_hash, e.raw_count, e.released,
                          e.detail) != e.hash:
                return Verification(count, False, e.seq, "its content does not match its hash", prev)
            prev, expected_seq, count = e.hash, expected_seq + 1, count + 1
    return Verification(count, True, None, None, prev)

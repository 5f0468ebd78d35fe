"""The trust center's audit log: every call, append-only, hash-chained.

Each entry's hash is SHA-256 over its predecessor's hash and its own canonical JSON, so
changing, inserting or deleting any entry breaks every hash after it (`verify`). The
database refuses UPDATE and DELETE on the table (triggers); the chain catches what a
database administrator could still do behind the triggers' back. Entries never carry IDAT:
subjects are PIDs, pseudonyms or record pseudonyms.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from dic.trust.database import TrustDatabase

GENESIS = "0" * 64
_COLUMNS = "seq, at, actor, role, action, subject, outcome, detail, prev_hash, hash"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: str
    actor: str
    role: str
    action: str
    subject: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verification:
    entries: int
    intact: bool
    first_broken: int | None  # seq of the first entry whose hash or link does not hold
    reason: str | None


def entry_hash(prev_hash: str, seq: int, at: str, actor: str, role: str, action: str, subject: str,
               outcome: str, detail: str) -> str:
    body = orjson.dumps([seq, at, actor, role, action, subject, outcome, detail])
    return hashlib.sha256(prev_hash.encode() + body).hexdigest()


def append(db: TrustDatabase, actor: str, role: str, action: str, subject: str, outcome: str,
           detail: dict[str, Any] | None = None) -> AuditEntry:
    """Add one entry (inside the caller's write transaction, or its own)."""
    with db.write():
        last = db.row("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1")
        seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        text = orjson.dumps(detail or {}, option=orjson.OPT_SORT_KEYS).decode()
        digest = entry_hash(prev, seq, at, actor, role, action, subject, outcome, text)
        db.execute(f"INSERT INTO audit_entry ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (seq, at, actor, role, action, subject, outcome, text, prev, digest))
    return AuditEntry(seq, at, actor, role, action, subject, outcome, text, prev, digest)


def entries(db: TrustDatabase, since: int = 0, limit: int = 1000) -> list[AuditEntry]:
    rows = db.rows(f"SELECT {_COLUMNS} FROM audit_entry WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit))
    return [AuditEntry(*row) for row in rows]


def verify(db: TrustDatabase, batch: int = 10_000) -> Verification:
    """Walk the whole chain; report the first entry that does not hold."""
    prev, expected_seq, count = GENESIS, 1, 0
    while True:
        chunk = entries(db, since=expected_seq - 1, limit=batch)
        if not chunk:
            return Verification(count, True, None, None)
        for e in chunk:
            if e.seq != expected_seq:
                return Verification(count, False, expected_seq, f"entry {expected_seq} is missing")
            if e.prev_hash != prev:
                return Verification(count, False, e.seq, "does not link to the entry before it")
            if entry_hash(prev, e.seq, e.at, e.actor, e.role, e.action, e.subject, e.outcome, e.detail) != e.hash:
                return Verification(count, False, e.seq, "its content does not match its hash")
            prev, expected_seq, count = e.hash, expected_seq + 1, count + 1

"""Load records into the repository, one transactional batch per source file.

A batch stages its records, classifies them against the current versions in SQL (new,
updated, unchanged, deleted), appends the changed versions to `resource_history`, swaps
them into `resource`, stores its rejections in `quarantine` and its reconciliation in
`load_batch` — all in one transaction, so a crash leaves the repository as it was and the
same command run again completes the load. Identical content is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path

import orjson
from sqlglot import exp

from dic.engines import ColumnDef, Database, column, parse_sql, table
from dic.repository.schema import QUARANTINE_COLUMNS, RESOURCE_COLUMNS, TABLES
from dic.sources import Entry, Rejection, find_fhir_files, read_fhir

CHUNK_ROWS = 20_000
STAGE_COLUMNS = [
    ColumnDef("resource_type", "TEXT"),
    ColumnDef("id", "TEXT"),
    ColumnDef("content_hash", "TEXT"),
    ColumnDef("source", "TEXT"),
    ColumnDef("position", "TEXT"),
    ColumnDef("seq", "BIGINT"),
    ColumnDef("deleted", "BOOLEAN"),
    ColumnDef("last_updated", "TEXT"),
    ColumnDef("content", "JSON"),
]
_RESOURCE_NAMES = [c.name for c in RESOURCE_COLUMNS]


@dataclass(frozen=True)
class BatchReport:
    """The reconciliation of one batch: read = loaded + updated + unchanged + deleted + quarantined."""

    batch_id: int
    source: str
    read: int
    loaded: int
    updated: int
    unchanged: int
    deleted: int
    quarantined: int

    @property
    def reconciles(self) -> bool:
        return self.read == self.loaded + self.updated + self.unchanged + self.deleted + self.quarantined

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


def ensure_schema(db: Database) -> None:
    """Create the repository tables that are missing."""
    for name, columns in TABLES.items():
        db.create_table(name, columns, step=f"create {name}")


def content_hash(resource: dict) -> str:
    """sha256 of the canonical JSON, ignoring meta.versionId and meta.lastUpdated, which a
    server changes on every export of the same content."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and ("versionId" in meta or "lastUpdated" in meta):
        rest = {k: v for k, v in meta.items() if k not in {"versionId", "lastUpdated"}}
        resource = {**resource, "meta": rest} if rest else {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


@cache
def _classify_template() -> exp.Expression:
    return parse_sql((files("dic.repository") / "sql" / "classify_changes.sql").read_text())


def _renamed(template: exp.Expression, names: dict[str, str]) -> exp.Expression:
    """The template with its placeholder table names replaced (a tree edit, not text)."""

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and node.name in names:
            return table(names[node.name], node.alias or None)
        return node

    return template.copy().transform(rename)


def _count(db: Database, name: str, step: str, where: exp.Condition | None = None) -> int:
    query = exp.select(exp.func("count", exp.Star())).from_(table(name))
    return int(db.scalar(query.where(where) if where is not None else query, step) or 0)


def _next_batch_id(db: Database) -> int:
    latest = db.scalar(exp.select(exp.func("max", column("batch_id"))).from_(table("load_batch")), "next batch id")
    return int(latest or 0) + 1


def _stage_row(entry: Entry, seq: int) -> tuple:
    if entry.delete or entry.resource is None:
        return (entry.resource_type, entry.id, None, entry.source, entry.position, seq, True, None, None)
    meta = entry.resource.get("meta")
    last_updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    return (
        entry.resource_type, entry.id, content_hash(entry.resource), entry.source, entry.position, seq, False,
        last_updated if isinstance(last_updated, str) else None, orjson.dumps(entry.resource).decode(),
    )


def _quarantine_row(batch_id: int, rejection: Rejection, now: datetime) -> tuple:
    # Postgres TEXT cannot hold NUL; binary garbage is kept readable and lossless enough to debug.
    raw = rejection.raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    key = hashlib.sha256(f"{rejection.source}\n{rejection.position}\n".encode() + rejection.raw).hexdigest()[:16]
    return (key, batch_id, rejection.source, rejection.position, rejection.reason, raw, rejection.raw_bytes, now)


def _keep_new_rejections(db: Database, rejected: str) -> None:
    """Quarantine the rejections not already there: re-loading the same bad input changes nothing."""
    known = exp.select("1").from_(table("quarantine", "q")).where(
        column("quarantine_id", "q").eq(column("quarantine_id", "r"))
    )
    fresh = exp.select("r.*").from_(table(rejected, "r")).where(exp.not_(exp.Exists(this=known)))
    db.execute(exp.insert(fresh, table("quarantine")), "quarantine new rejections")


def load_records(
    db: Database,
    source: str,
    records: Iterable[Entry | Rejection],
    progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Load one batch of records from `source` in one transaction and reconcile it."""
    ensure_schema(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    with db.transaction():
        batch_id = _next_batch_id(db)
        stage, changes = f"_stage_{batch_id}", f"_changes_{batch_id}"
        rejected = f"_rejected_{batch_id}"
        db.create_table(stage, STAGE_COLUMNS, step="create stage")
        db.create_table(rejected, QUARANTINE_COLUMNS, step="create rejected")
        staged = quarantined = 0
        entries: list[tuple] = []
        rejections: list[tuple] = []
        stage_names = [c.name for c in STAGE_COLUMNS]

        def flush() -> None:
            db.insert_rows(stage, stage_names, entries)
            db.insert_rows(rejected, [c.name for c in QUARANTINE_COLUMNS], rejections)
            if progress:
                progress(len(entries) + len(rejections))
            entries.clear()
            rejections.clear()

        for record in records:
            if isinstance(record, Rejection):
                quarantined += 1
                rejections.append(_quarantine_row(batch_id, record, now))
            else:
                staged += 1
                entries.append(_stage_row(record, staged))
            if len(entries) + len(rejections) >= CHUNK_ROWS:
                flush()
        flush()
        if _count(db, stage, "count staged") != staged:  # the engine lost rows: never commit that
            raise RuntimeError(f"{source}: staged {staged} records but the stage table disagrees")

        _keep_new_rejections(db, rejected)
        query = exp.replace_placeholders(
            _renamed(_classify_template(), {"stage": stage}),
            batch_id=exp.Literal.number(batch_id),
            loaded_at=exp.Literal.string(now.isoformat(sep=" ")),
        )
        db.create_table_as(changes, query, step="classify changes")
        counts = {
            kind: _count(db, changes, f"count {kind}", column("change").eq(exp.Literal.string(kind)))
            for kind in ("loaded", "updated", "deleted")
        }
        db.insert_from("resource_history", changes, _RESOURCE_NAMES, step="append history")
        db.replace_rows("resource", ["resource_type", "id"], changes, _RESOURCE_NAMES, step="swap in current versions")
        report = BatchReport(
            batch_id=batch_id, source=source, read=staged + quarantined,
            unchanged=staged - sum(counts.values()), quarantined=quarantined, **counts,
        )
        db.insert_rows(
            "load_batch",
            ["batch_id", "source", "started_at", "finished_at", "status", "read", "loaded", "unchanged",
             "updated", "deleted", "quarantined"],
            [(batch_id, source, now, datetime.now(UTC).replace(tzinfo=None), "committed", report.read,
              report.loaded, report.unchanged, report.updated, report.deleted, report.quarantined)],
        )
        for name in (stage, rejected, changes):
            db.drop_table(name, step="drop batch tables")
    return report


def load_paths(
    db: Database,
    paths: Iterable[Path | str],
    progress: Callable[[Path, int], None] | None = None,
) -> list[BatchReport]:
    """Load FHIR files and folders, one batch per file. Raises InputError for an unusable path."""
    reports = []
    for path in find_fhir_files(paths):
        step = (lambda n, p=path: progress(p, n)) if progress else None
        reports.append(load_records(db, str(path), read_fhir(path), step))
    return reports

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

from sqlglot import exp

from dic.engines import ColumnDef, Database, column, parse_sql, table
from dic.repository.schema import QUARANTINE_COLUMNS, RESOURCE_COLUMNS, TABLES
from dic.sources import Entry, Rejection, find_fhir_files, read_fhir

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


def drop_schema(db: Database) -> None:
    """Drop every repository table (scratch repositories of conformance runs)."""
    for name in TABLES:
        db.drop_table(name, step=f"drop {name}")


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
    return (entry.resource_type, entry.id, entry.content_hash, entry.source, entry.position, seq, entry.delete,
            entry.last_updated, entry.content)


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
    """Load one batch of records from `source` in one transaction and reconcile it.

    Records are merged chunk by chunk (`db.load_chunk_rows`), so memory stays bounded and
    the engine merges one chunk while the readers parse the next. Within a chunk the last
    occurrence of a resource wins; across chunks each occurrence is a version.
    """
    ensure_schema(db)
    now = datetime.now(UTC).replace(tzinfo=None)
    totals = dict.fromkeys(("staged", "quarantined", "loaded", "updated", "deleted"), 0)
    with db.transaction():
        batch_id = _next_batch_id(db)
        tables = {"stage": f"_stage_{batch_id}", "changes": f"_changes_{batch_id}",
                  "rejected": f"_rejected_{batch_id}"}
        entries: list[tuple] = []
        rejections: list[tuple] = []

        def merge() -> None:
            _merge_chunk(db, tables, entries, rejections, batch_id, now, totals)
            if progress:
                progress(len(entries) + len(rejections))
            entries.clear()
            rejections.clear()

        for record in records:
            if isinstance(record, Rejection):
                rejections.append(_quarantine_row(batch_id, record, now))
            else:
                entries.append(_stage_row(record, len(entries)))
            if len(entries) + len(rejections) >= db.load_chunk_rows:
                merge()
        merge()
        changed = totals["loaded"] + totals["updated"] + totals["deleted"]
        report = BatchReport(
            batch_id=batch_id, source=source, read=totals["staged"] + totals["quarantined"],
            loaded=totals["loaded"], updated=totals["updated"], unchanged=totals["staged"] - changed,
            deleted=totals["deleted"], quarantined=totals["quarantined"],
        )
        db.insert_rows(
            "load_batch",
            ["batch_id", "source", "started_at", "finished_at", "status", "read", "loaded", "unchanged",
             "updated", "deleted", "quarantined"],
            [(batch_id, source, now, datetime.now(UTC).replace(tzinfo=None), "committed", report.read,
              report.loaded, report.unchanged, report.updated, report.deleted, report.quarantined)],
        )
    return report


def _merge_chunk(
    db: Database,
    tables: dict[str, str],
    entries: list[tuple],
    rejections: list[tuple],
    batch_id: int,
    now: datetime,
    totals: dict[str, int],
) -> None:
    """Classify one chunk against the current versions and write its changes and rejections."""
    stage, changes, rejected = tables["stage"], tables["changes"], tables["rejected"]
    if rejections:
        db.drop_table(rejected, step="reset rejected")
        db.create_table(rejected, QUARANTINE_COLUMNS, step="create rejected")
        db.insert_rows(rejected, [c.name for c in QUARANTINE_COLUMNS], rejections)
        _keep_new_rejections(db, rejected)
        db.drop_table(rejected, step="drop rejected")
        totals["quarantined"] += len(rejections)
    if not entries:
        return
    db.drop_table(stage, step="reset stage")
    db.create_table(stage, STAGE_COLUMNS, step="create stage")
    db.insert_rows(stage, [c.name for c in STAGE_COLUMNS], entries)
    if _count(db, stage, "count staged") != len(entries):  # the engine lost rows: never commit that
        raise RuntimeError(f"staged {len(entries)} records but the stage table disagrees")
    query = exp.replace_placeholders(
        _renamed(_classify_template(), {"stage": stage}),
        batch_id=exp.Literal.number(batch_id),
        loaded_at=exp.Literal.string(now.isoformat(sep=" ")),
    )
    db.create_table_as(changes, query, step="classify changes")
    by_kind = exp.select(column("change"), exp.func("count", exp.Star())).from_(table(changes)).group_by(column("change"))
    for kind, n in db.fetch(by_kind, "count changes").rows:
        totals[kind] += int(n)
    db.insert_from("resource_history", changes, _RESOURCE_NAMES, step="append history")
    db.replace_rows("resource", ["resource_type", "id"], changes, _RESOURCE_NAMES, step="swap in current versions")
    db.drop_table(changes, step="drop changes")
    db.drop_table(stage, step="drop stage")
    totals["staged"] += len(entries)


def load_paths(
    db: Database,
    paths: Iterable[Path | str],
    progress: Callable[[Path, int], None] | None = None,
    *,
    keep_identifying: bool = False,
) -> list[BatchReport]:
    """Load FHIR files and folders, one batch per file. Raises InputError for an unusable path.

    Identifying elements (names, addresses beyond a coarse postal code, identifiers, ...) are
    removed before storing; `keep_identifying` is for conformance test data only.
    """
    reports = []
    for path in find_fhir_files(paths):
        step = (lambda n, p=path: progress(p, n)) if progress else None
        reports.append(load_records(db, str(path), read_fhir(path, keep_identifying=keep_identifying), step))
    return reports

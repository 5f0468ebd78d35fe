"""The repository's tables, declared once for every engine.

`resource` holds the current version of every resource (deleted ones as tombstones, so the
next version number is always known); `resource_history` every version ever stored;
`load_batch` one row per batch with its reconciliation; `quarantine` every rejected record.
"""

from __future__ import annotations

from dic.engines import ColumnDef

RESOURCE_COLUMNS = [
    ColumnDef("resource_type", "TEXT"),
    ColumnDef("id", "TEXT"),
    ColumnDef("version_id", "BIGINT"),
    ColumnDef("last_updated", "TEXT"),  # FHIR instant as given (meta.lastUpdated) or load time
    ColumnDef("content_hash", "TEXT"),  # sha256 of the canonical JSON without meta.versionId/lastUpdated
    ColumnDef("source", "TEXT"),  # file path or URL the resource came from
    ColumnDef("batch_id", "BIGINT"),  # the batch that wrote this version
    ColumnDef("position", "TEXT"),  # "line 12" or "entry 3" in its source
    ColumnDef("loaded_at", "TIMESTAMP"),
    ColumnDef("deleted", "BOOLEAN"),
    ColumnDef("content", "JSON"),
]

LOAD_BATCH_COLUMNS = [
    ColumnDef("batch_id", "BIGINT"),
    ColumnDef("source", "TEXT"),
    ColumnDef("started_at", "TIMESTAMP"),
    ColumnDef("finished_at", "TIMESTAMP"),
    ColumnDef("status", "TEXT"),
    ColumnDef("read", "BIGINT"),
    ColumnDef("loaded", "BIGINT"),
    ColumnDef("unchanged", "BIGINT"),
    ColumnDef("updated", "BIGINT"),
    ColumnDef("deleted", "BIGINT"),
    ColumnDef("quarantined", "BIGINT"),
]

QUARANTINE_COLUMNS = [
    ColumnDef("quarantine_id", "TEXT"),  # sha256 of source, position and raw text: same record, same id
    ColumnDef("batch_id", "BIGINT"),  # the first batch that rejected it
    ColumnDef("source", "TEXT"),
    ColumnDef("position", "TEXT"),
    ColumnDef("reason", "TEXT"),
    ColumnDef("raw", "TEXT"),  # the rejected text, cut to RAW_LIMIT_BYTES
    ColumnDef("raw_bytes", "BIGINT"),  # its full size
    ColumnDef("quarantined_at", "TIMESTAMP"),
]

TABLES = {
    "resource": RESOURCE_COLUMNS,
    "resource_history": RESOURCE_COLUMNS,
    "load_batch": LOAD_BATCH_COLUMNS,
    "quarantine": QUARANTINE_COLUMNS,
}

RAW_LIMIT_BYTES = 64 * 1024

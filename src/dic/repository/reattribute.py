"""Re-attribute stored data when the trust center merges or splits persons.

    reattribute(db, [Move(record, from_pseudonym, to_pseudonym), ...]) -> BatchReport

A merge moves everything of one pseudonym to another (`record=None`); a split moves the data of
one source record (its pseudonym in the REC domain, which the FHIR pseudonymizer put on every
resource as a `meta.tag` of system `SOURCE_RECORD_TAG`) to another pseudonym. The references of
every affected resource are rewritten and stored as a new version through `load_records`, so
`resource_history` keeps every old version and `load_batch` the reattribution itself; the
moved-from Patient becomes a tombstone once nothing is left under it, and the record tags of both
Patients follow the records (a Patient lists every source record of its person, see `patients.py`);
a Patient for the target is made from the newest stored version of the record's Patient when there
is none. All moves are one batch (one transaction), and running the same moves again changes nothing.

The affected resources are read before the batch's transaction opens: a load running at the same
time that stores new references to the moved-from pseudonym keeps them (the trust center answers
with the new pseudonym from the merge on, so only loads already running can do that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlglot import exp

from dic.engines import Database, column, table
from dic.repository.load import BatchReport, ensure_schema, load_records
from dic.sources import Entry

SOURCE_RECORD_TAG = "urn:dic:source-record"  # meta.tag system: the source record (REC pseudonym) a resource is about
REATTRIBUTE_SOURCE = "reattribute"  # load_batch.source of a reattribution


@dataclass(frozen=True)
class Move:
    """Move the data of `record` (every record of the person, if None) from one pseudonym to another."""

    record: str | None
    from_pseudonym: str
    to_pseudonym: str


@dataclass
class _Stored:
    resource: dict[str, Any] | None  # None: a tombstone
    source: str
    position: str
    changed: bool = False


def reattribute(db: Database, moves: Iterable[Move | tuple[str | None, str, str]]) -> BatchReport:
    """Apply the moves in order and store the result as one batch (see the module docstring)."""
    ensure_schema(db)
    workspace = _Workspace(db)
    for move in moves:
        move = move if isinstance(move, Move) else Move(*move)
        if move.from_pseudonym != move.to_pseudonym:
            workspace.apply(move)
    return load_records(db, REATTRIBUTE_SOURCE, workspace.entries())


def record_tags(resource: dict[str, Any]) -> set[str]:
    """The source records a stored resource is about (its `SOURCE_RECORD_TAG` tags)."""
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return {t["code"] for t in tags or [] if isinstance(t, dict) and t.get("system") == SOURCE_RECORD_TAG
            and isinstance(t.get("code"), str)}


class _Workspace:
    """The current versions of the resources the moves touch, changed in memory until `entries()`."""

    def __init__(self, db: Database):
        self.db = db
        self.stored: dict[tuple[str, str], _Stored] = {}

    def apply(self, move: Move) -> None:
        source, target = _reference(move.from_pseudonym), _reference(move.to_pseudonym)
        moved = remaining = 0
        for key, item in self._referring_to(source):
            if move.record is None or move.record in record_tags(item.resource):
                item.resource = _repointed(item.resource, source, target)
                item.changed = True
                moved += 1
            else:
                remaining += 1
        origin = self._get(("Patient", move.from_pseudonym))
        origin_moves = origin is not None and origin.resource is not None and (
            move.record is None or move.record in record_tags(origin.resource))
        if moved or origin_moves:
            self._ensure_patient(move)
        if origin is None or origin.resource is None:
            return
        moving = record_tags(origin.resource) if move.record is None else {move.record} & record_tags(origin.resource)
        target = self._get(("Patient", move.to_pseudonym))
        if moving and target is not None and target.resource is not None and not moving <= record_tags(target.resource):
            _set_record_tags(target.resource, record_tags(target.resource) | moving)  # the records it now holds
            target.changed = True
        if not remaining and (move.record is None or record_tags(origin.resource) <= {move.record}):
            origin.resource, origin.changed = None, True  # nothing left under it: a tombstone
        elif moving:
            _set_record_tags(origin.resource, record_tags(origin.resource) - moving)
            origin.changed = True

    def entries(self) -> Iterator[Entry]:
        for (resource_type, id), item in sorted(self.stored.items()):
            if not item.changed:
                continue
            if item.resource is None:
                yield Entry.deletion(resource_type, id, item.source, item.position)
            else:
                yield Entry.of(item.resource, item.source, item.position)

    # ---- reading -----------------------------------------------------------------------
    def _referring_to(self, reference: str) -> Iterator[tuple[tuple[str, str], _Stored]]:
        """Current resources (other than the Patient itself) with a reference equal to `reference`."""
        found = exp.StrPosition(this=exp.cast(column("content"), "TEXT"), substr=exp.Literal.string(reference))
        query = (exp.select(column("resource_type"), column("id"), column("source"), column("position"),
                            column("content"))
                 .from_(table("resource")).where(exp.and_(exp.not_(column("deleted")), found > 0)))
        for resource_type, id, source, position, content in self.db.fetch(query, "find references to move").rows:
            self.stored.setdefault((resource_type, id), _Stored(_parsed(content), source, position))
        for key, item in list(self.stored.items()):
            if item.resource is not None and key != ("Patient", reference.removeprefix("Patient/")) \
                    and _refers_to(item.resource, reference):
                yield key, item

    def _get(self, key: tuple[str, str]) -> _Stored | None:
        if key not in self.stored:
            query = (exp.select(column("source"), column("position"), column("deleted"), column("content"))
                     .from_(table("resource"))
                     .where(exp.and_(column("resource_type").eq(exp.Literal.string(key[0])),
                                     column("id").eq(exp.Literal.string(key[1])))))
            rows = self.db.fetch(query, "read current version").rows
            if not rows:
                return None
            source, position, deleted, content = rows[0]
            self.stored[key] = _Stored(None if deleted else _parsed(content), source, position)
        return self.stored[key]

    def _ensure_patient(self, move: Move) -> None:
        """A Patient for the target pseudonym, if it has none: the newest stored version of the
        record's Patient (under either pseudonym), else the moved-from Patient as it is now."""
        key = ("Patient", move.to_pseudonym)
        current = self._get(key)
        if current is not None and current.resource is not None:
            return
        version = self._newest_patient_version(move) or self._get(("Patient", move.from_pseudonym))
        if version is None or version.resource is None:
            return
        resource = {**version.resource, "id": move.to_pseudonym}
        if move.record is not None:
            _set_record_tags(resource, {move.record})
        if current is None:
            self.stored[key] = _Stored(resource, version.source, version.position, changed=True)
        else:
            current.resource, current.changed = resource, True

    def _newest_patient_version(self, move: Move) -> _Stored | None:
        ids = exp.In(this=column("id"), expressions=[exp.Literal.string(move.to_pseudonym),
                                                      exp.Literal.string(move.from_pseudonym)])
        query = (exp.select(column("source"), column("position"), column("content"), column("id"))
                 .from_(table("resource_history"))
                 .where(exp.and_(column("resource_type").eq(exp.Literal.string("Patient")), ids,
                                 exp.not_(column("deleted"))))
                 .order_by(exp.Ordered(this=column("batch_id"), desc=True),
                           exp.Ordered(this=column("version_id"), desc=True)))
        rows = self.db.fetch(query, "find the record's Patient").rows
        # the target's own former version first (a split undoing a merge), then the moved-from Patient's
        for id in (move.to_pseudonym, move.from_pseudonym):
            for source, position, content, version_of in rows:
                resource = _parsed(content)
                if version_of == id and (move.record is None or move.record in record_tags(resource)):
                    return _Stored(resource, source, position)
        return None


def _reference(pseudonym: str) -> str:
    return f"Patient/{pseudonym}"


def _parsed(content: Any) -> dict[str, Any]:
    return orjson.loads(content) if isinstance(content, str | bytes) else content  # PostgreSQL returns JSONB parsed


def _refers_to(value: Any, reference: str) -> bool:
    if isinstance(value, dict):
        return value.get("reference") == reference or any(_refers_to(v, reference) for v in value.values()
                                                          if isinstance(v, dict | list))
    if isinstance(value, list):
        return any(_refers_to(v, reference) for v in value if isinstance(v, dict | list))
    return False


def _repointed(value: Any, source: str, target: str) -> Any:
    """A copy of `value` with every reference `source` pointing at `target`."""
    if isinstance(value, dict):
        return {k: (target if k == "reference" and v == source else _repointed(v, source, target))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_repointed(v, source, target) for v in value]
    return value


def _set_record_tags(resource: dict[str, Any], records: set[str]) -> None:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == SOURCE_RECORD_TAG)]
    meta["tag"] = tags + [{"system": SOURCE_RECORD_TAG, "code": r} for r in sorted(records)]
    resource["meta"] = meta

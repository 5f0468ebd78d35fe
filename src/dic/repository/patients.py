"""One Patient resource per person, whichever source systems know them.

After pseudonymization every source record of a person arrives as `Patient/<pseudonym>`: the
HIS of two sites, later the lab and the registries. Storing each as it comes would make the
last one win and every reload flip the resource. Instead an arriving Patient is merged into
the stored one: the source-record tags are united, the stored elements stay and the arriving
record only fills what is missing. A reload then changes nothing, whatever the order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from sqlglot import exp

from dic.engines import Database, column, table
from dic.repository.reattribute import SOURCE_RECORD_TAG, record_tags
from dic.sources import Entry, Rejection

WINDOW = 1_000


def merge_patients(db: Database, records: Iterable[Entry | Rejection]) -> Iterator[Entry | Rejection]:
    """The records, with each Patient merged into the stored (or earlier in this load) one."""
    window: list[Entry | Rejection] = []
    seen: dict[str, dict[str, Any]] = {}  # Patients of this load, by id (a person can recur in a file)
    for record in records:
        window.append(record)
        if len(window) >= WINDOW:
            yield from _merged(db, window, seen)
            window = []
    yield from _merged(db, window, seen)


def _merged(db: Database, window: list[Entry | Rejection], seen: dict[str, dict[str, Any]]) -> Iterator[Entry | Rejection]:
    wanted = sorted({r.id for r in window if _is_patient(r)} - seen.keys())
    stored = _stored_patients(db, wanted) if wanted else {}
    for record in window:
        if not _is_patient(record):
            yield record
            continue
        assert isinstance(record, Entry) and record.content is not None
        arriving = orjson.loads(record.content)
        earlier = seen.get(record.id) or stored.get(record.id)
        if earlier is None:  # the person's first Patient: stored as it came
            seen[record.id] = arriving
            yield record
            continue
        seen[record.id] = merged = merge_patient(earlier, arriving)
        yield Entry.of(merged, record.source, record.position)


def _is_patient(record: Entry | Rejection) -> bool:
    return isinstance(record, Entry) and record.resource_type == "Patient" and not record.delete


def _stored_patients(db: Database, ids: list[str]) -> dict[str, dict[str, Any]]:
    query = (exp.select(column("id"), column("content")).from_(table("resource"))
             .where(exp.and_(column("resource_type").eq(exp.Literal.string("Patient")),
                             exp.not_(column("deleted")),
                             column("id").isin(*[exp.Literal.string(i) for i in ids]))))
    rows = db.fetch(query, "read stored patients").rows
    return {id: orjson.loads(content) if isinstance(content, str | bytes) else content for id, content in rows}


def merge_patient(stored: dict[str, Any], arriving: dict[str, Any]) -> dict[str, Any]:
    """`stored` with the elements it lacks taken from `arriving`, and both records' tags."""
    merged = {**arriving, **stored}
    meta = {**(arriving.get("meta") or {}), **(stored.get("meta") or {})}
    others = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == SOURCE_RECORD_TAG)]
    tags = sorted(record_tags(stored) | record_tags(arriving))
    meta["tag"] = others + [{"system": SOURCE_RECORD_TAG, "code": code} for code in tags]
    merged["meta"] = meta
    return merged


def resources_about(db: Database, pseudonyms: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(resource type, id) of every stored resource about each person (their Patient and every
    resource that references it): what a consent withdrawal obliges the DIC to delete."""
    found: dict[str, list[tuple[str, str]]] = {p: [] for p in pseudonyms}
    for start in range(0, len(pseudonyms), 100):
        chunk = pseudonyms[start:start + 100]
        text = exp.Cast(this=column("content"), to=exp.DataType.build("text"))
        about = exp.or_(*[exp.Like(this=text, expression=exp.Literal.string(f'%"Patient/{p}"%')) for p in chunk],
                        *[exp.and_(column("resource_type").eq(exp.Literal.string("Patient")),
                                   column("id").eq(exp.Literal.string(p))) for p in chunk])
        query = (exp.select(column("resource_type"), column("id"), text.as_("content")).from_(table("resource"))
                 .where(exp.and_(exp.not_(column("deleted")), about)).order_by(column("resource_type"), column("id")))
        for resource_type, id, content in db.fetch(query, "resources about persons").rows:
            for p in chunk:
                if (resource_type == "Patient" and id == p) or f'"Patient/{p}"' in content:
                    found[p].append((resource_type, id))
    return found

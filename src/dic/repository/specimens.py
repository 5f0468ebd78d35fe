"""Observations made on a specimen get the specimen's patient.

A sequencing lab knows its samples, not the patients: a VCF names biobank sample ids. The VCF
adapter therefore makes Observations with `specimen` and no `subject`; this step, between the
pseudonymizer and the load, gives each the `subject` (and the source-record tags) of the stored
Specimen, found by the same pseudonymized id, since the sample ids were hashed under the same
source system. An Observation whose Specimen is neither stored nor earlier in this load is
quarantined with the reason.
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


def attach_specimen_subjects(db: Database, records: Iterable[Entry | Rejection]) -> Iterator[Entry | Rejection]:
    """The records, each subject-less Observation on a specimen given that specimen's patient."""
    seen: dict[str, dict[str, Any]] = {}  # Specimens of this load, by id
    window: list[Entry | Rejection] = []
    for record in records:
        window.append(record)
        if len(window) >= WINDOW:
            yield from _attached(db, window, seen)
            window = []
    yield from _attached(db, window, seen)


def _needs_subject(record: Entry | Rejection) -> bool:
    return (isinstance(record, Entry) and record.resource_type == "Observation" and not record.delete
            and record.content is not None and '"subject"' not in record.content and '"specimen"' in record.content)


def _attached(db: Database, window: list[Entry | Rejection], seen: dict[str, dict[str, Any]]) -> Iterator[Entry | Rejection]:
    for record in window:
        if isinstance(record, Entry) and record.resource_type == "Specimen" and record.content and not record.delete:
            seen[record.id] = orjson.loads(record.content)
    wanted: dict[int, tuple[dict[str, Any], str]] = {}
    for index, record in enumerate(window):
        if _needs_subject(record):
            assert isinstance(record, Entry) and record.content is not None
            observation = orjson.loads(record.content)
            reference = (observation.get("specimen") or {}).get("reference", "")
            if reference.startswith("Specimen/"):
                wanted[index] = (observation, reference.removeprefix("Specimen/"))
    missing = sorted({id for _, id in wanted.values()} - seen.keys())
    stored = _stored_specimens(db, missing) if missing else {}
    for index, record in enumerate(window):
        if index not in wanted:
            yield record
            continue
        assert isinstance(record, Entry)
        observation, specimen_id = wanted[index]
        specimen = seen.get(specimen_id) or stored.get(specimen_id)
        subject = (specimen or {}).get("subject")
        if not isinstance(subject, dict) or not subject.get("reference"):
            raw = record.content.encode() if record.content else b""
            yield Rejection(record.source, record.position,
                            f"Observation/{record.id}: its Specimen/{specimen_id} is not stored (or has no patient); "
                            "load the biobank's samples first, under the same source system", raw, len(raw))
            continue
        observation["subject"] = {"reference": subject["reference"]}
        tags = sorted(record_tags(specimen))
        if tags:
            meta = dict(observation.get("meta") or {})
            others = [t for t in meta.get("tag") or [] if t.get("system") != SOURCE_RECORD_TAG]
            meta["tag"] = others + [{"system": SOURCE_RECORD_TAG, "code": code} for code in tags]
            observation["meta"] = meta
        yield Entry.of(observation, record.source, record.position)


def _stored_specimens(db: Database, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        query = (exp.select(column("id"), column("content")).from_(table("resource"))
                 .where(exp.and_(column("resource_type").eq(exp.Literal.string("Specimen")),
                                 exp.not_(column("deleted")),
                                 column("id").isin(*[exp.Literal.string(i) for i in chunk]))))
        for id, content in db.fetch(query, "read stored specimens").rows:
            found[id] = orjson.loads(content) if isinstance(content, str | bytes) else content
    return found

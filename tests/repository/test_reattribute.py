"""Merges and splits of persons re-attribute stored data as new versions: nothing is lost."""

from __future__ import annotations

from typing import Any

import orjson
from sqlglot import exp

from dic.engines import Database, column, table
from dic.repository import SOURCE_RECORD_TAG, Move, load_records, reattribute, record_tags
from dic.sources import Entry

A, B, C = "DIC-AAAAAAAAAAAAAAAA-1", "DIC-BBBBBBBBBBBBBBBB-2", "DIC-CCCCCCCCCCCCCCCC-3"


def tagged(resource: dict[str, Any], *records: str) -> dict[str, Any]:
    return {**resource, "meta": {"tag": [{"system": SOURCE_RECORD_TAG, "code": r} for r in records]}}


def patient(pseudonym: str, record: str, gender: str) -> dict[str, Any]:
    return tagged({"resourceType": "Patient", "id": pseudonym, "gender": gender}, record)


def observation(id: str, pseudonym: str, record: str) -> dict[str, Any]:
    return tagged({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
                   "subject": {"reference": f"Patient/{pseudonym}"},
                   "hasMember": [{"reference": f"Patient/{pseudonym}x"}]}, record)  # a look-alike, never moved


def load(db: Database, resources: list[dict[str, Any]]) -> None:
    load_records(db, "his.ndjson", [Entry.of(r, "his.ndjson", f"line {n}") for n, r in enumerate(resources, 1)])


def state(db: Database) -> dict[tuple[str, str], tuple[int, bool, dict | None]]:
    rows = db.fetch(exp.select(column("resource_type"), column("id"), column("version_id"), column("deleted"),
                               column("content")).from_(table("resource")), "state").rows
    return {(t, i): (int(v), bool(d), None if c is None else orjson.loads(c) if isinstance(c, str) else c)
            for t, i, v, d, c in rows}


def history_size(db: Database) -> int:
    return int(db.scalar(exp.select(exp.func("count", exp.Star())).from_(table("resource_history")), "history"))


def subject(db: Database, id: str) -> str:
    return state(db)[("Observation", id)][2]["subject"]["reference"]


WORLD = [
    patient(A, "REC-A1", "female"),
    patient(B, "REC-B1", "male"),
    observation("o1", A, "REC-A1"),
    observation("o2", A, "REC-A2"),  # a second source record of person A
    observation("o3", B, "REC-B1"),
]


def test_merge_moves_everything_and_leaves_a_tombstone(db: Database) -> None:
    load(db, WORLD)
    before = history_size(db)
    report = reattribute(db, [(None, A, B)])
    assert (report.source, report.read, report.loaded, report.updated, report.deleted) == ("reattribute", 4, 0, 3, 1)
    now = state(db)
    assert [subject(db, o) for o in ("o1", "o2", "o3")] == [f"Patient/{B}"] * 3
    assert now[("Observation", "o1")][2]["hasMember"] == [{"reference": f"Patient/{A}x"}]
    assert now[("Observation", "o1")][0] == 2 and record_tags(now[("Observation", "o1")][2]) == {"REC-A1"}
    assert now[("Patient", A)][:2] == (2, True)
    assert record_tags(now[("Patient", B)][2]) == {"REC-A1", "REC-B1"}  # B's Patient lists A's record now
    assert history_size(db) == before + 4  # the old versions stay
    again = reattribute(db, [Move(None, A, B)])
    assert (again.read, again.loaded, again.updated, again.deleted) == (0, 0, 0, 0)
    assert state(db) == now


def test_split_moves_one_record_and_makes_its_patient(db: Database) -> None:
    load(db, WORLD)
    report = reattribute(db, [Move("REC-A2", A, C)])
    assert (report.loaded, report.updated, report.deleted) == (1, 1, 0)
    now = state(db)
    assert [subject(db, o) for o in ("o1", "o2", "o3")] == [f"Patient/{A}", f"Patient/{C}", f"Patient/{B}"]
    assert now[("Patient", C)][2] == patient(C, "REC-A2", "female")  # A's Patient, re-tagged for the record
    assert now[("Patient", A)][:2] == (1, False)  # REC-A1 is still under A


def test_merge_then_split_restores_every_resource(db: Database) -> None:
    load(db, WORLD)
    original = state(db)
    reattribute(db, [Move(None, A, B)])
    report = reattribute(db, [Move("REC-A1", B, A), Move("REC-A2", B, A)])
    assert (report.loaded, report.updated, report.deleted) == (1, 3, 0)  # Patient A; o1, o2, Patient B's tags
    restored = state(db)
    assert {k: v[2] for k, v in restored.items()} == {k: v[2] for k, v in original.items()}
    assert restored[("Patient", A)][0] == 3  # loaded, tombstone, restored from its first version


def test_moves_of_unknown_records_change_nothing(db: Database) -> None:
    load(db, WORLD)
    before = state(db)
    report = reattribute(db, [Move("REC-NOBODY", A, C), Move(None, C, B), Move(None, A, A)])
    assert (report.read, report.loaded, report.updated, report.deleted) == (0, 0, 0, 0)
    assert state(db) == before

"""The repository's load contract, on DuckDB and a real PostgreSQL server."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest
from sqlglot import exp

from dic.engines import Database, column, table
from dic.repository import load_paths, quarantine_list, resource_counts

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05-01"}
OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    "subject": {"reference": "Patient/p1"},
    "valueQuantity": {"value": 13.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"},
}


def ndjson(path: Path, lines: list[object]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else orjson.dumps(x)) + b"\n" for x in lines))
    return path


def count(db: Database, name: str) -> int:
    return int(db.scalar(exp.select(exp.func("count", exp.Star())).from_(table(name)), "count"))


def current(db: Database) -> dict[tuple[str, str], tuple[int, bool]]:
    rows = db.fetch(exp.select(column("resource_type"), column("id"), column("version_id"), column("deleted"))
                    .from_(table("resource")), "current").rows
    return {(t, i): (int(v), bool(d)) for t, i, v, d in rows}


def test_bad_records_are_quarantined_with_reason_and_good_ones_load(db: Database, tmp_path: Path) -> None:
    path = ndjson(tmp_path / "mixed.ndjson", [
        PATIENT,
        b"{not json",
        b'"just a string"',
        {"resourceType": "Unicorn", "id": "u1"},
        {"resourceType": "Patient", "gender": "male"},
        {"resourceType": "Patient", "id": "p9", "birthDate": 19700101},
        {"resourceType": "Observation", "id": "o2", "status": "final", "code": "718-7"},
        bytes(range(256)).replace(b"\n", b""),
        OBSERVATION,
    ])
    [report] = load_paths(db, [path])
    assert (report.read, report.loaded, report.quarantined) == (9, 2, 7)
    assert report.reconciles
    reasons = {r["position"]: r["reason"] for r in quarantine_list(db)}
    assert reasons["line 2"].startswith("invalid JSON")
    assert reasons["line 3"] == "not a FHIR resource: a JSON string, not an object"
    assert reasons["line 4"] == "unknown resourceType (not a FHIR R4 resource type)"
    assert reasons["line 5"] == "Patient has no id"
    assert reasons["line 6"] == "Patient.birthDate: expected date, got a JSON integer"
    assert reasons["line 7"] == "Observation.code: expected CodeableConcept, got a JSON string"
    assert reasons["line 8"].startswith("invalid JSON")
    assert resource_counts(db) == {"Observation": 1, "Patient": 1}
    # the identifying value never appears in a reason
    assert all("19700101" not in reason for reason in reasons.values())


def test_reload_changes_nothing(db: Database, tmp_path: Path) -> None:
    path = ndjson(tmp_path / "a.ndjson", [PATIENT, OBSERVATION, b"garbage"])
    load_paths(db, [path])
    before = (count(db, "resource"), count(db, "resource_history"), count(db, "quarantine"))
    [again] = load_paths(db, [path])
    assert (again.loaded, again.updated, again.unchanged, again.quarantined) == (0, 0, 2, 1)
    assert (count(db, "resource"), count(db, "resource_history"), count(db, "quarantine")) == before


def test_update_keeps_history_and_meta_only_change_is_no_op(db: Database, tmp_path: Path) -> None:
    load_paths(db, [ndjson(tmp_path / "v1.ndjson", [PATIENT])])
    touched = {**PATIENT, "meta": {"versionId": "7", "lastUpdated": "2025-01-01T00:00:00Z"}}
    [same] = load_paths(db, [ndjson(tmp_path / "v1b.ndjson", [touched])])
    assert same.unchanged == 1
    [update] = load_paths(db, [ndjson(tmp_path / "v2.ndjson", [{**PATIENT, "gender": "male"}])])
    assert (update.updated, update.loaded) == (1, 0)
    assert current(db) == {("Patient", "p1"): (2, False)}
    assert count(db, "resource_history") == 2
    content = db.scalar(exp.select(column("content")).from_(table("resource")), "content")
    assert (orjson.loads(content) if isinstance(content, str) else content)["gender"] == "male"


def test_last_occurrence_in_a_batch_wins(db: Database, tmp_path: Path) -> None:
    [report] = load_paths(db, [ndjson(tmp_path / "dup.ndjson", [PATIENT, {**PATIENT, "gender": "other"}])])
    assert (report.read, report.loaded, report.unchanged) == (2, 1, 1)
    assert report.reconciles
    assert current(db) == {("Patient", "p1"): (1, False)}


def test_transaction_bundle_put_post_and_delete(db: Database, tmp_path: Path) -> None:
    first = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7f1d6c43-0a0e-4a59-9d0e-3c1a2b9f0001", "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**OBSERVATION, "subject": {"reference": "urn:uuid:7f1d6c43-0a0e-4a59-9d0e-3c1a2b9f0001"}},
         "request": {"method": "PUT", "url": "Observation/o1"}},
    ]}
    (tmp_path / "b1.json").write_bytes(orjson.dumps(first))
    [report] = load_paths(db, [tmp_path / "b1.json"])
    assert report.loaded == 2
    stored = db.scalar(exp.select(column("content")).from_(table("resource"))
                       .where(column("resource_type").eq(exp.Literal.string("Observation"))), "content")
    stored = orjson.loads(stored) if isinstance(stored, str) else stored
    assert stored["subject"]["reference"] == "Patient/7f1d6c43-0a0e-4a59-9d0e-3c1a2b9f0001"
    delete = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": "Observation/o1"}},
        {"request": {"method": "DELETE", "url": "Observation/never-there"}},
    ]}
    (tmp_path / "b2.json").write_bytes(orjson.dumps(delete))
    [deleted] = load_paths(db, [tmp_path / "b2.json"])
    assert (deleted.deleted, deleted.unchanged) == (1, 1)
    assert current(db)[("Observation", "o1")] == (2, True)
    assert resource_counts(db) == {"Patient": 1}
    [again] = load_paths(db, [tmp_path / "b2.json"])
    assert again.deleted == 0


def test_corrupt_gzip_keeps_lines_before_the_damage(db: Database, tmp_path: Path) -> None:
    good = gzip.compress(b"".join(orjson.dumps({**PATIENT, "id": f"p{i}"}) + b"\n" for i in range(50)))
    path = tmp_path / "Patient.ndjson.gz"
    path.write_bytes(good[: len(good) // 2] + b"\x00garbage" * 100)
    [report] = load_paths(db, [path])
    assert report.quarantined == 1 and report.reconciles
    [rejection] = quarantine_list(db)
    assert "unreadable compressed data" in rejection["reason"]
    assert report.loaded == sum(resource_counts(db).values())


def test_hundred_megabyte_line_is_quarantined_not_loaded(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "huge.ndjson"
    with path.open("wb") as out:
        out.write(orjson.dumps(PATIENT) + b"\n")
        out.write(b'{"resourceType": "Binary", "id": "b1", "data": "' + b"A" * (100 * 1024 * 1024) + b'"}\n')
        out.write(orjson.dumps(OBSERVATION) + b"\n")
    [report] = load_paths(db, [path])
    assert (report.loaded, report.quarantined) == (2, 1)
    [rejection] = quarantine_list(db)
    assert rejection["position"] == "line 2"
    assert rejection["raw_bytes"] > 100 * 1024 * 1024
    assert "larger than" in rejection["reason"]


def test_failed_batch_leaves_repository_as_it_was(db: Database, tmp_path: Path, monkeypatch) -> None:
    load_paths(db, [ndjson(tmp_path / "base.ndjson", [PATIENT])])
    before = (current(db), count(db, "resource_history"), count(db, "load_batch"), count(db, "quarantine"))
    original = db.replace_rows

    def crash(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt("killed after the swap, before the commit")

    monkeypatch.setattr(db, "replace_rows", crash)
    path = ndjson(tmp_path / "next.ndjson", [{**PATIENT, "gender": "male"}, OBSERVATION, b"bad"])
    with pytest.raises(KeyboardInterrupt):
        load_paths(db, [path])
    assert (current(db), count(db, "resource_history"), count(db, "load_batch"), count(db, "quarantine")) == before
    monkeypatch.setattr(db, "replace_rows", original)
    [report] = load_paths(db, [path])
    assert (report.loaded, report.updated, report.quarantined) == (1, 1, 1)


def test_mii_test_bundles_load_completely(db: Database, shared_data: Path) -> None:
    bundles = sorted((shared_data / "mii-testdata" / "bundles").glob("*.json"))
    entries = sum(len(json.loads(p.read_bytes())["entry"]) for p in bundles)
    reports = load_paths(db, bundles)
    assert sum(r.read for r in reports) == entries
    assert sum(r.quarantined for r in reports) == 0, quarantine_list(db)
    assert resource_counts(db)["Patient"] == 31


def test_killed_load_is_rolled_back_and_rerun_completes(tmp_path: Path) -> None:
    """A real SIGKILL in the middle of a batch: nothing of it is visible, the rerun loads it all once."""
    import signal
    import subprocess
    import sys
    import time

    from dic.engines import connect

    path = ndjson(tmp_path / "Observation.ndjson",
                  [{**OBSERVATION, "id": f"o{i}", "valueQuantity": {"value": i}} for i in range(150_000)])
    target = tmp_path / "repo.duckdb"
    script = ("import sys; from dic.engines import connect; from dic.repository import load_paths;"
              "load_paths(connect('duckdb', sys.argv[1]), [sys.argv[2]])")
    process = subprocess.Popen([sys.executable, "-c", script, str(target), str(path)])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not target.exists():
        time.sleep(0.05)
    time.sleep(1.5)  # well inside the batch: staging 150k records takes several seconds
    assert process.poll() is None, "the load finished before it could be killed; make the file bigger"
    process.send_signal(signal.SIGKILL)
    process.wait()
    db = connect("duckdb", target)
    try:
        from dic.repository import ensure_schema

        ensure_schema(db)
        assert count(db, "resource") == 0 and count(db, "load_batch") == 0
        [report] = load_paths(db, [path])
        assert report.loaded == 150_000
        assert count(db, "resource") == 150_000 and count(db, "resource_history") == 150_000
    finally:
        db.close()


@pytest.mark.spark
def test_load_and_reload_on_spark(spark_db: Database, tmp_path: Path) -> None:
    path = ndjson(tmp_path / "a.ndjson", [PATIENT, OBSERVATION, b"garbage"])
    [first] = load_paths(spark_db, [path])
    assert (first.loaded, first.quarantined) == (2, 1)
    [second] = load_paths(spark_db, [path])
    assert (second.loaded, second.unchanged, second.quarantined) == (0, 2, 1)
    [third] = load_paths(spark_db, [ndjson(tmp_path / "b.ndjson", [{**PATIENT, "gender": "male"}])])
    assert third.updated == 1
    assert current(spark_db) == {("Patient", "p1"): (2, False), ("Observation", "o1"): (1, False)}
    assert count(spark_db, "quarantine") == 1 and count(spark_db, "resource_history") == 3

"""The query log in the repository database (DuckDB and PostgreSQL): values kept exactly, the hash
chain, and tampering behind its back found at the right seq."""

from __future__ import annotations

import hashlib
import threading

import orjson
import pytest

from dic.engines import Database, Engine, connect
from dic.errors import EngineError
from dic.privacy import query_log


def _fill(db: Database, n: int = 5) -> list[query_log.QueryLogEntry]:
    return [query_log.record(db, f"researcher-{i % 2}", ("count", "members", "characterize")[i % 3],
                             f"q{i}", 100 + i, str(100 + i), {"site": "a", "i": i}) for i in range(n)]


def test_entries_keep_every_value_exactly_and_link_up(db: Database) -> None:
    detail = {"z": "O'Brien \\ \"quoted\"\nnew line", "a": "Müller ✓", "n": [1, 2.5, None]}
    first = query_log.record(db, "dr. o'neill", "count", "abc123", 3, "< 5", detail)
    second = query_log.record(db, "system", "members", "abc123", None, "17 members")
    assert query_log.TABLE in db.table_names()
    stored = query_log.entries(db)
    assert stored == [first, second]
    assert (first.seq, first.prev_hash, second.seq, second.prev_hash) == (1, query_log.GENESIS, 2, first.hash)
    assert (first.actor, first.action, first.query_hash, first.raw_count, first.released) == (
        "dr. o'neill", "count", "abc123", 3, "< 5")
    assert stored[0].detail_json() == detail
    assert first.detail == orjson.dumps(detail, option=orjson.OPT_SORT_KEYS).decode()  # canonical: sorted keys
    assert (second.raw_count, second.detail_json()) == (None, {})
    # the hash is SHA-256 over the previous hash and the entry's canonical JSON, recomputable by anyone
    body = orjson.dumps([1, first.at, "dr. o'neill", "count", "abc123", 3, "< 5", first.detail])
    assert first.hash == hashlib.sha256(query_log.GENESIS.encode() + body).hexdigest()


def test_an_untouched_chain_verifies(db: Database) -> None:
    written = _fill(db, 7)
    result = query_log.verify(db)
    assert (result.entries, result.intact, result.first_broken, result.reason) == (7, True, None, None)
    assert result.head == written[-1].hash


def test_an_empty_log_verifies_and_lists_nothing(db: Database) -> None:
    assert query_log.entries(db) == []
    assert query_log.verify(db) == query_log.Verification(0, True, None, None, query_log.GENESIS)


def test_entries_can_be_filtered_and_paged(db: Database) -> None:
    _fill(db, 7)
    assert [e.seq for e in query_log.entries(db, actor="researcher-1")] == [2, 4, 6]
    assert [e.seq for e in query_log.entries(db, action="members")] == [2, 5]
    assert [e.seq for e in query_log.entries(db, since=3, limit=2)] == [4, 5]


def test_an_unknown_action_is_refused_and_nothing_is_written(db: Database) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        query_log.record(db, "x", "export", "q", 1, "1")
    assert query_log.entries(db) == []


@pytest.mark.parametrize(("statement", "broken", "reason"), [
    ("UPDATE query_log SET raw_count = 4 WHERE seq = 3", 3, "content does not match"),
    ("UPDATE query_log SET released = '< 5' WHERE seq = 4", 4, "content does not match"),
    ("UPDATE query_log SET detail = '{}' WHERE seq = 2", 2, "content does not match"),
    ("DELETE FROM query_log WHERE seq = 2", 2, "entry 2 is missing"),
    ("UPDATE query_log SET prev_hash = hash WHERE seq = 5", 5, "does not link"),
])
def test_tampering_behind_the_chain_s_back_is_found_at_its_seq(db: Database, statement: str, broken: int,
                                                                reason: str) -> None:
    written = _fill(db, 6)
    db.execute(statement, step="tamper")
    result = query_log.verify(db)
    assert (result.intact, result.first_broken, result.entries) == (False, broken, broken - 1)
    assert reason in (result.reason or "")
    assert result.head == (written[broken - 2].hash if broken > 1 else query_log.GENESIS)


def test_rewriting_one_entry_and_its_hash_breaks_the_next_link(db: Database) -> None:
    """A forger who also recomputes entry 3's hash is caught at entry 4, which names the old hash."""
    _fill(db, 5)
    e = query_log.entries(db, since=2, limit=1)[0]
    forged = query_log.entry_hash(e.prev_hash, e.seq, e.at, e.actor, e.action, e.query_hash, 4, e.released,
                                  e.detail)
    db.execute(f"UPDATE query_log SET raw_count = 4, hash = '{forged}' WHERE seq = 3", step="forge")
    result = query_log.verify(db)
    assert (result.intact, result.first_broken) == (False, 4)


def test_the_chain_is_verified_in_batches(db: Database) -> None:
    _fill(db, 7)
    db.execute("UPDATE query_log SET actor = 'someone else' WHERE seq = 6", step="tamper")
    assert (query_log.verify(db, batch=2).first_broken, query_log.verify(db, batch=2).entries) == (6, 5)


def test_concurrent_writers_on_two_connections_keep_one_chain(db: Database) -> None:
    """Two connections append at once; a writer that loses the race for a seq retries on the new head."""
    query_log.ensure_query_log(db)
    url = db.path if db.engine is Engine.duckdb else db.url  # type: ignore[attr-defined]
    other = connect(db.engine, url)
    failures: list[BaseException] = []

    def write(target: Database, actor: str) -> None:
        try:
            for i in range(15):
                query_log.record(target, actor, "count", f"q{i}", i, str(i))
        except BaseException as error:  # noqa: BLE001  reported by the assertion below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(db, "one")), threading.Thread(target=write, args=(other, "two"))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.close()
    assert failures == []
    result = query_log.verify(db)
    assert (result.intact, result.entries) == (True, 30)
    assert sorted(e.actor for e in query_log.entries(db)).count("two") == 15


def test_a_write_that_cannot_succeed_is_raised_not_swallowed(db: Database) -> None:
    """A read-only repository: every retry fails the same way, and the last failure comes out."""
    _fill(db, 2)
    url = db.path if db.engine is Engine.duckdb else db.url  # type: ignore[attr-defined]
    db.close()  # DuckDB opens a file once per process with one configuration
    read_only = connect(db.engine, url, read_only=True)
    try:
        with pytest.raises(EngineError, match="(?i)read.only") as raised:
            query_log.record(read_only, "x", "count", "q", 1, "1")
        assert raised.value.step == "append to query log"
        assert [e.seq for e in query_log.entries(read_only)] == [1, 2]
    finally:
        read_only.close()

"""The audit log: hash-chained, append-only, and tampering is found."""

from __future__ import annotations

import sqlite3

import pytest

from dic.trust import audit
from dic.trust.database import TrustDatabase


def _fill(db: TrustDatabase, n: int = 5) -> None:
    for i in range(n):
        audit.append(db, f"system-{i}", "source", "register", "his@site-a", "allowed", {"records": i})


def test_an_untouched_chain_verifies(trust_db: TrustDatabase) -> None:
    _fill(trust_db)
    result = audit.verify(trust_db)
    assert (result.entries, result.intact, result.first_broken) == (5, True, None)
    first, second = audit.entries(trust_db)[:2]
    assert first.prev_hash == audit.GENESIS and second.prev_hash == first.hash


def test_the_database_refuses_updates_and_deletes(trust_db: TrustDatabase) -> None:
    _fill(trust_db, 2)
    for statement in ("UPDATE audit_entry SET outcome = 'denied'", "DELETE FROM audit_entry"):
        with pytest.raises(Exception, match="append-only"):
            trust_db.execute(statement)
    assert audit.verify(trust_db).entries == 2


def _behind_the_triggers_back(db: TrustDatabase, statement: str) -> None:
    """What an administrator with file or superuser access could still do."""
    if db.is_postgres:
        db.execute("ALTER TABLE audit_entry DISABLE TRIGGER audit_entry_append_only")
        db.execute(statement)
        db.execute("ALTER TABLE audit_entry ENABLE TRIGGER audit_entry_append_only")
    else:
        raw = sqlite3.connect(db.url)
        raw.execute("DROP TRIGGER audit_entry_no_update")
        raw.execute("DROP TRIGGER audit_entry_no_delete")
        raw.execute(statement)
        raw.commit()
        raw.close()


@pytest.mark.parametrize(("statement", "broken", "reason"), [
    ("UPDATE audit_entry SET outcome = 'denied' WHERE seq = 3", 3, "content does not match"),
    ("DELETE FROM audit_entry WHERE seq = 2", 2, "missing"),
    ("UPDATE audit_entry SET detail = '{}', hash = 'f00' WHERE seq = 4", 4, "content does not match"),
])
def test_tampering_is_found(trust_db: TrustDatabase, statement: str, broken: int, reason: str) -> None:
    _fill(trust_db)
    _behind_the_triggers_back(trust_db, statement)
    result = audit.verify(trust_db)
    assert (result.intact, result.first_broken) == (False, broken)
    assert reason in result.reason

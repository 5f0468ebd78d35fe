"""A trust-center database on SQLite and on PostgreSQL, for the tests that must hold on both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dic.trust.database import TrustDatabase


@pytest.fixture(params=["sqlite", "postgres"])
def trust_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_database_url")
    return str(tmp_path / "trust.sqlite")


@pytest.fixture
def trust_db(trust_db_url: str) -> Iterator[TrustDatabase]:
    db = TrustDatabase(trust_db_url)
    yield db
    db.close()

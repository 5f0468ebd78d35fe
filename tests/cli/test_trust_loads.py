"""The DIC side of the trust center: consent withdrawals with the stored data they concern, and
merges at the trust center re-attributing stored data (`dic sync`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from dic.trust import Caller, TrustCenter

STAFF = Caller("tester (staff)", "staff")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One site's HIS export (120 patients) loaded through the embedded trust center."""
    from dic.cli.trust_link import load_through_trust, trust_link
    from dic.repository import init_repository, open_repository
    from dic.synth import write_world

    folder = tmp_path_factory.mktemp("trust-loads")
    write_world(folder / "world", sites=1, patients=120, seed=21, formats=["his-fhir"])
    init_repository(folder / "repo")
    db = open_repository(folder / "repo")
    try:
        with trust_link(folder / "repo", "his@site-a") as link:
            load_through_trust(db, folder / "repo", link, [folder / "world" / "site-a" / "his-fhir"], "his@site-a")
    finally:
        db.close()
    return folder


def test_withdrawals_list_every_stored_resource_of_the_person(loaded: Path, dic: Callable) -> None:
    consents = [orjson.loads(line) for line in (loaded / "world" / "site-a" / "his-fhir" / "Consent.ndjson").open()]
    withdrawn = {c["patient"]["reference"] for c in consents if c["id"].endswith("-consent-withdrawal")}
    assert withdrawn, "the test world plants withdrawals"
    rows = orjson.loads(dic("--repo", str(loaded / "repo"), "--json", "withdrawals", "--as-of", "2030-01-01").stdout)
    assert len(rows) == len(withdrawn)
    listed = orjson.loads(dic("--repo", str(loaded / "repo"), "--json", "withdrawals", "--as-of", "2030-01-01",
                              "--ids").stdout)
    for row in rows:
        mine = [r["resource"] for r in listed if r["pseudonym"] == row["pseudonym"]]
        assert len(mine) == row["resources"] > 1 and f"Patient/{row['pseudonym']}" in mine
        assert any(r.startswith("Consent/") for r in mine)
    before = orjson.loads(dic("--repo", str(loaded / "repo"), "--json", "withdrawals", "--as-of", "2010-01-01").stdout)
    assert before == []  # nobody had withdrawn back then


def test_a_merge_at_the_trust_center_reaches_the_stored_data(loaded: Path, dic: Callable) -> None:
    repo = loaded / "repo"
    center = TrustCenter.open(loaded / "repo-trust")
    try:
        people = sorted({pid for _, _, pid in center.assignments(STAFF)})[:2]
        pseudonyms = [_pseudonym(center, pid) for pid in people]
        center.merge(STAFF, pseudonyms[0], pseudonyms[1])
    finally:
        center.close()
    from dic.repository import open_repository, resources_about

    def about() -> dict[str, list]:
        db = open_repository(repo, read_only=True)
        try:
            return resources_about(db, pseudonyms)
        finally:
            db.close()

    before = about()
    assert len(before[pseudonyms[0]]) > 1
    counted = orjson.loads(dic("--repo", str(repo), "--json", "sync").stdout)
    assert counted == {"applied": 1}
    assert orjson.loads(dic("--repo", str(repo), "--json", "sync").stdout) == {"applied": 0}
    after = about()
    assert after[pseudonyms[0]] == []  # everything re-attributed, the old Patient a tombstone
    moved = {r for r in before[pseudonyms[0]] if r[0] != "Patient"}
    assert moved <= set(after[pseudonyms[1]]) and len(after[pseudonyms[1]]) == len(before[pseudonyms[1]]) + len(moved)
    dic("--repo", str(repo), "views", "refresh")
    rows = orjson.loads(dic("--repo", str(repo), "sql", "SELECT patient_key FROM condition", "--format", "json").stdout)
    keys = {r["patient_key"] for r in rows}
    assert f"Patient/{pseudonyms[0]}" not in keys
    patients = orjson.loads(dic("--repo", str(repo), "sql", "SELECT id FROM patient", "--format", "json").stdout)
    assert pseudonyms[0] not in {p["id"] for p in patients} and pseudonyms[1] in {p["id"] for p in patients}


def _pseudonym(center: TrustCenter, pid: str) -> str:
    return center.db.scalar("SELECT pseudonym FROM pseudonym WHERE domain = 'DIC' AND pid = ?", (pid,))

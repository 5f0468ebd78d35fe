"""`dic trust` as trust-center staff run it: keys, projects, review, persons, consent, audit,
key rotation and the HTTP service; exit codes and JSON output like every other command."""

from __future__ import annotations

import getpass
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from dic.trust.access import Caller
from dic.trust.center import TrustCenter
from dic.trust.client import HttpTrust
from dic.trust.consent import POLICY_SYSTEM, purposes

HIS = Caller("his@site-a", "source")
LAB = Caller("lab@site-a", "source")
DIC = Caller("dic@site-a", "dic")
STAFF_ACTOR = f"{getpass.getuser()} (staff)"
JUERGEN = {"given_names": "Jürgen", "family_name": "Müller", "birth_date": "1961-04-12", "sex": "male",
           "street": "Hauptstraße 5", "postal_code": "04109", "city": "Leipzig", "insurance_number": "A123456789"}
JOERG = {"given_names": "Jörg", "family_name": "Müller", "birth_date": "1961-04-12", "sex": "male"}
ANNA = {"given_names": "Anna", "family_name": "Schmidt", "birth_date": "1980-01-01", "sex": "female",
        "insurance_number": "B987654321"}

Dic = Callable[..., Any]  # the `dic` fixture (conftest's CliResult: returncode, stdout, stderr)


def consent(consent_id: str, pseudonym: str, day: str, kind: str, end: str | None) -> dict[str, Any]:
    """An MII Broad Consent (shaped as dic.synth writes them) with one provision per MDAT code."""
    period = {"start": day, **({"end": end} if end else {})}
    return {"resourceType": "Consent", "id": consent_id, "status": "active", "dateTime": f"{day}T10:00:00+01:00",
            "patient": {"reference": f"Patient/{pseudonym}"},
            "provision": {"type": "deny", "provision": [
                {"type": kind, "period": period, "code": [{"coding": [{"system": POLICY_SYSTEM, "code": code}]}]}
                for code in purposes()["research-medical-data"].codes]}}


@pytest.fixture
def trust(tmp_path: Path) -> dict[str, Any]:
    """A trust-center folder with three source records: a person, a possible match of them
    (one review item), and another person who later withdrew consent."""
    folder = tmp_path / "trust-center"
    center = TrustCenter.open(folder)
    try:
        (juergen,) = center.register(HIS, [("h-1", JUERGEN)])
        (joerg,) = center.register(LAB, [("l-1", JOERG)])
        (anna,) = center.register(HIS, [("h-2", ANNA)])
        center.record_consents(DIC, [consent("c-1", anna.pseudonym, "2019-03-01", "permit", "2049-02-28"),
                                     consent("c-2", anna.pseudonym, "2022-06-15", "deny", None)])
    finally:
        center.close()
    assert (juergen.outcome, joerg.outcome) == ("new", "possible-match")
    return {"folder": str(folder), "juergen": juergen, "joerg": joerg, "anna": anna}


def as_json(result: Any) -> Any:
    return orjson.loads(result.stdout)


def test_trust_help_lists_the_commands(dic: Dic) -> None:
    text = dic("trust", "--help").stdout
    for command in ("serve", "keys", "project", "review", "reidentify", "merge", "split", "consent", "audit",
                    "rotate-key"):
        assert command in text


def test_keys_issue_list_revoke(dic: Dic, trust: dict) -> None:
    folder = trust["folder"]
    issued = as_json(dic("--json", "trust", "--trust", folder, "keys", "issue", "--system", "his@site-a",
                         "--role", "source"))
    assert issued["key"].startswith("dic_") and issued["role"] == "source"
    plain = dic("trust", "--trust", folder, "keys", "issue", "--system", "study@uni", "--role", "project",
                "--project", "heart-study").stdout
    assert plain.splitlines()[0].startswith("dic_")
    listed = as_json(dic("--json", "trust", "--trust", folder, "keys", "list"))
    assert [(k["system"], k["role"], k["project"], k["revoked_at"]) for k in listed] == [
        ("his@site-a", "source", None, None), ("study@uni", "project", "heart-study", None)]
    key_id = issued["key"].split("_")[1]
    assert listed[0]["key_id"] == key_id
    assert issued["key"].split("_", 2)[2] not in dic("trust", "--trust", folder, "keys", "list").stdout
    dic("trust", "--trust", folder, "keys", "revoke", key_id)
    assert as_json(dic("--json", "trust", "--trust", folder, "keys", "list"))[0]["revoked_at"] is not None
    again = dic("trust", "--trust", folder, "keys", "revoke", key_id, check=False)
    assert again.returncode == 2 and "no active API key" in again.stderr
    wrong_role = dic("trust", "--trust", folder, "keys", "issue", "--system", "x", "--role", "root", check=False)
    assert wrong_role.returncode == 2 and "unknown role" in wrong_role.stderr
    no_project = dic("trust", "--trust", folder, "keys", "issue", "--system", "x", "--role", "project", check=False)
    assert no_project.returncode == 2 and "--project" in no_project.stderr
    missing = dic("trust", "--trust", folder, "keys", "issue", "--role", "source", check=False)
    assert missing.returncode != 0 and "system" in missing.stderr  # 2 once app.py knows typer's click


def test_project_add(dic: Dic, trust: dict) -> None:
    added = as_json(dic("--json", "trust", "--trust", trust["folder"], "project", "add", "heart-study",
                        "--purpose", "research-medical-data"))
    assert added == {"project": "heart-study", "purpose": "research-medical-data", "domain": "P1"}
    second = dic("trust", "--trust", trust["folder"], "project", "add", "lung-study", "--purpose", "recontact")
    assert "P2" in second.stdout
    bad = dic("trust", "--trust", trust["folder"], "project", "add", "x", "--purpose", "marketing", check=False)
    assert bad.returncode == 2 and "unknown purpose" in bad.stderr


def test_review_list_and_resolve_same_merges(dic: Dic, trust: dict) -> None:
    folder = trust["folder"]
    table = dic("trust", "--trust", folder, "review", "list").stdout
    assert "Jörg" in table and "Jürgen" in table and "lab@site-a/l-1" in table
    (item,) = as_json(dic("--json", "trust", "--trust", folder, "review", "list"))
    assert 0.6 <= item["probability"] < 0.95 and item["candidate"]["records"][0]["source_id"] == "h-1"
    undecided = dic("trust", "--trust", folder, "review", "resolve", str(item["review_id"]), check=False)
    assert undecided.returncode == 2 and "--same or --different" in undecided.stderr
    resolved = as_json(dic("--json", "trust", "--trust", folder, "review", "resolve", str(item["review_id"]),
                           "--same"))
    change = resolved["change"]
    assert (change["kind"], change["from_pseudonym"], change["to_pseudonym"], change["records"]) == (
        "merge", trust["joerg"].pseudonym, trust["juergen"].pseudonym, [trust["joerg"].record])
    assert as_json(dic("--json", "trust", "--trust", folder, "review", "list")) == []
    assert len(as_json(dic("--json", "trust", "--trust", folder, "review", "list", "--status", "same"))) == 1
    again = dic("trust", "--trust", folder, "review", "resolve", str(item["review_id"]), "--different", check=False)
    assert again.returncode == 2 and "no open review item" in again.stderr


def test_review_resolve_different_changes_nobody(dic: Dic, trust: dict) -> None:
    result = as_json(dic("--json", "trust", "--trust", trust["folder"], "review", "resolve", "1", "--different"))
    assert result == {"change": None}


def test_reidentify_merge_and_split(dic: Dic, trust: dict) -> None:
    folder, juergen, joerg = trust["folder"], trust["juergen"], trust["joerg"]
    shown = dic("trust", "--trust", folder, "reidentify", juergen.pseudonym).stdout
    assert "his@site-a" in shown and "h-1" in shown and "Jürgen" in shown and juergen.pseudonym in shown
    merged = as_json(dic("--json", "trust", "--trust", folder, "merge", joerg.pseudonym, juergen.pseudonym))["change"]
    assert (merged["kind"], merged["records"]) == ("merge", [joerg.record])
    found = as_json(dic("--json", "trust", "--trust", folder, "reidentify", juergen.pseudonym))
    assert sorted(r["source_id"] for r in found["records"]) == ["h-1", "l-1"]
    assert "nothing changed" in dic("trust", "--trust", folder, "merge", joerg.pseudonym, juergen.pseudonym).stdout
    split = as_json(dic("--json", "trust", "--trust", folder, "split", juergen.pseudonym, joerg.record))["change"]
    assert (split["kind"], split["from_pseudonym"], split["records"]) == ("split", juergen.pseudonym, [joerg.record])
    moved = as_json(dic("--json", "trust", "--trust", folder, "reidentify", split["to_pseudonym"]))
    assert [r["source_id"] for r in moved["records"]] == ["l-1"]
    bad = dic("trust", "--trust", folder, "reidentify", "DIC-0000000000000000-1", check=False)
    assert bad.returncode == 2 and "check character" in bad.stderr
    unknown = dic("trust", "--trust", folder, "split", juergen.pseudonym, "REC-NOTMINE", check=False)
    assert unknown.returncode == 2


def test_consent_withdrawals_as_of(dic: Dic, trust: dict) -> None:
    folder, anna = trust["folder"], trust["anna"]
    before = as_json(dic("--json", "trust", "--trust", folder, "consent", "withdrawals", "--as-of", "2022-06-14"))
    assert before == []
    after = as_json(dic("--json", "trust", "--trust", folder, "consent", "withdrawals", "--as-of", "2023-01-01"))
    assert after == [{"pseudonym": anna.pseudonym, "since": "2022-06-15"}]
    assert anna.pseudonym in dic("trust", "--trust", folder, "consent", "withdrawals").stdout
    bad = dic("trust", "--trust", folder, "consent", "withdrawals", "--as-of", "15.06.2022", check=False)
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr


def test_rotate_key_keeps_pseudonyms(dic: Dic, trust: dict) -> None:
    folder = trust["folder"]
    assert as_json(dic("--json", "trust", "--trust", folder, "rotate-key")) == {"key_version": 2}
    assert "version 3" in dic("trust", "--trust", folder, "rotate-key").stdout
    found = as_json(dic("--json", "trust", "--trust", folder, "reidentify", trust["anna"].pseudonym))
    assert found["records"][0]["source_id"] == "h-2"


def test_audit_show_and_verify_and_a_broken_chain_exits_1(dic: Dic, trust: dict) -> None:
    folder = trust["folder"]
    first = as_json(dic("--json", "trust", "--trust", folder, "audit", "show"))
    assert [e["action"] for e in first] == ["register", "register", "register", "record-consent"]
    dic("trust", "--trust", folder, "reidentify", trust["anna"].pseudonym)
    newer = as_json(dic("--json", "trust", "--trust", folder, "audit", "show", "--since", str(first[-1]["seq"])))
    assert [(e["actor"], e["role"], e["action"], e["subject"]) for e in newer] == [
        (STAFF_ACTOR, "staff", "audit-read", "-"), (STAFF_ACTOR, "staff", "reidentify", trust["anna"].pseudonym)]
    intact = dic("trust", "--trust", folder, "audit", "verify")
    assert "intact: 7 entries" in intact.stdout
    assert as_json(dic("--json", "trust", "--trust", folder, "audit", "verify"))["intact"] is True

    raw = sqlite3.connect(Path(folder) / "trust-center.sqlite")  # an administrator behind the triggers' back
    raw.execute("DROP TRIGGER audit_entry_no_update")
    raw.execute("UPDATE audit_entry SET outcome = 'denied' WHERE seq = 5")
    raw.commit()
    raw.close()
    broken = dic("trust", "--trust", folder, "audit", "verify", check=False)
    assert broken.returncode == 1 and "broken at entry 5" in broken.stdout
    as_data = dic("--json", "trust", "--trust", folder, "audit", "verify", check=False)
    assert as_data.returncode == 1 and as_json(as_data)["first_broken"] == 5


def test_the_trust_env_variable_names_the_folder(dic: Dic, trust: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIC_TRUST", trust["folder"])
    assert as_json(dic("--json", "trust", "review", "list"))[0]["record"]["source_id"] == "l-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http(dic: Dic, trust: dict, tmp_path: Path) -> None:
    folder, port = trust["folder"], free_port()
    key = as_json(dic("--json", "trust", "--trust", folder, "keys", "issue", "--system", "lab@site-b",
                      "--role", "source"))["key"]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "dic", "trust", "--trust", folder, "serve", "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/openapi.json").raise_for_status()
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.2)
        client = HttpTrust(url, key)
        (found,) = client.register([("b-7", {**JUERGEN, "family_name": "MUELLER"})])
        client.close()
        assert (found.outcome, found.pseudonym) == ("match", trust["juergen"].pseudonym)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    served = (tmp_path / "serve.log").read_text()
    assert "POST /v1/patients" in served and "MUELLER" not in served and "1961-04-12" not in served


def test_cross_site_linkage_from_the_command_line(tmp_path: Path, dic: Dic) -> None:
    """Two sites' trust centers, a shared secret, a linkage unit: each site learns which of its
    persons the other site has, under a pair number both share, and nothing else."""
    people = {"a": [("a-1", JUERGEN), ("a-2", ANNA)],
              "b": [("b-1", {**JUERGEN, "street": "Hauptstr. 5"}),  # Jürgen at site B too
                    ("b-2", {"given_names": "Ida", "family_name": "Quast", "birth_date": "1944-02-02", "sex": "female"})]}
    pseudonyms = {}
    for side, records in people.items():
        center = TrustCenter.open(tmp_path / f"trust-{side}")
        try:
            pseudonyms[side] = [r.pseudonym for r in center.register(Caller(f"his@site-{side}", "source"), records)]
        finally:
            center.close()
    secret = tmp_path / "shared.secret"
    dic("trust", "linkage-secret", str(secret))
    for side in "ab":
        dic("--json", "trust", "--trust", str(tmp_path / f"trust-{side}"), "export-encodings", "--secret", str(secret),
            "--out", str(tmp_path / f"{side}.parquet"))
    linked = orjson.loads(dic("--json", "trust", "link-exports", str(tmp_path / "a.parquet"),
                              str(tmp_path / "b.parquet"), "--out", str(tmp_path / "links.csv")).stdout)
    assert linked["pairs"] == 1
    answers = {side: orjson.loads(dic("--json", "trust", "--trust", str(tmp_path / f"trust-{side}"), "resolve-links",
                                      str(tmp_path / "links.csv"), "--side", side).stdout) for side in "ab"}
    assert [row["pseudonym"] for row in answers["a"]] == [pseudonyms["a"][0]]
    assert [row["pseudonym"] for row in answers["b"]] == [pseudonyms["b"][0]]
    assert answers["a"][0]["pair"] == answers["b"][0]["pair"]
    exported = (tmp_path / "a.parquet").read_bytes()
    assert b"M\xc3\xbcller" not in exported and b"Anna" not in exported and pseudonyms["a"][0].encode() not in exported

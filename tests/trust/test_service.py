"""The trust center over HTTP: a real uvicorn server on 127.0.0.1 (SQLite and PostgreSQL behind
it). API keys and roles, malformed IDAT refused without a trace in the database, concurrent
source systems registering the same persons, and no IDAT in the server's log or audit table."""

from __future__ import annotations

import io
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from dic.errors import NotAuthenticated, NotAuthorized
from dic.trust.access import revoke_key
from dic.trust.center import TrustCenter
from dic.trust.client import HttpTrust
from dic.trust.registry import Registration
from dic.trust.service import create_app

GIVEN = ["Annegret", "Bernhard", "Claudia", "Dietmar", "Elfriede", "Friedhelm", "Gisela", "Hartmut", "Ingeborg",
         "Joachim", "Karoline", "Lothar", "Marianne", "Norbert", "Ottilie", "Reinhard", "Sieglinde", "Theodor",
         "Ursula", "Volkmar"]
FAMILY = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz",
          "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann",
          "Schwarz", "Zimmermann"]
ENDPOINTS = {
    "/v1/patients", "/v1/patients/lookup", "/v1/patients/merge", "/v1/consents", "/v1/may-use", "/v1/withdrawals", "/v1/projects",
    "/v1/projects/{project}/pseudonyms", "/v1/projects/{project}/members", "/v1/changes", "/v1/review", "/v1/review/{review_id}",
    "/v1/persons/merge", "/v1/persons/split", "/v1/reidentify/{pseudonym}", "/v1/audit/verify", "/v1/keys/rotate",
}


def persons(n: int, seed: int = 5) -> list[dict[str, Any]]:
    """n distinct persons (no two share given and family name, birth date or KVNR)."""
    rand = random.Random(seed)
    names = rand.sample([(g, f) for g in GIVEN for f in FAMILY], n)
    born = rand.sample(range(27_000), n)
    kvnr = rand.sample(range(10**8, 10**9), n)
    return [{"given_names": g, "family_name": f, "birth_date": (date(1930, 1, 1) + timedelta(days=b)).isoformat(),
             "sex": "female" if GIVEN.index(g) % 2 == 0 else "male", "postal_code": f"{rand.randrange(1000, 99999):05d}",
             "insurance_number": f"{chr(65 + i % 26)}{k:09d}"}
            for i, ((g, f), b, k) in enumerate(zip(names, born, kvnr, strict=True))]


# ---------------------------------------------------------------- a real server in a thread
class _ThreadServer(uvicorn.Server):
    """uvicorn off the main thread (it installs no signal handlers there), as httpx's tests do."""

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not self.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the trust-center test server did not start")
            time.sleep(0.01)
        return thread


@dataclass
class Service:
    url: str
    center: TrustCenter
    log: io.StringIO

    def key(self, system: str, role: str, project: str | None = None) -> str:
        return self.center.issue_key(system, role, project)

    def client(self, key: str) -> HttpTrust:
        return HttpTrust(self.url, key)

    def count(self, table: str) -> int:
        return int(self.center.db.scalar(f"SELECT count(*) FROM {table}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(trust_db_url: str, tmp_path: Path) -> Iterator[Service]:
    center = TrustCenter.open(tmp_path / "trust-center", trust_db_url)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # everything the server (and anything under it) says
    port = _free_port()
    # log_config=None: uvicorn's loggers propagate to the root logger instead of printing
    server = _ThreadServer(uvicorn.Config(create_app(center), host="127.0.0.1", port=port, log_config=None,
                                          log_level="debug", access_log=True))
    thread = server.serve_in_thread()
    try:
        yield Service(f"http://127.0.0.1:{port}", center, log)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        root.removeHandler(handler)
        root.setLevel(level)
        center.close()


def body(records: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    return {"records": [{"source_id": s, "idat": i} for s, i in records]}


# ---------------------------------------------------------------- the API and its keys
def test_openapi_lists_every_endpoint_and_the_bearer_scheme(service: Service) -> None:
    schema = httpx.get(f"{service.url}/openapi.json").json()
    assert set(schema["paths"]) == ENDPOINTS
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/v1/patients"]["post"]["security"] == [{"HTTPBearer": []}]


def test_missing_unknown_and_revoked_keys_are_401(service: Service) -> None:
    lookup = f"{service.url}/v1/patients/lookup"
    missing = httpx.post(lookup, json={"source_ids": []})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    for wrong in ("dic_000000000000_nothing", "not-a-key", "Basic abc"):
        answer = httpx.post(lookup, json={"source_ids": []}, headers={"Authorization": f"Bearer {wrong}"})
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", wrong
    key = service.key("his@site-a", "source")
    client = service.client(key)
    assert client.lookup(["h-1"]) == {}
    revoke_key(service.center.db, key.split("_")[1])
    with pytest.raises(NotAuthenticated, match="revoked"):
        client.lookup(["h-1"])
    client.close()
    refused = service.center.db.rows("SELECT actor, action, outcome FROM audit_entry WHERE action = 'authenticate'")
    assert refused == [("anonymous", "authenticate", "unauthenticated")] * 5


def test_a_role_may_do_its_own_calls_only(service: Service) -> None:
    source, dic = service.key("his@site-a", "source"), service.key("dic@site-a", "dic")
    (found,) = service.client(source).register([("h-1", persons(1)[0])])
    assert isinstance(found, Registration) and found.outcome == "new"
    reidentify = httpx.get(f"{service.url}/v1/reidentify/{found.pseudonym}",
                           headers={"Authorization": f"Bearer {source}"})
    assert reidentify.status_code == 403 and "may not reidentify" in reidentify.json()["detail"]
    review = httpx.get(f"{service.url}/v1/review", headers={"Authorization": f"Bearer {dic}"})
    assert review.status_code == 403
    register = httpx.post(f"{service.url}/v1/patients", json=body([("x", persons(1)[0])]),
                          headers={"Authorization": f"Bearer {dic}"})
    assert register.status_code == 403
    with pytest.raises(NotAuthorized):
        service.client(source).changes()
    assert service.client(dic).changes() == []
    denied = service.center.db.rows("SELECT actor, action FROM audit_entry WHERE outcome = 'denied' ORDER BY seq")
    assert denied == [("his@site-a", "reidentify"), ("dic@site-a", "review-list"), ("dic@site-a", "register"),
                      ("his@site-a", "changes")]
    staff = service.key("alice (staff)", "staff")
    answer = httpx.get(f"{service.url}/v1/reidentify/{found.pseudonym}", headers={"Authorization": f"Bearer {staff}"})
    assert answer.status_code == 200 and answer.json()["records"][0]["source_id"] == "h-1"


# ---------------------------------------------------------------- malformed IDAT
@pytest.mark.parametrize(("change", "field"), [
    ({"birth_date": "1961-02-30"}, "birth_date"),
    ({"birth_date": "2999-01-01"}, "birth_date"),
    ({"insurance_number": "12345678"}, "insurance_number"),
    ({"nickname": "Jupp"}, "nickname"),
    ({"given_names": None, "birth_date": None, "insurance_number": None}, "idat"),  # a family name alone
], ids=["impossible-date", "future-date", "kvnr-shape", "unknown-field", "too-little"])
def test_malformed_idat_is_422_naming_record_and_field_and_writes_nothing(
        service: Service, change: dict[str, Any], field: str) -> None:
    key = service.key("his@site-a", "source")
    good = persons(3)
    service.client(key).register([("h-0", good[0])])
    tables = ("source_record", "person", "pseudonym", "blocking_key")
    before = {t: service.count(t) for t in tables}
    bad = {k: v for k, v in {**good[2], **change}.items() if v is not None}
    answer = httpx.post(f"{service.url}/v1/patients", json=body([("h-1", good[1]), ("h-2", bad)]),
                        headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 422
    (problem,) = answer.json()["problems"]
    assert (problem["index"], problem["field"]) == (1, field)
    assert {t: service.count(t) for t in tables} == before
    last = service.center.db.row("SELECT action, outcome, detail FROM audit_entry ORDER BY seq DESC LIMIT 1")
    assert last[:2] == ("register", "failed") and orjson.loads(last[2]) == {"records": 2, "error": "InvalidIdat"}
    trace = service.log.getvalue() + orjson.dumps(service.center.db.rows("SELECT * FROM audit_entry")).decode()
    identifying = ("given_names", "family_name", "birth_date", "insurance_number", "nickname")
    assert not [v for r in (good[1], bad) for k, v in r.items() if k in identifying and v in trace]


def test_the_client_refuses_a_bad_record_on_its_own_and_registers_the_others(service: Service) -> None:
    good = persons(4)
    records = [("h-0", good[0]), ("h-1", {**good[1], "insurance_number": "X12"}), ("h-2", good[2]),
               ("h-3", {"family_name": "Meier"}), ("h-4", good[3])]
    found = service.client(service.key("his@site-a", "source")).register(records)
    assert [type(f).__name__ for f in found] == ["Registration", "str", "Registration", "str", "Registration"]
    assert "insurance number" in found[1] and "too little to identify" in found[3]
    assert {f.outcome for f in found if isinstance(f, Registration)} == {"new"}
    assert service.count("source_record") == 3


# ---------------------------------------------------------------- concurrent source systems
SOURCES, PERSONS, CHUNK = 8, 25, 5


def test_concurrent_sources_registering_the_same_persons_make_one_pid_each(service: Service) -> None:
    people = persons(PERSONS)
    keys = [service.key(f"source-{s}@site-a", "source") for s in range(SOURCES)]
    start = threading.Barrier(SOURCES)
    results: dict[int, list[Registration | str]] = {}
    failures: list[BaseException] = []

    def run(s: int) -> None:
        spelled = [{**p, "family_name": p["family_name"].upper()} if s % 2 else p for p in people]  # ASCII systems
        client = service.client(keys[s])
        found: list[Registration | str] = []
        try:
            start.wait()
            for at in range(0, PERSONS, CHUNK):
                found += client.register([(f"s{s}-{i}", spelled[i]) for i in range(at, at + CHUNK)])
            results[s] = found
        except BaseException as error:  # noqa: BLE001  (reported by the main thread)
            failures.append(error)
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(s,)) for s in range(SOURCES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    by_person = [{results[s][i].pseudonym for s in range(SOURCES)} for i in range(PERSONS)]
    assert all(len(one) == 1 for one in by_person), "every source got the same pseudonym for a person"
    assert len(set.union(*by_person)) == PERSONS
    outcomes = [r.outcome for found in results.values() for r in found]
    assert (outcomes.count("new"), outcomes.count("match")) == (PERSONS, PERSONS * (SOURCES - 1))
    db = service.center.db
    assert db.scalar("SELECT count(DISTINCT pid) FROM source_record") == PERSONS
    assert db.scalar("SELECT count(*) FROM person") == PERSONS
    assert db.scalar("SELECT count(*) FROM pseudonym WHERE domain = 'DIC'") == PERSONS
    assert db.scalar("SELECT count(*) FROM source_record") == PERSONS * SOURCES
    assert service.center.verify_audit(service.center.authenticate(service.key("alice (staff)", "staff"))).intact

    # nothing the sources sent about a person is in the server's log or the audit table
    sent = {v for p in people for k, v in p.items() if k in ("given_names", "family_name", "birth_date",
                                                               "insurance_number")}
    sent |= {f"s{s}-{i}" for s in range(SOURCES) for i in range(PERSONS)}  # source patient ids are IDAT too
    log = service.log.getvalue()
    assert "POST /v1/patients" in log, "the log was captured"
    audit = orjson.dumps(db.rows("SELECT * FROM audit_entry")).decode()
    for text, where in ((log, "server log"), (audit, "audit table")):
        leaked = sorted(v for v in sent if re.search(rf"\b{re.escape(v)}\b", text, re.IGNORECASE))
        assert not leaked, f"{where} contains IDAT: {leaked[:5]}"

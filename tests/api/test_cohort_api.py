"""Cohort answers end to end on one site's data loaded through the trust center: `dic cohort`
count / members / characterize / explain, and the same over the research API (a real uvicorn on
127.0.0.1): the raw count only in the query log, released counts within the noise bound and
stable, member lists only for the approved project and only of consenting members, 401/403/422."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from dic.trust import Caller, TrustCenter

STAFF = Caller("tester (staff)", "staff")
DIC = Caller("dic", "dic")
REFERENCE = date(2025, 12, 31)
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
HYPERTENSION = {
    "version": "2", "display": "hypertension",
    "inclusionCriteria": [[{"context": {"code": "Diagnose", "system": "fdpg.mii.cds", "display": "Diagnose"},
                            "termCodes": [{"code": "I10", "system": ICD, "display": "Essentielle Hypertonie"}]}]],
}


def truth_patients(world: Path, prefix: str) -> set[str]:
    """Source patient ids with a Condition coded `prefix…` in the raw HIS export (the independent count)."""
    found = set()
    with (world / "site-a" / "his-fhir" / "Condition.ndjson").open() as lines:
        for line in lines:
            condition = orjson.loads(line)
            if any(c["code"].startswith(prefix) for c in condition["code"]["coding"] if c["system"] == ICD):
                found.add(condition["subject"]["reference"])
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dic.cli.trust_link import load_through_trust, trust_link
    from dic.repository import init_repository, open_repository
    from dic.synth import write_world
    from dic.views import load_catalog, refresh_views

    folder = tmp_path_factory.mktemp("cohort-api")
    write_world(folder / "world", sites=1, patients=300, seed=11, formats=["his-fhir"])
    init_repository(folder / "repo")
    db = open_repository(folder / "repo")
    try:
        with trust_link(folder / "repo", "his@site-a") as link:
            load_through_trust(db, folder / "repo", link, [folder / "world" / "site-a" / "his-fhir"], "his@site-a")
        refresh_views(db, load_catalog())
    finally:
        db.close()
    center = TrustCenter.open(folder / "repo-trust")
    try:
        center.add_project(STAFF, "bp-study", "research-medical-data")
        center.add_project(STAFF, "other-study", "research-medical-data")
    finally:
        center.close()
    (folder / "hypertension.json").write_bytes(orjson.dumps(HYPERTENSION))
    return folder


def logged(repo: Path) -> list[dict[str, Any]]:
    from dic.privacy import query_log
    from dic.repository import open_repository

    db = open_repository(repo, read_only=True)
    try:
        return [vars(e) if not isinstance(e, dict) else e for e in query_log.entries(db)]
    finally:
        db.close()


def test_count_is_released_within_the_noise_bound_and_the_raw_count_only_logged(site: Path, dic: Callable) -> None:
    from dic.privacy import site_rules

    rules = site_rules(site / "repo")
    truth = len(truth_patients(site / "world", "I10"))
    assert truth > 3 * rules.threshold, "the world has enough hypertension for a released count"
    repo = ["--repo", str(site / "repo"), "--json"]
    args = ["cohort", "count", str(site / "hypertension.json"), "--reference-date", REFERENCE.isoformat()]
    first = orjson.loads(dic(*repo, *args, "-b", "sex", "-b", "age").stdout)
    assert abs(int(first["count"]) - truth) <= rules.noise.max
    assert orjson.loads(dic(*repo, *args, "-b", "sex", "-b", "age").stdout) == first, "same question, same answer"
    entry = logged(site / "repo")[-1]
    assert (entry["action"], entry["raw_count"], entry["released"]) == ("count", truth, first["count"])
    sexes = {tuple(c["labels"]): c for c in first["breakdowns"]["sex"]}
    assert set(sexes) <= {("female",), ("male",), ("other",), ("unknown",)}
    # a rephrased query (another display, the code twice) selects the same members: the same noise
    rephrased = {**HYPERTENSION, "display": "essential hypertension"}
    rephrased["inclusionCriteria"][0][0] = {**HYPERTENSION["inclusionCriteria"][0][0],
                                            "termCodes": HYPERTENSION["inclusionCriteria"][0][0]["termCodes"] * 2}
    (site / "rephrased.json").write_bytes(orjson.dumps(rephrased))
    again = orjson.loads(dic(*repo, "cohort", "count", str(site / "rephrased.json"), "--reference-date",
                             REFERENCE.isoformat()).stdout)
    assert again["count"] == first["count"]


def test_members_are_project_pseudonyms_of_consenting_members_only(site: Path, dic: Callable) -> None:
    from dic.cohort import parse_ccdl
    from dic.cohort.feasibility import cohort_rows
    from dic.repository import open_repository

    db = open_repository(site / "repo", read_only=True)
    try:
        rows = cohort_rows(db, parse_ccdl(HYPERTENSION), REFERENCE)
    finally:
        db.close()
    center = TrustCenter.open(site / "repo-trust")
    try:
        # the independent path: the trust center asked person by person about the data of the index day
        allowed = [r.patient_key.removeprefix("Patient/") for r in rows
                   if center.may_use(DIC, r.patient_key.removeprefix("Patient/"), "research-medical-data",
                                     r.index_date or REFERENCE)]
        expected = set(center.project_pseudonyms(DIC, "bp-study", allowed).values())
    finally:
        center.close()
    out = orjson.loads(dic("--repo", str(site / "repo"), "--json", "cohort", "members", str(site / "hypertension.json"),
                           "--project", "bp-study", "--reference-date", REFERENCE.isoformat()).stdout)
    members = out["members"]
    assert set(members) == expected and 0 < len(members) < len(rows), "consent filters; some members have none"
    assert not set(members) & {r.patient_key.removeprefix("Patient/") for r in rows}, "project, not DIC pseudonyms"
    other = orjson.loads(dic("--repo", str(site / "repo"), "--json", "cohort", "members",
                             str(site / "hypertension.json"), "--project", "other-study", "--reference-date",
                             REFERENCE.isoformat()).stdout)["members"]
    assert len(other) == len(members) and not set(other) & set(members), "unjoinable across projects"
    failed = dic("--repo", str(site / "repo"), "cohort", "members", str(site / "hypertension.json"), "--project",
                 "not-approved", check=False)
    assert failed.returncode != 0 and "no approved project" in failed.stdout + failed.stderr


def test_characterize_and_explain(site: Path, dic: Callable) -> None:
    repo = ["--repo", str(site / "repo"), "--json"]
    table = orjson.loads(dic(*repo, "cohort", "characterize", str(site / "hypertension.json"), "--reference-date",
                             REFERENCE.isoformat()).stdout)
    conditions = {row["label"]: row for row in table["conditions"]}
    assert "I10" in conditions, "every member has I10 on or before its index day"
    assert table["median_age"] is not None and 18 <= table["median_age"] <= 100
    assert all(set(row) >= {"label", "patients"} for rows in (table["procedures"], table["labs"]) for row in rows)
    explained = orjson.loads(dic(*repo, "cohort", "explain", str(site / "hypertension.json")).stdout)
    assert "SELECT" in explained["sql"].upper()
    assert any("I10" in code for codes in explained["code_lists"].values() for code in codes)
    assert "Essentielle" not in explained["sql"], "displays are not part of the SQL"


# ---------------------------------------------------------------- the research API over HTTP
class _ThreadServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # off the main thread
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api(site: Path) -> Iterator[tuple[str, dict[str, str]]]:
    from dic.privacy import issue_key

    repo = site / "repo"
    keys = {"portal": issue_key(repo, "fdpg", "portal"), "project": issue_key(repo, "bp", "project", "bp-study")}
    port = _free_port()
    os.environ["DIC_API_REPO"] = str(repo)  # what `dic api serve` sets; the app is built by the same factory
    server = _ThreadServer(uvicorn.Config("dic.api:from_environment", factory=True, host="127.0.0.1", port=port,
                                          log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", keys
    server.should_exit = True
    thread.join(timeout=10)
    os.environ.pop("DIC_API_REPO", None)


def _post(url: str, key: str | None, path: str, body: Any, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}{path}", json=body, params=params, headers=headers, timeout=60)


def test_the_api_answers_by_role(api: tuple[str, dict[str, str]], site: Path, dic: Callable) -> None:
    url, keys = api
    ref = {"reference_date": REFERENCE.isoformat()}
    counted = _post(url, keys["portal"], "/v1/cohort/count", HYPERTENSION, **ref)
    assert counted.status_code == 200
    cli = orjson.loads(dic("--repo", str(site / "repo"), "--json", "cohort", "count", str(site / "hypertension.json"),
                           "--reference-date", REFERENCE.isoformat()).stdout)
    assert counted.json()["count"] == cli["count"], "one answer whichever way it is asked"
    assert _post(url, None, "/v1/cohort/count", HYPERTENSION).status_code == 401
    assert _post(url, "dic_nope_nope", "/v1/cohort/count", HYPERTENSION).status_code == 401
    assert _post(url, keys["portal"], "/v1/cohort/members", HYPERTENSION, project="bp-study").status_code == 403
    assert _post(url, keys["project"], "/v1/cohort/members", HYPERTENSION, project="other-study").status_code == 403
    members = _post(url, keys["project"], "/v1/cohort/members", HYPERTENSION, project="bp-study", **ref)
    assert members.status_code == 200 and members.json()["members"]
    table = _post(url, keys["project"], "/v1/cohort/characterize", HYPERTENSION, **ref)
    assert table.status_code == 200 and table.json()["conditions"]
    broken = {**HYPERTENSION, "inclusionCriteria": [[{"context": HYPERTENSION["inclusionCriteria"][0][0]["context"],
                                                      "termCodes": [{"code": "X99.99", "system": ICD, "display": "x"}]}]]}
    refused = _post(url, keys["portal"], "/v1/cohort/count", broken)
    assert refused.status_code == 422
    assert any(p["path"].startswith("/inclusionCriteria/0/0/termCodes/0") for p in refused.json()["problems"])
    actions = [e["action"] for e in logged(site / "repo")]
    assert {"count", "members", "characterize"} <= set(actions)

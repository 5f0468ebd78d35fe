"""`dic conformance ccdl`: our CCDL cases pass; broken cases fail with the reason, also as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import CliResult

CASES = Path(__file__).resolve().parents[1] / "cohort" / "ccdl_cases"


def test_our_ccdl_cases_all_pass(dic: Callable[..., CliResult], tmp_path: Path) -> None:
    done = dic("conformance", "ccdl", str(CASES), cwd=tmp_path)
    lines = done.stdout.splitlines()
    cases = len(list((CASES / "testdata").glob("*-expected.json")))
    assert lines[-1] == f"{cases} passed, 0 failed"
    assert lines[:-1] == [f"PASS {p.name.removesuffix('-expected.json')}"
                          for p in sorted((CASES / "testdata").glob("*-expected.json"))]


def test_broken_cases_fail_as_json_and_exit_1(dic: Callable[..., CliResult], tmp_path: Path) -> None:
    (tmp_path / "testdata").mkdir()
    query = {"version": "3", "inclusionCriteria": [[{"id": "g", "criteria": [[{"type": "now"}]],
                                                     "relativeTimeRestrictions": [{"anchorRef": "nowhere",
                                                                                   "minOffset": "-P1D"}]}]]}
    (tmp_path / "bad-query.json").write_text(json.dumps(query))
    (tmp_path / "testdata" / "bad-query-data.json").write_text(json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "id": "p1"}}]}))
    expected = {"ccdl": "bad-query.json", "referenceDate": "2024-06-15", "includedPatients": ["p1"], "excludedPatients": []}
    (tmp_path / "testdata" / "bad-query-expected.json").write_text(json.dumps(expected))
    (tmp_path / "testdata" / "no-query-expected.json").write_text(json.dumps({**expected, "ccdl": "no-query.json"}))

    done = dic("--json", "conformance", "ccdl", str(tmp_path), cwd=tmp_path, check=False)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["passed"], report["failed"], report["repositories"]) == (0, 2, 0)
    bad, missing = report["cases"]
    assert bad["name"] == "bad-query" and not bad["passed"]
    assert bad["reason"] == "invalid query bad-query.json: 1 problem(s)"
    assert bad["problems"][0].startswith("/inclusionCriteria/0/0/relativeTimeRestrictions/0/anchorRef")
    assert missing == {**missing, "name": "no-query", "passed": False, "reason": "broken case: no-query.json is missing"}

    plain = dic("conformance", "ccdl", str(tmp_path), cwd=tmp_path, check=False)
    lines = plain.stdout.splitlines()
    assert plain.returncode == 1
    assert lines[0] == "FAIL bad-query: invalid query bad-query.json: 1 problem(s)"
    assert lines[1].startswith("  /inclusionCriteria/0/0/relativeTimeRestrictions/0/anchorRef")
    assert lines[-2:] == ["FAIL no-query: broken case: no-query.json is missing", "0 passed, 2 failed"]


def test_an_empty_folder_is_a_usage_error(dic: Callable[..., CliResult], tmp_path: Path) -> None:
    done = dic("conformance", "ccdl", str(tmp_path), cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "no CCDL cases" in " ".join(done.stderr.split())

"""Our CCDL conformance cases (tests/cohort/ccdl_cases) through the runner on PostgreSQL (DuckDB: the CLI test);
the runner's verdicts on wrong and broken cases; the case files against their builder and against
the independent reference evaluator."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from datetime import date
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from cohort_reference import evaluate

from dic.cohort import run_cases
from dic.cohort.conformance import _packs
from dic.engines import Engine
from dic.errors import ConfigError, InputError

CASES = Path(__file__).parent / "ccdl_cases"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_cases", CASES / "build_cases.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_cases"] = module  # dataclasses and the case modules look it up by name
    spec.loader.exec_module(module)
    return module


def _case_files(name: str) -> tuple[dict, dict, dict]:
    expected = json.loads((CASES / "testdata" / f"{name}-expected.json").read_text())
    query = json.loads((CASES / expected["ccdl"]).read_text())
    bundle = json.loads((CASES / "testdata" / f"{name}-data.json").read_text())
    return query, bundle, expected


def _copy_case(name: str, folder: Path, as_name: str | None = None) -> dict:
    """Copy one case into `folder` (renamed to `as_name`); returns its expected document to edit."""
    as_name = as_name or name
    (folder / "testdata").mkdir(exist_ok=True)
    query, bundle, expected = _case_files(name)
    (folder / f"{as_name}.json").write_text(json.dumps(query))
    (folder / "testdata" / f"{as_name}-data.json").write_text(json.dumps(bundle))
    expected["ccdl"] = f"{as_name}.json"
    return expected


def _write_expected(folder: Path, name: str, expected: dict) -> None:
    (folder / "testdata" / f"{name}-expected.json").write_text(json.dumps(expected))


def test_the_case_files_are_what_the_builder_writes() -> None:
    builder = _builder()
    wanted = builder.files(builder.all_cases())
    stale = [p.name for p in [*CASES.glob("*.json"), *(CASES / "testdata").glob("*.json")] if p not in wanted]
    changed = [p.name for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert not stale and not changed, f"run build_cases.py: stale {stale}, changed {changed}"
    assert 25 <= (len(wanted) - 1) // 3 <= 45


def test_the_expected_patients_agree_with_the_reference_evaluator() -> None:
    """The hand-worked expectations against tests/cohort/cohort_reference.py, written independently."""
    disagreements = []
    for path in sorted((CASES / "testdata").glob("*-expected.json")):
        query, bundle, expected = _case_files(path.name.removesuffix("-expected.json"))
        cohort = evaluate(query, [entry["resource"] for entry in bundle["entry"]],
                          date.fromisoformat(expected["referenceDate"]))
        missing = [p for p in expected["includedPatients"] if p not in cohort]
        unexpected = [p for p in expected["excludedPatients"] if p in cohort]
        if missing or unexpected:
            disagreements.append(f"{path.name}: missing {missing} unexpected {unexpected}")
    assert not disagreements, "\n".join(disagreements)


def test_every_case_passes_on_postgres(postgres_database_url: str, tmp_path: Path) -> None:
    """PostgreSQL here; DuckDB, the default engine, runs the same folder through `dic conformance ccdl` in
    tests/cli/test_ccdl_conformance_cli.py (one full run costs ~40 s of CPU: not twice)."""
    report = run_cases(CASES, Engine.postgres, postgres_database_url, scratch=tmp_path)
    lines = list(report.lines())
    assert report.failed == 0, "\n".join(line for line in lines if not line.startswith("PASS"))
    assert report.passed == len(list((CASES / "testdata").glob("*-expected.json"))) >= 25
    assert lines[-1] == f"{report.passed} passed, 0 failed"
    assert report.repositories == 1  # the folder's resource ids are unique: one scratch repository


def test_cases_whose_resources_collide_get_their_own_repository() -> None:
    def case(*ids: str) -> SimpleNamespace:
        return SimpleNamespace(keys={("Patient", i) for i in ids})

    a, b, c, d = case("p1", "p2"), case("p3"), case("p2", "p4"), case("p1")
    assert _packs([a, b, c, d]) == [[a, b], [c, d]]


def test_wrong_and_broken_cases_fail_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "cases"
    folder.mkdir()
    # a case whose expectation is turned round
    wrong = _copy_case("v3-hemoglobin-last-24h", folder, "hb24-wrong")
    wrong["includedPatients"], wrong["excludedPatients"] = (["hb24-two-days-ago", "hb24-today"],
                                                           ["hb24-yesterday-noon", "hb24-crp-only"])
    _write_expected(folder, "hb24-wrong", wrong)
    # an invalid query: an anchor that names no group
    invalid = _copy_case("v3-hemoglobin-last-24h", folder, "invalid-anchor")
    query = json.loads((folder / "invalid-anchor.json").read_text())
    query["inclusionCriteria"][0][1]["relativeTimeRestrictions"][0]["anchorRef"] = "anchor-then"
    (folder / "invalid-anchor.json").write_text(json.dumps(query))
    _write_expected(folder, "invalid-anchor", invalid)
    # missing data, unreadable expectation, a patient the data lacks, data the loader rejects
    missing = _copy_case("v2-gender", folder, "no-data")
    (folder / "testdata" / "no-data-data.json").unlink()
    _write_expected(folder, "no-data", missing)
    (folder / "testdata" / "garbled-expected.json").write_text('{"ccdl": "garbled.json", ')
    stranger = _copy_case("v2-gender", folder, "stranger")
    stranger["excludedPatients"].append("nobody")
    _write_expected(folder, "stranger", stranger)
    rejected = _copy_case("v2-gender", folder, "rejected")
    bundle = json.loads((folder / "testdata" / "rejected-data.json").read_text())
    bundle["entry"][0]["resource"]["id"] = "not valid!"
    (folder / "testdata" / "rejected-data.json").write_text(json.dumps(bundle))
    _write_expected(folder, "rejected", rejected)
    (folder / "orphan.json").write_text("{}")  # a query without an expected file is not a case

    report = run_cases(folder, scratch=tmp_path)
    by_name = {case.name: case for case in report.cases}
    assert sorted(by_name) == ["garbled", "hb24-wrong", "invalid-anchor", "no-data", "rejected", "stranger"]
    assert not any(case.passed for case in report.cases)
    assert by_name["hb24-wrong"].reason == "missing [hb24-two-days-ago] unexpected [hb24-yesterday-noon]"
    assert by_name["hb24-wrong"].missing == ("hb24-two-days-ago",)
    assert by_name["invalid-anchor"].reason == "invalid query invalid-anchor.json: 1 problem(s)"
    assert len(by_name["invalid-anchor"].problems) == 1
    assert by_name["invalid-anchor"].problems[0].startswith("/inclusionCriteria/0/1/relativeTimeRestrictions/0/anchorRef")
    assert "anchor-then" in by_name["invalid-anchor"].problems[0]
    assert by_name["no-data"].reason == "broken case: testdata/no-data-data.json is missing"
    assert by_name["garbled"].reason.startswith("broken case: testdata/garbled-expected.json is not readable JSON")
    assert by_name["stranger"].reason == "broken case: no Patient in testdata/stranger-data.json for [nobody]"
    assert by_name["rejected"].reason.startswith("data: 1 record(s) rejected (entry 0: ")
    assert report.repositories == 1  # only hb24-wrong gets as far as loading
    lines = list(report.lines())
    assert lines[-1] == "0 passed, 6 failed"
    assert "FAIL hb24-wrong: missing [hb24-two-days-ago] unexpected [hb24-yesterday-noon]" in lines
    problem_line = lines.index("FAIL invalid-anchor: invalid query invalid-anchor.json: 1 problem(s)") + 1
    assert lines[problem_line].startswith("  /inclusionCriteria/0/1/relativeTimeRestrictions/0/anchorRef")


def test_a_folder_without_cases_and_postgres_without_url_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no CCDL cases"):
        run_cases(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        run_cases(tmp_path / "absent")
    shutil.copytree(CASES / "testdata", tmp_path / "testdata", ignore=shutil.ignore_patterns("v3-*", "v2-a*"))
    with pytest.raises(ConfigError, match="--url"):
        run_cases(tmp_path, Engine.postgres)


def test_the_published_v2_example_selects_what_our_recreation_expects(shared_data: Path, tmp_path: Path) -> None:
    """The MII's own ccdl-all-properties.json (read from ../shared, not copied into the project) runs
    on the patients of our re-creation and gives the same verdicts."""
    published = shared_data.parent / "docs" / "ccdl" / "ccdl-all-properties.json"
    if not published.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{published} is missing")
        pytest.skip(f"{published} is missing")
    expected = _copy_case("v2-example-all-properties", tmp_path, "published")
    (tmp_path / "published.json").write_bytes(published.read_bytes())
    _write_expected(tmp_path, "published", expected)
    report = run_cases(tmp_path)
    assert (report.passed, report.failed) == (1, 0), report.lines()
    assert expected["includedPatients"] and expected["excludedPatients"]

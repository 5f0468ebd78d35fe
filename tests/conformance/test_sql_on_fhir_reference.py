"""The official SQL-on-FHIR v2 test suite through the reference evaluator: one test per case.

Cases are compared as the reference runner does (`dic.views.conformance.run_case`): rows in
any order, canonical values, `expectColumns` in order, `expectError` met by a DicError.
Every case passes today; a case we cannot pass goes in KNOWN_FAILURES (a strict xfail with
the reason), never a skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dic.views.conformance import format_lines, run_case, run_reference, run_suite

SUITE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "sql-on-fhir-v2-tests" / "tests"

# (file, title) -> reason. Empty: the evaluator passes all 134 cases.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _cases() -> list[Any]:
    if not SUITE.is_dir():
        return [pytest.param(None, None, id="suite-missing")]
    params = []
    for path in sorted(SUITE.glob("*.json")):
        for case in json.loads(path.read_text())["tests"]:
            reason = KNOWN_FAILURES.get((path.name, case["title"]))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            params.append(
                pytest.param(path.name, case["title"], id=f"{path.stem}: {case['title']}", marks=marks)
            )
    return params


@pytest.mark.parametrize(("file", "title"), _cases())
def test_case(shared_data: Path, file: str | None, title: str | None) -> None:
    if file is None:
        pytest.fail(f"shared data present but the SQL-on-FHIR suite is not at {SUITE}")
    suite = json.loads((SUITE / file).read_text())
    case = next(c for c in suite["tests"] if c["title"] == title)
    result = run_case(case, suite["resources"], run_reference)
    assert result.passed, result.reason


def test_suite_report(shared_data: Path, tmp_path: Path) -> None:
    if not SUITE.is_dir():
        pytest.fail(f"shared data present but the SQL-on-FHIR suite is not at {SUITE}")
    report = run_suite(SUITE, run_reference)
    lines = list(format_lines(report))
    assert lines[-1] == "134 passed, 0 failed"
    assert len(lines) == 135
    assert lines[0] == "PASS basic.json: basic attribute"

    report.write_report(tmp_path / "report.json")
    written = json.loads((tmp_path / "report.json").read_text())
    assert len(written) == 22
    assert written["basic.json"]["tests"][0] == {"name": "basic attribute", "result": {"passed": True}}
    assert sum(len(f["tests"]) for f in written.values()) == 134


# --- the runner itself, on made-up cases (no shared data needed) ----------------------------


def _failing(error: Exception):
    def run(view: dict, resources: list[dict]) -> list[dict]:
        raise error

    return run


def _returning(rows: list[dict]):
    return lambda view, resources: rows


def test_rows_compare_in_any_order_with_canonical_numbers() -> None:
    case = {"title": "t", "view": {}, "expect": [{"a": 1, "b": [2]}, {"a": 2.5, "b": []}]}
    assert run_case(case, [], _returning([{"a": 2.5, "b": []}, {"a": 1.0, "b": [2.0]}])).passed
    result = run_case(case, [], _returning([{"a": 1, "b": [2]}, {"a": 1, "b": [2]}]))
    assert not result.passed
    assert result.reason == (
        'rows differ: expected 2, got 2; missing [\'{"a": 2.5, "b": []}\']; '
        'unexpected [\'{"a": 1, "b": [2]}\']'
    )


def test_expect_columns_checks_the_order() -> None:
    case = {"title": "t", "view": {}, "expectColumns": ["a", "b"], "expect": [{"a": 1, "b": 2}]}
    assert run_case(case, [], _returning([{"a": 1, "b": 2}])).passed
    result = run_case(case, [], _returning([{"b": 2, "a": 1}]))
    assert (result.passed, result.reason) == (False, "expected columns ['a', 'b'], got ['b', 'a']")


def test_expect_error_needs_a_dic_error() -> None:
    from dic.errors import DefinitionError, EngineError

    case = {"title": "t", "view": {}, "expectError": True}
    assert run_case(case, [], _failing(DefinitionError("v", []))).passed
    assert run_case(case, [], _failing(EngineError("duckdb", "run", "SELECT 1", RuntimeError("x")))).passed
    assert run_case(case, [], _returning([])).reason == "expected an error, got 0 row(s)"
    crashed = run_case(case, [], _failing(KeyError("boom")))
    assert (crashed.passed, crashed.reason) == (False, "crashed: KeyError: 'boom'")


def test_format_lines_and_report(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(
        json.dumps(
            {
                "resources": [],
                "tests": [
                    {"title": "ok", "view": {}, "expect": []},
                    {"title": "bad", "view": {}, "expect": [{"a": 1}]},
                ],
            }
        )
    )
    (tmp_path / "a.json").write_text(
        json.dumps({"resources": [], "tests": [{"title": "first", "view": {}, "expect": []}]})
    )
    report = run_suite(tmp_path, _returning([]))
    assert (report.passed, report.failed) == (2, 1)
    assert list(format_lines(report)) == [
        "PASS a.json: first",
        "PASS b.json: ok",
        "FAIL b.json: bad (rows differ: expected 1, got 0; missing ['{\"a\": 1}']; unexpected [])",
        "2 passed, 1 failed",
    ]
    assert report.to_report()["b.json"]["tests"][1] == {
        "name": "bad",
        "result": {
            "passed": False,
            "error": "rows differ: expected 1, got 0; missing ['{\"a\": 1}']; unexpected []",
        },
    }

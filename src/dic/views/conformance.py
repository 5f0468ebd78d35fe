"""Run an SQL-on-FHIR v2 test-suite folder through any view runner and report like the reference runner.

A runner is `run(view_json, resources) -> rows`; the reference evaluator is `run_reference`,
and the SQL compiler plugs in the same way. Comparison follows the reference runner: row
order is ignored, values are canonicalized (2.0 == 2), `expectColumns` checks the column
order, and an `expectError` case passes when the runner raises a DicError (DefinitionError
for an invalid view, any DicError for a runtime error).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from dic.errors import DicError, InputError
from dic.views.evaluator import evaluate_view
from dic.views.validation import validate_view

Runner = Callable[[dict, list[dict]], list[dict]]


def run_reference(view_json: dict, resources: list[dict]) -> list[dict]:
    """The reference evaluator as a suite runner: validate, then evaluate."""
    view = validate_view(
        view_json, view_json.get("name") or "<test view>" if isinstance(view_json, dict) else "<test view>"
    )
    return list(evaluate_view(view, resources))


@dataclass(frozen=True)
class CaseResult:
    title: str
    passed: bool
    reason: str | None = None


@dataclass
class FileResult:
    name: str
    cases: list[CaseResult] = field(default_factory=list)


@dataclass
class SuiteReport:
    files: list[FileResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(c.passed for f in self.files for c in f.cases)

    @property
    def failed(self) -> int:
        return sum(not c.passed for f in self.files for c in f.cases)

    def to_report(self) -> dict[str, Any]:
        """The official test-report format (meta/test-report.schema.json)."""
        report: dict[str, Any] = {}
        for file in self.files:
            tests = []
            for case in file.cases:
                result: dict[str, Any] = {"passed": case.passed}
                if case.reason:
                    result["error"] = case.reason
                tests.append({"name": case.title, "result": result})
            if tests:
                report[file.name] = {"tests": tests}
        return report

    def write_report(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_report(), indent=2) + "\n")


def format_lines(report: SuiteReport) -> Iterator[str]:
    """One line per case, then exactly 'N passed, M failed'."""
    for file in report.files:
        for case in file.cases:
            status = "PASS" if case.passed else "FAIL"
            reason = f" ({case.reason})" if case.reason else ""
            yield f"{status} {file.name}: {case.title}{reason}"
    yield f"{report.passed} passed, {report.failed} failed"


def run_suite(folder: Path, run: Runner) -> SuiteReport:
    """Every case of every *.json file in `folder` (sorted by name) through `run`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    report = SuiteReport()
    for path in sorted(folder.glob("*.json")):
        try:
            suite = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise InputError(f"{path}: not a readable test file: {error}") from error
        file = FileResult(path.name)
        for case in suite.get("tests", []):
            file.cases.append(run_case(case, suite.get("resources", []), run))
        report.files.append(file)
    return report


def run_case(case: dict, resources: list[dict], run: Runner) -> CaseResult:
    title = case.get("title", "<untitled>")
    try:
        rows = run(case["view"], resources)
    except DicError as error:
        if case.get("expectError"):
            return CaseResult(title, True)
        return CaseResult(title, False, f"{type(error).__name__}: {_first_line(error)}")
    except Exception as error:  # noqa: BLE001 (a crashing runner is a failed case, not an aborted suite)
        return CaseResult(title, False, f"crashed: {type(error).__name__}: {_first_line(error)}")
    return CaseResult(title, *compare_rows(case, rows))


def _first_line(error: BaseException) -> str:
    text = str(error)
    lines = text.splitlines()
    return " | ".join(line.strip() for line in lines[:3]) if lines else text


def compare_rows(case: dict, rows: list[dict]) -> tuple[bool, str | None]:
    """(passed, reason) for `rows` against the case's expectError / expectColumns / expect."""
    if case.get("expectError"):
        return False, f"expected an error, got {len(rows)} row(s)"
    expected_columns = case.get("expectColumns")
    if expected_columns is not None and rows:
        columns = list(rows[0])
        if columns != expected_columns:
            return False, f"expected columns {expected_columns}, got {columns}"
    if "expect" in case:
        got = Counter(_canonical_row(r) for r in rows)
        want = Counter(_canonical_row(r) for r in case["expect"])
        if got != want:
            missing = list((want - got).elements())[:3]
            extra = list((got - want).elements())[:3]
            return (
                False,
                f"rows differ: expected {len(case['expect'])}, got {len(rows)}; missing {missing}; unexpected {extra}",
            )
    return True, None


def canonical_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Decimal | float):
        return int(value) if value == int(value) else float(value)
    if isinstance(value, list):
        return [canonical_value(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical_value(v) for k, v in value.items()}
    return value


def _canonical_row(row: dict) -> str:
    return json.dumps(canonical_value(row), sort_keys=True)

"""`dic conformance sql-on-fhir`: the pass counts we publish."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


def conformance(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from dic.cli import main

    monkeypatch.setattr(sys, "argv", ["dic", "conformance", "sql-on-fhir", *args])
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    return code, capsys.readouterr().out.splitlines()


def test_reference_evaluator_passes_the_whole_suite(shared_data: Path, monkeypatch, capsys) -> None:
    code, lines = conformance([str(shared_data / "sql-on-fhir-v2-tests" / "tests")], monkeypatch, capsys)
    assert (code, lines[-1]) == (0, "134 passed, 0 failed")


def test_sql_on_duckdb_fails_only_the_multi_value_error_case(shared_data: Path, tmp_path: Path, monkeypatch,
                                                             capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = conformance([str(shared_data / "sql-on-fhir-v2-tests" / "tests"), "--engine", "duckdb"],
                              monkeypatch, capsys)
    assert code == 1
    assert lines[-1] == "133 passed, 1 failed"
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL collection.json: fail when 'collection' is not true (expected an error, got 2 row(s))"
    ]

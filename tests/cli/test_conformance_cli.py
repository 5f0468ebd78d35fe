"""`dic conformance sql-on-fhir`: the pass counts we publish."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import CliResult


def test_reference_evaluator_passes_the_whole_suite(shared_data: Path, dic: Callable[..., CliResult]) -> None:
    done = dic("conformance", "sql-on-fhir", str(shared_data / "sql-on-fhir-v2-tests" / "tests"))
    assert done.stdout.splitlines()[-1] == "134 passed, 0 failed"


def test_sql_on_duckdb_fails_only_the_multi_value_error_case(
    shared_data: Path, tmp_path: Path, dic: Callable[..., CliResult]
) -> None:
    done = dic("conformance", "sql-on-fhir", str(shared_data / "sql-on-fhir-v2-tests" / "tests"),
               "--engine", "duckdb", cwd=tmp_path, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 1
    assert lines[-1] == "133 passed, 1 failed"
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL collection.json: fail when 'collection' is not true (expected an error, got 2 row(s))"
    ]

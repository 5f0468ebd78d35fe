"""The `dic` command as a user runs it: exit codes, messages, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from conftest import CliResult
from dic.trust import is_valid_pseudonym

GIVEN = ["Karl", "Anna", "Otto", "Greta", "Emil", "Frieda"]
# Patients with enough identifying data for the trust center to register them (six different persons)
PATIENTS = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female" if i % 2 else "male",
             "birthDate": f"19{50 + i}-01-01", "name": [{"family": f"Test{'abcdef'[i]}", "given": [GIVEN[i]]}]}
            for i in range(6)]


@pytest.fixture
def repo(tmp_path: Path, dic: Callable[..., CliResult]) -> Path:
    dic("--repo", "r", "init", cwd=tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Patient.ndjson").write_bytes(
        b"".join(orjson.dumps(p) + b"\n" for p in PATIENTS) + b"{broken\n")
    return tmp_path


def test_load_status_views_sql_and_quarantine(repo: Path, dic: Callable[..., CliResult]) -> None:
    loaded = json.loads(dic("--repo", "r", "--json", "load", "in", cwd=repo).stdout)
    assert [(b["read"], b["loaded"], b["quarantined"]) for b in loaded] == [(7, 6, 1)]
    refreshed = json.loads(dic("--repo", "r", "--json", "views", "refresh", "patient", cwd=repo).stdout)
    assert refreshed[0]["name"] == "patient" and refreshed[0]["rows"] == 6
    rows = json.loads(dic("--repo", "r", "sql", "SELECT gender, count(*) AS n FROM patient GROUP BY gender ORDER BY gender",
                          "--format", "json", cwd=repo).stdout)
    assert rows == [{"gender": "female", "n": 3}, {"gender": "male", "n": 3}]
    csv_out = dic("--repo", "r", "sql", "SELECT id FROM patient ORDER BY id", "--format", "csv", cwd=repo).stdout
    header, *ids = csv_out.splitlines()  # stored under the trust center's pseudonyms, not the source ids
    assert header == "id" and len(set(ids)) == 6 and all(is_valid_pseudonym(i) and i.startswith("DIC-") for i in ids)
    status = json.loads(dic("--repo", "r", "--json", "status", cwd=repo).stdout)
    assert status["resources"] == {"Patient": 6} and status["quarantine"] == 1
    assert {v["name"]: v["rows"] for v in status["views"]}["patient"] == 6
    [record] = json.loads(dic("--repo", "r", "--json", "quarantine", "list", cwd=repo).stdout)
    assert (record["position"], record["reason"].split(":")[0]) == ("line 7", "invalid JSON")
    shown = json.loads(dic("--repo", "r", "--json", "quarantine", "show", record["quarantine_id"], cwd=repo).stdout)
    assert shown["raw"] == "" and "withheld" in shown["reason"]  # unparsed text may hold IDAT: never stored


def test_missing_path_is_one_line_and_exit_2(repo: Path) -> None:
    """Through the real console entry point, in a subprocess."""
    done = subprocess.run([sys.executable, "-m", "dic", "--repo", "r", "load", "does-not-exist.ndjson"],
                          cwd=repo, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stderr.strip() == "error: does-not-exist.ndjson: no such file or folder"


def test_sql_refuses_writes(repo: Path, dic: Callable[..., CliResult]) -> None:
    done = dic("--repo", "r", "sql", "DELETE FROM resource", cwd=repo, check=False)
    assert done.returncode == 2 and "read-only" in done.stderr
    done = dic("--repo", "r", "--json", "sql", "SELECT 1; DROP TABLE resource", cwd=repo, check=False)
    assert done.returncode == 2 and json.loads(done.stdout)["error"] == "DefinitionError"


def test_invalid_user_view_names_file_and_pointer(repo: Path, dic: Callable[..., CliResult]) -> None:
    (repo / "r" / "views" / "broken.json").write_text(json.dumps(
        {"resourceType": "ViewDefinition", "name": "broken", "status": "active", "resource": "Patient",
         "select": [{"column": [{"name": "bad name", "path": "id"}]}]}))
    done = dic("--repo", "r", "views", "list", cwd=repo, check=False)
    assert done.returncode == 2
    assert "broken.json" in done.stderr and "/select/0/column/0/name" in done.stderr


def test_no_repository_is_a_clear_error(tmp_path: Path, dic: Callable[..., CliResult]) -> None:
    done = dic("--repo", "nowhere", "status", cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert "no repository here; create one with 'dic init'" in done.stderr

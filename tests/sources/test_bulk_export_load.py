"""`dic load --bulk-export`: an export from a spec-following server ends up in the repository."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bulk_export_server import BulkExportServer, ExportBehaviour

PATIENTS = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(3)]
OBSERVATIONS = [{"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "Hb"},
                 "subject": {"reference": f"Patient/p{i % 3}"}} for i in range(5)]


def run_dic(*args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    from dic.cli import main

    monkeypatch.setattr(sys, "argv", ["dic", *args])
    capsys.readouterr()
    try:
        main()
    except SystemExit as exit_:
        assert exit_.code in (0, None), capsys.readouterr()
    return capsys.readouterr().out


def test_export_is_loaded_then_reexport_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    deleted = {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"request": {"method": "DELETE", "url": "Observation/o4"}}]}
    behaviour = ExportBehaviour(token="s3cret", polls_in_progress=1, retry_after="0", deleted_bundles=[deleted])
    with BulkExportServer([("Patient", PATIENTS), ("Observation", OBSERVATIONS)], behaviour) as server:
        run_dic("--repo", "r", "init", monkeypatch=monkeypatch, capsys=capsys)
        out = run_dic("--repo", "r", "--json", "load", "--bulk-export", server.base_url, "--token", "s3cret",
                      monkeypatch=monkeypatch, capsys=capsys)
        batches = json.loads(out)
        assert [(b["loaded"], b["deleted"]) for b in batches] == [(3, 0), (5, 0), (0, 1)]
        status = json.loads(run_dic("--repo", "r", "--json", "status", monkeypatch=monkeypatch, capsys=capsys))
        assert status["resources"] == {"Observation": 4, "Patient": 3}
        assert all(r.headers.get("authorization") == "Bearer s3cret" for r in server.seen("GET", "/fhir"))
    # the token never reaches the disk
    assert not [p for p in (tmp_path / "r").rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]

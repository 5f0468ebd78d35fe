"""`dic load --bulk-export`: an export from a spec-following server ends up in the repository."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bulk_export_server import BulkExportServer, ExportBehaviour

from conftest import CliResult

# Patients with enough identifying data for the trust center to register them (three different persons)
PATIENTS = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female", "birthDate": f"19{50 + 13 * i}-0{i + 1}-1{i}",
             "name": [{"family": family, "given": [given]}]}
            for i, (given, family) in enumerate([("Anna", "Becker"), ("Irmgard", "Yilmaz"), ("Lotte", "Quast")])]
OBSERVATIONS = [{"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "Hb"},
                 "subject": {"reference": f"Patient/p{i % 3}"}} for i in range(5)]


def test_export_is_loaded_with_its_deletions(tmp_path: Path, dic: Callable[..., CliResult]) -> None:
    deleted = {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"request": {"method": "DELETE", "url": "Observation/o4"}}]}
    behaviour = ExportBehaviour(token="s3cret", polls_in_progress=1, retry_after="0", deleted_bundles=[deleted])
    with BulkExportServer([("Patient", PATIENTS), ("Observation", OBSERVATIONS)], behaviour) as server:
        dic("--repo", "r", "init", cwd=tmp_path)
        out = dic("--repo", "r", "--json", "load", "--bulk-export", server.base_url, "--token", "s3cret").stdout
        batches = json.loads(out)
        assert [(b["loaded"], b["deleted"]) for b in batches] == [(3, 0), (5, 0), (0, 1)]
        status = json.loads(dic("--repo", "r", "--json", "status").stdout)
        assert status["resources"] == {"Observation": 4, "Patient": 3}
        assert all(r.headers.get("authorization") == "Bearer s3cret" for r in server.seen("GET", "/fhir"))
    # the token never reaches the disk
    assert not [p for p in (tmp_path / "r").rglob("*") if p.is_file() and b"s3cret" in p.read_bytes()]

"""The Bulk Data `$export` client against a spec-following server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk_export_server import BulkExportServer, ExportBehaviour, ndjson, operation_outcome

from dic.errors import InputError, SiteError
from dic.sources.bulk_export import STATE_FILE, ExportProgress, export_to_folder

FAST = {"backoff_s": 0.01, "backoff_cap_s": 0.05, "timeout_s": 5.0}


# ---------------------------------------------------------------- realistic resources
MII_PATIENT_PROFILE = (
    "https://www.medizininformatik-initiative.de/fhir/core/modul-person/StructureDefinition/Patient"
)


def patients(n: int) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Patient",
            "id": f"p{i:04d}",
            "meta": {"profile": [MII_PATIENT_PROFILE]},
            "identifier": [{"system": "https://example.org/fhir/sid/pid", "value": f"PID{i:06d}"}],
            "gender": "female" if i % 2 else "male",
            "birthDate": f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}",
        }
        for i in range(n)
    ]


def observations(n: int) -> list[dict[str, Any]]:
    return [
        {
            "resourceType": "Observation",
            "id": f"o{i:05d}",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    {
                        "system": "http://loinc.org",
                        "code": "2345-7",
                        "display": "Glucose [Mass/volume] in Serum or Plasma",
                    }
                ]
            },
            "subject": {"reference": f"Patient/p{i % 20:04d}"},
            "effectiveDateTime": f"2024-03-{1 + i % 28:02d}T08:30:00+01:00",
            "valueQuantity": {
                "value": 70 + i % 60,
                "unit": "mg/dL",
                "system": "http://unitsofmeasure.org",
                "code": "mg/dL",
            },
        }
        for i in range(n)
    ]


def conditions(n: int) -> list[dict[str, Any]]:
    codes = ["G35.10", "G20.10", "I63.5", "E11.90"]
    return [
        {
            "resourceType": "Condition",
            "id": f"c{i:04d}",
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {
                "coding": [
                    {
                        "system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
                        "version": "2024",
                        "code": codes[i % 4],
                    }
                ]
            },
            "subject": {"reference": f"Patient/p{i % 20:04d}"},
            "recordedDate": "2023-11-02",
        }
        for i in range(n)
    ]


OUTPUTS = [("Patient", patients(20)), ("Observation", observations(200)), ("Condition", conditions(15))]


def serve(**behaviour: Any) -> BulkExportServer:
    return BulkExportServer(OUTPUTS, ExportBehaviour(**behaviour))


def assert_same_as_source(result: Any, server: BulkExportServer) -> None:
    assert [f.resource_type for f in result.files] == ["Patient", "Observation", "Condition"]
    for exported, (_, _, data) in zip(result.files, server.outputs, strict=True):
        assert exported.path.read_bytes() == data
        assert exported.size_bytes == len(data)
        assert exported.line_count == data.count(b"\n")
    assert not list(result.files[0].path.parent.rglob("*.part"))


# ---------------------------------------------------------------- happy path
def test_exports_every_file_byte_for_byte(tmp_path: Path) -> None:
    with serve() as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        assert [f.line_count for f in result.files] == [20, 200, 15]
        assert result.transaction_time == "2026-11-29T03:00:00.000Z"
        assert result.error_files == [] and result.error_messages == []
        kickoff = server.seen("GET", "/fhir/$export")
        assert len(kickoff) == 1
        assert kickoff[0].headers["prefer"] == "respond-async"
        assert kickoff[0].headers["accept"] == "application/fhir+json"
        assert kickoff[0].query["_outputFormat"] == ["application/fhir+ndjson"]
        assert all(r.headers["accept"] == "application/fhir+ndjson" for r in server.seen("GET", "/files/"))
        # the client deleted the finished export, as the spec allows
        assert len(server.seen("DELETE", "/status/")) == 1 and result.status_deleted
        assert server.jobs == {}


def test_type_and_since_parameters_are_sent_and_select_files(tmp_path: Path) -> None:
    with serve() as server:
        result = export_to_folder(
            server.base_url,
            tmp_path,
            resource_types=["Patient", "Condition"],
            since="2024-01-01T00:00:00Z",
            **FAST,
        )
        query = server.seen("GET", "/fhir/$export")[0].query
        assert query["_type"] == ["Patient,Condition"]
        assert query["_since"] == ["2024-01-01T00:00:00Z"]
        assert [f.resource_type for f in result.files] == ["Patient", "Condition"]
        assert [f.line_count for f in result.files] == [20, 15]


@pytest.mark.parametrize("level", ["Patient/$export", "Group/g1/$export"])
def test_patient_and_group_level_kick_off(tmp_path: Path, level: str) -> None:
    with serve() as server:
        result = export_to_folder(f"{server.base_url}/{level}", tmp_path, **FAST)
        assert [r.path for r in server.seen("GET", "/fhir/")] == [f"/fhir/{level}"]
        assert len(result.files) == 3


def test_unknown_group_is_a_site_error_with_the_outcome(tmp_path: Path) -> None:
    with serve() as server, pytest.raises(SiteError) as caught:
        export_to_folder(f"{server.base_url}/Group/nope/$export", tmp_path, **FAST)
    assert caught.value.status == 404
    assert "Group/nope not found" in str(caught.value)


# ---------------------------------------------------------------- polling
def test_retry_after_seconds_is_honoured_and_progress_reported(tmp_path: Path) -> None:
    events: list[ExportProgress] = []
    with serve(polls_in_progress=1, retry_after="1") as server:
        started = time.monotonic()
        result = export_to_folder(server.base_url, tmp_path, progress=events.append, **FAST)
        waited = time.monotonic() - started
        assert len(server.seen("GET", "/status/")) == 2
    assert 1.0 <= waited < 3.0
    assert [e.detail for e in events if e.phase == "in-progress"] == ["step 1 of 2"]
    assert events[-1].phase == "done"
    downloads = [e for e in events if e.phase == "download"]
    assert downloads[-1].bytes_done == downloads[-1].bytes_total == result.files[-1].size_bytes


def test_retry_after_http_date_is_honoured(tmp_path: Path) -> None:
    with serve(polls_in_progress=1, retry_after=formatdate(time.time() + 2, usegmt=True)) as server:
        started = time.monotonic()
        export_to_folder(server.base_url, tmp_path, **FAST)
        waited = time.monotonic() - started
    assert 1.0 <= waited < 3.5  # the date has whole seconds, so between 1 and 2 s


def test_without_retry_after_the_client_backs_off_exponentially(tmp_path: Path) -> None:
    with serve(polls_in_progress=3) as server:
        started = time.monotonic()
        export_to_folder(server.base_url, tmp_path, backoff_s=0.05, backoff_cap_s=10.0, timeout_s=5.0)
        waited = time.monotonic() - started
        polls = server.seen("GET", "/status/")
    assert len(polls) == 4
    # 0.05 + 0.1 + 0.2 s, each with jitter in [0.5, 1]
    assert 0.175 <= waited < 1.5


def test_an_export_that_never_finishes_stops_at_max_wait(tmp_path: Path) -> None:
    with serve(polls_in_progress=1000) as server, pytest.raises(SiteError) as caught:
        export_to_folder(server.base_url, tmp_path, max_wait_s=0.3, backoff_s=0.05, backoff_cap_s=0.1)
    assert caught.value.status == 202
    assert "not complete after 0.3 s" in str(caught.value)
    assert (tmp_path / STATE_FILE).exists()  # a later call keeps waiting on the same export


# ---------------------------------------------------------------- authorization
def test_bearer_token_is_sent_everywhere(tmp_path: Path) -> None:
    with serve(token="s3cret") as server:
        result = export_to_folder(server.base_url, tmp_path, token="s3cret", **FAST)
        assert_same_as_source(result, server)
        assert {r.headers.get("authorization") for r in server.requests} == {"Bearer s3cret"}


def test_without_token_the_site_answers_401(tmp_path: Path) -> None:
    with serve(token="s3cret") as server, pytest.raises(SiteError) as caught:
        export_to_folder(server.base_url, tmp_path, **FAST)
    assert caught.value.status == 401
    assert caught.value.site == server.base_url
    assert "missing or invalid bearer token" in str(caught.value)


def test_token_is_not_sent_to_files_that_do_not_require_it(tmp_path: Path) -> None:
    with serve(token="s3cret", requires_access_token=False) as server:
        export_to_folder(server.base_url, tmp_path, token="s3cret", **FAST)
        files = server.seen("GET", "/files/")
        assert len(files) == 3 and all("authorization" not in r.headers for r in files)
        assert all(r.headers["authorization"] == "Bearer s3cret" for r in server.seen("GET", "/status/"))


# ---------------------------------------------------------------- failures
def test_429_during_polling_and_download_is_retried(tmp_path: Path) -> None:
    with serve(status_429_once=True, file_429_once=True) as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        assert len(server.seen("GET", "/status/")) == 2
        assert len(server.seen("GET", "/files/")) == 6  # each file: one 429, then the file


def test_kick_off_failure_is_a_site_error_with_the_outcome_message(tmp_path: Path) -> None:
    with serve(kickoff_error=(500, "database unavailable")) as server, pytest.raises(SiteError) as caught:
        export_to_folder(server.base_url, tmp_path, **FAST)
    assert caught.value.status == 500
    assert caught.value.site == server.base_url
    assert "error: database unavailable" in str(caught.value)


def test_failed_export_status_is_a_site_error(tmp_path: Path) -> None:
    with serve(status_error=(500, "export job crashed")) as server, pytest.raises(SiteError) as caught:
        export_to_folder(server.base_url, tmp_path, **FAST)
    assert caught.value.status == 500
    assert "export job crashed" in str(caught.value)


def test_a_lasting_503_is_raised_after_the_retry_budget(tmp_path: Path) -> None:
    with serve(status_error=(503, "overloaded")) as server:
        with pytest.raises(SiteError) as caught:
            export_to_folder(server.base_url, tmp_path, max_retries=2, **FAST)
        assert len(server.seen("GET", "/status/")) == 3  # first try and two retries, then it gives up
    assert caught.value.status == 503
    assert "/status/" in str(caught.value) and "overloaded" in str(caught.value)


def test_error_files_are_downloaded_and_reported(tmp_path: Path) -> None:
    outcomes = [
        operation_outcome("Patient/p0007: consent withdrawn, not exported"),
        operation_outcome("Observation/o00012: invalid reference"),
    ]
    with serve(error_outcomes=outcomes) as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
    assert len(result.files) == 3
    assert [f.resource_type for f in result.error_files] == ["OperationOutcome"]
    assert result.error_files[0].path.parent == tmp_path / "error"
    assert result.error_files[0].path.read_bytes() == ndjson(outcomes)
    assert result.error_messages == [
        "error: Patient/p0007: consent withdrawn, not exported",
        "error: Observation/o00012: invalid reference",
    ]


# ---------------------------------------------------------------- resume
def test_cut_download_resumes_with_a_range_request(tmp_path: Path) -> None:
    with serve(cut_after_bytes={"Observation-1.ndjson": 1000}) as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        ranges = [r.headers.get("range") for r in server.seen("GET", "/files/Observation-1.ndjson")]
    assert ranges == [None, "bytes=1000-"]


def test_crashed_run_resumes_partial_file_in_the_next_call(tmp_path: Path) -> None:
    with serve(cut_after_bytes={"Observation-1.ndjson": 1000}) as server:
        with pytest.raises(SiteError) as caught:
            export_to_folder(server.base_url, tmp_path, max_retries=0, **FAST)
        assert "Observation-1.ndjson" in str(caught.value)
        # a half file is never a final file
        assert not (tmp_path / "Observation.001.ndjson").exists()
        assert (tmp_path / "Observation.001.ndjson.part").stat().st_size == 1000
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        assert len(server.seen("GET", "/fhir/$export")) == 1  # same export, not a new one
        assert len(server.seen("GET", "/files/Patient-0.ndjson")) == 1
        assert result.reused_files == 1
        ranges = [r.headers.get("range") for r in server.seen("GET", "/files/Observation-1.ndjson")]
    assert ranges == [None, "bytes=1000-"]


def test_without_range_support_a_cut_file_is_downloaded_again(tmp_path: Path) -> None:
    with serve(cut_after_bytes={"Observation-1.ndjson": 1000}, range_support=False) as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        assert len(server.seen("GET", "/files/Observation-1.ndjson")) == 2


KILLED_CLIENT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from dic.sources.bulk_export import export_to_folder

    def progress(event):
        # killed once the second file has started: the first is complete, the second partial
        if event.phase == "download" and event.path.name.startswith("Observation"):
            os.kill(os.getpid(), signal.SIGKILL)

    export_to_folder(sys.argv[1], Path(sys.argv[2]), progress=progress, backoff_s=0.01)
    """
)


def test_killed_client_resumes_without_downloading_complete_files_again(tmp_path: Path) -> None:
    with serve() as server:
        run = subprocess.run(
            [sys.executable, "-c", KILLED_CLIENT, server.base_url, str(tmp_path)], check=False, timeout=60
        )
        assert run.returncode == -9
        assert (tmp_path / "Patient.001.ndjson").exists()
        assert not (tmp_path / "Observation.001.ndjson").exists()
        killed_at = (tmp_path / "Observation.001.ndjson.part").stat().st_size
        assert 0 < killed_at < len(server.file_bytes["Observation-1.ndjson"])

        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        assert result.reused_files == 1
        assert len(server.seen("GET", "/fhir/$export")) == 1
        assert len(server.seen("GET", "/files/Patient-0.ndjson")) == 1
        resumed = server.seen("GET", "/files/Observation-1.ndjson")[-1]
        assert resumed.headers["range"] == f"bytes={killed_at}-"


def test_a_finished_export_called_again_asks_the_site_nothing(tmp_path: Path) -> None:
    with serve() as server:
        first = export_to_folder(server.base_url, tmp_path, **FAST)
        seen = len(server.requests)
        again = export_to_folder(server.base_url, tmp_path, **FAST)
        assert len(server.requests) == seen
    assert again.files == first.files and again.reused_files == 3


def test_a_folder_of_another_export_is_refused(tmp_path: Path) -> None:
    with serve() as server:
        export_to_folder(server.base_url, tmp_path, resource_types=["Patient"], **FAST)
        with pytest.raises(InputError, match="different export"):
            export_to_folder(server.base_url, tmp_path, **FAST)


def test_a_part_file_that_is_already_whole_is_finished_without_download(tmp_path: Path) -> None:
    # killed after the last byte arrived but before the rename: the server answers 416
    with serve() as server:
        export_to_folder(server.base_url, tmp_path, **FAST)
        final = tmp_path / "Observation.001.ndjson"
        final.rename(final.with_name(final.name + ".part"))
        state = orjson.loads((tmp_path / STATE_FILE).read_bytes())
        del state["files"][f"{server.origin}/files/Observation-1.ndjson"]
        (tmp_path / STATE_FILE).write_bytes(orjson.dumps(state))
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert_same_as_source(result, server)
        last = server.seen("GET", "/files/Observation-1.ndjson")[-1]
        assert last.headers["range"] == f"bytes={len(server.file_bytes['Observation-1.ndjson'])}-"


def test_transient_outcome_on_status_is_retried(tmp_path: Path) -> None:
    with serve(status_transient_once=True) as server:
        result = export_to_folder(server.base_url, tmp_path, **FAST)
        assert len(result.files) == 3
        assert len(server.seen("GET", "/status/")) == 2


def test_deleted_bundles_of_a_since_export_are_downloaded_apart(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/p0003"}}],
    }
    with serve(deleted_bundles=[bundle]) as server:
        result = export_to_folder(server.base_url, tmp_path, since="2026-01-01T00:00:00Z", **FAST)
    assert [(f.resource_type, f.line_count) for f in result.deleted_files] == [("Bundle", 1)]
    assert result.deleted_files[0].path == tmp_path / "deleted" / "Bundle.001.ndjson"
    assert orjson.loads(result.deleted_files[0].path.read_bytes()) == bundle


def test_the_token_is_never_written_to_the_state_file(tmp_path: Path) -> None:
    with serve(token="s3cret") as server:
        export_to_folder(server.base_url, tmp_path, token="s3cret", **FAST)
    assert b"s3cret" not in (tmp_path / STATE_FILE).read_bytes()


def test_an_expired_export_says_to_start_again(tmp_path: Path) -> None:
    with serve(polls_in_progress=1000) as server:
        with pytest.raises(SiteError):
            export_to_folder(server.base_url, tmp_path, max_wait_s=0.05, backoff_s=0.02)
        server.jobs.clear()  # the site expired the export
        with pytest.raises(SiteError) as caught:
            export_to_folder(server.base_url, tmp_path, **FAST)
    assert caught.value.status == 404
    assert "expired or deleted" in str(caught.value)

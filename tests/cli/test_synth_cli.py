"""`dic synth` and `dic demo` as a user runs them: exit codes, JSON output, clear refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from dic.synth import SOURCES


def test_synth_writes_every_source_per_site_and_reports_in_json(dic: Callable, tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = dic("--json", "synth", "--sites", "2", "--patients", "300", "--seed", "4", "--out", str(out),
                 "--years", "2018-2024")
    report = orjson.loads(result.stdout)
    assert report["sites"] == ["site-a", "site-b"] and report["patients"] == 300
    assert set(report["files"]["site-b"]) == set(SOURCES)
    assert report["files"]["site-a"]["his-fhir"]["Patient.ndjson"] == 150
    manifest = orjson.loads((out / "truth" / "manifest.json").read_bytes())
    assert manifest["years"] == [2018, 2024]
    encounters = (out / "site-a" / "his-fhir" / "Encounter.ndjson").read_bytes().splitlines()
    starts = {orjson.loads(line)["period"]["start"][:4] for line in encounters}
    assert starts <= {str(y) for y in range(2018, 2025)}


def test_synth_refuses_a_used_folder_and_bad_years_with_exit_2(dic: Callable, tmp_path: Path) -> None:
    out = tmp_path / "world"
    dic("synth", "--sites", "1", "--patients", "20", "--out", str(out), "--formats", "his-fhir")
    again = dic("synth", "--sites", "1", "--patients", "20", "--out", str(out), check=False)
    assert again.returncode == 2 and "not empty" in again.stderr
    assert dic("synth", "--sites", "1", "--patients", "20", "--out", str(out), "--overwrite",
               "--formats", "his-fhir,lab").returncode == 0
    assert sorted(p.name for p in (out / "site-a").iterdir()) == ["his-fhir", "lab"]
    bad = dic("synth", "--patients", "20", "--out", str(tmp_path / "x"), "--years", "2020-2015", check=False)
    assert bad.returncode == 2 and "FIRST-LAST" in bad.stderr
    unknown = dic("synth", "--patients", "20", "--out", str(tmp_path / "y"), "--formats", "hl7", check=False)
    assert unknown.returncode == 2 and "unknown format" in unknown.stderr


def test_demo_runs_from_the_test_world_and_reconciles(dic: Callable, tmp_path: Path) -> None:
    result = dic("--json", "demo", "--patients", "400", "--out", str(tmp_path / "demo"))
    report = orjson.loads(result.stdout)
    assert set(report["generated"]["files"]) == {"site-a", "site-b"}
    loads = report["load"]
    assert all(b["read"] == b["loaded"] + b["updated"] + b["unchanged"] + b["deleted"] + b["quarantined"]
               for b in loads)
    patients = sum(report["generated"]["files"][s]["his-fhir"]["Patient.ndjson"] for s in ("site-a", "site-b"))
    # one Patient per person: the 3 % of site-b's patients also treated at site-a share one pseudonym
    assert patients * 0.97 <= report["resources"]["Patient"] < patients
    # the broken file's 7 bad lines, its Patient without enough IDAT to register, and that Patient's Condition
    assert report["quarantined"] == 9
    assert sum(b["loaded"] + b["updated"] + b["deleted"] for b in report["reload"]) == 0
    assert report["views"]["patient"] == report["resources"]["Patient"]
    assert report["views"]["condition"] > report["resources"]["Patient"]
    assert report["linkage"]["precision"] >= 0.98 and report["linkage"]["recall"] >= 0.95
    assert set(report["identities"]) == {f"{s}@{site}" for s in ("lab", "ms-registry", "biobank")
                                         for site in ("site-a", "site-b")}

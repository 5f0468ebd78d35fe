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
    sites = ("site-a", "site-b", "site-c")
    assert set(report["generated"]["files"]) == set(sites)
    loads = report["load"]
    assert {"his-fhir@site-a", "lab@site-b", "billing@site-c", "biobank@site-a", "genomics@site-a"} <= set(loads)
    assert all(b["read"] == b["loaded"] + b["updated"] + b["unchanged"] + b["deleted"] + b["quarantined"]
               for batches in loads.values() for b in batches)
    assert all(sum(b["read"] for b in loads[f"{source}@{site}"]) > 0 for source in ("his-fhir", "lab", "billing")
               for site in sites)
    patients = sum(report["generated"]["files"][s]["his-fhir"]["Patient.ndjson"] for s in sites)
    # one Patient per person: the 3 % of later sites' patients also treated at an earlier site share one pseudonym
    assert patients * 0.95 <= report["resources"]["Patient"] < patients
    # the broken file's 7 bad lines, its Patient without enough IDAT to register, and that Patient's Condition
    assert sum(b["quarantined"] for b in loads["samples@bad-input"]) == 9
    assert report["reload_changed"] == 0
    assert report["views"]["patient"] == report["resources"]["Patient"]
    assert report["views"]["condition"] > report["resources"]["Patient"]
    assert report["resources"]["ChargeItem"] > 0 and report["resources"]["Specimen"] > 0
    linkage = report["linkage"]
    assert linkage["precision"] >= 0.98 and linkage["recall"] >= 0.98, linkage
    assert linkage["one_pseudonym"] >= 0.97 * linkage["persons"], linkage
    feasibility = {f["query"]: f for f in report["feasibility"]}
    assert {"ms-on-therapy-edss-4", "parkinson-prior-constipation", "diabetes-hba1c-over-7",
            "alt-rise-after-atorvastatin"} == set(feasibility)
    # counts leave only as "< threshold" or a perturbed number; never more than the world's patients
    assert all(f["count"].startswith("< ") or 0 < int(f["count"]) <= patients for f in feasibility.values())

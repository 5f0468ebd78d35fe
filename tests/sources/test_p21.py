"""The §21 billing adapter: a `dic synth` export maps completely and agrees with the HIS export it was
written from; broken rows are rejected with file, line and column; codes come out in official form."""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest

from dic.fhir import check_resource
from dic.sources import Rejection, SourceResource
from dic.sources.p21 import icd_code, is_p21_folder, ops_code, read_p21
from dic.synth import write_world


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("p21-world")
    write_world(out, sites=1, patients=120, seed=7, formats=["his-fhir", "billing"])
    return out / "site-a"


@pytest.fixture(scope="session")
def mapped(site: Path) -> list[SourceResource | Rejection]:
    return list(read_p21(site / "billing"))


def _rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(";")
    return [dict(zip(header, line.split(";"), strict=True)) for line in lines[1:]]


def _his(site: Path, kind: str) -> list[dict]:
    return [orjson.loads(line) for line in (site / "his-fhir" / f"{kind}.ndjson").read_bytes().splitlines()]


def _of(records: list, kind: str) -> list[dict]:
    return [r.resource for r in records if isinstance(r, SourceResource) and r.resource["resourceType"] == kind]


def test_synth_export_maps_completely(site: Path, mapped: list) -> None:
    billing = site / "billing"
    assert [r for r in mapped if isinstance(r, Rejection)] == []
    fall, fab, icd = _rows(billing / "FALL.csv"), _rows(billing / "FAB.csv"), _rows(billing / "ICD.csv")
    ops, fees = _rows(billing / "OPS.csv"), _rows(billing / "ENTGELTE.csv")
    encounters = _of(mapped, "Encounter")
    cases = [e for e in encounters if "partOf" not in e]
    assert len(cases) == len(fall) and len(encounters) - len(cases) == len(fab)
    secondary = sum(1 for row in icd if row["Sekundär-Kode"])
    assert secondary > 0  # the synth plants dagger-asterisk pairs
    assert len(_of(mapped, "Condition")) == len(icd) + secondary
    assert len(_of(mapped, "Procedure")) == len(ops)
    assert len(_of(mapped, "ChargeItem")) == len(fees)
    patients = _of(mapped, "Patient")
    assert len(patients) == len({row["Patientennummer"] for row in fall}) == len({p["id"] for p in patients})
    assert len(_of(mapped, "Organization")) == 1
    for record in mapped:
        assert check_resource(record.resource) is None, (record.position, check_resource(record.resource))
    # every reference points at something this export delivers
    ids = {f"{r.resource['resourceType']}/{r.resource['id']}" for r in mapped}
    for record in mapped:
        for node in _references(record.resource):
            assert node in ids, (record.position, node)


def _references(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for value in node for r in _references(value)]
    return []


def test_cases_agree_with_the_his_export(site: Path, mapped: list) -> None:
    """Billing is written from the HIS facts: same period, diagnoses and procedures per case number."""
    his_cases = {next(i["value"] for i in e["identifier"] if i["type"]["coding"][0]["code"] == "VN"): e
                 for e in _his(site, "Encounter")}
    his_conditions = {c["id"]: c for c in _his(site, "Condition")}
    his_procedures = defaultdict(list)
    for p in _his(site, "Procedure"):
        if "encounter" in p:
            his_procedures[p["encounter"]["reference"]].append(p["code"]["coding"][0]["code"])
    conditions = {c["id"]: c for c in _of(mapped, "Condition")}
    procedures = defaultdict(list)
    for p in _of(mapped, "Procedure"):
        procedures[p["encounter"]["reference"]].append(p["code"]["coding"][0]["code"])
    checked = 0
    for case in (e for e in _of(mapped, "Encounter") if "partOf" not in e):
        his = his_cases[case["identifier"][0]["value"]]
        assert case["period"] == his["period"]
        assert case["hospitalization"]["admitSource"]["coding"][0]["code"] == \
            his["hospitalization"]["admitSource"]["coding"][0]["code"]
        assert case["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == \
            his["hospitalization"]["dischargeDisposition"]["coding"][0]["code"]
        billed = sorted(conditions[d["condition"]["reference"][10:]]["code"]["coding"][0]["code"]
                        for d in case["diagnosis"])
        known = sorted(his_conditions[d["condition"]["reference"][10:]]["code"]["coding"][0]["code"]
                       for d in his["diagnosis"])
        assert billed == known
        main = [d for d in case["diagnosis"] if d.get("rank") == 1]
        assert len(main) == 1 and main[0]["use"]["coding"][0]["code"] == "CC"
        assert sorted(procedures[f"Encounter/{case['id']}"]) == sorted(his_procedures[f"Encounter/{his['id']}"])
        checked += 1
    assert checked > 50


def test_patient_from_fall(site: Path, mapped: list) -> None:
    rows = {row["Patientennummer"]: row for row in _rows(site / "billing" / "FALL.csv")}
    sexes = {"m": "male", "w": "female", "d": "other", "x": "unknown"}
    for patient in _of(mapped, "Patient"):
        row = rows[patient["id"]]
        assert patient["identifier"][0]["value"] == row["Patientennummer"]
        assert patient["identifier"][0]["type"]["coding"][0]["code"] == "MR"
        kvnr = [i["value"] for i in patient["identifier"] if i["system"] == "http://fhir.de/sid/gkv/kvid-10"]
        assert kvnr == ([row["Versicherten-ID"]] if row["Versicherten-ID"] else [])
        assert patient["birthDate"] == f"{row['Geburtsjahr']}-{row['Geburtsmonat']}"
        assert patient.get("gender") == sexes.get(row["Geschlecht"])
        if row["PLZ"]:
            assert patient["address"][0]["postalCode"] == row["PLZ"]


def test_codes_in_official_form() -> None:
    assert ops_code("5378c0") == "5-378.c0"
    assert ops_code("8930") == "8-930"
    assert ops_code("5-470.1") == "5-470.1"
    assert icd_code("S7188!") == ("S71.88", "!")
    assert icd_code("E11.40+") == ("E11.40", "†")
    assert icd_code("E86") == ("E86", None)


def test_broken_rows_are_rejected_with_file_line_and_column(site: Path, mapped: list, tmp_path: Path) -> None:
    folder = shutil.copytree(site / "billing", tmp_path / "billing")
    fall = _rows(folder / "FALL.csv")
    case = fall[0]["KH-internes-Kennzeichen"]
    key = f"{fall[0]['IK']};{fall[0]['Entlassender-Standort']};DRG"

    def append(name: str, line: str) -> int:
        with (folder / name).open("a", encoding="utf-8") as stream:
            stream.write(line + "\n")
        return len((folder / name).read_text(encoding="utf-8").splitlines())

    bad_date = fall[0].copy()
    bad_date["KH-internes-Kennzeichen"], bad_date["Aufnahmedatum"] = "99999999999", "201602310713"
    fall_line = append("FALL.csv", ";".join(bad_date.values()))
    icd_line = append("ICD.csv", f"{key};{case};ND;2016;X9;;;;;")
    unknown_line = append("OPS.csv", f"{key};00000000077;2016;8930;;201602060900;N;N;N")
    short_line = append("FAB.csv", f"{key};{case};HA0100")
    empty_line = append("ENTGELTE.csv", f"{key};{case};;;1583,13;20160206;20160208;1;0;")
    records = list(read_p21(folder))
    rejections = {r.position: r for r in records if isinstance(r, Rejection)}
    assert set(rejections) == {f"FALL.csv line {fall_line}", f"ICD.csv line {icd_line}",
                               f"OPS.csv line {unknown_line}", f"FAB.csv line {short_line}",
                               f"ENTGELTE.csv line {empty_line}"}
    assert rejections[f"ICD.csv line {icd_line}"].reason == \
        f"ICD.csv line {icd_line}, column ICD-Kode: 'X9' is not an ICD-10-GM code shape"
    assert "column Aufnahmedatum" in rejections[f"FALL.csv line {fall_line}"].reason
    assert "column KH-internes-Kennzeichen: the case is not in FALL.csv" in \
        rejections[f"OPS.csv line {unknown_line}"].reason
    assert "00000000077" not in rejections[f"OPS.csv line {unknown_line}"].reason  # no case numbers in reasons
    assert "row has 5 fields, the header 9" in rejections[f"FAB.csv line {short_line}"].reason
    assert "column Entgeltart: empty mandatory field" in rejections[f"ENTGELTE.csv line {empty_line}"].reason
    assert all(r.source.endswith(r.position.split()[0]) and r.raw for r in rejections.values())
    # good rows still come through, unchanged
    good = [r.resource for r in records if isinstance(r, SourceResource)]
    assert good == [r.resource for r in mapped]


def test_resorted_windows_1252_export_gives_the_same_resources(site: Path, mapped: list, tmp_path: Path) -> None:
    folder = tmp_path / "billing"
    folder.mkdir()
    for path in (site / "billing").iterdir():
        lines = path.read_text(encoding="utf-8").splitlines()
        header = lines[0].replace("Lokalisation2", "Sekundär-Lokalisation")
        body = sorted(lines[1:], reverse=True)
        (folder / path.name.lower()).write_bytes(("\r\n".join([header, *body]) + "\r\n").encode("cp1252"))
    again = list(read_p21(folder))
    assert not [r for r in again if isinstance(r, Rejection)]

    def by_id(records: list) -> dict:
        found = {}
        for r in records:
            resource = dict(r.resource)
            if resource["resourceType"] == "Encounter" and "diagnosis" in resource:
                resource["diagnosis"] = sorted(resource["diagnosis"], key=lambda d: d["condition"]["reference"])
            found[resource["resourceType"], resource["id"]] = resource
        return found

    assert by_id(again) == by_id(mapped)
    umlauts = [p for p in _of(again, "Patient") if any(c in p.get("address", [{}])[0].get("city", "") for c in "äöüß")]
    assert umlauts  # the synth's cities include umlauts: decoded from Windows-1252


def test_missing_mandatory_column_refuses_the_file(site: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(site / "billing", tmp_path / "billing")
    lines = (folder / "OPS.csv").read_text(encoding="utf-8").splitlines()
    (folder / "OPS.csv").write_text("\n".join([lines[0].replace("OPS-Kode", "Kode"), *lines[1:]]) + "\n",
                                    encoding="utf-8")
    records = list(read_p21(folder))
    refused = [r for r in records if isinstance(r, Rejection)]
    assert [r.position for r in refused] == ["OPS.csv line 1"] and "OPS-Kode" in refused[0].reason
    assert not _of(records, "Procedure")


def test_is_p21_folder(site: Path, tmp_path: Path) -> None:
    assert is_p21_folder(site / "billing")
    assert not is_p21_folder(site / "his-fhir")
    assert not is_p21_folder(site / "billing" / "FALL.csv")
    (tmp_path / "fall.csv").write_text("IK\n", encoding="utf-8")
    assert is_p21_folder(tmp_path)
    assert Counter(type(r).__name__ for r in read_p21(tmp_path)) == Counter({"Rejection": 1})

"""YAML-mapped CSV/Excel sources: the shipped MS registry and biobank mappings on a `dic synth` world,
values checked against the CSV read independently (csv module, zoneinfo, the trust center's IDAT
reader), the Excel copy, planted errors, broken specs, the engine's transforms one by one."""

from __future__ import annotations

import csv
import importlib
import re
import shutil
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from openpyxl import Workbook

from dic.errors import DefinitionError, InputError
from dic.fhir import check_resource
from dic.sources import Rejection, SourceResource, patient_idat, read_identity_records
from dic.sources.mapping import detect_mapping, read_mapped
from dic.sources.mapping_spec import Mapping, fhir_id, load_mapping, shipped_mappings
from dic.synth import write_world
from dic.synth.catalog import load_catalog

BERLIN = ZoneInfo("Europe/Berlin")
MS_FILES = ("patients", "visits", "relapses", "mri", "therapies")
BB_FILES = ("donors", "samples")


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic site with the registry and the biobank. MS is rare (~0.3 %): the catalog's MS
    prevalence is raised 40-fold so that 200 patients give a registry worth testing."""
    catalog = load_catalog()
    diseases = [d.model_copy(update={"prevalence_pct": {k: [x * 40 for x in v] for k, v in d.prevalence_pct.items()}})
                if d.id == "multiple-sclerosis" else d for d in catalog.diseases]
    out = tmp_path_factory.mktemp("mapped")
    write_world(out, sites=1, patients=200, seed=7, formats=["ms-registry", "biobank"],
                catalog=catalog.model_copy(update={"diseases": diseases}))
    return out / "site-a"


def table(folder: Path, name: str) -> list[dict[str, str]]:
    with (folder / f"{name}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def by_type(records: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        found.setdefault(r.resource["resourceType"], {})[r.resource["id"]] = r.resource
    return found


@pytest.fixture(scope="module")
def ms(site: Path) -> list[Any]:
    return list(read_mapped(site / "ms-registry", load_mapping("ms-registry")))


@pytest.fixture(scope="module")
def bb(site: Path) -> list[Any]:
    return list(read_mapped(site / "biobank", load_mapping("biobank")))


def berlin(text: str) -> str:
    """'2018-09-01 16:27' as a FHIR dateTime, worked out independently of the engine."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN).isoformat()


# ------------------------------------------------------------------ the shipped mappings
def test_every_shipped_mapping_loads_by_name_and_by_path() -> None:
    assert set(shipped_mappings()) == {"ms-registry", "biobank"}
    for name, path in shipped_mappings().items():
        by_name, by_path = load_mapping(name), load_mapping(path)
        assert by_name.name == name and by_name == by_path and by_path.origin == str(path)
    with pytest.raises(InputError, match="no such mapping"):
        load_mapping("no-such-registry")


def test_ms_registry_counts_equal_the_csv_rows(site: Path, ms: list[Any]) -> None:
    folder = site / "ms-registry"
    assert [r for r in ms if isinstance(r, Rejection)] == []
    rows = {name: table(folder, name) for name in MS_FILES}
    assert len(rows["patients"]) >= 10 and len(rows["visits"]) >= 100  # a registry worth testing
    found = by_type(ms)
    conditions = found["Condition"]
    observations = Counter(o["code"]["coding"][0]["code"] for o in found["Observation"].values())
    assert len(found["Patient"]) == len(rows["patients"])
    assert sum(i.endswith("-ms") for i in conditions) == len(rows["patients"])
    assert sum(not i.endswith("-ms") for i in conditions) == len(rows["relapses"])
    assert observations["273554001"] == len(rows["visits"])
    assert observations["new-enlarging-t2-lesions"] == sum(r["new_enlarging_t2"] != "" for r in rows["mri"])
    assert observations["gd-enhancing-lesions"] == len(rows["mri"])
    assert len(found["MedicationStatement"]) == len(rows["therapies"])
    # source order, patients first; positions count the header as row 1
    assert ms[0].resource["resourceType"] == "Patient" and ms[0].position == "patients.csv row 2"
    assert all(isinstance(r, SourceResource) and r.source.endswith(".csv") for r in ms)


def test_ms_registry_values_match_the_csv(site: Path, ms: list[Any]) -> None:
    folder = site / "ms-registry"
    found = by_type(ms)
    course = {"RRMS": ("G35.10", "426373005"), "SPMS": ("G35.30", "425500002"), "PPMS": ("G35.20", "428700003")}
    for row in table(folder, "patients"):
        patient, condition = found["Patient"][row["registry_id"]], found["Condition"][row["registry_id"] + "-ms"]
        assert patient["gender"] == {"w": "female", "m": "male", "d": "other", "x": "unknown"}[row["sex"]]
        assert patient.get("birthDate") == (row["birth_date"] or None)
        assert patient.get("deceasedDateTime") == (row["death_date"] or None)
        assert "identifier" not in patient  # the registry has its own ids, no hospital patient number
        assert condition["code"]["coding"][0]["code"] == course[row["course"]][0]
        assert condition["code"]["coding"][0]["system"] == "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
        assert condition["stage"][0]["summary"]["coding"][0]["code"] == course[row["course"]][1]
        assert condition["onsetDateTime"] == row["diagnosis_date"]
        assert condition["subject"] == {"reference": f"Patient/{row['registry_id']}"}
    for row in table(folder, "visits"):
        edss = found["Observation"][row["visit_id"]]
        assert edss["valueQuantity"] == {"value": float(row["edss"]), "unit": "{score}",
                                         "system": "http://unitsofmeasure.org", "code": "{score}"}
        assert edss["effectiveDateTime"] == row["visit_date"]
        assert edss["subject"]["reference"] == "Patient/" + row["registry_id"]
    for row in table(folder, "relapses"):
        relapse = found["Condition"][row["relapse_id"]]
        assert relapse["code"]["coding"][0]["code"] == "192929006" and relapse["onsetDateTime"] == row["onset_date"]
        assert relapse["severity"]["coding"][0]["code"] == {"mild": "255604002", "moderate": "6736007",
                                                            "severe": "24484000"}[row["severity"]]
        assert relapse["extension"][0]["valueBoolean"] is (row["steroid_treatment"] == "yes")
        assert relapse["extension"][1]["valueCode"] == row["recovery"]
    for row in table(folder, "mri"):
        assert found["Observation"][row["mri_id"] + "-gd"]["valueInteger"] == int(row["gd_enhancing"])
        if row["new_enlarging_t2"]:
            assert found["Observation"][row["mri_id"] + "-t2"]["valueInteger"] == int(row["new_enlarging_t2"])
        else:
            assert row["mri_id"] + "-t2" not in found["Observation"]
    for row in table(folder, "therapies"):
        therapy = found["MedicationStatement"][row["therapy_id"]]
        assert therapy["medicationCodeableConcept"]["coding"][0] == {
            "system": "http://fhir.de/CodeSystem/bfarm/atc", "code": row["atc"], "display": row["substance"]}
        assert therapy["effectivePeriod"] == {"start": row["start_date"], **({"end": row["stop_date"]}
                                                                           if row["stop_date"] else {})}
        assert therapy["status"] == ("completed" if row["stop_date"] else "active")
        assert therapy.get("statusReason", [{}])[0].get("text") == (row["stop_reason"] or None)


@pytest.mark.parametrize("source", ["ms-registry", "biobank"])
def test_patients_carry_the_idat_the_trust_center_reads_from_the_csv(site: Path, source: str,
                                                                     ms: list[Any], bb: list[Any]) -> None:
    """The independent reference: `read_identity_records` reads the same CSV on its own."""
    patients = by_type(ms if source == "ms-registry" else bb)["Patient"]
    expected = {r.record_id: r.idat for r in read_identity_records(site / source)}
    assert len(expected) == len(patients)
    assert {pid: patient_idat(p) for pid, p in patients.items()} == expected


def test_biobank_counts_and_values_match_the_csv(site: Path, bb: list[Any]) -> None:
    folder = site / "biobank"
    assert [r for r in bb if isinstance(r, Rejection)] == []
    donors, samples = table(folder, "donors"), table(folder, "samples")
    found = by_type(bb)
    assert len(found["Patient"]) == len(donors) >= 10
    assert len(found["Consent"]) == sum(bool(d["consent_date"]) for d in donors)
    assert len(found["Specimen"]) == len(samples) >= 100
    assert set(found["Condition"]) == {f"{s['donor_id']}-dx-{s['diagnosis_icd10gm']}"
                                       for s in samples if s["diagnosis_icd10gm"]}
    for donor in donors:
        consent = found["Consent"][donor["donor_id"] + "-consent"]
        assert consent["provision"]["period"] == {"start": donor["consent_date"], "end": donor["consent_valid_until"]}
        assert consent["scope"]["coding"][0]["code"] == "research"
        assert found["Patient"][donor["donor_id"]]["gender"] == {"weiblich": "female", "männlich": "male",
                                                                  "divers": "other", "unbekannt": "unknown"}[donor["sex"]]
    ranges = {"-60to-85": (-85, -60), "LN": (-196, -150), "RT": (15, 25)}
    dna = 0
    for s in samples:
        specimen = found["Specimen"][s["sample_id"]]  # the sample id verbatim: the VCF references it
        dna += bool(re.fullmatch(r"[A-Z]D[0-9]{10}", s["sample_id"]))
        assert specimen["meta"]["profile"] == [
            "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Specimen"]
        assert specimen["subject"] == {"reference": "Patient/" + s["donor_id"]}
        assert specimen.get("parent") == ([{"reference": "Specimen/" + s["parent_sample_id"]}]
                                          if s["parent_sample_id"] else None)
        assert specimen["type"]["coding"][0] == {"system": "http://snomed.info/sct", "code": s["snomed_code"]}
        assert specimen["type"]["text"] == s["sample_type_display"]
        assert specimen["status"] == ("available" if s["status"] == "available" else "unavailable")
        assert specimen["collection"]["collectedDateTime"] == berlin(s["collection_datetime"])
        assert specimen["receivedTime"] == berlin(s["received_datetime"])
        container = specimen["container"][0]
        assert container["specimenQuantity"]["value"] == float(s["quantity"])
        assert container["specimenQuantity"]["code"] == s["unit"]
        if s["storage_temperature"]:
            processing = specimen["processing"][0]
            assert container["identifier"][0]["value"] == "/".join(s[k] for k in ("storage_unit", "rack", "box",
                                                                                   "position"))
            temperature = processing["extension"][0]["valueRange"]
            assert (temperature["low"]["value"], temperature["high"]["value"]) == ranges[s["storage_temperature"]]
            assert processing["timePeriod"]["start"] == berlin(s["processing_datetime"])
        else:
            assert "processing" not in specimen and "identifier" not in container
        if s["diagnosis_icd10gm"]:
            reference = specimen["extension"][0]["valueReference"]["reference"]
            condition = found["Condition"][reference.removeprefix("Condition/")]
            assert condition["code"]["coding"][0]["code"] == s["diagnosis_icd10gm"]
    assert dna >= 1


def test_every_resource_is_valid_fhir_r4(ms: list[Any], bb: list[Any]) -> None:
    """Our structural check, and the fhir.resources R4B models as an independent one (R4B differs
    from R4 in none of the elements used here)."""
    pytest.importorskip("fhir.resources")
    for record in ms + bb:
        assert check_resource(record.resource) is None
        kind = record.resource["resourceType"]
        model = getattr(importlib.import_module(f"fhir.resources.R4B.{kind.lower()}"), kind)
        model.model_validate(record.resource)
        for text in re.findall(r'"(?:[a-z]+DateTime|receivedTime|start|end|recordedDate)":"([^"]+)"',
                               orjson.dumps(record.resource).decode()):
            assert len(text) == 10 or re.search(r"[+-][0-9]{2}:[0-9]{2}$", text), text  # a time has a zone


# ------------------------------------------------------------------ Excel
def write_xlsx(csv_path: Path, xlsx_path: Path, blank_row_at: int | None = None) -> None:
    """The CSV as a workbook, typed as Excel users keep it: dates as dates, numbers as numbers."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet("export")
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    for n, row in enumerate(rows):
        if n and n + 1 == blank_row_at:
            sheet.append([])
        sheet.append(row if n == 0 else [typed(column, cell) for column, cell in zip(rows[0], row)])
    book.save(xlsx_path)


def typed(column: str, cell: str) -> Any:
    if not cell:
        return None
    if column.endswith(("_date", "_until")):
        return date.fromisoformat(cell)
    if column.endswith("_datetime"):
        return datetime.strptime(cell, "%Y-%m-%d %H:%M")
    if column in {"edss", "new_enlarging_t2", "gd_enhancing", "quantity"}:
        return float(cell) if "." in cell else int(cell)
    return cell


@pytest.mark.parametrize("source", ["ms-registry", "biobank"])
def test_an_excel_copy_gives_identical_resources(site: Path, tmp_path: Path, source: str,
                                                 ms: list[Any], bb: list[Any]) -> None:
    for path in (site / source).glob("*.csv"):
        write_xlsx(path, tmp_path / (path.stem + ".xlsx"))
    from_excel = list(read_mapped(tmp_path, load_mapping(source)))
    from_csv = ms if source == "ms-registry" else bb
    assert [orjson.dumps(r.resource) for r in from_excel] == [orjson.dumps(r.resource) for r in from_csv]
    assert [r.position.replace(".xlsx", ".csv") for r in from_excel] == [r.position for r in from_csv]
    assert detect_mapping(tmp_path) == source


# ------------------------------------------------------------------ planted errors
def rewrite(path: Path, change: dict[int, str]) -> None:
    """Replace lines of a file (1-based line numbers = spreadsheet rows here)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number, text in change.items():
        lines[number - 1] = text + "\n"
    path.write_text("".join(lines), encoding="utf-8")


def test_planted_errors_are_rejections_naming_file_row_column_and_rule(site: Path, tmp_path: Path,
                                                                       ms: list[Any]) -> None:
    folder = tmp_path / "ms-registry"
    shutil.copytree(site / "ms-registry", folder)
    visits = (folder / "visits.csv").read_text(encoding="utf-8").splitlines()
    patients = (folder / "patients.csv").read_text(encoding="utf-8").splitlines()
    therapies = (folder / "therapies.csv").read_text(encoding="utf-8").splitlines()
    v4, v5, v6 = (line.split(";") for line in visits[3:6])
    rewrite(folder / "visits.csv", {
        4: ";".join([*v4[:4], "12,5x"]),  # not a number
        5: ";".join([v5[0], v5[1], "2019-13-45", *v5[3:]]),  # no such date
        6: ";".join([*v6[:4], "4,5"]),  # a decimal comma is fine
    })
    p3 = patients[2].split(";")
    rewrite(folder / "patients.csv", {3: ";".join([*p3[:8], "XYZ", *p3[9:]])})  # unknown course
    rewrite(folder / "therapies.csv", {2: ";".join(therapies[1].split(";")[:5])})  # a short row
    mri = [line.split(";") for line in (folder / "mri.csv").read_text(encoding="utf-8").splitlines()]
    (folder / "mri.csv").write_text("".join(";".join(r[:4]) + "\n" for r in mri), encoding="utf-8")  # lacks a column

    records = list(read_mapped(folder, load_mapping("ms-registry")))
    rejected = {r.position: r for r in records if isinstance(r, Rejection)}
    assert set(rejected) == {"visits.csv row 4", "visits.csv row 5", "patients.csv row 3", "therapies.csv row 2",
                             "mri.csv row 1"}
    assert rejected["visits.csv row 4"].reason == ("visits.csv row 4, column edss: '12,5x' is not a number "
                                                   "(rule Observation.valueQuantity number)")
    assert rejected["visits.csv row 5"].reason == ("visits.csv row 5, column visit_date: '2019-13-45' is not a "
                                                   "date in the format %Y-%m-%d (rule Observation.effectiveDateTime "
                                                   "date)")
    assert rejected["patients.csv row 3"].reason == (
        "patients.csv row 3, column course: 'XYZ' is not in code map course_icd (known: RRMS, SPMS, PPMS) "
        "(rule Condition.code.coding[0] code_map); patients.csv row 3, column course: 'XYZ' is not in code map "
        "course_snomed (known: RRMS, SPMS, PPMS) (rule Condition.stage[0].summary.coding[0] code_map)")
    assert "5 cells, but the header has 7" in rejected["therapies.csv row 2"].reason
    assert "mri.csv row 1 (header): the header lacks column(s) gd_enhancing" in rejected["mri.csv row 1"].reason
    assert rejected["visits.csv row 4"].raw == (";".join([*v4[:4], "12,5x"]) + "\n").encode()
    assert rejected["visits.csv row 4"].raw_bytes == len(rejected["visits.csv row 4"].raw)
    # the other rows load; the patients row is all or nothing (no Condition without its Patient)
    loaded = by_type([r for r in records if isinstance(r, SourceResource)])
    clean = by_type(ms)
    bad_patient = p3[0]
    assert set(loaded["Patient"]) == set(clean["Patient"]) - {bad_patient}
    assert bad_patient + "-ms" not in loaded["Condition"]
    assert loaded["Observation"][v6[0]]["valueQuantity"]["value"] == 4.5
    assert len(loaded["MedicationStatement"]) == len(clean["MedicationStatement"]) - 1
    assert not any(i.endswith(("-t2", "-gd")) for i in loaded["Observation"])  # mri.csv was not read
    edss = [i for i, o in clean["Observation"].items() if o["code"]["coding"][0]["code"] == "273554001"]
    assert sum(i in loaded["Observation"] for i in edss) == len(edss) - 2


def test_identifying_values_are_not_quoted_in_reasons(site: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ms-registry"
    shutil.copytree(site / "ms-registry", folder)
    row = (folder / "patients.csv").read_text(encoding="utf-8").splitlines()[1].split(";")
    rewrite(folder / "patients.csv", {2: ";".join([*row[:3], "12.04.1994", *row[4:]])})
    rejection = next(r for r in read_mapped(folder / "patients.csv", load_mapping("ms-registry"))
                     if isinstance(r, Rejection))
    assert rejection.reason == ("patients.csv row 2, column birth_date: the value is not a date in the format "
                                "%Y-%m-%d (rule Patient.birthDate date)")


def test_a_missing_file_is_one_rejection_and_the_rest_loads(site: Path, tmp_path: Path) -> None:
    folder = tmp_path / "biobank"
    shutil.copytree(site / "biobank", folder)
    (folder / "samples.csv").unlink()
    records = list(read_mapped(folder, load_mapping("biobank")))
    rejected = [r for r in records if isinstance(r, Rejection)]
    assert len(rejected) == 1 and "no file matches 'samples'" in rejected[0].reason
    assert len(records) - 1 == 2 * len(table(folder, "donors"))  # Patient + Consent per donor
    assert detect_mapping(folder) is None
    with pytest.raises(InputError, match="no such file or folder"):
        list(read_mapped(tmp_path / "nowhere", load_mapping("biobank")))


def test_detect_mapping(site: Path, tmp_path: Path) -> None:
    assert detect_mapping(site / "ms-registry") == "ms-registry"
    assert detect_mapping(site / "biobank") == "biobank"
    assert detect_mapping(site / "biobank" / "samples.csv") == "biobank"
    assert detect_mapping(site) is None  # the files are one level down
    assert detect_mapping(tmp_path) is None
    assert detect_mapping(tmp_path / "nowhere") is None


# ------------------------------------------------------------------ broken specs
def write_spec(folder: Path, text: str) -> Path:
    path = folder / "study.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_broken_spec_names_the_file_and_every_path_inside_it(tmp_path: Path) -> None:
    path = write_spec(tmp_path, """
name: study
code_maps:
  sex: {values: {w: female}}
files:
  - file: people
    resources:
      - resource_type: Patiant
        id: "{pid}"
        elements: []
      - resource_type: Patient
        id: "{pid}"
        elements:
          - {path: birthdate, column: born, date: "%Y-%m-%d"}
          - {path: gender, column: sex, code_map: gender}
          - {path: name.family, column: family}
          - {path: deceasedDateTime, column: died, date: "%d.%m."}
          - {path: "address[0].city", column: city, constant: Berlin}
          - {path: birthDate, column: born, number: decimal, unit: a}
          - {path: managingOrganization, column: org, reference: Organisation}
          - {path: active, column: active, when: {column: x, equals: "1", in: ["2"]}}
          - {path: gender, column: sex, requird: true}
""")
    with pytest.raises(DefinitionError) as caught:
        load_mapping(path)
    error = caught.value
    assert error.source == str(path) and str(error).startswith(f"{path}: ")
    # the schema first (an unknown key), then, once it holds, every cross-check at once
    assert [str(p) for p in error.problems] == [
        "/files/0/resources/1/elements/8/requird: Extra inputs are not permitted"]
    path = write_spec(tmp_path, path.read_text().replace(", requird: true", ""))
    with pytest.raises(DefinitionError) as caught:
        load_mapping(path)
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "/files/0/resources/0/resource_type: 'Patiant' is not a FHIR R4 resource type",
        "/files/0/resources/1/elements/0/path: Patient has no element 'birthdate'",
        "/files/0/resources/1/elements/1/code_map: no code map 'gender' (declared: sex)",
        "/files/0/resources/1/elements/2/path: name is a list: write name[0] (or split a value into the whole list)",
        "/files/0/resources/1/elements/3/date: '%d.%m.' has no year (%Y)",
        "/files/0/resources/1/elements/4: give exactly one of column, template, constant (got column, constant)",
        "/files/0/resources/1/elements/5: birthDate is a date: a number with a unit needs a Quantity element",
        "/files/0/resources/1/elements/6/reference: 'Organisation' is not a FHIR R4 resource type",
        "/files/0/resources/1/elements/7/when: give one of equals, in",
    ]


def test_a_spec_that_is_not_yaml_names_the_line(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "name: study\nfiles:\n  - file: [people\n")
    with pytest.raises(DefinitionError, match=r"study\.yaml: 1 problem.*\n  line 4: not YAML"):
        load_mapping(path)


# ------------------------------------------------------------------ the engine, rule by rule
STUDY = """
name: study
encoding: {encoding}
code_maps:
  arm: {{ignore_case: true, values: {{A: {{system: "urn:study:arm", code: A}}, B: {{system: "urn:study:arm", code: B}}}}}}
  units: {{values: {{"mg/dl": mg/dL, "mmol/l": mmol/L}}}}
files:
  - file: "subjects*"
    resources:
      - resource_type: Patient
        id: "{{site}}-{{subject}}"
        elements:
          - {{path: birthDate, column: born, date: ["%d.%m.%Y", "%Y-%m"]}}
      - resource_type: Observation
        id: "{{site}}-{{subject}}-glucose"
        when: glucose
        elements:
          - {{path: status, constant: final}}
          - {{path: subject, template: "{{site}}-{{subject}}", reference: Patient}}
          - {{path: "code.coding[0]", column: arm, code_map: arm}}
          - {{path: effectiveDateTime, column: taken, date: "%Y%m%d%H%M", required: true}}
          - {{path: valueQuantity, column: glucose, number: decimal, convert: {{from: mg/dL, to: mmol/L, factor: 0.0555,
             digits: 2}}}}
          - {{path: "referenceRange[0].low", column: low, number: decimal, unit_column: low_unit, unit_code_map: units}}
          - {{path: "note[0].text", column: remark}}
      - resource_type: Group
        id: "arm-{{arm}}"
        once: true
        elements:
          - {{path: type, constant: person}}
          - {{path: actual, constant: true}}
"""


def study_mapping(tmp_path: Path, encoding: str = "utf-8") -> Mapping:
    return load_mapping(write_spec(tmp_path, STUDY.format(encoding=encoding)))


def test_transforms_dates_numbers_units_templates_and_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "subjects-2024.csv").write_bytes(
        "\ufeffsite;subject;born;arm;taken;glucose;low;low_unit;remark\n"
        "S1;001;03.02.1961;a;202403311200;100;3,9;mmol/l;\"two\nlines\"\n"  # summer time from 02:00 that day
        "\n"  # a blank row: counted, skipped
        "S1;002;1970-05;B;202401151200;;;;\n"
        "S 1;003;31.12.1999;a;202401150800;90,5;70;mg/dl;x\n".encode())
    records = list(read_mapped(data, study_mapping(tmp_path)))
    # rows as a spreadsheet shows them: the two-line value is one row, the blank row counts
    assert [r.position.removeprefix("subjects-2024.csv row ") for r in records] == ["2", "2", "2", "4", "4", "5", "5"]
    first, glucose, arm_a, second, arm_b, third, glucose3 = (r.resource for r in records)
    assert first == {"resourceType": "Patient", "id": "S1-001", "birthDate": "1961-02-03"}
    assert glucose["effectiveDateTime"] == "2024-03-31T12:00:00+02:00"
    assert glucose["valueQuantity"] == {"value": 5.55, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                        "code": "mmol/L"}
    assert glucose["referenceRange"][0]["low"] == {"value": 3.9, "unit": "mmol/L",
                                                   "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    assert glucose["note"] == [{"text": "two\nlines"}] and glucose["code"]["coding"][0]["code"] == "A"
    assert arm_a == {"resourceType": "Group", "id": "arm-a", "type": "person", "actual": True}
    assert second == {"resourceType": "Patient", "id": "S1-002", "birthDate": "1970-05"}  # no glucose: no Observation
    assert arm_b["id"] == "arm-B"  # row 5's arm-a Group is not made twice (once)
    # "S 1-003" is no FHIR id: a stable hash, the same in the Observation's reference
    assert third["id"] == fhir_id("S 1-003") and re.fullmatch(r"x-[0-9a-f]{40}", third["id"])
    assert glucose3["subject"] == {"reference": f"Patient/{third['id']}"}
    assert glucose3["effectiveDateTime"] == "2024-01-15T08:00:00+01:00"
    assert glucose3["valueQuantity"]["value"] == 5.02  # 90.5 mg/dL x 0.0555, 2 digits
    assert glucose3["referenceRange"][0]["low"]["code"] == "mg/dL"


def test_rows_failing_in_several_ways_and_encodings(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "subjects.csv").write_bytes(
        "site;subject;born;arm;taken;glucose;low;low_unit;remark\n"
        "S1;001;1961-02-30;C;20240331;1e5;3;kg;x\n"
        "S1;002;03.02.1961;A;202401151200;5;;;Gr\xfc\xdfe\n".encode("latin-1")
        + b"S1;003;03.02.1961;A;202401151200;5;;;\xff\n")
    utf8 = list(read_mapped(data, study_mapping(tmp_path)))
    reasons = {r.position: r.reason for r in utf8 if isinstance(r, Rejection)}
    assert reasons["subjects.csv row 2"].split("; ") == [
        ("subjects.csv row 2, column born: the value is not a date in the format %d.%m.%Y or %Y-%m "
         "(rule Patient.birthDate date)"),
        ("subjects.csv row 2, column arm: 'C' is not in code map arm (known: A, B) (rule Observation.code.coding[0] "
         "code_map)"),
        ("subjects.csv row 2, column taken: '20240331' is not a date in the format %Y%m%d%H%M "
         "(rule Observation.effectiveDateTime date)"),
        "subjects.csv row 2, column glucose: '1e5' is not a number (rule Observation.valueQuantity number)",
        ("subjects.csv row 2, column low: unit column low_unit: 'kg' is not in code map units (known: mg/dl, mmol/l) "
         "(rule Observation.referenceRange[0].low number)"),
    ]
    assert reasons["subjects.csv row 3"] == "subjects.csv row 3: bytes not valid utf-8 (the mapping's encoding)"
    assert set(reasons) == {"subjects.csv row 2", "subjects.csv row 3", "subjects.csv row 4"}
    latin = [r for r in read_mapped(data, study_mapping(tmp_path, "latin-1")) if isinstance(r, SourceResource)]
    assert {r.resource.get("note", [{}])[0].get("text") for r in latin if r.resource["resourceType"] == "Observation"
            } == {"Grüße", "ÿ"}


def test_an_excel_sheet_is_chosen_by_name_and_counts_rows_like_excel(tmp_path: Path) -> None:
    mapping = study_mapping(tmp_path)
    spec = mapping.files[0].model_copy(update={"sheet": "Daten"})
    mapping = mapping.model_copy(update={"files": [spec]})
    book = Workbook()
    book.active.title = "Info"
    book.active.append(["not", "this", "sheet"])
    sheet = book.create_sheet("Daten")
    sheet.append(["site", "subject", "born", "arm", "taken", "glucose", "low", "low_unit", "remark"])
    sheet.append(["S1", "001", datetime(1961, 2, 3), "A", "202401151200", 100, None])
    sheet.append([])
    sheet.append(["S1", "002", "30.02.1961", "A", "202401151200"])
    sheet.append(["S1", "003", "03.02.1961", "A", "202401151200", None, None, None, None, "extra"])
    path = tmp_path / "subjects.xlsx"
    book.save(path)
    records = list(read_mapped(path, mapping))
    assert [(type(r).__name__, r.position) for r in records] == [
        ("SourceResource", "subjects.xlsx row 2"), ("SourceResource", "subjects.xlsx row 2"),
        ("SourceResource", "subjects.xlsx row 2"), ("Rejection", "subjects.xlsx row 4"),
        ("Rejection", "subjects.xlsx row 5")]
    assert records[0].resource["birthDate"] == "1961-02-03"
    assert "10 cells, but the header has 9" in records[-1].reason
    missing = mapping.model_copy(update={"files": [spec.model_copy(update={"sheet": "Sheet9"})]})
    (rejection,) = read_mapped(path, missing)
    assert "no sheet 'Sheet9'" in rejection.reason
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not a workbook")
    broken = mapping.model_copy(update={"files": [spec.model_copy(update={"file": "broken"})]})
    (rejection,) = read_mapped(tmp_path / "broken.xlsx", broken)
    assert rejection.position == "broken.xlsx" and "not readable" in rejection.reason

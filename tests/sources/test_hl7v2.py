"""HL7 v2 adapter: headers, mapping to MII-shaped FHIR, errors.

References: Microsoft's FHIR-Converter samples with their expected bundles (../shared/data/hl7v2),
hl7apy for MSH, and a `dic synth` world: its lab feed is written from the HIS resources, and
`read_identity_records` is an independent reader of the same feed's identifying data.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dic.errors import InputError
from dic.fhir import check_resource
from dic.sources import patient_idat, read_identity_records
from dic.sources.hl7v2 import (
    SUPPORTED,
    HL7Error,
    fhir_datetime,
    fhir_id,
    hl7v2_tables,
    is_hl7v2_file,
    message_records,
    parse_header,
    read_hl7v2,
)
from dic.sources.record import PatientMerge, Rejection, SourceResource

IN_CI = os.environ.get("CI", "").lower() == "true"
# The sample set's counts, from its README
README_VERSIONS = {"2.8": 112, "2.6": 8, "2.5.1": 7, "2.3": 6, "2.3.1": 3, "2.5": 2, "2.4": 1}
README_TYPES = {("ADT", "A01"): 5, ("ADT", "A04"): 5, ("ADT", "A08"): 2, ("ORU", "R01"): 5}


def resources(records: list[Any], kind: str | None = None) -> list[dict[str, Any]]:
    found = [r.resource for r in records if isinstance(r, SourceResource)]
    return [r for r in found if kind is None or r["resourceType"] == kind]


def rejections(records: list[Any]) -> list[Rejection]:
    return [r for r in records if isinstance(r, Rejection)]


def assert_valid(records: list[Any]) -> None:
    for resource in resources(records):
        assert check_resource(resource) is None, (resource["resourceType"], check_resource(resource))


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# ------------------------------------------------------------------ Microsoft samples
@pytest.fixture(scope="session")
def samples(shared_data: Path) -> Path:
    path = shared_data / "hl7v2" / "microsoft-fhir-converter"
    if not (path / "messages").is_dir():
        if IN_CI:
            pytest.fail(f"required under CI=true: HL7 v2 samples not found at {path}")
        pytest.skip(f"HL7 v2 samples not found at {path}")
    return path


@pytest.fixture(scope="session")
def sample_records(samples: Path) -> dict[str, list[Any]]:
    return {f.name: list(read_hl7v2(f)) for f in sorted((samples / "messages").glob("*.hl7"))}


def test_every_sample_header_parses_with_the_readme_counts(samples: Path) -> None:
    import hl7
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_segment

    files = sorted((samples / "messages").glob("*.hl7"))
    assert len(files) == 139
    versions, types, checked_by_hl7apy = Counter(), Counter(), set()
    for file in files:
        raw = file.read_bytes()
        header = parse_header(raw)  # splits MSH itself: python-hl7 and hl7apy are independent references
        versions[header.version] += 1
        types[header.message_type] += 1
        msh = raw.decode("utf-8-sig").replace("\r\n", "\r").replace("\n", "\r").split("\r")[0]
        theirs = hl7.parse(msh)
        assert header.message_type == (theirs["MSH.F9.R1.C1"], theirs["MSH.F9.R1.C2"]), file.name
        assert (header.control_id, header.version) == (theirs["MSH.F10"], theirs["MSH.F12.R1.C1"]), file.name
        if header.version not in checked_by_hl7apy:  # hl7apy is slow (~20 ms a segment): once per version
            checked_by_hl7apy.add(header.version)
            apy = parse_segment(msh, version="2.5", validation_level=VALIDATION_LEVEL.TOLERANT)
            assert header.message_type == (apy.msh_9.msh_9_1.value, apy.msh_9.msh_9_2.value), file.name
            assert (header.control_id, header.version) == (apy.msh_10.value, apy.msh_12.msh_12_1.value)
    assert dict(versions) == README_VERSIONS
    for kind, count in README_TYPES.items():
        assert types[kind] == count


def test_supported_samples_map_and_unsupported_ones_are_one_rejection_each(
        samples: Path, sample_records: dict[str, list[Any]]) -> None:
    supported = 0
    for name, records in sample_records.items():
        header = parse_header((samples / "messages" / name).read_bytes())
        assert_valid(records)
        if header.message_type in SUPPORTED:
            supported += 1
            assert len(resources(records, "Patient")) == 1, name
        else:
            assert len(records) == 1 and isinstance(records[0], Rejection), name
            assert f"message type {'^'.join(header.message_type)} is not supported" in records[0].reason
            assert records[0].position == "message 1 (line 1)"
    assert supported == 23


@pytest.mark.parametrize("kind", ["ADT_A01", "ADT_A03", "ADT_A04", "ADT_A08", "ORU_R01"])
def test_samples_agree_with_the_expected_bundles(kind: str, samples: Path,
                                                 sample_records: dict[str, list[Any]]) -> None:
    compared = Counter()
    for expected_file in sorted((samples / "expected-fhir" / kind).glob("*-expected.json")):
        name = expected_file.name.removesuffix("-expected.json") + ".hl7"
        bundle = [e["resource"] for e in json.loads(expected_file.read_text())["entry"]]
        records = sample_records[name]
        theirs = next(r for r in bundle if r["resourceType"] == "Patient")
        ours = resources(records, "Patient")[0]
        assert ours["identifier"][0]["value"] in {i.get("value") for i in theirs["identifier"]}, name
        assert ours.get("birthDate") == theirs.get("birthDate"), name
        assert ours.get("gender") == theirs.get("gender"), name
        their_name = next((n for n in theirs["name"] if n.get("use") == "official"), theirs["name"][0])
        assert (ours["name"][0]["family"], ours["name"][0]["given"]) == (their_name["family"], their_name["given"])
        compared["Patient"] += 1
        their_encounters = [r for r in bundle if r["resourceType"] == "Encounter"]
        for encounter in resources(records, "Encounter"):
            expected = their_encounters[0]
            assert encounter["class"]["code"] == expected["class"]["code"], name
            assert instant(encounter["period"]["start"]) == instant(expected["period"]["start"]), name
            if "end" in encounter["period"]:
                assert instant(encounter["period"]["end"]) == instant(expected["period"]["end"]), name
            compared["Encounter"] += 1
        observations = resources(records, "Observation") if kind == "ORU_R01" else []
        for expected in (r for r in bundle if r["resourceType"] == "Observation" and kind == "ORU_R01"):
            code = expected["code"]["coding"][0]["code"]
            mine = [o for o in observations if o["code"]["coding"][0]["code"] == code]
            if not mine:  # MS maps OBX types we reject (RP, repeated NM): they are rejections here
                assert rejections(records), (name, code)
                continue
            ours_value = mine[0]
            for value in ("valueQuantity", "valueString"):
                assert ours_value.get(value) == expected.get(value) or (
                    {k: ours_value[value][k] for k in expected[value]} == expected[value]), (name, code)
            if "valueCodeableConcept" in expected:
                assert ours_value["valueCodeableConcept"]["coding"] == [
                    {"system": c["system"], "code": c["code"], "display": c["display"]}
                    for c in expected["valueCodeableConcept"]["coding"]]
            compared["Observation"] += 1
    assert compared["Patient"] >= 2
    if kind == "ORU_R01":
        assert compared["Observation"] >= 50
    else:
        assert compared["Encounter"] >= 2


def test_sample_merge_and_cancel(sample_records: dict[str, list[Any]]) -> None:
    merge = [r for r in sample_records["ADT-A40-01.hl7"] if isinstance(r, PatientMerge)]
    assert [(m.prior_id, m.surviving_id) for m in merge] == [("56789", "12345")]
    cancelled = resources(sample_records["ADT-A11-01.hl7"], "Encounter")
    assert [e["status"] for e in cancelled] == ["entered-in-error"]


# ------------------------------------------------------------------ a synth world
@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dic.synth import write_world

    folder = tmp_path_factory.mktemp("hl7v2-world")
    write_world(folder, sites=1, patients=60, seed=7)
    return next(folder.glob("site-*"))


@pytest.fixture(scope="session")
def lab_records(world: Path) -> list[Any]:
    return list(read_hl7v2(world / "lab" / "messages.hl7"))


def _ndjson(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_synth_lab_feed_maps_without_rejections(world: Path, lab_records: list[Any]) -> None:
    messages = (world / "lab" / "messages.hl7").read_bytes().count(b"MSH|")
    assert rejections(lab_records) == []
    assert_valid(lab_records)
    assert len(resources(lab_records, "Patient")) == messages  # each message carries its PID
    positions = {r.position for r in lab_records}
    assert len(positions) == messages and "message 1 (line 1)" in positions
    assert resources(lab_records, "Observation") and resources(lab_records, "Encounter")


def test_synth_observations_equal_the_his_values(world: Path, lab_records: list[Any]) -> None:
    his = {o["identifier"][0]["value"]: o for o in _ndjson(world / "his-fhir" / "Observation.ndjson")
           if o.get("identifier")}
    ours = resources(lab_records, "Observation")
    assert len(ours) > 100
    for observation in ours:
        accession_loinc = observation["identifier"][0]["value"]
        expected = his[accession_loinc]
        assert observation["code"]["coding"][0] == expected["code"]["coding"][0]
        assert observation["valueQuantity"] == expected["valueQuantity"], accession_loinc
        assert observation["referenceRange"] == expected["referenceRange"], accession_loinc
        assert observation["interpretation"][0]["coding"][0]["code"] == \
            expected["interpretation"][0]["coding"][0]["code"]
        assert observation["effectiveDateTime"] == expected["effectiveDateTime"]
        assert observation["status"] == expected["status"]
    specimens = {s["accessionIdentifier"]["value"] for s in _ndjson(world / "his-fhir" / "Specimen.ndjson")}
    assert {s["accessionIdentifier"]["value"] for s in resources(lab_records, "Specimen")} <= specimens


def test_synth_encounters_equal_the_his_encounters(world: Path, lab_records: list[Any]) -> None:
    his = {e["identifier"][0]["value"]: e for e in _ndjson(world / "his-fhir" / "Encounter.ndjson")}
    ours = resources(lab_records, "Encounter")
    finished = 0
    for encounter in ours:
        expected = his[encounter["identifier"][0]["value"]]
        assert encounter["class"]["code"] == expected["class"]["code"]
        assert encounter["period"]["start"] == expected["period"]["start"]
        assert encounter["serviceType"]["coding"][0]["code"] == expected["serviceType"]["coding"][0]["code"]
        if encounter["status"] == "finished":
            assert encounter["period"]["end"] == expected["period"]["end"]
            finished += 1
    assert finished > 0


def test_synth_patient_idat_equals_the_identity_reader(world: Path, lab_records: list[Any]) -> None:
    expected = {r.record_id: r.idat for r in read_identity_records(world / "lab")
                if not isinstance(r, Rejection)}
    latest: dict[str, dict[str, str]] = {}
    insured: dict[str, str] = {}
    for patient in resources(lab_records, "Patient"):
        number = patient["identifier"][0]["value"]
        idat = patient_idat(patient)
        assert idat.pop("patient_number", number) == number
        if "insurance_number" in idat:  # a result message carries no IN1: the last ADT's wins
            insured[number] = idat.pop("insurance_number")
        latest[number] = idat
    for number, idat in latest.items():
        if number in insured:
            idat["insurance_number"] = insured[number]
    assert latest == expected
    assert insured  # the feed's IN1-36 KVNRs came through


# ------------------------------------------------------------------ hand-written messages
A04_V23 = (
    "\ufeffMSH|^~\\&|KIS|UKX|LIS|UKX|20240105083000||ADT^A04|c-1|P|2.3\n"
    "EVN|A04|20240105083000\n"
    "PID|1|EXT9|4711^^^UKX^MR~X123456789^^^GKV^KVZ10||M\\XC3BC\\ller\\T\\S\\S\\hn^J\\F\\rg^Karl||19800229|M|||"
    "Haupt\\E\\stra\\XC39F\\e 1^^K\\XC3B6\\ln^^50667^DEU^H\n"
    + "|".join(["PV1", "1", "O", "CHIR-AMB^^^UKX", *[""] * 6, "1500", *[""] * 8, "F-88^^^UKX^VN", *[""] * 24,
                "20240105083000"]) + "\n"
)


def test_a04_v23_with_bom_lf_and_escapes() -> None:
    records = message_records(A04_V23.encode("utf-8"), "test", "message 1")
    assert rejections(records) == []
    assert_valid(records)
    patient = resources(records, "Patient")[0]
    assert patient["id"] == "4711"
    assert patient["name"] == [{"use": "official", "family": "Müller&S^hn", "given": ["J|rg", "Karl"]}]
    assert patient["birthDate"] == "1980-02-29"
    assert patient["address"][0]["line"] == ["Haupt\\straße 1"] and patient["address"][0]["city"] == "Köln"
    assert patient["address"][0]["country"] == "DE"
    assert patient["identifier"][1] == {
        "use": "official",
        "type": {"coding": [{"system": "http://fhir.de/CodeSystem/identifier-type-de-basis", "code": "KVZ10"}]},
        "system": "http://fhir.de/sid/gkv/kvid-10", "value": "X123456789"}
    assert patient_idat(patient)["insurance_number"] == "X123456789"
    encounter = resources(records, "Encounter")[0]
    assert encounter["id"] == "F-88" and encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "AMB"
    assert encounter["period"] == {"start": "2024-01-05T08:30:00+01:00"}  # Berlin winter time
    assert encounter["subject"] == {"reference": "Patient/4711"}


def _pv1(fields: dict[int, str]) -> str:
    values = [""] * (max(fields) + 1)
    for n, value in fields.items():
        values[n] = value
    return "|".join(["PV1", *values[1:]])


def _adt(trigger: str, admit: str = "20240701080000+0200", discharge: str = "", version: str = "2.6",
         pid: str = "PID|1||4711^^^UKX^MR||Muster^Eva", visit: str = "F-1") -> str:
    pv1 = _pv1({1: "1", 2: "I", 3: "STA1^101^2^UKX", 10: "0100", 19: f"{visit}^^^UKX^VN", 44: admit, 45: discharge})
    return (f"MSH|^~\\&|KIS|UKX|LIS|UKX|20240701120000+0200||ADT^{trigger}|c-{trigger}|P|{version}\r"
            f"EVN|{trigger}|20240701120000+0200||||20240701115500+0200\r{pid}\r{pv1}\r")


def test_adt_events_set_the_encounter_status() -> None:
    cases = {
        ("A01", ""): ("in-progress", None),
        ("A03", ""): ("finished", "2024-07-01T11:55:00+02:00"),  # no PV1-45: EVN-6
        ("A03", "20240702100000"): ("finished", "2024-07-02T10:00:00+02:00"),
        ("A08", ""): ("in-progress", None),
        ("A08", "20240702100000"): ("finished", "2024-07-02T10:00:00+02:00"),
        ("A11", ""): ("entered-in-error", None),
    }
    for (trigger, discharge), (status, end) in cases.items():
        records = message_records(_adt(trigger, discharge=discharge), "test", "m")
        assert rejections(records) == [], trigger
        assert_valid(records)
        encounter = resources(records, "Encounter")[0]
        assert encounter["status"] == status, trigger
        assert encounter["period"].get("end") == end, trigger
        assert encounter["period"]["start"] == "2024-07-01T08:00:00+02:00"
        assert encounter["location"] == [{"location": {"display": "STA1 / 101 / 2"}}]
        assert encounter["type"][1]["coding"][0]["code"] == "normalstationaer"
        assert encounter["serviceType"]["coding"][0] == {
            "system": "http://fhir.de/CodeSystem/dkgev/Fachabteilungsschluessel", "code": "0100"}
    no_visit = resources(message_records(_adt("A01", visit=""), "test", "m"), "Encounter")[0]
    assert no_visit["id"].startswith("h-") and "identifier" not in no_visit
    assert no_visit["id"] == resources(message_records(_adt("A08", visit=""), "test", "m"), "Encounter")[0]["id"]


def test_a40_yields_the_surviving_patient_and_the_merge() -> None:
    text = ("MSH|^~\\&|KIS|UKX|LIS|UKX|20240701120000||ADT^A40^ADT_A39|m-1|P|2.5\r"
            "EVN|A40|20240701120000\rPID|1||4711^^^UKX^MR||Muster^Eva||19700101|F\r"
            "MRG|0815^^^UKX^MR~A.B/7^^^UKX^PI\r")
    records = message_records(text, "test", "message 9 (line 3)")
    assert [type(r).__name__ for r in records] == ["SourceResource", "PatientMerge"]
    assert records[1] == PatientMerge("0815", "4711", "test", "message 9 (line 3)")
    missing = message_records(text.replace("MRG|0815^^^UKX^MR~A.B/7^^^UKX^PI\r", ""), "test", "m")
    assert [r.reason for r in rejections(missing)] == ["MRG: segment missing (required in ADT^A40)"]


ORU = (
    "MSH|^~\\&|LIS|UKX|KIS|UKX|20240701120000+0200||ORU^R01^ORU_R01|o-1|P|2.5.1|||||DEU|8859/1\r"
    "PID|1||4711^^^UKX^MR||Muster^Eva||19700101|F\r"
    "PV1|1|I|STA1" + "|" * 16 + "F-1^^^UKX^VN\r"
    "OBR|1|P-1^KIS|A-1^LIS|24331-1^Lipid panel^LN|||20240701100000+0200|||||||||||||||20240701113000+0200|||F\r"
    "OBX|1|NM|2093-3^Cholesterol^LN||212|mg/dL^^UCUM|<200|H|||F|||20240701101500+0200\r"
    "NTE|1|L|h\xe4molytisch\r"
    "OBX|2|NM|2571-8^Triglyceride^LN||abc|mg/dL^^UCUM|||||F\r"
    "OBX|3|SN|2085-9^HDL^LN||<^0.5|mmol/L^^UCUM|>1.0||||C\r"
    "OBX|4|SN|X-1^Titer^L||^1^:^40||||||F\r"
    "OBX|5|SN|X-2^Range^L||^2^-^4|10*3/uL^^UCUM|||||P\r"
    "OBX|6|CWE|X-3^Befund^L||260385009^Negative^SCT^^^^^^negativ||||||F\r"
    "OBX|7|DT|X-4^Datum^L||20240630||||||F\r"
    "OBX|8|FT|X-5^Text^L||Zeile 1\\.br\\Zeile 2~Zeile 3||||||F\r"
    "OBX|9|ED|X-6^PDF^L||^AP^PDF^Base64^JVBERi0=||||||F\r"
    "OBX|10|NM|||5||||||F\r"
    "OBX|11|NM|X-7^Pending^L||||||||I\r"
    "OBX|12|NM|2093-3^Cholesterol^LN||190|mg/dL^^UCUM|||||F\r"
    "SPM|1|^S-9&LIS||SER^Serum^HL70487|||||||||||||20240701095500+0200\r"
)


def test_oru_values_units_and_errors() -> None:
    records = message_records(ORU.encode("latin-1"), "test", "message 1 (line 1)")
    assert_valid(records)
    assert sorted(r.reason for r in rejections(records)) == [
        "OBX[10]-3: no observation identifier (code)",
        "OBX[2]-5: 'abc' is not a number (OBX-2 NM)",
        "OBX[9]-2: value type 'ED' is not supported (supported: NM, SN, ST, TX, FT, CE, CWE, CNE, DT, TS, DTM)",
    ]
    observations: dict[str, dict[str, Any]] = {}
    for observation in resources(records, "Observation"):
        observations.setdefault(observation["code"]["coding"][0]["code"], observation)
    cholesterol = observations["2093-3"]
    assert cholesterol["id"] == "A-1-2093-3"
    assert cholesterol["identifier"][0]["value"] == "A-1-2093-3"
    assert cholesterol["valueQuantity"] == {"value": 212, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                            "code": "mg/dL"}
    assert cholesterol["referenceRange"] == [{"high": {"value": 200, "unit": "mg/dL",
                                                       "system": "http://unitsofmeasure.org", "code": "mg/dL"}}]
    assert cholesterol["interpretation"][0]["coding"][0]["code"] == "H"
    assert cholesterol["note"] == [{"text": "hämolytisch"}]  # 8859/1
    assert cholesterol["effectiveDateTime"] == "2024-07-01T10:15:00+02:00"
    assert cholesterol["issued"] == "2024-07-01T11:30:00+02:00"
    assert cholesterol["encounter"] == {"reference": "Encounter/F-1"}
    assert cholesterol["specimen"] == {"reference": "Specimen/S-9"}
    assert cholesterol["category"][0]["coding"][1]["code"] == "24331-1"
    # the same test twice in one order: told apart by OBX-1
    assert [o["id"] for o in resources(records, "Observation") if o["code"]["coding"][0]["code"] == "2093-3"] == \
        ["A-1-2093-3", "A-1-2093-3-12"]
    hdl = observations["2085-9"]
    assert hdl["status"] == "corrected"
    assert hdl["valueQuantity"]["comparator"] == "<" and hdl["valueQuantity"]["value"] == 0.5
    assert hdl["effectiveDateTime"] == "2024-07-01T10:00:00+02:00"  # OBR-7
    assert observations["X-1"]["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 40}}
    assert observations["X-1"]["code"]["coding"][0]["system"] == "urn:dic:hl7v2:local-code:L"
    assert observations["X-2"]["valueRange"]["high"]["value"] == 4 and observations["X-2"]["status"] == "preliminary"
    assert observations["X-3"]["valueCodeableConcept"] == {
        "coding": [{"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"}],
        "text": "negativ"}
    assert observations["X-4"]["valueDateTime"] == "2024-06-30"
    assert observations["X-5"]["valueString"] == "Zeile 1\nZeile 2\nZeile 3"
    assert "valueQuantity" not in observations["X-7"] and observations["X-7"]["status"] == "registered"
    specimen = resources(records, "Specimen")[0]
    assert specimen["id"] == "S-9" and specimen["collection"]["collectedDateTime"] == "2024-07-01T09:55:00+02:00"
    assert specimen["type"]["coding"][0]["code"] == "SER"


def test_a_broken_file_rejects_what_is_broken_and_loads_the_rest(tmp_path: Path) -> None:
    good = _adt("A01")
    messages = [
        "EVN|A01|20240101\r",  # before any MSH
        good,
        "MSH|^~\\&|KIS|UKX|LIS|UKX|20240701||ADT|c-2|P|2.5\rPID|1||1^^^UKX^MR\r",  # no trigger event
        good.replace("4711^^^UKX^MR", ""),  # no patient number
        good.replace("20240701080000+0200", "20241301"),  # PV1-44 month 13
        good.replace("Muster^Eva", "Muster^Eva||19801340"),  # PID-7 day 40
        "MSH|^~\\&|KIS|UKX|LIS|UKX|20240701||ADT^A02|c-3|P|2.5\rPID|1||1^^^UKX^MR\r",
        "MSH|^~\\&|KIS|UKX|LIS|UKX|20240701||ADT^A01|c-4|P|2.2\rPID|1||1^^^UKX^MR\r",
        "\x0b" + good.replace("F-1", "F-2") + "\x1c\r",  # MLLP framing
        good.replace("F-1", "F-3")[:-40],  # truncated
    ]
    path = tmp_path / "feed.hl7"
    path.write_bytes("".join(messages).encode("utf-8"))
    records = list(read_hl7v2(path))
    assert_valid(records)
    reasons = [(r.position, r.reason) for r in rejections(records)]
    assert reasons == [
        ("line 1", "segments before the first MSH segment"),
        ("message 2 (line 6)", "MSH-9: no message type and trigger event (e.g. ADT^A01)"),
        ("message 3 (line 8)", "PID-3: no patient identifier (nor PID-2)"),
        ("message 4 (line 12)", ("PV1-44: admit date/time '20241301' is not a valid HL7 timestamp "
                                "(month must be in 1..12); no Encounter")),
        ("message 5 (line 16)", "PID-7: birth date is not a valid HL7 date (YYYY[MM[DD]])"),
        ("message 6 (line 20)", ("message type ADT^A02 is not supported (supported: ADT^A01, ADT^A03, ADT^A04, "
                                "ADT^A08, ADT^A11, ADT^A40, ORU^R01)")),
        ("message 7 (line 22)", ("MSH-12: version '2.2' is not supported (supported: 2.3, 2.3.1, 2.4, 2.5, 2.5.1, "
                                "2.6, 2.7, 2.7.1, 2.8, 2.8.1, 2.8.2, 2.9)")),
        ("message 9 (line 29)", "truncated: the last segment (PV1) has no segment terminator (CR)"),
    ]
    assert [e["id"] for e in resources(records, "Encounter")] == ["F-1", "F-1", "F-2"]
    # a bad birth date rejects the Patient, not the visit
    assert [r.position for r in records if isinstance(r, SourceResource)
            and r.resource["resourceType"] == "Encounter"][1] == "message 5 (line 16)"
    assert all(r.raw.startswith(b"MSH") or r.position == "line 1" for r in rejections(records))


def test_parse_header() -> None:
    header = parse_header(A04_V23.encode("utf-8"))
    assert header.message_type == ("ADT", "A04") and header.control_id == "c-1" and header.version == "2.3"
    assert (header.sending_application, header.sending_facility) == ("KIS", "UKX")
    assert (header.receiving_application, header.receiving_facility) == ("LIS", "UKX")
    assert header.charset == "utf-8" and header.field_separator == "|" and header.encoding_characters == "^~\\&"
    oru = parse_header(ORU.encode("latin-1"))
    assert oru.charset == "latin-1" and oru.structure == "ORU_R01" and oru.declared_charset == "8859/1"
    problems = {
        "PID|1": ("MSH", None, 100),
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01||P|2.5": ("MSH", 10, 101),
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.1": ("MSH", 12, 203),
        "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5||||||ISO IR87": ("MSH", 18, 103),
        "MSH|^^^^|A": ("MSH", 2, 102),
    }
    for text, (segment, field, code) in problems.items():
        with pytest.raises(HL7Error) as caught:
            parse_header(text)
        assert (caught.value.segment, caught.value.field, caught.value.code) == (segment, field, code), text
        assert isinstance(caught.value, InputError)
    with pytest.raises(HL7Error, match="not valid utf-8"):
        parse_header(b"MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5||||||UNICODE UTF-8\rPID|1||M\xfcller")


def test_undeclared_charset_falls_back_to_latin1() -> None:
    text = "MSH|^~\\&|A|B|C|D|2024||ADT^A08|1|P|2.4\rPID|1||7^^^B^MR||M\xfcller^Jo\r"
    records = message_records(text.encode("latin-1"), "t", "m")
    assert resources(records, "Patient")[0]["name"][0]["family"] == "Müller"
    assert [r.reason for r in rejections(records)] == ["PV1: segment missing (required in ADT^A08); no Encounter"]


def test_death_and_chunked_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dic.sources import hl7v2

    dead = _adt("A08", pid="PID|1||4711^^^UKX^MR||Muster^Eva||19700101|F" + "|" * 21 + "20240701093000|Y")
    patient = resources(message_records(dead, "t", "m"), "Patient")[0]
    assert patient["deceasedDateTime"] == "2024-07-01T09:30:00+02:00"
    alive = _adt("A08", pid="PID|1||4711^^^UKX^MR||Muster^Eva||19700101|F" + "|" * 22 + "N")
    assert resources(message_records(alive, "t", "m"), "Patient")[0]["deceasedBoolean"] is False
    path = tmp_path / "crlf.hl7"
    path.write_bytes((dead.replace("\r", "\r\n") + alive).encode())
    whole = list(read_hl7v2(path))
    monkeypatch.setattr(hl7v2, "_CHUNK", 7)  # CRLFs split between chunks stay one line break
    assert list(read_hl7v2(path)) == whole
    assert [r.position for r in whole if isinstance(r, SourceResource)] == ["message 1 (line 1)"] * 2 + [
        "message 2 (line 5)"] * 2


def test_is_hl7v2_file(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf\x0bMSH|^~\\&|x")
    (tmp_path / "b.txt").write_text("hello")
    assert is_hl7v2_file(tmp_path / "x.HL7") and is_hl7v2_file(tmp_path / "x.hl7v2")
    assert is_hl7v2_file(tmp_path / "a.txt") and not is_hl7v2_file(tmp_path / "b.txt")
    assert not is_hl7v2_file(tmp_path / "c.ndjson")


@pytest.mark.parametrize(("ts", "expected"), [
    ("2024", "2024"), ("202402", "2024-02"), ("20240229", "2024-02-29"),
    ("202401051230", "2024-01-05T12:30:00+01:00"), ("20240705123015", "2024-07-05T12:30:15+02:00"),
    ("20240705123015.25-0500", "2024-07-05T12:30:15.250-05:00"), ("2024070512+0000", "2024-07-05T12:00:00+00:00"),
])
def test_fhir_datetime(ts: str, expected: str) -> None:
    assert fhir_datetime(ts) == expected


@pytest.mark.parametrize("ts", ["20230229", "2024-01-01", "202413", "20240101T1200", "20240101120000+1500", ""])
def test_fhir_datetime_rejects(ts: str) -> None:
    with pytest.raises(ValueError):
        fhir_datetime(ts)


def test_fhir_id_is_safe_and_injective() -> None:
    values = ["4711", "A.B/7", "A.2EB.2F7", "a b", "Müller", "x" * 64, "x" * 65, "y" * 200]
    ids = [fhir_id(v) for v in values]
    assert ids[:2] == ["4711", "A.2EB.2F7"]
    assert len(set(ids)) == len(values)
    assert all(check_resource({"resourceType": "Patient", "id": i}) is None for i in ids)


def test_tables_load() -> None:
    tables = hl7v2_tables()
    assert set(tables.sexes.values()) == {"male", "female", "other", "unknown"}
    assert "2.5" in tables.versions and tables.patient_classes["I"].code == "IMP"


def test_corrupted_messages_never_raise(world: Path) -> None:
    import random

    messages = [m for m in (world / "lab" / "messages.hl7").read_bytes().split(b"\r\n") if m]
    rand = random.Random(1)
    for _ in range(300):
        message = bytearray(rand.choice(messages))
        for _ in range(rand.randint(1, 6)):
            at = rand.randrange(len(message))
            if rand.random() < 0.5:
                message[at] = rand.choice(b"|^~\\&\r\nX0.\xff ")
            else:
                del message[at:at + rand.randint(1, 20)]
        records = message_records(bytes(message), "fuzz", "message 1")
        assert records
        assert_valid(records)

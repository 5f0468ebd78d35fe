"""The synthetic FHIR population: valid R4 (by an independent parser), deterministic, free of
identifying data, referentially whole, medically consistent, and with the planted prevalences."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fhir.resources.R4B import get_fhir_model_class

from dic.errors import ConfigError, DefinitionError
from dic.fhir import check_resource
from dic.synth import generate_population, write_bad_samples, write_ndjson
from dic.synth.catalog import CATALOG_PATH, load_catalog

SRC = Path(__file__).resolve().parents[2] / "src"
ICD = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
TYPES = {"Patient", "Encounter", "Condition", "Procedure", "Observation", "MedicationAdministration",
         "MedicationStatement", "Consent", "Specimen"}


@pytest.fixture(scope="module")
def population() -> list[dict[str, Any]]:
    return list(generate_population(200, 11))


def by_type(resources: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in resources:
        found[r["resourceType"]].append(r)
    return found


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [x for v in node.values() for x in references(v)]
    if isinstance(node, list):
        return [x for v in node for x in references(v)]
    return []


def digest_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ validity and shape
def test_every_resource_validates_against_fhir_resources_r4b(population: list[dict[str, Any]]) -> None:
    failures = []
    for resource in population:
        try:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        except Exception as error:  # noqa: BLE001 - collect every failure, report a few
            failures.append(f"{resource['resourceType']}/{resource['id']}: {str(error)[:300]}")
    assert not failures, f"{len(failures)} invalid resources, e.g.\n" + "\n".join(failures[:5])


def test_every_resource_passes_the_repository_check(population: list[dict[str, Any]]) -> None:
    assert [r["id"] for r in population if check_resource(r) is not None] == []


def test_resource_mix_per_patient(population: list[dict[str, Any]]) -> None:
    counts = Counter(r["resourceType"] for r in population)
    assert set(counts) == TYPES
    assert counts["Patient"] == 200
    assert 40 <= len(population) / 200 <= 70
    assert len({(r["resourceType"], r["id"]) for r in population}) == len(population), "duplicate ids"
    assert all(len(r["id"]) <= 64 for r in population)
    assert population[0]["resourceType"] == "Patient"


# ------------------------------------------------------------------ no identifying data
def test_patients_carry_no_identifying_data(population: list[dict[str, Any]]) -> None:
    patients = by_type(population)["Patient"]
    allowed = {"resourceType", "id", "meta", "gender", "birthDate", "deceasedDateTime", "address"}
    for p in patients:
        assert set(p) <= allowed, set(p) - allowed
        assert not {"name", "telecom", "identifier", "photo", "contact"} & set(p)
        for address in p["address"]:
            assert set(address) <= {"type", "postalCode", "country"}
            assert re.fullmatch(r"\d{2}", address["postalCode"])
    ids = [p["id"] for p in patients]
    assert all(re.fullmatch(r"[0-9a-f]{20}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert len({i[:4] for i in ids}) > 150, "ids should look random, not share a prefix"


def test_site_changes_patient_ids() -> None:
    a = [r["id"] for r in itertools.islice(generate_population(5, 1, site="site-a"), 200)
         if r["resourceType"] == "Patient"]
    b = [r["id"] for r in itertools.islice(generate_population(5, 1, site="site-b"), 200)
         if r["resourceType"] == "Patient"]
    assert a and b and not set(a) & set(b)


# ------------------------------------------------------------------ referential integrity
def test_every_reference_resolves(population: list[dict[str, Any]]) -> None:
    known = {f"{r['resourceType']}/{r['id']}" for r in population}
    dangling = [(r["id"], ref) for r in population for ref in references(r) if ref not in known]
    assert dangling == []
    subjects = [r["subject"]["reference"] for r in population if "subject" in r]
    assert subjects and all(s.startswith("Patient/") for s in subjects)


def test_encounter_diagnoses_point_at_their_own_conditions(population: list[dict[str, Any]]) -> None:
    conditions = {c["id"]: c for c in by_type(population)["Condition"]}
    listed = set()
    for encounter in by_type(population)["Encounter"]:
        ranks = [d["rank"] for d in encounter["diagnosis"]]
        assert ranks == list(range(1, len(ranks) + 1))
        assert encounter["diagnosis"][0]["use"]["coding"][0]["code"] == "CC"
        assert {d["use"]["coding"][0]["code"] for d in encounter["diagnosis"][1:]} <= {"CM"}
        for d in encounter["diagnosis"]:
            condition = conditions[d["condition"]["reference"].removeprefix("Condition/")]
            assert condition["encounter"]["reference"] == f"Encounter/{encounter['id']}"
            assert condition["subject"] == encounter["subject"]
            listed.add(condition["id"])
    assert listed == set(conditions), "every Condition is some encounter's diagnosis"


# ------------------------------------------------------------------ medical consistency
def test_icd_and_ops_codings_carry_the_year_as_version(population: list[dict[str, Any]]) -> None:
    for c in by_type(population)["Condition"]:
        coding = c["code"]["coding"][0]
        assert coding["system"] == ICD
        assert coding["version"] == c["recordedDate"][:4]
        assert re.fullmatch(r"[A-Z]\d\d(\.\d{1,2})?", coding["code"])
        assert c["onsetDateTime"] <= c["recordedDate"][:10]
    for p in by_type(population)["Procedure"]:
        assert p["code"]["coding"][0]["system"] == "http://fhir.de/CodeSystem/bfarm/ops"
        assert re.fullmatch(r"\d-\d{2,3}[a-z0-9]?(\.[a-z0-9]{1,2})?", p["code"]["coding"][0]["code"])


def test_lab_interpretation_matches_value_and_reference_range(population: list[dict[str, Any]]) -> None:
    labs = [o for o in by_type(population)["Observation"] if o["category"][0]["coding"][0]["code"] == "laboratory"]
    assert len(labs) > 1000
    seen = Counter()
    for o in labs:
        value = o["valueQuantity"]["value"]
        low, high = o["referenceRange"][0]["low"]["value"], o["referenceRange"][0]["high"]["value"]
        expected = "H" if value > high else "L" if value < low else "N"
        flag = o["interpretation"][0]["coding"][0]["code"]
        assert flag == expected, (o["id"], value, low, high, flag)
        assert o["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert o["code"]["coding"][0]["system"] == "http://loinc.org"
        seen[flag] += 1
    assert seen["N"] > seen["H"] > 0 and seen["L"] > 0


def test_vital_signs_are_plausible_and_bmi_is_derived(population: list[dict[str, Any]]) -> None:
    observations = by_type(population)["Observation"]
    by_encounter: dict[str, dict[str, float]] = defaultdict(dict)
    for o in observations:
        code = o["code"]["coding"][0]["code"]
        if "valueQuantity" in o:
            by_encounter[o["encounter"]["reference"]][code] = o["valueQuantity"]["value"]
        if code == "85354-9":
            systolic, diastolic = (c["valueQuantity"]["value"] for c in o["component"])
            assert 80 <= systolic <= 230 and 40 <= diastolic < systolic
    checked = 0
    for values in by_encounter.values():
        if {"8302-2", "29463-7", "39156-5"} <= set(values):
            height_m = values["8302-2"] / 100
            assert values["39156-5"] == pytest.approx(values["29463-7"] / height_m**2, abs=0.06)
            checked += 1
    assert checked > 100
    smoking = [o for o in observations if o["code"]["coding"][0]["code"] == "72166-2"]
    assert len(smoking) == 200
    assert {o["valueCodeableConcept"]["coding"][0]["system"] for o in smoking} == {"http://snomed.info/sct"}
    births = {f"Patient/{p['id']}": p["birthDate"] for p in by_type(population)["Patient"]}
    for o in smoking:
        if o["valueCodeableConcept"]["coding"][0]["code"] != "266919005":  # anything but never smoked
            birth = births[o["subject"]["reference"]]
            assert int(o["effectiveDateTime"][:4]) - int(birth[:4]) >= 13, "no smoking children"


def test_medications_are_atc_coded_with_a_dose(population: list[dict[str, Any]]) -> None:
    found = by_type(population)
    for m in found["MedicationStatement"] + found["MedicationAdministration"]:
        coding = m["medicationCodeableConcept"]["coding"][0]
        assert coding["system"] == "http://fhir.de/CodeSystem/bfarm/atc"
        assert re.fullmatch(r"[A-Z]\d\d[A-Z]{2}\d\d", coding["code"])
        dosage = m["dosage"][0]["doseAndRate"][0]["doseQuantity"] if isinstance(m["dosage"], list) \
            else m["dosage"]["dose"]
        assert dosage["value"] > 0 and dosage["system"] == "http://unitsofmeasure.org"
    statements = found["MedicationStatement"]
    assert all(s["effectivePeriod"]["start"] <= s["effectivePeriod"].get("end", "9999") for s in statements)


def test_consent_follows_the_mii_broad_consent_shape(population: list[dict[str, Any]]) -> None:
    consents = by_type(population)["Consent"]
    assert 0.75 * 200 <= len(consents) < 210
    types = Counter()
    for c in consents:
        assert c["policy"][0]["uri"].startswith("urn:oid:2.16.840.1.113883.3.1937.777.24")
        assert c["provision"]["type"] == "deny"
        for p in c["provision"]["provision"]:
            assert p["code"][0]["coding"][0]["system"] == "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
            assert p["period"]["start"] < p["period"].get("end", "9999")
            types[p["type"]] += 1
    assert types["permit"] > types["deny"] > 0


def test_some_consents_are_withdrawn_later_by_a_consent_of_denials() -> None:
    consents = [r for r in generate_population(3000, 12) if r["resourceType"] == "Consent"]
    first = {c["patient"]["reference"]: c for c in consents if not c["id"].endswith("-withdrawal")}
    withdrawals = [c for c in consents if c["id"].endswith("-withdrawal")]
    share = len(withdrawals) / len(first)
    assert 0.01 < share < 0.05, share  # declared: 3 % of those who consented
    for w in withdrawals:
        original = first[w["patient"]["reference"]]
        assert w["dateTime"] > original["dateTime"]
        assert {p["type"] for p in w["provision"]["provision"]} == {"deny"}
        assert all(p["period"]["start"] == w["dateTime"][:10] for p in w["provision"]["provision"])
        every_module = {p["code"][0]["coding"][0]["code"] for p in original["provision"]["provision"]}
        assert every_module == {p["code"][0]["coding"][0]["code"] for p in w["provision"]["provision"]}
        assert all("end" not in p["period"] for p in w["provision"]["provision"]), "open-ended"


def test_deaths_come_after_every_encounter(population: list[dict[str, Any]]) -> None:
    found = by_type(population)
    last_end: dict[str, str] = {}
    for e in found["Encounter"]:
        key = e["subject"]["reference"]
        last_end[key] = max(last_end.get(key, ""), e["period"]["end"])
    dead = [p for p in found["Patient"] if "deceasedDateTime" in p]
    assert dead, "some patients die"
    for p in dead:
        # same offset format in both strings, so the text order is the time order within a day
        assert p["deceasedDateTime"][:16] >= last_end[f"Patient/{p['id']}"][:16]


def test_hypertension_prevalence_matches_the_catalog() -> None:
    """Planted prevalence (from catalog.yaml, by age band and sex) within 4 standard errors."""
    catalog = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    pop = catalog["population"]
    disease = next(d for d in catalog["diseases"] if d["id"] == "hypertension")
    assert not disease.get("risk_factors"), "the expectation below ignores risk factors"
    sex_total = sum(s["weight"] for s in pop["sexes"])
    band_total = sum(b["weight"] for b in pop["age_bands"])
    expected = 0.0
    for sex in pop["sexes"]:
        for k, band in enumerate(pop["age_bands"]):
            old_enough = min(1.0, max(0.0, (band["high"] - disease["min_age"]) / (band["high"] - band["low"])))
            expected += (sex["weight"] / sex_total) * (band["weight"] / band_total) * old_enough \
                * disease["prevalence_pct"][sex["table"]][k] / 100
    patients = 3000
    with_code = set()
    for r in generate_population(patients, 23):
        if r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"].startswith("I10"):
            with_code.add(r["subject"]["reference"])
    observed = len(with_code) / patients
    standard_error = (expected * (1 - expected) / patients) ** 0.5
    assert 0.2 < expected < 0.5
    assert abs(observed - expected) < 4 * standard_error, (observed, expected)


def test_breast_cancer_is_almost_only_in_women() -> None:
    sexes = {}
    cases = set()
    for r in generate_population(3000, 5):
        if r["resourceType"] == "Patient":
            sexes[r["id"]] = r["gender"]
        elif r["resourceType"] == "Condition" and r["code"]["coding"][0]["code"].startswith("C50"):
            cases.add(r["subject"]["reference"].removeprefix("Patient/"))
    assert len(cases) > 20
    assert sum(sexes[c] == "male" for c in cases) <= 0.05 * len(cases)


# ------------------------------------------------------------------ determinism, files, streaming
def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first = write_ndjson(tmp_path / "a", 60, 7)
    second = write_ndjson(tmp_path / "b", 60, 7)
    other = write_ndjson(tmp_path / "c", 60, 8)
    assert first == second
    assert digest_files(tmp_path / "a") == digest_files(tmp_path / "b")
    assert digest_files(tmp_path / "a") != digest_files(tmp_path / "c")
    assert set(first) == TYPES and first != other


def test_same_bytes_in_another_process(tmp_path: Path) -> None:
    """No dependence on hash randomization or process state: two interpreters, same files."""
    script = ("import sys; from pathlib import Path; from dic.synth.fhir_population import write_ndjson; "
              "write_ndjson(Path(sys.argv[1]), 25, 5, site='site-b', gzip=True)")
    for name, hash_seed in (("one", "1"), ("two", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed,
               "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, env=env)
    assert digest_files(tmp_path / "one") == digest_files(tmp_path / "two")
    assert len(digest_files(tmp_path / "one")) == len(TYPES)


def test_files_hold_the_counted_resources(tmp_path: Path) -> None:
    counts = write_ndjson(tmp_path / "plain", 40, 3)
    for kind, count in counts.items():
        lines = (tmp_path / "plain" / f"{kind}.ndjson").read_bytes().splitlines()
        assert len(lines) == count
        assert {orjson.loads(line)["resourceType"] for line in lines} == {kind}
    zipped = write_ndjson(tmp_path / "gz", 40, 3, gzip=True)
    write_ndjson(tmp_path / "gz2", 40, 3, gzip=True)
    assert zipped == counts
    assert digest_files(tmp_path / "gz") == digest_files(tmp_path / "gz2"), "gzip output is deterministic too"
    for kind in counts:
        unzipped = gzip.decompress((tmp_path / "gz" / f"{kind}.ndjson.gz").read_bytes())
        assert unzipped == (tmp_path / "plain" / f"{kind}.ndjson").read_bytes()


def test_generation_streams() -> None:
    """Ten million patients: the first resources come at once (nothing is built up front)."""
    first = list(itertools.islice(generate_population(10_000_000, 1), 100))
    assert first[0]["resourceType"] == "Patient" and len(first) == 100


def test_years_bound_the_encounters() -> None:
    starts = [r["period"]["start"] for r in generate_population(100, 9, years=(2020, 2021))
              if r["resourceType"] == "Encounter"]
    assert min(starts) >= "2020-01-01" and max(starts) < "2022-02"
    assert {s[:4] for s in starts} == {"2020", "2021"}


def test_invalid_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="years"):
        next(generate_population(1, 1, years=(2025, 2015)))
    with pytest.raises(ConfigError, match="seed"):
        next(generate_population(1, -1))


# ------------------------------------------------------------------ the catalog
def test_catalog_loads() -> None:
    catalog = load_catalog()
    assert {d.id for d in catalog.diseases} >= {"multiple-sclerosis", "parkinsons-disease", "type-2-diabetes",
                                                "hypertension", "atrial-fibrillation", "ischaemic-stroke",
                                                "breast-cancer", "copd", "depression"}


def test_catalog_problems_are_all_reported(tmp_path: Path) -> None:
    data = yaml.safe_load(CATALOG_PATH.read_text(encoding="utf-8"))
    data["diseases"][0]["department"] = "9999"
    data["diseases"][0]["risk_factors"] = {"no-such-disease": 2.0}
    broken = tmp_path / "catalog.yaml"
    broken.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_catalog(broken)
    assert [p.path for p in caught.value.problems] == ["/diseases/0/risk_factors/no-such-disease",
                                                       "/diseases/0/department"]
    assert "9999" in str(caught.value)


# ------------------------------------------------------------------ the deliberately broken file
def test_bad_samples_are_bad_for_the_stated_reason(tmp_path: Path) -> None:
    expected = write_bad_samples(tmp_path)
    path = expected[0][0]
    lines = path.read_bytes().splitlines()
    flagged = {line: keyword for _, line, keyword in expected}
    assert {p for p, _, _ in expected} == {path}
    assert len(flagged) >= 6 and len(lines) > len(flagged)
    for number, raw in enumerate(lines, start=1):
        try:
            resource = orjson.loads(raw)
        except orjson.JSONDecodeError:
            assert flagged.get(number) == "invalid JSON"
            continue
        reason = check_resource(resource)
        if number in flagged:
            assert reason is not None and flagged[number] in reason, (number, reason)
        else:
            assert reason is None, (number, reason)


def test_bad_samples_sit_beside_a_population(tmp_path: Path) -> None:
    counts = write_ndjson(tmp_path, 5, 1)
    write_bad_samples(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {f"{k}.ndjson" for k in counts} | {"bad-records.ndjson"}
    shutil.rmtree(tmp_path)

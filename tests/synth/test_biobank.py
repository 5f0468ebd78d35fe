"""The biobank source: the LIMS export read back with the csv module against the published
column lists, checked against the HIS record it was written from (consent, encounters,
diagnoses), the genomics subset's DNA samples, unique storage positions, rates and determinism."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic.errors import ConfigError, DefinitionError
from dic.synth.biobank import BiobankWriter, dna_sample_id, load_biobank
from dic.synth.site_patient import Identity, PersonId, SiteContext, SitePatient
from dic.synth.world import site_patients

SITE, SEED, YEARS, N = "site-b", 11, (2015, 2025), 1500
BIOMAT = {"2.16.840.1.113883.3.1937.777.24.5.3.19", "2.16.840.1.113883.3.1937.777.24.5.3.20"}
PUBLISHED = {  # the biobank's published export layout
    "donors.csv": ["donor_id", "given_name", "family_name", "birth_date", "sex", "consent_date",
                   "consent_valid_until"],
    "samples.csv": ["sample_id", "donor_id", "parent_sample_id", "sample_level", "sample_type",
                    "sample_type_display", "snomed_code", "case_number", "collection_datetime", "received_datetime",
                    "processing_datetime", "storage_temperature", "storage_unit", "rack", "box", "position",
                    "quantity", "unit", "diagnosis_icd10gm", "status"],
}
SEX = {"female": "weiblich", "male": "männlich", "other": "divers", "unknown": "unbekannt"}


def permitted(resources: list[dict[str, Any]]) -> bool:
    """Independent reading of the MII Broad Consent: both BIOMAT provisions are 'permit'."""
    for r in resources:
        if r["resourceType"] == "Consent" and r["status"] == "active":
            types = {c["code"]: p["type"] for p in r["provision"].get("provision", [])
                     for concept in p["code"] for c in concept["coding"] if c["code"] in BIOMAT}
            return set(types) == BIOMAT and set(types.values()) == {"permit"}
    return False


@cache
def patients(n: int = N, seed: int = SEED, site: str = SITE) -> tuple[SitePatient, ...]:
    return tuple(site_patients(n, seed, site, YEARS))


def write(folder: Path, people: tuple[SitePatient, ...] | list[SitePatient], seed: int = SEED,
          site: str = SITE) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    folder.mkdir(parents=True, exist_ok=True)
    links: list[tuple[str, str, str]] = []
    writer = BiobankWriter(folder, SiteContext(site, seed, YEARS, lambda *row: links.append(row)))
    for patient in people:
        writer.add(patient)
    return writer.close(), links


def read(folder: Path) -> dict[str, list[dict[str, str]]]:
    """Both files with the csv module: the header is the published list, every row its length."""
    tables = {}
    for name, columns in PUBLISHED.items():
        with (folder / name).open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        assert rows[0] == columns, name
        assert all(len(r) == len(columns) for r in rows[1:]), name
        tables[name] = [dict(zip(columns, r, strict=True)) for r in rows[1:]]
    return tables


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("biobank")
    counts, links = write(folder, patients())
    tables = read(folder)
    person = {p.person_id: p for p in patients()}
    donor_of = {record: person[pid] for source, record, pid in links if source == "biobank"}
    return {"folder": folder, "counts": counts, "links": links, "donor_of": donor_of, **tables}


def test_declarations_load_and_report_every_problem(tmp_path: Path) -> None:
    bank = load_biobank()
    assert bank.columns == PUBLISHED
    data = yaml.safe_load(Path(__file__).parents[2].joinpath("src/dic/synth/biobank.yaml").read_text("utf-8"))
    data["sample_types"][2]["parent"] = "NO-SUCH-TUBE"
    data["sample_types"][3]["storage"] = "-20"
    broken = tmp_path / "biobank.yaml"
    broken.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionError) as raised:
        load_biobank.__wrapped__(broken)
    where = {p.path for p in raised.value.problems}
    assert {"/sample_types/2/parent", "/sample_types/3/storage"} <= where


def test_counts_links_and_row_counts(export: dict[str, Any]) -> None:
    assert export["counts"] == {"donors.csv": len(export["donors.csv"]), "samples.csv": len(export["samples.csv"])}
    donors = [d["donor_id"] for d in export["donors.csv"]]
    assert len(set(donors)) == len(donors) == len(export["donor_of"])
    assert all(d.startswith("BB-B-") and len(d) == 12 for d in donors)
    assert [s for s, *_ in export["links"]] == ["biobank"] * len(donors)
    assert 0.15 * N < len(donors) < 0.6 * N  # genotyped (about a fifth) plus a share of eligible patients


def test_donors_only_with_biomat_permit_and_their_idat(export: dict[str, Any]) -> None:
    for row in export["donors.csv"]:
        patient = export["donor_of"][row["donor_id"]]
        assert permitted(patient.resources), row["donor_id"]
        consent = next(r for r in patient.resources if r["resourceType"] == "Consent")
        assert row["consent_date"] == consent["dateTime"][:10]
        assert row["consent_valid_until"] >= row["consent_date"]
        who = patient.identity("biobank")
        assert [row["given_name"], row["family_name"], row["birth_date"]] == \
               [who.given or "", who.family or "", who.birth_date or ""]
        assert row["sex"] == (SEX[who.sex] if who.sex else "")


def test_every_genotyped_patient_has_one_dna_sample(export: dict[str, Any]) -> None:
    donor_by_person = {p.person_id: d for d, p in export["donor_of"].items()}
    dna = {s["sample_id"]: s for s in export["samples.csv"] if s["sample_type"] == "DNA"}
    genotyped = [p for p in patients() if p.genotyped]
    assert len(genotyped) > 100
    for patient in genotyped:
        sample = dna[dna_sample_id(SITE, patient)]
        assert sample["donor_id"] == donor_by_person[patient.person_id]
        assert sample["storage_temperature"] == "-60to-85" and sample["unit"] == "ug"
    per_donor = Counter(s["donor_id"] for s in dna.values())
    assert max(per_donor.values()) == 1


def test_samples_refer_to_donors_and_parents(export: dict[str, Any]) -> None:
    samples = {s["sample_id"]: s for s in export["samples.csv"]}
    assert len(samples) == len(export["samples.csv"])
    donors = {d["donor_id"] for d in export["donors.csv"]}
    declared = {t.id: t for t in load_biobank().sample_types}
    for s in samples.values():
        assert s["donor_id"] in donors
        kind = declared[s["sample_type"]]
        assert s["snomed_code"] == kind.snomed and s["unit"] == kind.unit
        assert kind.quantity[0] <= float(s["quantity"]) <= kind.quantity[1]
        if kind.parent is None:
            assert s["parent_sample_id"] == "" and s["sample_level"] == "primary"
            continue
        parent = samples[s["parent_sample_id"]]
        assert s["sample_level"] == "aliquot" and parent["sample_type"] == kind.parent
        assert (parent["donor_id"], parent["case_number"], parent["collection_datetime"]) == \
               (s["donor_id"], s["case_number"], s["collection_datetime"])
    kinds = Counter(s["sample_type"] for s in samples.values())
    assert {"EDTA", "PLASMA", "BUFFY", "DNA", "SERUM"} <= set(kinds)


def test_storage_positions_unique_and_as_declared(export: dict[str, Any]) -> None:
    declared = {t.id: t for t in load_biobank().sample_types}
    pools = {p.id: p.temperature for p in load_biobank().storage}
    places = []
    for s in export["samples.csv"]:
        kind = declared[s["sample_type"]]
        where = (s["storage_unit"], s["rack"], s["box"], s["position"])
        if kind.storage is None:
            assert where == ("", "", "", "") and s["status"] == "depleted" and s["storage_temperature"] == ""
        else:
            assert all(where) and s["storage_temperature"] == pools[kind.storage]
            assert s["status"] in {"available", "used"}
            places.append(where)
    assert len(places) == len(set(places)) > 1000


def test_collections_happen_at_the_donors_encounters(export: dict[str, Any]) -> None:
    def local(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp[:19])

    donor_of = export["donor_of"]
    for s in export["samples.csv"]:
        patient = donor_of[s["donor_id"]]
        encounters = {e["identifier"][0]["value"]: e for e in patient.resources if e["resourceType"] == "Encounter"}
        encounter = encounters[s["case_number"]]
        taken, received, done = (datetime.fromisoformat(s[k]) for k in
                                 ("collection_datetime", "received_datetime", "processing_datetime"))
        assert local(encounter["period"]["start"]) <= taken <= local(encounter["period"]["end"])
        assert taken <= received <= done
        consent = next(r for r in patient.resources if r["resourceType"] == "Consent")
        assert taken >= local(consent["dateTime"])
        primary = next(d for d in encounter["diagnosis"] if d["rank"] == 1)["condition"]["reference"]
        condition = next(r for r in patient.resources if f"Condition/{r['id']}" == primary)
        assert s["diagnosis_icd10gm"] == condition["code"]["coding"][0]["code"]


def test_collection_sites_and_donation_share(export: dict[str, Any]) -> None:
    """First collections are at inpatient or neurology contacts (else genotyped); the share of
    eligible, not genotyped patients who donate is the declared one (binomial, 4 SE)."""
    bank = load_biobank()
    donors = {p.person_id for p in export["donor_of"].values()}

    def eligible(patient: SitePatient) -> bool:
        return permitted(patient.resources) and any(
            e["class"]["code"] == "IMP" or e["serviceType"]["coding"][0]["code"] == "2800"
            for e in patient.resources if e["resourceType"] == "Encounter")

    pool = [p for p in patients() if not p.genotyped and eligible(p)]
    share = sum(p.person_id in donors for p in pool) / len(pool)
    se = (bank.donation_pct / 100 * (1 - bank.donation_pct / 100) / len(pool)) ** 0.5
    assert abs(share - bank.donation_pct / 100) < 4 * se + 0.01
    assert all(eligible(p) or p.genotyped for p in export["donor_of"].values())


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, export: dict[str, Any]) -> None:
    def digest(folder: Path) -> str:
        return hashlib.sha256(b"".join((folder / n).read_bytes() for n in PUBLISHED)).hexdigest()

    write(tmp_path / "again", patients())
    write(tmp_path / "other", patients(), seed=SEED + 1)
    assert digest(tmp_path / "again") == digest(export["folder"])
    assert digest(tmp_path / "other") != digest(export["folder"])


def test_genotyped_without_biomat_permit_is_a_config_error(tmp_path: Path) -> None:
    refused = next(p for p in patients() if not permitted(p.resources))
    bad = SitePatient(refused.person_id, SITE, refused.patient_number, refused.resources, refused.identity,
                      refused.genotype, True)
    with pytest.raises(ConfigError, match="does not permit BIOMAT"):
        write(tmp_path, [bad])


def test_dna_sample_id_is_fixed_unique_and_patient_number_free() -> None:
    def person(number: str) -> SitePatient:
        return SitePatient(PersonId("P"), SITE, number, [], lambda source: Identity(*[None] * 8))

    numbers = [str(1_000_000_001 + i) for i in range(200_000)]
    ids = [dna_sample_id(SITE, person(n)) for n in numbers]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 12 and i.startswith("BD") and i[2:].isdigit() for i in ids)
    assert not any(n[-9:] in i for n, i in zip(numbers[:1000], ids[:1000]))
    assert dna_sample_id(SITE, person("1000000001")) == ids[0] != dna_sample_id("site-c", person("1000000001"))
    assert dna_sample_id(SITE, person("X-17")) == dna_sample_id(SITE, person("X-17"))

"""`dic synth` end to end: layout, determinism, linkage truth, persons shared between sites,
the HIS export's identifying data, and a research repository that holds none of it."""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class

from dic.engines import Engine
from dic.errors import ConfigError
from dic.repository import init_repository, load_paths, open_repository
from dic.synth import SOURCES, write_world
from dic.synth.identity import is_valid_kvnr

SITES, PATIENTS, SEED = 2, 700, 3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world")
    write_world(out, sites=SITES, patients=PATIENTS, seed=SEED)
    return out


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def ndjson(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def test_layout_every_site_has_every_source_and_the_truth_is_apart(world: Path) -> None:
    assert sorted(p.name for p in world.iterdir()) == ["site-a", "site-b", "truth"]
    for site in ("site-a", "site-b"):
        assert sorted(p.name for p in (world / site).iterdir()) == sorted(SOURCES)
        for source in SOURCES:
            assert any((world / site / source).iterdir()), f"{site}/{source} is empty"
    assert {p.name for p in (world / "truth").iterdir()} >= {"linkage.csv", "persons.csv", "effects.json",
                                                              "manifest.json", "identity_errors.csv"}
    manifest = orjson.loads((world / "truth" / "manifest.json").read_bytes())
    assert manifest["patients_per_site"] == {"site-a": 350, "site-b": 350} and manifest["seed"] == SEED


def test_same_seed_same_bytes_other_seed_other_bytes_and_formats_do_not_interact(
        world: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_world(again, sites=SITES, patients=PATIENTS, seed=SEED)
    assert digests(again) == digests(world)
    subset = tmp_path / "subset"
    write_world(subset, sites=SITES, patients=PATIENTS, seed=SEED, formats=["billing", "his-fhir"])
    mine = {k: v for k, v in digests(subset).items() if not k.startswith("truth")}
    assert mine and all(digests(world)[k] == v for k, v in mine.items())
    other = tmp_path / "other"
    write_world(other, sites=SITES, patients=PATIENTS, seed=SEED + 1, formats=["his-fhir"])
    assert digests(other)["site-a/his-fhir/Patient.ndjson"] != digests(world)["site-a/his-fhir/Patient.ndjson"]


def test_refuses_bad_arguments_and_a_folder_in_use(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        write_world(tmp_path / "used", sites=1, patients=10, seed=1)
    with pytest.raises(ConfigError, match="unknown format"):
        write_world(tmp_path / "a", sites=1, patients=10, seed=1, formats=["hl7"])
    with pytest.raises(ConfigError, match="sites"):
        write_world(tmp_path / "b", sites=0, patients=10, seed=1)
    with pytest.raises(ConfigError, match="at least one per site"):
        write_world(tmp_path / "c", sites=3, patients=2, seed=1)


def test_linkage_truth_names_a_person_for_every_patient_and_some_persons_at_two_sites(world: Path) -> None:
    links = rows(world / "truth" / "linkage.csv")
    by_key = {(r["site"], r["source"], r["record_id"]): r["person_id"] for r in links}
    assert len(by_key) == len(links), "one row per source record"
    persons = {r["person_id"]: r for r in rows(world / "truth" / "persons.csv")}
    assert set(by_key.values()) <= set(persons)
    sites_of: dict[str, set[str]] = defaultdict(set)
    for site in ("site-a", "site-b"):
        patients = ndjson(world / site / "his-fhir" / "Patient.ndjson")
        assert len(patients) == 350
        for p in patients:
            number = next(i["value"] for i in p["identifier"] if i["type"]["coding"][0]["code"] == "MR")
            person = by_key[(site, "his", number)]
            sites_of[person].add(site)
    shared = [p for p, s in sites_of.items() if len(s) == 2]
    assert 3 <= len(shared) <= 25, f"{len(shared)} persons at both sites (declared: 3 % of site-b)"
    assert len(persons) == len(sites_of), "persons.csv lists each person once"
    sources = {r["source"] for r in links}
    # the MS registry enrols MS patients only: at this size there may be none
    assert sources - {"ms-registry"} == {"his", "lab", "billing", "biobank", "genomics"}


def test_his_patients_carry_identifying_data_that_matches_the_truth_mostly(world: Path) -> None:
    links = {(r["site"], r["record_id"]): r["person_id"]
             for r in rows(world / "truth" / "linkage.csv") if r["source"] == "his"}
    persons = {r["person_id"]: r for r in rows(world / "truth" / "persons.csv")}
    agree = total = 0
    for site in ("site-a", "site-b"):
        for p in ndjson(world / site / "his-fhir" / "Patient.ndjson"):
            ids = {i["type"]["coding"][0]["code"]: i["value"] for i in p["identifier"]}
            truth = persons[links[(site, ids["MR"])]]
            if "KVZ10" in ids:
                assert is_valid_kvnr(ids["KVZ10"]) or ids["KVZ10"] != truth["insurance_number"]
            total += 1
            agree += (p.get("name", [{}])[0].get("family") == truth["family"]
                      and p["birthDate"] == truth["birth_date"])
    assert agree / total > 0.9, "the HIS is the cleanest source"
    assert agree < total, "the HIS has a few errors too"


def test_his_export_validates_against_fhir_resources_r4b(world: Path) -> None:
    failures = []
    for path in sorted((world / "site-b" / "his-fhir").glob("*.ndjson")):
        for resource in ndjson(path)[:300]:
            try:
                get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            except Exception as error:  # noqa: BLE001 - collect and report
                failures.append(f"{path.name} {resource['id']}: {str(error)[:200]}")
    assert not failures, failures[:5]


def test_truth_states_the_planted_effects(world: Path) -> None:
    effects = orjson.loads((world / "truth" / "effects.json").read_bytes())
    kinds = defaultdict(list)
    for effect in effects:
        kinds[effect["kind"]].append(effect)
        assert effect["definition"] and effect["magnitude"], effect["id"]
    assert len(kinds["adverse-drug-effect"]) >= 10 and len(kinds["negative-control"]) >= 10
    ratios = sorted(e["magnitude"]["incidence_rate_ratio"] for e in kinds["adverse-drug-effect"])
    assert ratios[0] == 1.5 and ratios[-1] == 6.0 and any(e["rare"] for e in kinds["adverse-drug-effect"])
    assert kinds["drug-lab-effect"] and kinds["prodrome"] and kinds["complication-cluster"]
    assert kinds["gene-disease"] and kinds["lifestyle"] and kinds["comorbidity"]
    assert any(e["source"] == "ms-registry" for e in effects)


def test_the_research_repository_holds_none_of_the_identifying_data(world: Path, tmp_path: Path) -> None:
    """Load every site's HIS export; no true or spelled name, street, insurance or patient number
    appears anywhere in the repository's tables."""
    secrets: set[str] = set()
    for person in rows(world / "truth" / "persons.csv"):
        secrets |= {person["family"], person["birth_name"], person["street"], person["insurance_number"],
                    *person["given_names"].split()}
    for site in ("site-a", "site-b"):
        for p in ndjson(world / site / "his-fhir" / "Patient.ndjson"):
            secrets |= {i["value"] for i in p["identifier"]}
            secrets |= {n.get("family", "") for n in p.get("name", [])}
            secrets |= {line for a in p["address"] for line in a.get("line", [])}
    secrets = {s for s in secrets if len(s) >= 4}
    repo = tmp_path / "repo"
    init_repository(repo, Engine.duckdb)
    db = open_repository(repo)
    try:
        reports = load_paths(db, [world / site / "his-fhir" for site in ("site-a", "site-b")])
        assert all(r.reconciles and r.quarantined == 0 for r in reports)
        found: set[str] = set()
        for name in db.table_names():
            for row in db.fetch(f"SELECT * FROM {name}", f"scan {name}").rows:  # type: ignore[arg-type]
                for value in row:
                    if isinstance(value, str):
                        found |= _strings(value)
    finally:
        db.close()
    leaked = secrets & found
    assert not leaked, f"identifying data in the repository: {sorted(leaked)[:10]}"


def _strings(text: str) -> set[str]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {text}
    out: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out

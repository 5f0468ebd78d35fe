"""Issue 4's definition of done: a `dic synth` world of three sites loads completely from every
source (HIS FHIR, lab HL7 v2, §21 billing, MS registry, biobank, VCF): every record is loaded or
quarantined with a reason and the counts reconcile per source, each person's data from all sources
ends up under one pseudonym (measured against the synthetic truth), and loading it all again changes
nothing."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from dic.cli.demo import linkage_quality, load_world
from dic.engines import Database, Engine
from dic.repository import init_repository, open_repository
from dic.synth import write_world
from dic.synth.catalog import load_catalog

SITES = ["site-a", "site-b", "site-c"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Database, dict, dict]]:
    folder = tmp_path_factory.mktemp("all-sources")
    world, repo = folder / "world", folder / "repo"
    catalog = load_catalog()  # MS is rare (~0.3 %): 20-fold, so that 450 patients fill the registries
    diseases = [d.model_copy(update={"prevalence_pct": {k: [x * 20 for x in v] for k, v in d.prevalence_pct.items()}})
                if d.id == "multiple-sclerosis" else d for d in catalog.diseases]
    generated = write_world(world, sites=3, patients=450, seed=21,
                            catalog=catalog.model_copy(update={"diseases": diseases}))
    assert generated.sites == SITES
    init_repository(repo, Engine.duckdb)
    db = open_repository(repo)
    first = load_world(db, repo, world, SITES)
    second = load_world(db, repo, world, SITES)
    yield world, repo, db, first, second
    db.close()


def test_every_source_of_every_site_loads_and_reconciles(loaded) -> None:
    world, _, _, first, _ = loaded
    assert set(first) == {f"{folder}@{site}" for site in SITES for folder in
                          ("his-fhir", "lab", "billing", "ms-registry", "biobank", "genomics")
                          if (world / site / folder).exists()}
    read = Counter()
    for source, reports in first.items():
        assert reports and all(r.reconciles for r in reports), source
        assert sum(r.quarantined for r in reports) == 0, (source, [r.as_dict() for r in reports])
        read[source.split("@")[0]] += sum(r.read for r in reports)
    assert all(read.values()), read  # (a small site may have no MS patient; all sites together do)


def test_the_counts_match_the_source_files(loaded) -> None:
    world, _, db, first, _ = loaded
    for site in SITES:
        with (world / site / "billing" / "OPS.csv").open(encoding="utf-8") as stream:
            ops_rows = sum(1 for _ in stream) - 1
        with (world / site / "ms-registry" / "visits.csv").open(encoding="utf-8") as stream:
            visits = sum(1 for _ in stream) - 1
        oru = sum(1 for line in (world / site / "lab" / "messages.hl7").read_text().splitlines()
                  if line.startswith("OBX|"))
        batches = {source: reports for source, reports in first.items() if source.endswith(site)}
        kinds = Counter()
        for source, reports in batches.items():
            for report in reports:
                for (kind,) in db.fetch(f"SELECT resource_type FROM resource_history WHERE batch_id = {report.batch_id}",
                                        "test").rows:
                    kinds[(source.split("@")[0], kind)] += 1
        assert kinds[("billing", "Procedure")] == ops_rows
        assert kinds[("ms-registry", "Observation")] >= visits
        assert kinds[("lab", "Observation")] == oru - 0  # one Observation per OBX (corrections are new versions)


def test_each_person_is_under_one_pseudonym_across_sources_and_sites(loaded) -> None:
    world, repo, db, _, _ = loaded
    quality = linkage_quality(db, repo.parent / "repo-trust", world, SITES)
    # HIS, lab and billing share the hospital's patient number: linked exactly; registry and biobank by IDAT
    assert quality["precision"] >= 0.995 and quality["recall"] >= 0.995, quality
    assert quality["one_pseudonym"] >= 0.99 * quality["persons"], quality
    sources = Counter(source.split("@")[0] for source in _registered_sources(repo))
    assert {"his", "lab", "billing", "ms-registry", "biobank"} <= set(sources)


def test_the_genomic_variants_belong_to_the_donors_patient(loaded) -> None:
    world, _, db, _, _ = loaded
    rows = db.fetch("SELECT content FROM resource WHERE resource_type = 'Observation' AND "
                    "content::VARCHAR LIKE '%69548-6%'", "test").rows
    assert rows
    observations = [orjson.loads(content) for (content,) in rows]
    assert all(o["subject"]["reference"].startswith("Patient/") for o in observations)
    patients = {id for (id,) in db.fetch("SELECT id FROM resource WHERE resource_type = 'Patient'", "test").rows}
    assert {o["subject"]["reference"].removeprefix("Patient/") for o in observations} <= patients
    with (world / "truth" / "linkage.csv").open(newline="") as stream:
        carriers = {row["record_id"] for row in csv.DictReader(stream) if row["source"] == "genomics"}
    assert carriers


def test_loading_everything_again_changes_nothing(loaded) -> None:
    *_, second = loaded
    changed = {source: sum(r.loaded + r.updated + r.deleted for r in reports) for source, reports in second.items()}
    assert not any(changed.values()), changed


def _registered_sources(repo: Path) -> list[str]:
    from dic.trust import Caller, TrustCenter

    center = TrustCenter.open(repo.parent / "repo-trust")
    try:
        return [source for source, _, _ in center.assignments(Caller("test (staff)", "staff"))]
    finally:
        center.close()

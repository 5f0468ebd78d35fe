"""`dic demo`: the end-to-end tour on the embedded DuckDB default.

Writes a synthetic test world (`dic synth`: two hospitals, every source system, truth kept
apart) plus a file of deliberately broken records. Each site's HIS FHIR export goes through the
in-process trust center into a fresh repository: patients registered and linked, identifying
data removed, pseudonyms only. The identities of the other source systems (lab, MS registry,
biobank) are registered too, so persons are linked across sources and sites; the linkage is
measured against the synthetic truth. A second load changes nothing; the standard views are
materialized and the demo prints what is where.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.cli.repository_commands import print_batches
from dic.cli.trust_link import load_through_trust, trust_link
from dic.engines import Database, Engine
from dic.repository import BatchReport, init_repository, open_repository, quarantine_list, resource_counts
from dic.sources import Rejection
from dic.views import load_catalog, refresh_views

IDENTITY_SOURCES = ("lab", "ms-registry", "biobank")  # their medical data follows with their adapters


@app.command()
def demo(
    patients: int = typer.Option(3_000, help="Synthetic patient records over both sites."),
    seed: int = typer.Option(7, help="Random seed (same seed, same data)."),
    out: Path = typer.Option(Path("dic-demo"), help="Folder for the generated data and the demo repository."),
) -> None:
    """Generate, load, reload, materialize and summarize: the product on one page."""
    from dic.synth import write_bad_samples, write_world

    started = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    world, repo, trust = out / "synth", out / "repository", out / "trust-center"
    with console.status(f"generating {patients} synthetic patients at 2 sites, every source", spinner="dots"):
        generated = write_world(world, sites=2, patients=patients, seed=seed)
        bad = write_bad_samples(out / "bad-input")
    init_repository(repo, Engine.duckdb, trust=str(trust))
    db = open_repository(repo)
    try:
        with console.status("loading through the trust center", spinner="dots"):
            first = _load_world(db, repo, world, generated.sites, bad[0][0])
            second = _load_world(db, repo, world, generated.sites, bad[0][0])
            registered = _register_identities(trust, world, generated.sites)
        with console.status("materializing the standard views", spinner="dots"):
            views = refresh_views(db, load_catalog())
        counts = resource_counts(db)
        rejected = quarantine_list(db, limit=10)
    finally:
        db.close()
    quality = _linkage_quality(trust, world, generated.sites)
    seconds = time.perf_counter() - started
    if settings.json:
        print_json({"generated": generated.as_dict(), "load": [r.as_dict() for r in first],
                    "reload": [r.as_dict() for r in second], "resources": counts,
                    "views": {v.name: v.rows for v in views}, "quarantined": len(rejected),
                    "identities": registered, "linkage": quality, "seconds": seconds})
        return
    console.rule("[bold]DIC demo[/bold]")
    print_rows(["site", "source", "records"],
               [[site, source, sum(files.values())] for site, by_source in generated.files.items()
                for source, files in by_source.items()],
               title=f"Test world: {generated.patients:,} patient records, {generated.persons:,} persons "
                     f"(truth in {world / 'truth'})")
    print_batches(first, names_only=True)
    changed = sum(r.loaded + r.updated + r.deleted for r in second)
    console.print(f"reloading the same files: {changed} resources changed (idempotent load); names, "
                  "addresses and identifiers went to the trust center, patients are stored under pseudonyms",
                  highlight=False)
    print_rows(["source records", "persons", "review queue", "precision", "recall", "F1"],
               [[quality["records"], quality["persons"], quality["review"], f"{quality['precision']:.4f}",
                 f"{quality['recall']:.4f}", f"{quality['f1']:.4f}"]],
               title="Trust center: HIS, lab, MS registry and biobank identities of both sites linked "
                     "(pairs of records, against the synthetic truth)")
    print_rows(["resource type", "resources"], [*counts.items(), ("total", sum(counts.values()))], title="Repository")
    print_rows(["view", "rows", "mode"], [[v.name, v.rows, v.mode] for v in views], title="Standard views")
    print_rows(["file", "position", "reason"], [[Path(r["source"]).name, r["position"], r["reason"]] for r in rejected],
               title="Quarantine (bad records kept with their reason)")
    console.print(f"done in {seconds:.1f} s — repository at {repo}; try: dic --repo {repo} sql "
                  "\"SELECT gender, count(*) FROM patient GROUP BY gender\"", highlight=False)


def _load_world(db: Database, repo: Path, world: Path, sites: list[str], bad: Path) -> list[BatchReport]:
    """Every site's HIS export, each under its own source system; then the broken samples."""
    reports = []
    for site, folder in [*((s, world / s / "his-fhir") for s in sites), ("samples", bad)]:
        system = f"his@{site}"
        with trust_link(repo, system) as link:
            reports += load_through_trust(db, repo, link, [folder], system)
    return reports


def _register_identities(trust: Path, world: Path, sites: list[str]) -> dict[str, int]:
    """The other source systems' patients registered with the trust center (IDAT only)."""
    from dic.sources import read_identity_records
    from dic.trust import Caller, LocalTrust, TrustCenter

    center = TrustCenter.open(trust)
    counts: dict[str, int] = {}
    try:
        for site in sites:
            for source in IDENTITY_SOURCES:
                records = [(r.record_id, r.idat) for r in read_identity_records(world / site / source)
                           if not isinstance(r, Rejection)]
                client = LocalTrust(center, Caller(f"{source}@{site}", "source"))
                for start in range(0, len(records), 1_000):
                    client.register(records[start:start + 1_000])
                counts[f"{source}@{site}"] = len(records)
    finally:
        center.close()
    return counts


def _linkage_quality(trust: Path, world: Path, sites: list[str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of the trust center's persons against the truth, over the
    records of every source (the HIS registered its Patient ids; the truth knows its patient numbers)."""
    import csv

    import orjson

    from dic.sources import patient_number
    from dic.trust import Caller, TrustCenter, pairwise_quality

    with (world / "truth" / "linkage.csv").open(newline="") as stream:
        truth = {(f"{row['source']}@{row['site']}", row["record_id"]): row["person_id"] for row in csv.DictReader(stream)}
    for site in sites:
        with (world / site / "his-fhir" / "Patient.ndjson").open("rb") as stream:
            for line in stream:
                patient = orjson.loads(line)
                truth[(f"his@{site}", patient["id"])] = truth[(f"his@{site}", patient_number(patient))]
    center = TrustCenter.open(trust)
    try:
        found = {(s, i): pid for s, i, pid in center.assignments(Caller("demo (staff)", "staff"))
                 if not s.startswith("his@samples")}
        review = len(center.review_items(Caller("demo (staff)", "staff")))
    finally:
        center.close()
    precision, recall, f1 = pairwise_quality(found, truth)
    return {"records": sum(k in truth for k in found), "persons": len({p for k, p in found.items() if k in truth}),
            "review": review, "precision": precision, "recall": recall, "f1": f1}

"""`dic demo`: the end-to-end tour on the embedded DuckDB default.

Writes a synthetic test world (`dic synth`: three hospitals, every source system, truth kept
apart) plus a file of deliberately broken records. Every source of every site (HIS FHIR export,
lab HL7 v2 feed, §21 billing export, MS registry and biobank CSVs, VCF genomics) goes through its
adapter and the in-process trust center into a fresh repository: patients registered and linked,
identifying data removed, pseudonyms only. The demo prints the reconciliation per source, loads
everything again (nothing changes), measures the linkage against the synthetic truth (does each
person's data from all sources end up under one pseudonym?), materializes the views and shows
what is where, and ends with feasibility queries of the mission's use cases (CCDL, compiled to
SQL) and their disclosure-controlled counts.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from datetime import date
from importlib.resources import files
from pathlib import Path

import orjson
import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.cli.trust_link import apply_changes, load_source, trust_link
from dic.engines import Database, Engine
from dic.repository import BatchReport, init_repository, open_repository, quarantine_list, resource_counts
from dic.views import load_catalog, refresh_views

# Each `dic synth` source folder, the source system that sends it, in load order. The VCF files name
# biobank sample ids, so they are loaded as the biobank's (after its samples).
SITE_SOURCES = (("his-fhir", "his"), ("lab", "lab"), ("billing", "billing"), ("ms-registry", "ms-registry"),
                ("biobank", "biobank"), ("genomics", "biobank"))
RECONCILIATION = ("read", "loaded", "updated", "unchanged", "deleted", "quarantined")
SYNTH_WINDOW_END = date(2025, 12, 31)  # `dic synth` writes data of 2015–2025: "now" for the use-case queries


@app.command()
def demo(
    patients: int = typer.Option(3_000, help="Synthetic patient records over all sites."),
    sites: int = typer.Option(3, help="Synthetic hospitals."),
    seed: int = typer.Option(7, help="Random seed (same seed, same data)."),
    out: Path = typer.Option(Path("dic-demo"), help="Folder for the generated data and the demo repository."),
) -> None:
    """Generate, load every source, reload, materialize and summarize: the product on one page."""
    from dic.synth import write_bad_samples, write_world

    started = time.perf_counter()
    if out.exists():
        shutil.rmtree(out)
    world, repo, trust = out / "synth", out / "repository", out / "trust-center"
    with console.status(f"generating {patients} synthetic patients at {sites} sites, every source", spinner="dots"):
        generated = write_world(world, sites=sites, patients=patients, seed=seed)
        bad = write_bad_samples(out / "bad-input")
    init_repository(repo, Engine.duckdb, trust=str(trust))
    db = open_repository(repo)
    try:
        with console.status("loading every source through the trust center", spinner="dots") as status:
            first = load_world(db, repo, world, generated.sites, lambda text: status.update(f"loading {text}"))
            first["samples@bad-input"] = load_units(db, repo, "his@samples", [bad[0][0]])
            second = load_world(db, repo, world, generated.sites, lambda text: status.update(f"reloading {text}"))
        with console.status("materializing the standard views", spinner="dots"):
            views = refresh_views(db, load_catalog())
        counts = resource_counts(db)
        rejected = quarantine_list(db, limit=10)
        quality = linkage_quality(db, trust, world, generated.sites)
        with console.status("answering feasibility queries", spinner="dots"):
            feasibility = use_case_counts(db, repo)
    finally:
        db.close()
    seconds = time.perf_counter() - started
    changed = sum(r.loaded + r.updated + r.deleted for reports in second.values() for r in reports)
    if settings.json:
        print_json({"generated": generated.as_dict(),
                    "load": {k: [r.as_dict() for r in v] for k, v in first.items()},
                    "reload_changed": changed, "resources": counts, "views": {v.name: v.rows for v in views},
                    "quarantined": len(rejected), "linkage": quality, "feasibility": feasibility,
                    "seconds": seconds})
        return
    console.rule("[bold]DIC demo[/bold]")
    print_rows(["site", "source", "records"],
               [[site, source, sum(files.values())] for site, by_source in generated.files.items()
                for source, files in by_source.items()],
               title=f"Test world: {generated.patients:,} patient records, {generated.persons:,} persons "
                     f"(truth in {world / 'truth'})")
    print_rows(["source", "batches", *RECONCILIATION, "reconciles"], reconciliation_rows(first),
               title="Load reconciliation per source (read = loaded + updated + unchanged + deleted + quarantined)")
    console.print(f"reloading every source: {changed} resources changed (idempotent load); names, addresses and "
                  "identifiers went to the trust center, patients are stored under pseudonyms", highlight=False)
    print_rows(["source records", "persons", "review queue", "precision", "recall", "F1",
                "persons under one pseudonym"],
               [[quality["records"], quality["persons"], quality["review"], f"{quality['precision']:.4f}",
                 f"{quality['recall']:.4f}", f"{quality['f1']:.4f}",
                 f"{quality['one_pseudonym']:,} of {quality['persons']:,}"]],
               title="Trust center: every source's patients of every site linked (pairs of records, against the "
                     "synthetic truth)")
    print_rows(["resource type", "resources"], [*counts.items(), ("total", sum(counts.values()))], title="Repository")
    print_rows(["view", "rows", "mode"], [[v.name, v.rows, v.mode] for v in views], title="Standard views")
    print_rows(["file", "position", "reason"], [[Path(r["source"]).name, r["position"], r["reason"]] for r in rejected],
               title="Quarantine (bad records kept with their reason)")
    print_rows(["query", "question", "patients", "by sex"],
               [[f["query"], f["display"], f["count"], f["by_sex"]] for f in feasibility],
               title=f"Feasibility (CCDL → SQL; counts disclosure-controlled, 'now' = {SYNTH_WINDOW_END})")
    console.print(f"done in {seconds:.1f} s — repository at {repo}; try: dic --repo {repo} cohort count "
                  f"{files('dic.cohort') / 'use_cases' / 'ms-on-therapy-edss-4.json'}", highlight=False)
    console.print(f"or: dic --repo {repo} sql "
                  "\"SELECT gender, count(*) FROM patient GROUP BY gender\"", highlight=False)


def load_units(db: Database, repo: Path, system: str, paths: list[Path], format_name: str | None = None,
               ) -> list[BatchReport]:
    """Load files or folders (format detected) as one source system; then follow the trust center's changes."""
    from dic.sources import plan_load

    with trust_link(repo, system) as link:
        reports = [load_source(db, repo, link, str(unit), fmt.read(unit), system)
                   for fmt, unit in plan_load(paths, format_name)]
        apply_changes(db, repo, link)
    return reports


def load_world(db: Database, repo: Path, world: Path, sites: list[str],
               progress: Callable[[str], None] | None = None) -> dict[str, list[BatchReport]]:
    """Every source of every site, each as its own source system (`his@site-a`, `lab@site-a`, ...):
    the batch reports by `<source folder>@<site>`."""
    reports: dict[str, list[BatchReport]] = {}
    for site in sites:
        for folder, system in SITE_SOURCES:
            if (world / site / folder).exists():
                if progress:
                    progress(f"{folder}@{site}")
                reports[f"{folder}@{site}"] = load_units(db, repo, f"{system}@{site}", [world / site / folder])
    return reports


def reconciliation_rows(reports: dict[str, list[BatchReport]]) -> list[list]:
    rows = []
    for source, batches in reports.items():
        totals = [sum(getattr(r, k) for r in batches) for k in RECONCILIATION]
        rows.append([source, len(batches), *totals, "yes" if all(r.reconciles for r in batches) else "NO"])
    totals = [sum(row[i] for row in rows) for i in range(1, len(RECONCILIATION) + 2)]
    return [*rows, ["total", *totals, "yes" if all(row[-1] == "yes" for row in rows) else "NO"]]


def linkage_quality(db: Database, trust: Path, world: Path, sites: list[str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of the trust center's persons against the truth, over the
    patient records of every source (the HIS registered its Patient ids; the truth knows its patient
    numbers), and the number of true persons all of whose records carry one pseudonym."""
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
        staff = Caller("demo (staff)", "staff")
        found = {(s, i): pid for s, i, pid in center.assignments(staff) if not s.startswith("his@samples")}
        review = len(center.review_items(staff))
    finally:
        center.close()
    precision, recall, f1 = pairwise_quality(found, truth)
    persons: dict[str, set[str]] = {}
    for key, pid in found.items():
        if key in truth:
            persons.setdefault(truth[key], set()).add(pid)
    return {"records": sum(k in truth for k in found), "persons": len(persons), "review": review,
            "precision": precision, "recall": recall, "f1": f1,
            "one_pseudonym": sum(len(pids) == 1 for pids in persons.values())}


def use_case_counts(db: Database, repo: Path) -> list[dict[str, str]]:
    """The shipped use-case queries (MS, Parkinson's, diabetes, a drug-safety signal), answered safely."""
    from dic.cli.cohort_commands import disclosure
    from dic.cohort import count_cohort, parse_ccdl

    rules, secret = disclosure(repo)
    answers = []
    for path in sorted(Path(str(files("dic.cohort") / "use_cases")).glob("*.json")):
        query = parse_ccdl(path.read_bytes(), path.name)
        answer = count_cohort(db, query, SYNTH_WINDOW_END, rules=rules, secret=secret, actor="demo",
                              breakdowns=["sex"])
        by_sex = ", ".join(f"{' / '.join(c.labels)} {c.text}" for c in answer.breakdowns["sex"])
        answers.append({"query": path.stem, "display": query.display, "count": answer.count.text, "by_sex": by_sex})
    return answers

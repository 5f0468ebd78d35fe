"""`dic demo`: the end-to-end tour on the embedded DuckDB default.

Writes a synthetic test world (`dic synth`: two hospitals, every source system, truth kept
apart) plus a file of deliberately broken records, loads each site's HIS FHIR export into a
fresh repository (identifying data removed on the way in), loads it again to show that
nothing changes, materializes the standard views and prints what is where.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.cli.repository_commands import print_batches
from dic.engines import Engine
from dic.repository import init_repository, load_paths, open_repository, quarantine_list, resource_counts
from dic.views import load_catalog, refresh_views


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
    world, repo = out / "synth", out / "repository"
    with console.status(f"generating {patients} synthetic patients at 2 sites, every source", spinner="dots"):
        generated = write_world(world, sites=2, patients=patients, seed=seed)
        bad = write_bad_samples(out / "bad-input")
    exports = [world / site / "his-fhir" for site in generated.sites] + [bad[0][0]]
    init_repository(repo, Engine.duckdb)
    db = open_repository(repo)
    try:
        with console.status("loading", spinner="dots"):
            first = load_paths(db, exports)
            second = load_paths(db, exports)
        with console.status("materializing the standard views", spinner="dots"):
            views = refresh_views(db, load_catalog())
        counts = resource_counts(db)
        rejected = quarantine_list(db, limit=10)
    finally:
        db.close()
    seconds = time.perf_counter() - started
    if settings.json:
        print_json({"generated": generated.as_dict(), "load": [r.as_dict() for r in first],
                    "reload": [r.as_dict() for r in second], "resources": counts,
                    "views": {v.name: v.rows for v in views}, "quarantined": len(rejected), "seconds": seconds})
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
                  "addresses and identifiers were removed before storing", highlight=False)
    print_rows(["resource type", "resources"], [*counts.items(), ("total", sum(counts.values()))], title="Repository")
    print_rows(["view", "rows", "mode"], [[v.name, v.rows, v.mode] for v in views], title="Standard views")
    print_rows(["file", "position", "reason"], [[Path(r["source"]).name, r["position"], r["reason"]] for r in rejected],
               title="Quarantine (bad records kept with their reason)")
    console.print(f"done in {seconds:.1f} s — repository at {repo}; try: dic --repo {repo} sql "
                  "\"SELECT gender, count(*) FROM patient GROUP BY gender\"", highlight=False)

"""`dic synth`: write synthetic hospitals (every source system) and the truth kept apart."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.errors import ConfigError


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (must be empty, or use --overwrite)."),
    sites: int = typer.Option(3, help="Number of sites (site-a, site-b, ...)."),
    patients: int = typer.Option(20_000, help="Patient records over all sites, split evenly."),
    seed: int = typer.Option(7, help="Random seed: the same seed gives the same bytes."),
    years: str = typer.Option("2015-2025", help="Calendar years covered, FIRST-LAST."),
    formats: str = typer.Option("", help="Comma-separated sources to write (default: all): "
                                         "his-fhir, billing, lab, ms-registry, biobank, genomics."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Empty the folder first if it is not empty."),
    gzip: bool = typer.Option(False, "--gzip", help="Compress the HIS FHIR export (.ndjson.gz)."),
    workers: int = typer.Option(None, help="Processes (default: one per site from 50,000 patients on)."),
) -> None:
    """Synthetic hospitals in their sources' real formats, with planted truth in OUT/truth/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dic.synth import write_world

    chosen = [f.strip() for f in formats.split(",") if f.strip()] or None
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True, disable=settings.json) as bar:
        task = bar.add_task("patients", total=patients)
        report = write_world(out, sites=sites, patients=patients, seed=seed, years=parse_years(years),
                             formats=chosen, overwrite=overwrite, gzip=gzip, workers=workers,
                             progress=lambda n: bar.advance(task, n))
    if settings.json:
        print_json(report.as_dict())
        return
    rows = [[site, source, sum(files.values()), ", ".join(f"{name} {n:,}" for name, n in files.items())]
            for site, by_source in report.files.items() for source, files in by_source.items()]
    print_rows(["site", "source", "records", "files"], rows, title=f"dic synth → {out}")
    console.print(f"{report.patients:,} patient records of {report.persons:,} persons at {len(report.sites)} "
                  f"sites in {report.seconds:.1f} s; truth (for evaluation only) in {out / 'truth'}",
                  highlight=False)


def parse_years(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{4})\s*-\s*(\d{4})\s*", text)
    if not match or int(match[1]) > int(match[2]):
        raise ConfigError(f"years must be FIRST-LAST with FIRST <= LAST, e.g. 2015-2025 (got {text!r})")
    return int(match[1]), int(match[2])

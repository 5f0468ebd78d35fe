"""Conformance suites: the official SQL-on-FHIR v2 tests and CCDL cases (MII layout), a line per test."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json
from dic.engines import Engine
from dic.errors import InputError
from dic.views import format_lines, run_suite, suite_runner

conformance_app = typer.Typer(help="Run published conformance suites.", no_args_is_help=True)
app.add_typer(conformance_app, name="conformance")


@conformance_app.command("sql-on-fhir")
def sql_on_fhir(
    folder: Path = typer.Argument(..., help="The suite's tests/ folder (one JSON file per topic)."),
    engine: Engine = typer.Option(None, help="Compile views to SQL on this engine; default: the reference evaluator."),
    url: str = typer.Option(None, help="PostgreSQL URL (with --engine postgres)."),
    report: Path = typer.Option(None, help="Write the official test-report JSON here."),
) -> None:
    """Run an SQL-on-FHIR v2 test-suite folder; the last line is 'N passed, M failed'."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    with tempfile.TemporaryDirectory(prefix="dic-sof-") as scratch:
        run = suite_runner(engine, url, Path(scratch))
        result = run_suite(folder, run)
    if report:
        result.write_report(report)
    if settings.json:
        print_json({"passed": result.passed, "failed": result.failed})
    for line in format_lines(result):
        console.out(line, highlight=False)
    if result.failed:
        raise typer.Exit(1)


@conformance_app.command("ccdl")
def ccdl(
    folder: Path = typer.Argument(..., help="Case folder: <name>.json, testdata/<name>-data.json, "
                                            "testdata/<name>-expected.json (the MII layout)."),
    engine: Engine = typer.Option(Engine.duckdb, help="The engine of the scratch repositories."),
    url: str = typer.Option(None, help="PostgreSQL URL (with --engine postgres); its tables are replaced."),
    isolate: bool = typer.Option(False, help="One scratch repository per case (by default cases whose "
                                              "resource ids do not collide share one)."),
) -> None:
    """Run CCDL conformance cases; the last line is 'N passed, M failed', exit 1 if any failed."""
    from dic.cohort import run_cases

    report = run_cases(folder, engine, url, isolate=isolate)
    if settings.json:
        print_json(report.as_dict())
    else:
        for line in report.lines():
            console.out(line, highlight=False)
    if report.failed:
        raise typer.Exit(1)

"""`dic cohort`: feasibility counts, member lists, table 1 and the SQL behind a CCDL query.

Counts and characterizations pass the site's disclosure rules (`<repo>/disclosure.yaml`,
else the shipped defaults) and are logged with their raw value in the repository's query
log; member lists go through the trust center, which releases project pseudonyms of
consenting members only.
"""

from __future__ import annotations

import getpass
from datetime import date
from pathlib import Path
from typing import Any

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, errors, print_json, print_rows
from dic.cli.trust_link import trust_link
from dic.errors import InputError

cohort_app = typer.Typer(help="Cohorts from MII CCDL queries: feasibility counts, members, table 1.",
                         no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")

QUERY = typer.Argument(..., help="A CCDL query (JSON, version 2 or 3).")
REFERENCE = typer.Option(None, "--reference-date", help="The day 'now' means (YYYY-MM-DD; default: today).")


def _query(path: Path) -> Any:
    from dic.cohort import parse_ccdl

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    query = parse_ccdl(path.read_bytes(), str(path))
    for warning in query.warnings:
        errors.print(f"warning: {warning}", highlight=False, markup=False)
    return query


def _day(text: str | None) -> date:
    if text is None:
        return date.today()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"--reference-date {text!r} is not a date (YYYY-MM-DD)") from None


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def disclosure(repo: Path) -> tuple[Any, bytes]:
    """The site's disclosure rules and secret."""
    from dic.privacy import site_rules, site_secret

    return site_rules(repo), site_secret(repo)


@cohort_app.command()
def count(
    query_file: Path = QUERY,
    breakdown: list[str] = typer.Option([], "--breakdown", "-b", help="age, sex or site (repeatable)."),
    reference_date: str = REFERENCE,
) -> None:
    """How many patients match (the feasibility answer, disclosure-controlled)."""
    from dic.cohort import count_cohort
    from dic.repository import open_repository

    query = _query(query_file)
    rules, secret = disclosure(settings.repo)
    db = open_repository(settings.repo)
    try:
        answer = count_cohort(db, query, _day(reference_date), rules=rules, secret=secret, actor=_actor(),
                              breakdowns=breakdown)
    finally:
        db.close()
    if settings.json:
        print_json(answer.as_dict())
        return
    console.print(f"patients: {answer.count.text}", highlight=False)
    for name, cells in answer.breakdowns.items():
        print_rows([name, "patients"], [[" / ".join(c.labels), c.text] for c in cells], title=f"by {name}")


@cohort_app.command()
def members(
    query_file: Path = QUERY,
    project: str = typer.Option(..., "--project", help="An approved project (dic trust project add)."),
    reference_date: str = REFERENCE,
) -> None:
    """The cohort's members as the project's pseudonyms, consenting members only."""
    from dic.cohort import cohort_members
    from dic.repository import open_repository

    query = _query(query_file)
    db = open_repository(settings.repo)
    try:
        with trust_link(settings.repo, "dic") as link:
            found = cohort_members(db, link.dic, query, _day(reference_date), project, actor=_actor())
    finally:
        db.close()
    if settings.json:
        print_json(found.as_dict())
        return
    for pseudonym in found.pseudonyms:
        console.out(pseudonym, highlight=False)
    errors.print(f"{len(found.pseudonyms)} members released to project {project}", highlight=False)


@cohort_app.command()
def characterize(query_file: Path = QUERY, reference_date: str = REFERENCE) -> None:
    """The cohort's table 1 at its index date (disclosure-controlled)."""
    from dic.cohort import characterize as table_one
    from dic.repository import open_repository

    query = _query(query_file)
    rules, secret = disclosure(settings.repo)
    db = open_repository(settings.repo)
    try:
        found = table_one(db, query, _day(reference_date), rules=rules, secret=secret, actor=_actor())
    finally:
        db.close()
    if settings.json:
        print_json(found.as_dict())
        return
    console.print(f"patients: {found.patients.text}   median age at index: {found.median_age}", highlight=False)
    print_rows(["sex", "patients"], [[" / ".join(c.labels), c.text] for c in found.sex], title="Sex")
    print_rows(["age", "patients"], [[" / ".join(c.labels), c.text] for c in found.age], title="Age at index")
    for name, rows in found.sections.items():
        print_rows([name, "patients", "median"],
                   [[r.label, r.patients.text, "" if r.median is None else f"{r.median:g} {r.unit or ''}"] for r in rows],
                   title=name.capitalize())


@cohort_app.command()
def explain(query_file: Path = QUERY, reference_date: str = REFERENCE) -> None:
    """The SQL a query compiles to on this repository's engine, with the expanded code lists."""
    from dic.cohort import compile_query
    from dic.engines import Engine, render
    from dic.repository import read_config

    query = _query(query_file)
    engine = read_config(settings.repo).engine if (settings.repo / "config.json").exists() else Engine.duckdb
    compiled = compile_query(query, _day(reference_date))
    sql = render(compiled.select, engine, pretty=True)
    if settings.json:
        print_json({"sql": sql, "code_lists": compiled.code_lists, "warnings": list(query.warnings)})
        return
    for path, codes in compiled.code_lists.items():
        console.print(f"-- {path}: {len(codes)} code(s): {', '.join(codes[:12])}{' …' if len(codes) > 12 else ''}",
                      highlight=False, markup=False)
    console.out(sql, highlight=False)

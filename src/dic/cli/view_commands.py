"""Commands on views: refresh, list, show."""

from __future__ import annotations

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, errors, print_json, print_rows
from dic.engines import Engine, render
from dic.errors import InputError, NotCompilableError
from dic.repository import open_repository, read_config, user_views_folder
from dic.views import compile_view, load_catalog, refresh_views, view_columns, view_status

views_app = typer.Typer(help="SQL-on-FHIR v2 views: the standard ones and your own.", no_args_is_help=True)
app.add_typer(views_app, name="views")


@views_app.command("refresh")
def refresh(
    names: list[str] = typer.Argument(None, help="Views to refresh (default: all)."),
    full: bool = typer.Option(False, "--full", help="Rebuild instead of refreshing incrementally."),
) -> None:
    """Materialize views in the engine; after a load only changed resources are touched."""
    catalog = load_catalog(user_views_folder(settings.repo))
    unknown = sorted(set(names or []) - set(catalog.names()))
    if unknown:
        raise InputError(f"unknown view(s) {', '.join(unknown)}; see 'dic views list'")
    db = open_repository(settings.repo)
    try:
        with console.status("refreshing views", spinner="dots") as spinner:
            reports = refresh_views(db, catalog, names=names or None, full=full,
                                    progress=lambda name: spinner.update(f"refreshing {name}"))
    finally:
        db.close()
    for report in reports:
        if report.notice:
            errors.print(f"notice: {report.notice}", highlight=False, markup=False)
    if settings.json:
        print_json([r.__dict__ for r in reports])
    else:
        print_rows(["view", "rows", "mode", "strategy", "seconds"],
                   [[r.name, r.rows, r.mode, r.strategy, f"{r.seconds:.2f}"] for r in reports], title="Views")


@views_app.command("list")
def list_views() -> None:
    """Every view with its resource type, origin and materialized rows."""
    catalog = load_catalog(user_views_folder(settings.repo))
    db = open_repository(settings.repo)
    try:
        states = {s["name"]: s for s in view_status(db)}
    finally:
        db.close()
    rows = []
    for name in catalog.names():
        view = catalog.views.get(name)
        state = states.get(name, {})
        origin = "standard" if view is None or "/standard/" in catalog.origins[name] else catalog.origins[name]
        resource = view.resource if view else "union of " + ", ".join(catalog.unions[name])
        rows.append([name, resource, origin, state.get("rows"), state.get("mode")])
    if settings.json:
        print_json([dict(zip(["name", "resource", "origin", "rows", "mode"], r, strict=True)) for r in rows])
    else:
        print_rows(["view", "resource", "origin", "rows", "mode"], rows, title="Views")


@views_app.command("show")
def show(name: str = typer.Argument(..., help="A view name from 'dic views list'.")) -> None:
    """A view's columns, its definition and the SQL it compiles to on this repository's engine."""
    catalog = load_catalog(user_views_folder(settings.repo))
    view = catalog.views.get(name)
    if view is None:
        raise InputError(f"unknown view '{name}'; see 'dic views list'")
    engine = read_config(settings.repo).engine if (settings.repo / "config.json").exists() else Engine.duckdb
    try:
        sql = render(compile_view(view).select(), engine, pretty=True)
    except NotCompilableError as error:
        sql = f"-- evaluated in Python: {error}"
    columns = view_columns(view)
    if settings.json:
        print_json({"name": name, "origin": catalog.origins[name], "definition": view.model_dump(mode="json",
                    exclude_none=True), "columns": [c.__dict__ for c in columns], "sql": sql})
        return
    console.print(f"[bold]{name}[/bold] ({view.resource}) from {catalog.origins[name]}", highlight=False)
    if view.title:
        console.print(view.title)
    print_rows(["column", "type", "collection"], [[c.name, c.type, c.collection] for c in columns])
    console.print(f"[bold]SQL ({engine.value})[/bold]")
    console.out(sql, highlight=False)

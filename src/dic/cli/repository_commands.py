"""Commands on the repository: init, load, status, quarantine, sql."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from dic.cli.app import app, settings
from dic.cli.output import console, errors, print_json, print_rows
from dic.cli.trust_link import apply_changes, load_source, trust_link
from dic.engines import Engine, parse_sql
from dic.errors import InputError
from dic.repository import (
    BatchReport,
    init_repository,
    open_repository,
    quarantine_list,
    quarantine_record,
    quarantine_size,
    read_config,
    recent_batches,
    resource_counts,
)

quarantine_app = typer.Typer(help="Records rejected by loads, with file, position and reason.", no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")

RECONCILIATION = ["read", "loaded", "updated", "unchanged", "deleted", "quarantined"]


@app.command()
def init(
    engine: Engine = typer.Option(Engine.duckdb, help="SQL engine of the repository."),
    url: str = typer.Option(None, help="Database URL (PostgreSQL) or Spark master URL; DuckDB defaults to a file."),
    trust: str = typer.Option(None, help="Trust center: a folder (run in-process; default <repo>-trust) or the "
                                         "URL of 'dic trust serve'."),
) -> None:
    """Create a repository (a DuckDB file by default)."""
    config = init_repository(settings.repo, engine, url, trust)
    if settings.json:
        print_json({"repo": str(settings.repo.resolve()), "engine": config.engine.value, "url": config.url})
    else:
        console.print(f"repository {settings.repo.resolve()} on {config.engine.value}")


def print_batches(reports: list[BatchReport], names_only: bool = False) -> None:
    rows = [[r.batch_id, Path(r.source).name if names_only else r.source, *[getattr(r, k) for k in RECONCILIATION]]
            for r in reports]
    total = [sum(getattr(r, k) for r in reports) for k in RECONCILIATION]
    print_rows(["batch", "source", *RECONCILIATION], [*rows, ["", "total", *total]], title="Load reconciliation")


@app.command()
def load(
    paths: list[Path] = typer.Argument(None, help="Files or folders: FHIR (Bundles, resources, NDJSON(.gz)), HL7 v2, "
                                                  "§21 export folders, VCF, mapped registry folders."),
    format_name: str = typer.Option(None, "--format", help="Source format (fhir, hl7v2, p21, vcf, ms-registry, "
                                                           "biobank); detected per file or folder when not given."),
    mapping: Path = typer.Option(None, "--mapping", help="A YAML mapping spec of your own for CSV/Excel folders."),
    bulk_export: str = typer.Option(None, "--bulk-export", help="Base URL of a FHIR server to $export from."),
    token: str = typer.Option(None, help="Bearer token for --bulk-export."),
    resource_type: list[str] = typer.Option(None, "--type", help="With --bulk-export: resource types (_type)."),
    since: str = typer.Option(None, help="With --bulk-export: only resources changed since (_since)."),
    download_dir: Path = typer.Option(None, help="With --bulk-export: where downloads go (resumable)."),
    source_system: str = typer.Option("fhir", "--source-system",
                                      help="The sending system, e.g. his@site-a (scopes its patient ids)."),
) -> None:
    """Load source data, one transactional batch per file (per folder for §21 exports and mapped
    registries). Patients are registered with the trust center and stored under their pseudonym,
    identifying data removed. Bad records go to quarantine."""
    db = open_repository(settings.repo)
    try:
        if bulk_export:
            paths = [*(paths or []), *_bulk_export(bulk_export, token, resource_type, since, download_dir)]
        if not paths:
            raise InputError("nothing to load: give files or folders, or --bulk-export URL")
        from dic.sources import mapping_format, plan_load

        units = plan_load(paths, format_name, mapping_format(mapping) if mapping else None)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[records]} records"), TimeElapsedColumn(), console=console,
                      transient=True, disable=settings.json) as progress:
            task = progress.add_task("loading", total=len(units), records=0)
            done = {"records": 0}

            def advance(path: Path, n: int | None) -> None:
                if n is None:
                    progress.advance(task)
                    return
                done["records"] += n
                progress.update(task, description=path.name, records=done["records"])

            with trust_link(settings.repo, source_system) as link:
                reports = []
                for fmt, unit in units:
                    step = (lambda n, u=unit: advance(u, n))
                    reports.append(load_source(db, settings.repo, link, str(unit), fmt.read(unit), source_system, step))
                    advance(unit, None)
                applied = apply_changes(db, settings.repo, link)
    finally:
        db.close()
    if applied and not settings.json:
        console.print(f"applied {applied} merge/split(s) of the trust center to the stored data")
    if settings.json:
        print_json([r.as_dict() for r in reports])
    else:
        print_batches(reports)


def _bulk_export(url: str, token: str | None, types: list[str] | None, since: str | None,
                 download_dir: Path | None) -> list[Path]:
    """Download (or resume) a $export; the data files first, then the deletions."""
    from dic.sources import export_to_folder

    dest = download_dir or settings.repo / "downloads" / "bulk-export"
    with console.status(f"$export from {url}", spinner="dots") as spinner:
        def show(event) -> None:
            detail = event.detail or (event.path.name if event.path else "")
            spinner.update(f"$export {event.phase} {detail}".strip())

        result = export_to_folder(url, dest, token=token, resource_types=types or None, since=since, progress=show)
    for message in result.error_messages:
        errors.print(f"warning: the server reported: {message}", markup=False, highlight=False)
    return [*(f.path for f in result.files), *(f.path for f in result.deleted_files)]


@app.command()
def status() -> None:
    """Resources per type, rows per view, recent batches and quarantine size."""
    from dic.views import view_status

    db = open_repository(settings.repo)
    try:
        config = read_config(settings.repo)
        counts = resource_counts(db)
        views = view_status(db)
        batches = recent_batches(db)
        quarantined = quarantine_size(db)
    finally:
        db.close()
    if settings.json:
        print_json({"engine": config.engine.value, "resources": counts, "views": views, "batches": batches,
                    "quarantine": quarantined})
        return
    console.print(f"repository {settings.repo.resolve()} on {config.engine.value}")
    print_rows(["resource type", "resources"], [*counts.items(), ("total", sum(counts.values()))], title="Resources")
    print_rows(["view", "rows", "mode", "refreshed at"],
               [[v["name"], v["rows"], v["mode"], v["refreshed_at"]] for v in views], title="Views")
    print_rows(["batch", "source", "status", *RECONCILIATION],
               [[b["batch_id"], Path(b["source"]).name, b["status"], *[b[k] for k in RECONCILIATION]] for b in batches],
               title="Recent load batches")
    console.print(f"quarantine: {quarantined} record(s) — see 'dic quarantine list'")


@quarantine_app.command("list")
def quarantine_list_command(
    source: str = typer.Option(None, help="Only records from this file."),
    limit: int = typer.Option(50, help="At most this many records."),
) -> None:
    """Rejected records: id, batch, file, position and reason."""
    db = open_repository(settings.repo)
    try:
        rows = quarantine_list(db, limit, source)
    finally:
        db.close()
    if settings.json:
        print_json(rows)
    else:
        columns = ["quarantine_id", "batch_id", "source", "position", "reason", "raw_bytes"]
        print_rows(columns, [[r[c] for c in columns] for r in rows], title="Quarantine")


@quarantine_app.command("show")
def quarantine_show(quarantine_id: str = typer.Argument(..., help="Id from 'dic quarantine list'.")) -> None:
    """One rejected record with its raw text (cut at 64 KiB)."""
    db = open_repository(settings.repo)
    try:
        record = quarantine_record(db, quarantine_id)
    finally:
        db.close()
    if record is None:
        raise InputError(f"no quarantined record with id {quarantine_id}")
    if settings.json:
        print_json(record)
        return
    for key in ("quarantine_id", "batch_id", "source", "position", "reason", "raw_bytes", "quarantined_at"):
        console.print(f"[bold]{key}[/bold]: {record[key]}", highlight=False)
    console.print("[bold]raw[/bold]:")
    console.out(record["raw"], highlight=False)


@app.command()
def sql(
    query: str = typer.Argument(..., help="One SELECT, in the repository engine's SQL dialect."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
) -> None:
    """Read-only SQL against the views (and repository tables)."""
    from sqlglot import exp

    config = read_config(settings.repo)
    statement = parse_sql(query, dialect=config.engine)
    if not isinstance(statement, exp.Query):
        raise InputError("dic sql runs read-only queries only (SELECT, WITH ... SELECT, UNION)")
    db = open_repository(settings.repo, read_only=True)
    try:
        result = db.fetch(query, "dic sql")  # the user's own text, checked read-only above
    finally:
        db.close()
    print_rows(result.columns, result.rows, "json" if settings.json else fmt)


@app.command()
def sync() -> None:
    """Apply the trust center's merges and splits to the stored data (also done after each load)."""
    db = open_repository(settings.repo)
    try:
        with trust_link(settings.repo, "dic") as link:
            applied = apply_changes(db, settings.repo, link)
    finally:
        db.close()
    if settings.json:
        print_json({"applied": applied})
    else:
        console.print(f"applied {applied} merge/split(s) of the trust center to the stored data", highlight=False)


@app.command()
def withdrawals(
    as_of: str = typer.Option(None, "--as-of", help="Withdrawals in force on this date (YYYY-MM-DD); default today."),
    ids: bool = typer.Option(False, "--ids", help="List every stored resource, not only the counts."),
) -> None:
    """Persons who withdrew consent (from the trust center) and the stored data about them to delete."""
    from datetime import date

    from dic.repository import resources_about

    try:
        day = date.fromisoformat(as_of) if as_of else None
    except ValueError as error:
        raise InputError(f"--as-of must be a date YYYY-MM-DD (got {as_of!r})") from error
    db = open_repository(settings.repo, read_only=True)
    try:
        with trust_link(settings.repo, "dic") as link:
            found = link.dic.withdrawals(day)
        stored = resources_about(db, [w.pseudonym for w in found])
    finally:
        db.close()
    if ids:
        rows = [[w.pseudonym, w.since, f"{t}/{i}"] for w in found for t, i in stored[w.pseudonym]]
        print_rows(["pseudonym", "since", "resource"], rows, fmt="json" if settings.json else "table",
                   title="Stored data of persons who withdrew consent")
    else:
        rows = [[w.pseudonym, w.since, len(stored[w.pseudonym])] for w in found]
        print_rows(["pseudonym", "since", "resources"], rows, fmt="json" if settings.json else "table",
                   title="Consent withdrawals and the stored data to delete")

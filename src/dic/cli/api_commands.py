"""`dic api`: serve the research API (cohort counts, table 1, member lists) and manage its keys."""

from __future__ import annotations

import os

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.errors import InputError

api_app = typer.Typer(help="The DIC's research API over HTTP (for feasibility portals and projects).",
                      no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the research API (one role each).", no_args_is_help=True)
app.add_typer(api_app, name="api")
api_app.add_typer(keys_app, name="keys")


@api_app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8800, help="Port to listen on."),
) -> None:
    """Serve the research API (Bearer API keys; OpenAPI at /docs)."""
    import uvicorn

    os.environ["DIC_API_REPO"] = str(settings.repo)
    # by name: the API is an interface beside this one, not below it
    uvicorn.run("dic.api:from_environment", factory=True, host=host, port=port)


@keys_app.command("issue")
def keys_issue(
    name: str = typer.Option(..., help="Who calls, e.g. fdpg-portal or ms-study."),
    role: str = typer.Option(..., help="portal, coordinator or project (roles.yaml)."),
    project: str = typer.Option(None, help="With --role project: the approved project the key acts for."),
) -> None:
    """Issue an API key. It is printed once and stored only as a hash."""
    from dic.privacy import issue_key

    key = issue_key(settings.repo, name, role, project)
    if settings.json:
        print_json({"name": name, "role": role, "project": project, "key": key})
    else:
        console.out(key, highlight=False)
        console.print(f"API key for {name} (role {role}); shown only now, keep it secret", style="dim", highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """Every key issued: id, name, role, project, created, revoked."""
    from dic.privacy import list_keys

    columns = ["key_id", "name", "role", "project", "created_at", "revoked"]
    print_rows(columns, [[k.get(c) for c in columns] for k in list_keys(settings.repo)],
               fmt="json" if settings.json else "table", title="API keys")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (the part after 'dic_').")) -> None:
    """Revoke a key: its next call is refused (401)."""
    from dic.privacy import revoke_key

    if not revoke_key(settings.repo, key_id):
        raise InputError(f"no active API key {key_id!r} (see 'dic api keys list')")
    if settings.json:
        print_json({"revoked": key_id})
    else:
        console.print(f"revoked {key_id}", highlight=False)

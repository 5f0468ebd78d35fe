"""`dic trust`: run and administer the trust center (patient list, pseudonyms, consent, audit).

Every command but `serve` runs on the trust-center host as staff: having the trust-center
folder (its database and key file) is what makes you staff. The caller is recorded as
"<login> (staff)" and every call lands in the audit log like an HTTP call does.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dic.cli.app import app, settings
from dic.cli.output import console, print_json, print_rows
from dic.errors import InputError

if TYPE_CHECKING:  # the trust center pulls in linkage, FastAPI and more: imported when a command runs
    from dic.trust import Caller, TrustCenter

trust_app = typer.Typer(help="The trust center: patient list, pseudonyms, consent, review and audit.",
                        no_args_is_help=True)
keys_app = typer.Typer(help="API keys of source systems, the DIC and projects.", no_args_is_help=True)
project_app = typer.Typer(help="Approved research projects (each its own pseudonym domain).", no_args_is_help=True)
review_app = typer.Typer(help="Possible matches waiting for a staff decision.", no_args_is_help=True)
consent_app = typer.Typer(help="Recorded MII Broad Consents.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log of every call.", no_args_is_help=True)
app.add_typer(trust_app, name="trust")
for _sub, _name in ((keys_app, "keys"), (project_app, "project"), (review_app, "review"),
                    (consent_app, "consent"), (audit_app, "audit")):
    trust_app.add_typer(_sub, name=_name)

# The IDAT columns a reviewer compares side by side, in reading order.
REVIEW_FIELDS = ("given_names", "family_name", "birth_name", "birth_date", "sex", "street", "postal_code", "city",
                 "insurance_number")


@dataclass
class TrustSettings:
    folder: Path = Path("dic-trust")


trust_settings = TrustSettings()


@trust_app.callback()
def trust_root(
    trust: Path = typer.Option(Path("dic-trust"), "--trust", envvar="DIC_TRUST",
                               help="The trust-center folder: settings, database, key file."),
) -> None:
    trust_settings.folder = trust


@contextmanager
def _center(db_url: str | None = None) -> Iterator[TrustCenter]:
    from dic.trust import TrustCenter

    center = TrustCenter.open(trust_settings.folder, db_url)
    try:
        yield center
    finally:
        center.close()


def _staff() -> Caller:
    from dic.trust import Caller

    return Caller(system=f"{getpass.getuser()} (staff)", role="staff")


def _say(data: dict[str, Any], message: str) -> None:
    """One outcome: `data` as JSON with --json, else `message`."""
    if settings.json:
        print_json(data)
    else:
        console.print(message, highlight=False)


def _idat_line(idat: dict[str, Any]) -> str:
    return " | ".join(str(idat[name]) for name in REVIEW_FIELDS if idat.get(name) is not None)


# ---------------------------------------------------------------- serve
@trust_app.command()
def serve(
    db: str = typer.Option(None, "--db", help="Database URL (postgresql://...); default: SQLite in the folder."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8700, help="Port to listen on."),
) -> None:
    """Serve the trust center over HTTP (API keys as Bearer tokens; OpenAPI at /docs)."""
    import uvicorn

    from dic.trust import create_app

    with _center(db) as center:
        uvicorn.run(create_app(center), host=host, port=port)


# ---------------------------------------------------------------- keys
@keys_app.command("issue")
def keys_issue(
    system: str = typer.Option(..., help="The calling system, e.g. his@site-a."),
    role: str = typer.Option(..., help="source, dic, project or staff (roles.yaml)."),
    project: str = typer.Option(None, help="With --role project: the project the key acts for."),
) -> None:
    """Issue an API key. It is printed once and stored only as a hash."""
    with _center() as center:
        key = center.issue_key(system, role, project)
    if settings.json:
        print_json({"system": system, "role": role, "project": project, "key": key})
    else:
        console.out(key, highlight=False)
        console.print(f"API key for {system} (role {role}); shown only now, keep it secret", style="dim",
                      highlight=False)


@keys_app.command("list")
def keys_list() -> None:
    """Every key issued: id, system, role, project, created, revoked."""
    with _center() as center:
        rows = center.list_keys(_staff())
    columns = ["key_id", "system", "role", "project", "created_at", "revoked_at"]
    print_rows(columns, rows, fmt="json" if settings.json else "table", title="API keys")


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="The key's id (the part after 'dic_').")) -> None:
    """Revoke a key: its next call is refused (401)."""
    with _center() as center:
        revoked = center.revoke_key(_staff(), key_id)
    if not revoked:
        raise InputError(f"no active API key {key_id!r} (see 'dic trust keys list')")
    _say({"revoked": key_id}, f"revoked {key_id}")


# ---------------------------------------------------------------- projects
@project_app.command("add")
def project_add(
    name: str = typer.Argument(..., help="The project's name."),
    purpose: str = typer.Option(..., help="Its consent purpose (consent_purposes.yaml)."),
) -> None:
    """Approve a project: it gets its own pseudonym domain (P1, P2, ...)."""
    with _center() as center:
        domain = center.add_project(_staff(), name, purpose)
    _say({"project": name, "purpose": purpose, "domain": domain},
         f"project {name}: pseudonym domain {domain}, purpose {purpose}")


# ---------------------------------------------------------------- review
@review_app.command("list")
def review_list(status: str = typer.Option("open", help="open, same or different.")) -> None:
    """Possible matches with both sides' IDAT (staff eyes only)."""
    with _center() as center:
        items = center.review_items(_staff(), status)
    if settings.json:
        print_json(items)
        return
    rows = [[item["review_id"], f"{item['probability']:.3f}",
             f"{item['record']['source']}/{item['record']['source_id']}: {_idat_line(item['record']['idat'])}",
             "\n".join(f"{r['source']}/{r['source_id']}: {_idat_line(r['idat'])}" for r in item["candidate"]["records"])]
            for item in items]
    print_rows(["id", "probability", "new record", "candidate person"], rows, title=f"Review items ({status})")


@review_app.command("resolve")
def review_resolve(
    review_id: int = typer.Argument(..., help="The review item's id."),
    same: bool = typer.Option(None, "--same/--different", help="The same person (merge) or a different one."),
) -> None:
    """Decide a possible match; the decision is remembered. --same merges the two persons."""
    if same is None:
        raise InputError("say --same or --different")
    with _center() as center:
        change = center.resolve_review(_staff(), review_id, same)
    _print_change(change, f"review {review_id}: {'same person' if same else 'different persons'}")


# ---------------------------------------------------------------- persons
def _print_change(change: Any, headline: str) -> None:
    if settings.json:
        print_json({"change": asdict(change) if change else None})
        return
    console.print(headline, highlight=False)
    if change is not None:
        console.print(f"change {change.seq}: {change.kind} {change.from_pseudonym} -> {change.to_pseudonym}, "
                      f"records {', '.join(change.records)}", highlight=False)


@trust_app.command()
def merge(
    from_pseudonym: str = typer.Argument(..., metavar="FROM", help="The person that goes away."),
    into_pseudonym: str = typer.Argument(..., metavar="INTO", help="The person that keeps every record."),
) -> None:
    """Merge two persons: every record of FROM now belongs to INTO (the DIC follows the change feed)."""
    with _center() as center:
        change = center.merge(_staff(), from_pseudonym, into_pseudonym)
    _print_change(change, "merged" if change else "already the same person: nothing changed")


@trust_app.command()
def split(
    pseudonym: str = typer.Argument(..., help="The person to split."),
    records: list[str] = typer.Argument(..., help="Record pseudonyms (REC-...) that move to a new person."),
) -> None:
    """Move some of a person's source records to a new person."""
    with _center() as center:
        change = center.split(_staff(), pseudonym, records)
    _print_change(change, "split")


@trust_app.command()
def reidentify(pseudonym: str = typer.Argument(..., help="A pseudonym of any domain (DIC or a project).")) -> None:
    """Pseudonym -> the person's source records with their IDAT (audited)."""
    with _center() as center:
        found = center.reidentify(_staff(), pseudonym)
    if settings.json:
        print_json(found)
        return
    rows = [[r["source"], r["source_id"], r["record"], _idat_line(r["idat"])] for r in found["records"]]
    print_rows(["source", "source_id", "record", "IDAT"], rows,
               title=f"{found['pseudonym']} (domain {found['domain']}, {found['pid']})")


# ---------------------------------------------------------------- consent, key rotation, audit
@consent_app.command("withdrawals")
def consent_withdrawals(
    as_of: str = typer.Option(None, "--as-of", help="Withdrawals in force on this date (YYYY-MM-DD); default today."),
) -> None:
    """Persons who withdrew consent, and the date from which their data may not be used."""
    with _center() as center:
        found = center.withdrawals(_staff(), _parse_date(as_of) if as_of else None)
    rows = [[w.pseudonym, w.since] for w in found]
    print_rows(["pseudonym", "since"], rows, fmt="json" if settings.json else "table", title="Consent withdrawals")


def _parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise InputError(f"--as-of must be a date YYYY-MM-DD (got {text!r})") from error


@trust_app.command("rotate-key")
def rotate_key() -> None:
    """Start a new pseudonym key; every pseudonym issued so far stays valid."""
    with _center() as center:
        version = center.rotate_key(_staff())
    _say({"key_version": version}, f"pseudonym key version {version} is now current")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit log's hash chain; exit 1 with the first broken entry if it does not hold."""
    with _center() as center:
        result = center.verify_audit(_staff())
    if settings.json:
        print_json(vars(result))
    elif result.intact:
        console.print(f"audit log intact: {result.entries} entries", highlight=False)
    else:
        console.print(f"audit log broken at entry {result.first_broken}: {result.reason} "
                      f"({result.entries} entries before it hold)", style="red", highlight=False)
    if not result.intact:
        raise typer.Exit(1)


@audit_app.command("show")
def audit_show(
    since: int = typer.Option(0, help="Entries after this sequence number."),
    limit: int = typer.Option(1000, help="At most this many entries."),
) -> None:
    """The audit log: who did what to whom, allowed, denied or failed."""
    with _center() as center:
        entries = center.audit_entries(_staff(), since, limit)
    columns = ["seq", "at", "actor", "role", "action", "subject", "outcome", "detail"]
    rows = [[getattr(e, c) for c in columns] for e in entries]
    print_rows(columns, rows, fmt="json" if settings.json else "table", title="Audit log")


# ---------------------------------------------------------------- cross-site linkage without IDAT
@trust_app.command("linkage-secret")
def linkage_secret(path: Path = typer.Argument(..., help="New file for the secret (mode 0600).")) -> None:
    """Create the secret the sites' trust centers share for Bloom-filter encodings (32 random bytes)."""
    from dic.trust import create_linkage_secret

    created = create_linkage_secret(path)
    _say({"secret": str(created)}, f"wrote {created}; hand it to the other sites' trust centers only")


@trust_app.command("export-encodings")
def export_encodings_command(
    secret: Path = typer.Option(..., "--secret", help="The shared secret file."),
    out: Path = typer.Option(..., "--out", help="The export to write (Parquet): linkage ids and encodings only."),
) -> None:
    """Encode this site's persons (Bloom filters, fresh random linkage ids) for a linkage unit."""
    from dic.trust import export_encodings

    with _center() as center:
        summary = export_encodings(center, _staff(), secret, out)
    _say({"export_id": summary.export_id, "persons": summary.persons, "path": str(summary.path)},
         f"export {summary.export_id}: {summary.persons} persons in {summary.path}")


@trust_app.command("link-exports")
def link_exports_command(
    export_a: Path = typer.Argument(..., help="Site A's export."),
    export_b: Path = typer.Argument(..., help="Site B's export."),
    out: Path = typer.Option(..., "--out", help="The answer (CSV: pair, linkage_id_a, linkage_id_b, similarity)."),
    threshold: float = typer.Option(None, help="Dice similarity from which two encodings are one person."),
) -> None:
    """The linkage unit's step: link two sites' exports (no trust center, no IDAT involved)."""
    from dic.trust import link_exports

    summary = link_exports(export_a, export_b, out, threshold)
    _say({"pairs": summary.pairs, "threshold": summary.threshold, "path": str(summary.path)},
         f"{summary.pairs} persons at both sites (Dice >= {summary.threshold}) -> {summary.path}")


@trust_app.command("resolve-links")
def resolve_links_command(
    links: Path = typer.Argument(..., help="The linkage unit's answer."),
    side: str = typer.Option(..., "--side", help="a or b: which export of the answer is this site's."),
) -> None:
    """This site's persons that the other site has too, with the pair numbers both sites share."""
    from dic.trust import resolve_links

    if side not in ("a", "b"):
        raise InputError("--side must be a or b")
    with _center() as center:
        shared = resolve_links(center, _staff(), links, side)  # type: ignore[arg-type]
    print_rows(["pseudonym", "pair", "similarity"], [[s.pseudonym, s.pair, round(s.similarity, 4)] for s in shared],
               fmt="json" if settings.json else "table", title="Persons also at the other site")

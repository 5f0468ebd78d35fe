"""Cross-site linkage without IDAT, end to end: each site's trust center -> the linkage unit -> back.

    create_linkage_secret(path)                            -> Path            once; the sites' trust centers share it
    export_encodings(center, caller, secret_file, out)     -> ExportSummary   at each site (trust-center staff)
    link_exports(export_a, export_b, out_csv, threshold)   -> LinkSummary     at the linkage unit (files only)
    resolve_links(center, caller, links_csv, side)         -> [SharedPerson]  back at each site (trust-center staff)

An export holds one Bloom-filter encoding (`bloom_linkage`) per person of the patient list under a
random linkage id that is new in every export; only the site's own trust center keeps which person
an id stands for (table `linkage_export`). The linkage unit sees ids and encodings, never IDAT, PIDs
or pseudonyms, and answers with numbered pairs of linkage ids. Each site turns its side of the
answer into its own DIC pseudonyms; the pair number is what the two sites have in common and can use
later (an aggregate-level federation), neither site learns the other's pseudonyms.

The export id is a fingerprint of the export's linkage ids (SHA-256 of them, sorted), so the
linkage unit computes it from the file alone and nothing but ids and encodings leaves the site.

Limit: encodings are deterministic under one secret, so two exports of the same site made with the
same secret can be joined on equal encodings despite their fresh linkage ids. Use a new secret for
each linkage project (the key check then differs and exports of two projects cannot be linked).
"""

from __future__ import annotations

import csv
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

from dic.errors import ConfigError, InputError
from dic.trust import patient_list
from dic.trust.access import Caller
from dic.trust.bloom_linkage import (
    MIN_SECRET_BYTES,
    encode,
    link_encodings,
    load_schema,
    new_linkage_ids,
    read_encodings,
    write_encodings,
)
from dic.trust.center import TrustCenter
from dic.trust.identity import Idat, normalize
from dic.trust.pseudonym import Pid, Pseudonym

LINKS_FORMAT = "dic-cross-site-links/1"
LINKS_COLUMNS = ("pair", "linkage_id_a", "linkage_id_b", "similarity")
SECRET_BYTES = 32
Side = Literal["a", "b"]


@dataclass(frozen=True)
class ExportSummary:
    export_id: str
    persons: int
    path: Path


@dataclass(frozen=True)
class LinkSummary:
    export_a: str
    export_b: str
    pairs: int
    threshold: float
    path: Path


class SharedPerson(NamedTuple):
    """One of this site's persons the linkage unit found at the other site as well."""

    pseudonym: Pseudonym  # this site's DIC pseudonym
    pair: int  # the pair's number in the linkage unit's answer: the same at both sites
    similarity: float  # Dice coefficient of the two encodings


# ------------------------------------------------------------------ the shared secret
def create_linkage_secret(path: Path | str) -> Path:
    """A new secret of 32 random bytes in a new file of mode 0600, to be handed to the other sites'
    trust centers over a secure channel (never to the linkage unit)."""
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as error:
        raise ConfigError(f"{path}: a file is already there; a new linkage secret needs a new file") from error
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(secrets.token_bytes(SECRET_BYTES))
    return path


def read_linkage_secret(path: Path | str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no linkage secret file (create one with create_linkage_secret at one site "
                          "and copy it to the others)")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: the linkage secret must be readable by its owner only (chmod 600)")
    secret = path.read_bytes()
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"{path}: a linkage secret needs at least {MIN_SECRET_BYTES} random bytes "
                          f"(the file has {len(secret)})")
    return secret


# ------------------------------------------------------------------ 1. at each site
def export_id_of(linkage_ids: Sequence[str]) -> str:
    """The export's id: a fingerprint of its linkage ids, which both the site and the linkage unit compute."""
    return hashlib.sha256("\n".join(sorted(linkage_ids)).encode()).hexdigest()[:32]


def person_records(center: TrustCenter) -> tuple[list[Pid], list[dict[str, str | None]]]:
    """Every person of the patient list with the normalized IDAT of their most complete record.

    Most complete = most of the linkage schema's fields present: a missing field sets no bits, so it
    lowers the Dice coefficient against the other site's (typically complete, HIS) record. We do not
    prefer the HIS record by name because the trust center knows sources only as caller systems
    ("his@site-a"), and the HIS record is usually the most complete anyway. Ties: the record updated
    last (a new name or address), then source and source id, so the choice is reproducible.
    """
    features = load_schema().features
    best: dict[str, tuple[tuple[int, str, str, str], dict[str, str | None]]] = {}
    for pid, source, source_id, idat, updated_at in center.db.rows(
        "SELECT pid, source, source_id, idat, updated_at FROM source_record"
    ):
        normalized = normalize(Idat.model_validate_json(idat))  # afresh: the normalization in use now
        rank = (sum(bool(normalized.get(f)) for f in features), updated_at, source, source_id)
        if pid not in best or rank > best[pid][0]:
            best[pid] = (rank, normalized)
    pids = sorted(best)
    return [Pid(p) for p in pids], [best[p][1] for p in pids]


def export_encodings(center: TrustCenter, caller: Caller, secret_file: Path | str,
                     out_path: Path | str) -> ExportSummary:
    """Write one encoding per person under new random linkage ids (Parquet, see `bloom_linkage`) and
    keep linkage id -> PID in `linkage_export`. Staff only; audited."""
    out_path = Path(out_path)

    def run(detail: dict[str, Any]) -> ExportSummary:
        secret = read_linkage_secret(secret_file)
        pids, records = person_records(center)
        ids = new_linkage_ids(len(pids))
        # rows in linkage-id order, i.e. random: no order (registration, PID) carries over between exports
        order = sorted(range(len(ids)), key=ids.__getitem__)
        ids, pids, records = [ids[i] for i in order], [pids[i] for i in order], [records[i] for i in order]
        export_id, now = export_id_of(ids), datetime.now(UTC).isoformat()
        center.db.executemany("INSERT INTO linkage_export (export_id, linkage_id, pid, exported_at) VALUES (?, ?, ?, ?)",
                              [(export_id, linkage_id, pid, now) for linkage_id, pid in zip(ids, pids)])
        encodings = encode(records, secret)
        write_encodings(out_path, ids, encodings)
        detail.update(export_id=export_id, persons=len(ids), key_check=encodings.key_check)
        return ExportSummary(export_id, len(ids), out_path)

    return center.run_audited(caller, "export-encodings", str(out_path), run)


# ------------------------------------------------------------------ 2. at the linkage unit
def link_exports(export_a: Path | str, export_b: Path | str, out_csv: Path | str,
                 threshold: float | None = None) -> LinkSummary:
    """Link two sites' exports one-to-one and write the numbered pairs, most similar first, as CSV
    with a `#` preamble naming the format, both export ids and the threshold."""
    a, b = read_encodings(export_a), read_encodings(export_b)
    id_a, id_b = export_id_of(a.ids), export_id_of(b.ids)
    if id_a == id_b:
        raise InputError(f"{export_a} and {export_b} are the same export ({id_a}): link the exports of two sites")
    threshold = load_schema().default_threshold if threshold is None else threshold
    if not 0 < threshold <= 1:
        raise ConfigError(f"threshold must be a Dice coefficient in (0, 1] (got {threshold})")
    links = link_encodings(a, b, threshold)
    out_csv = Path(out_csv)
    with out_csv.open("w", encoding="utf-8", newline="") as stream:
        stream.write(f"# format: {LINKS_FORMAT}\n# export_a: {id_a}\n# export_b: {id_b}\n"
                     f"# threshold: {threshold}\n")
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(LINKS_COLUMNS)
        writer.writerows((n, x, y, f"{s:.4f}") for n, (x, y, s) in enumerate(links, start=1))
    return LinkSummary(id_a, id_b, len(links), threshold, out_csv)


@dataclass(frozen=True)
class Links:
    """The linkage unit's answer as a site reads it."""

    exports: dict[Side, str]
    threshold: float
    pairs: list[tuple[int, str, str, float]]  # (pair, linkage_id_a, linkage_id_b, similarity)


def read_links(path: Path | str) -> Links:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such links file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise InputError(f"{path}: not a {LINKS_FORMAT} file (not UTF-8 text)") from error
    meta = dict(line[1:].strip().partition(": ")[::2] for line in lines if line.startswith("#"))
    body = [line for line in lines if line and not line.startswith("#")]
    if meta.get("format") != LINKS_FORMAT or not body or tuple(body[0].split(",")) != LINKS_COLUMNS:
        raise InputError(f"{path}: not a {LINKS_FORMAT} file (write it with link_exports)")
    pairs, problems = [], []
    for number, row in enumerate(csv.reader(body[1:]), start=2):
        try:
            pair, x, y, similarity = row
            pairs.append((int(pair), x, y, float(similarity)))
        except ValueError:
            problems.append(f"row {number}: expected {','.join(LINKS_COLUMNS)}")
    if problems:
        raise InputError(f"{path}: {len(problems)} malformed row(s): {'; '.join(problems[:5])}")
    return Links({"a": meta.get("export_a", ""), "b": meta.get("export_b", "")}, float(meta.get("threshold", "nan")),
                 pairs)


# ------------------------------------------------------------------ 3. back at each site
def resolve_links(center: TrustCenter, caller: Caller, links_csv: Path | str, side: Side) -> list[SharedPerson]:
    """This site's persons in the linkage unit's answer, as (DIC pseudonym, pair number, similarity),
    by pair number. `side` is the side ("a" or "b") this site's export had. Staff only; audited."""
    if side not in ("a", "b"):
        raise InputError(f"side must be 'a' or 'b' (got {side!r})")

    def run(detail: dict[str, Any]) -> list[SharedPerson]:
        links = read_links(links_csv)
        export_id = links.exports[side]
        detail["export_id"] = export_id
        known = dict(center.db.rows("SELECT linkage_id, pid FROM linkage_export WHERE export_id = ?", (export_id,)))
        if not known:
            raise InputError(f"{links_csv}: side {side} is export {export_id or '(none)'}, which this trust center "
                             "did not make; is this site the other side?")
        column = 1 if side == "a" else 2
        unknown = [pair[0] for pair in links.pairs if pair[column] not in known]
        if unknown:
            raise InputError(f"{links_csv}: {len(unknown)} pair(s) name linkage ids that export {export_id} does not "
                             f"hold (pairs {', '.join(map(str, unknown[:5]))}); the file was altered or mixed up")
        shared = []
        for pair in links.pairs:
            pid = patient_list.current_pid(center.db, known[pair[column]])  # merges since the export
            shared.append(SharedPerson(patient_list.pseudonym_of(center.db, center.keys, pid), pair[0], pair[3]))
        detail["pairs"] = len(shared)
        return sorted(shared, key=lambda person: person.pair)

    return center.run_audited(caller, "resolve-links", str(links_csv), run, side=side)

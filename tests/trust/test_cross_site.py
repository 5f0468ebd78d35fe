"""Cross-site linkage end to end: two synthetic sites, each with its own trust center, export Bloom
encodings, the linkage unit links the files, each site resolves its side; checked against the
generator's truth (truth/linkage.csv), and for what leaves a site, who may do it, and the audit."""

from __future__ import annotations

import csv
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dic.errors import ConfigError, InputError, NotAuthorized
from dic.sources import IdentityRecord, read_identity_records
from dic.synth import write_world
from dic.trust import audit
from dic.trust.access import Caller
from dic.trust.bloom_linkage import encode, read_encodings
from dic.trust.center import TrustCenter
from dic.trust.client import LocalTrust
from dic.trust.cross_site import (
    ExportSummary,
    LinkSummary,
    create_linkage_secret,
    export_encodings,
    export_id_of,
    link_exports,
    read_linkage_secret,
    read_links,
    resolve_links,
)
from dic.trust.identity import Idat, normalize

SITES = ("site-a", "site-b")
STAFF = {site: Caller(f"carol@{site} (staff)", "staff") for site in SITES}
HEX = set("0123456789abcdef")


@dataclass
class Site:
    name: str
    center: TrustCenter
    records: list[IdentityRecord]
    person_of_pseudonym: dict[str, set[str]]  # DIC pseudonym -> truth person ids of its HIS records


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Site]]:
    root = tmp_path_factory.mktemp("cross-site")
    write_world(root / "world", sites=2, patients=2000, seed=23, formats=["his-fhir"])
    with (root / "world" / "truth" / "linkage.csv").open(encoding="utf-8") as stream:
        truth = {(r["site"], r["record_id"]): r["person_id"] for r in csv.DictReader(stream) if r["source"] == "his"}
    sites = {}
    for name in SITES:
        records = [r for r in read_identity_records(root / "world" / name) if isinstance(r, IdentityRecord)]
        center = TrustCenter.open(root / f"trust-center-{name}")
        his = LocalTrust(center, Caller(f"his@{name}", "source"))
        registered = his.register([(r.record_id, r.idat) for r in records])
        persons: dict[str, set[str]] = {}
        for record, registration in zip(records, registered, strict=True):
            persons.setdefault(registration.pseudonym, set()).add(truth[name, record.record_id])
        sites[name] = Site(name, center, records, persons)
    yield sites
    for site in sites.values():
        site.center.close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_linkage_secret(tmp_path_factory.mktemp("secret") / "linkage.secret")


@dataclass
class Linked:
    export_a: ExportSummary
    export_b: ExportSummary
    links: LinkSummary


@pytest.fixture(scope="module")
def linked(world: dict[str, Site], secret: Path, tmp_path_factory: pytest.TempPathFactory) -> Linked:
    """One export per site and the linkage unit's answer (shared: an export costs ~1 s per 1,000 persons)."""
    folder = tmp_path_factory.mktemp("linkage-unit")
    export_a = export_encodings(world["site-a"].center, STAFF["site-a"], secret, folder / "a.parquet")
    export_b = export_encodings(world["site-b"].center, STAFF["site-b"], secret, folder / "b.parquet")
    return Linked(export_a, export_b, link_exports(export_a.path, export_b.path, folder / "links.csv"))


def last_audit(center: TrustCenter) -> tuple[str, str, str, str]:
    return center.db.row("SELECT actor, role, action, outcome FROM audit_entry ORDER BY seq DESC LIMIT 1")


# ---------------------------------------------------------------- the whole flow against the truth
def test_two_sites_find_their_shared_persons_and_nothing_else(world: dict[str, Site], linked: Linked) -> None:
    a, b, summary = world["site-a"], world["site-b"], linked.links
    assert linked.export_a.persons == len(a.person_of_pseudonym)
    assert linked.export_b.persons == len(b.person_of_pseudonym)
    assert (summary.export_a, summary.export_b) == (linked.export_a.export_id, linked.export_b.export_id)
    shared_a = resolve_links(a.center, STAFF["site-a"], summary.path, "a")
    shared_b = resolve_links(b.center, STAFF["site-b"], summary.path, "b")

    # both sites get the same pair numbers, each with its own pseudonyms only
    assert [p.pair for p in shared_a] == [p.pair for p in shared_b] == list(range(1, summary.pairs + 1))
    assert not {p.pseudonym for p in shared_a} & set(b.person_of_pseudonym)
    assert {p.pseudonym for p in shared_a} <= set(a.person_of_pseudonym)
    assert all(p.similarity >= summary.threshold for p in shared_a)
    truly_shared = set().union(*a.person_of_pseudonym.values()) & set().union(*b.person_of_pseudonym.values())
    right = sum(bool(a.person_of_pseudonym[x.pseudonym] & b.person_of_pseudonym[y.pseudonym])
                for x, y in zip(shared_a, shared_b, strict=True))
    # measured (seed 23: 1,000 persons per site, 29 at both): 29 pairs, precision 1.0, recall 1.0
    assert len(truly_shared) >= 20
    assert right / summary.pairs >= 0.95
    assert right / len(truly_shared) >= 0.95

    # the answer names both exports, so each site can tell which of its exports it is about
    links = read_links(summary.path)
    assert links.exports == {"a": linked.export_a.export_id, "b": linked.export_b.export_id}
    assert links.threshold == 0.75
    assert summary.path.read_text(encoding="utf-8").splitlines()[4] == "pair,linkage_id_a,linkage_id_b,similarity"


def test_the_export_holds_no_clear_idat_nor_any_local_identifier(world: dict[str, Site], linked: Linked) -> None:
    site = world["site-a"]
    exported = linked.export_a.path.read_bytes()
    values = set()
    for record in site.records:
        raw = record.idat.values()
        folded = (v for v in normalize(Idat.model_validate(record.idat)).values() if v)
        values |= {*raw, *folded, record.record_id}
    values |= {v.replace("-", "") for v in set(values) if v[:2] in ("19", "20") and v[4:5] == "-"}  # dates
    values |= set(site.person_of_pseudonym)  # DIC pseudonyms
    values |= {pid for (pid,) in site.center.db.rows("SELECT pid FROM person")}
    # at least 5 characters (4 bytes turn up in 150 kB of random bytes now and then), and not spelt
    # with hex digits only (the linkage ids are hex text)
    values = {v for v in values if len(v) >= 5 and not set(v.lower()) <= HEX}
    assert len(values) > 4000
    assert [v for v in values if v.encode() in exported] == []
    # and nothing but the ids and the encodings
    assert pq.read_schema(linked.export_a.path).names == ["linkage_id", "clk"]


def test_each_export_has_new_linkage_ids_kept_only_at_the_site(world: dict[str, Site], linked: Linked, secret: Path,
                                                               tmp_path: Path) -> None:
    center, first = world["site-b"].center, linked.export_b
    second = export_encodings(center, STAFF["site-b"], secret, tmp_path / "2.parquet")
    ids_1, ids_2 = read_encodings(first.path).ids, read_encodings(second.path).ids
    assert len(ids_1) == len(ids_2) == first.persons
    assert not set(ids_1) & set(ids_2)
    assert first.export_id != second.export_id
    assert (first.export_id, second.export_id) == (export_id_of(ids_1), export_id_of(ids_2))
    kept = dict(center.db.rows("SELECT linkage_id, pid FROM linkage_export WHERE export_id IN (?, ?)",
                               (first.export_id, second.export_id)))
    assert set(kept) == set(ids_1) | set(ids_2)
    # both exports map onto the same persons, each exactly once
    persons = [sorted(pid for (pid,) in center.db.rows("SELECT pid FROM linkage_export WHERE export_id = ?", (e,)))
               for e in (first.export_id, second.export_id)]
    assert persons[0] == persons[1] and len(set(persons[0])) == first.persons


# ---------------------------------------------------------------- who may, and the audit
def test_other_roles_are_refused_and_every_call_is_audited(world: dict[str, Site], linked: Linked, secret: Path,
                                                           tmp_path: Path) -> None:
    center = world["site-a"].center
    his, dic = Caller("his@site-a", "source"), Caller("dic@site-a", "dic")
    exports_before = center.db.scalar("SELECT count(*) FROM linkage_export")
    with pytest.raises(NotAuthorized, match="may not export-encodings"):
        export_encodings(center, his, secret, tmp_path / "a.parquet")
    assert last_audit(center) == ("his@site-a", "source", "export-encodings", "denied")
    assert not (tmp_path / "a.parquet").exists()
    assert center.db.scalar("SELECT count(*) FROM linkage_export") == exports_before
    with pytest.raises(NotAuthorized, match="may not resolve-links"):
        resolve_links(center, dic, linked.links.path, "a")
    assert last_audit(center) == ("dic@site-a", "dic", "resolve-links", "denied")
    resolve_links(center, STAFF["site-a"], linked.links.path, "a")
    allowed = center.db.rows("SELECT actor, action, detail FROM audit_entry WHERE outcome = 'allowed' "
                             "AND action IN ('export-encodings', 'resolve-links') ORDER BY seq")
    assert ("carol@site-a (staff)", "export-encodings") == allowed[0][:2]
    assert ("carol@site-a (staff)", "resolve-links") == allowed[-1][:2]
    assert linked.export_a.export_id in allowed[0][2] and linked.export_a.export_id in allowed[-1][2]
    assert audit.verify(center.db).intact


def test_a_site_resolves_only_its_own_side_of_an_unaltered_answer(world: dict[str, Site], linked: Linked,
                                                                  tmp_path: Path) -> None:
    center, links = world["site-a"].center, linked.links.path
    with pytest.raises(InputError, match="did not make"):
        resolve_links(center, STAFF["site-a"], links, "b")
    assert last_audit(center)[2:] == ("resolve-links", "failed")
    lines = links.read_text(encoding="utf-8").splitlines()
    pair, id_a, id_b, similarity = lines[5].split(",")
    lines[5] = ",".join((pair, "0" * len(id_a), id_b, similarity))
    (tmp_path / "altered.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="pairs 1\\)"):
        resolve_links(center, STAFF["site-a"], tmp_path / "altered.csv", "a")
    with pytest.raises(InputError, match="same export"):
        link_exports(linked.export_a.path, linked.export_a.path, tmp_path / "self.csv")
    with pytest.raises(InputError, match="not a dic-cross-site-links"):
        resolve_links(center, STAFF["site-a"], linked.export_a.path, "a")


# ---------------------------------------------------------------- which record, which secret
FULL = {"given_names": "Jürgen", "family_name": "Müller", "birth_date": "1961-04-12", "sex": "male",
        "street": "Hauptstraße 5", "postal_code": "04109", "city": "Leipzig", "insurance_number": "A123456789"}
PARTIAL = {"given_names": "Juergen", "family_name": "Mueller", "birth_date": "1961-04-12"}
BOB = Caller("bob (staff)", "staff")


@pytest.fixture
def small_center(trust_db_url: str, tmp_path: Path) -> Iterator[TrustCenter]:
    """One person with a complete HIS record and, registered later, a partial lab record (SQLite and
    PostgreSQL)."""
    center = TrustCenter.open(tmp_path / "trust-center", trust_db_url)
    (his,) = center.register(Caller("his@site-a", "source"), [("h-1", FULL)])
    (lab,) = center.register(Caller("lab@site-a", "source"), [("l-1", PARTIAL)])
    if lab.pseudonym != his.pseudonym:  # a possible match only: staff decide
        center.merge(BOB, lab.pseudonym, his.pseudonym)
    yield center
    center.close()


def test_a_person_is_exported_with_their_most_complete_record(small_center: TrustCenter, tmp_path: Path) -> None:
    secret = create_linkage_secret(tmp_path / "linkage.secret")
    export = export_encodings(small_center, BOB, secret, tmp_path / "a.parquet")
    assert export.persons == 1
    # the lab record came later, so "the latest record" would be the partial one
    expected = encode([normalize(Idat.model_validate(FULL))], read_linkage_secret(secret))
    assert read_encodings(export.path).encodings == expected


def test_the_secret_file_is_new_private_and_long_enough(small_center: TrustCenter, tmp_path: Path) -> None:
    path = create_linkage_secret(tmp_path / "linkage.secret")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    with pytest.raises(ConfigError, match="already there"):
        create_linkage_secret(path)
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        export_encodings(small_center, BOB, path, tmp_path / "a.parquet")
    assert last_audit(small_center)[2:] == ("export-encodings", "failed")
    short = tmp_path / "short.secret"
    short.write_bytes(b"x" * 31)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="at least 32"):
        read_linkage_secret(short)
    with pytest.raises(ConfigError, match="no linkage secret"):
        read_linkage_secret(tmp_path / "missing.secret")
    # two sites with different secrets: the linkage unit refuses rather than finding "no overlap"
    path.chmod(0o600)
    other = create_linkage_secret(tmp_path / "other.secret")
    export_a = export_encodings(small_center, BOB, path, tmp_path / "a.parquet")
    export_b = export_encodings(small_center, BOB, other, tmp_path / "b.parquet")
    with pytest.raises(ConfigError, match="different secrets"):
        link_exports(export_a.path, export_b.path, tmp_path / "links.csv")


def test_links_resolve_to_the_person_who_holds_the_records_now(small_center: TrustCenter, tmp_path: Path) -> None:
    anna = {"given_names": "Anna", "family_name": "Schmidt", "birth_date": "1980-01-01", "sex": "female",
            "postal_code": "80331", "city": "München", "insurance_number": "B987654321"}
    (anna_at_a,) = small_center.register(Caller("his@site-a", "source"), [("h-2", anna)])
    other = TrustCenter.open(tmp_path / "trust-center-b")
    moved = {**FULL, "given_names": "Jürgen Karl", "street": "Ringstraße 12", "postal_code": "01067", "city": "Dresden"}
    erika = {"given_names": "Erika", "family_name": "Mustermann", "birth_date": "1964-08-12", "sex": "female"}
    (juergen_at_b, _) = other.register(Caller("his@site-b", "source"), [("b-1", moved), ("b-2", erika)])
    secret = create_linkage_secret(tmp_path / "linkage.secret")
    export_a = export_encodings(small_center, BOB, secret, tmp_path / "a.parquet")
    export_b = export_encodings(other, BOB, secret, tmp_path / "b.parquet")
    links = link_exports(export_a.path, export_b.path, tmp_path / "links.csv")
    assert (export_a.persons, export_b.persons, links.pairs) == (2, 2, 1)
    juergen_at_a = small_center.lookup(Caller("his@site-a", "source"), ["h-1"])["h-1"].pseudonym
    (at_a,) = resolve_links(small_center, BOB, links.path, "a")
    (at_b,) = resolve_links(other, BOB, links.path, "b")
    assert (at_a.pseudonym, at_a.pair, at_b.pseudonym, at_b.pair) == (juergen_at_a, 1, juergen_at_b.pseudonym, 1)
    assert at_a.similarity == at_b.similarity >= 0.75
    # staff merge the person into another after the export: the link follows the records
    small_center.merge(BOB, juergen_at_a, anna_at_a.pseudonym)
    assert resolve_links(small_center, BOB, links.path, "a")[0].pseudonym == anna_at_a.pseudonym
    other.close()

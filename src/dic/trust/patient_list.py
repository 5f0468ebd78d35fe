"""The patient list: source records -> persons (PIDs), linked by their IDAT, and the pseudonyms
issued for them.

A new record is scored against the records that share a blocking key with it (the linkage
engine in `dic.trust.linkage`); the best person's probability decides: at or above
`match` the record joins that person, between `review` and `match` it gets a new person and
a review item for staff, below `review` a new person. Staff decisions are remembered and
obeyed. Merges and splits are recorded in `person_change`, the feed the DIC follows to
re-attribute data. Everything here runs inside the caller's write transaction.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from dic.errors import InputError
from dic.trust.database import TrustDatabase
from dic.trust.identity import Idat, normalize
from dic.trust.keys import KeyRing
from dic.trust.linkage import LinkageModel, blocking_keys, link_batch, score_pairs
from dic.trust.pseudonym import Pid, Pseudonym, derive_pseudonym, normalize_pseudonym
from dic.trust.registry import Outcome, Registration

BATCH_FROM = 500  # from this many new records in one call, link them in one batch run
TRAIN_FROM = 20_000  # a batch run this large also re-trains the model (EM on fewer records is noisy)
DIC_DOMAIN = "DIC"
RECORD_DOMAIN = "REC"


@dataclass(frozen=True)
class Thresholds:
    """Match probabilities: at or above `match` the same person; from `review` a possible match."""

    match: float = 0.95
    review: float = 0.60

    def __post_init__(self) -> None:
        if not 0 < self.review <= self.match < 1:
            raise InputError(f"thresholds need 0 < review <= match < 1 (got review {self.review}, match {self.match})")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def new_pid(db: TrustDatabase) -> Pid:
    pid = Pid(f"PID-{secrets.token_hex(8)}")  # random: a PID says nothing about the person
    db.execute("INSERT INTO person (pid, created_at) VALUES (?, ?)", (pid, _now()))
    return pid


def current_pid(db: TrustDatabase, pid: str) -> Pid:
    """Follow merges to the person a PID belongs to now."""
    seen = set()
    while True:
        into = db.scalar("SELECT merged_into FROM person WHERE pid = ?", (pid,))
        if into is None or pid in seen:
            return Pid(pid)
        seen.add(pid)
        pid = into


def pseudonym_of(db: TrustDatabase, keys: KeyRing, pid: Pid, domain: str = DIC_DOMAIN) -> Pseudonym:
    """The person's pseudonym in `domain`, issued (with the current key) on first use."""
    found = db.scalar("SELECT pseudonym FROM pseudonym WHERE domain = ? AND pid = ?", (domain, pid))
    if found is not None:
        return Pseudonym(found)
    issued = derive_pseudonym(keys.key, domain, pid)
    db.execute("INSERT INTO pseudonym (domain, pid, pseudonym, key_version, issued_at) VALUES (?, ?, ?, ?, ?)",
               (domain, pid, issued, keys.current, _now()))
    return issued


def pid_of_pseudonym(db: TrustDatabase, text: str) -> tuple[Pid, str]:
    """(current PID, domain) of a pseudonym of any domain; InputError if nobody has it."""
    pseudonym = normalize_pseudonym(text)
    row = db.row("SELECT pid, domain FROM pseudonym WHERE pseudonym = ?", (pseudonym,))
    if row is None:
        raise InputError(f"unknown pseudonym {pseudonym}")
    return current_pid(db, row[0]), row[1]


def record_pseudonym(keys: KeyRing, source: str, source_id: str) -> str:
    # Derived with the first key, not the current one: a record's pseudonym never changes.
    return derive_pseudonym(keys.keys[min(keys.keys)], RECORD_DOMAIN, Pid(f"{source}\x1f{source_id}"))


def register(db: TrustDatabase, keys: KeyRing, model: LinkageModel, thresholds: Thresholds, source: str,
             records: Sequence[tuple[str, Idat]]) -> tuple[list[Registration], LinkageModel | None]:
    """Register source records: one after the other (a later one sees the earlier ones), or, from
    BATCH_FROM new records on, in one batch run (which re-trains the model from TRAIN_FROM records; returned then)."""
    with db.write():
        known = {row[0] for row in _known_ids(db, source, [source_id for source_id, _ in records])}
        fresh = [(source_id, idat) for source_id, idat in records if source_id not in known]
        if len({source_id for source_id, _ in fresh}) >= BATCH_FROM:
            numbered = {source_id for source_id, idat in fresh if _person_with_number(db, source, idat) is not None}
            return _register_batch(db, keys, model, thresholds, source, records, known | numbered)
        return _register_each(db, keys, model, thresholds, source, records), None


def _known_ids(db: TrustDatabase, source: str, source_ids: Sequence[str]) -> list[tuple]:
    found = []
    for start in range(0, len(source_ids), 500):
        chunk = list(source_ids[start:start + 500])
        marks = ", ".join("?" for _ in chunk)
        found += db.rows(f"SELECT source_id FROM source_record WHERE source = ? AND source_id IN ({marks})",
                         [source, *chunk])
    return found


def _register_batch(db: TrustDatabase, keys: KeyRing, model: LinkageModel, thresholds: Thresholds, source: str,
                    records: Sequence[tuple[str, Idat]], known: set[str]) -> tuple[list[Registration], LinkageModel]:
    """Link the new records among themselves and with the known records that share a blocking key,
    in one batch run. A cluster joins the person of its known records; a cluster that touches
    several known persons joins one of them and the others go to review (staff decide merges of
    persons, never the batch); a cluster of new records only is a new person."""
    latest = {source_id: idat for source_id, idat in records}  # a source id twice: its last IDAT wins
    fresh = {source_id: normalize(idat) for source_id, idat in latest.items() if source_id not in known}
    existing = _records_sharing_keys(db, fresh.values())
    rows = [{"record_id": f"new\x1f{source_id}", **n} for source_id, n in fresh.items()]
    rows += [{"record_id": f"old\x1f{pid}\x1f{i}", **n} for i, (pid, n) in enumerate(existing)]
    linked = link_batch(pa.Table.from_pylist(rows), model, match=thresholds.match, review=thresholds.review,
                        train_model=len(rows) >= TRAIN_FROM)
    person_of_cluster: dict[int, Pid] = {}
    for record_id, cluster in linked.clusters.items():
        if record_id.startswith("old\x1f"):
            person_of_cluster.setdefault(cluster, Pid(record_id.split("\x1f")[1]))
    outcomes: dict[str, Outcome] = {}
    pid_of: dict[str, Pid] = {}
    for source_id in fresh:
        cluster = linked.clusters[f"new\x1f{source_id}"]
        if cluster not in person_of_cluster:
            person_of_cluster[cluster] = new_pid(db)
            outcomes[source_id] = "new"
        else:
            outcomes.setdefault(source_id, "match")
        pid_of[source_id] = person_of_cluster[cluster]
    # a new record that started a person of its own counts as matched if others joined it
    sizes: dict[Pid, int] = {}
    for pid in pid_of.values():
        sizes[pid] = sizes.get(pid, 0) + 1
    for source_id, pid in pid_of.items():
        if outcomes[source_id] == "new" and sizes[pid] > 1:
            outcomes[source_id] = "match"
    now = _now()
    db.executemany("INSERT INTO source_record (source, source_id, pid, record_pseudonym, idat, normalized, "
                   "registered_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [(source, s, pid_of[s], record_pseudonym(keys, source, s),
                     latest[s].model_dump_json(exclude_none=True), orjson.dumps(n).decode(), now, now)
                    for s, n in fresh.items()])
    db.executemany("INSERT INTO blocking_key (key, source, source_id) VALUES (?, ?, ?)",
                   [(key, source, s) for s, n in fresh.items() for key in _keys(source, latest[s], n)])
    _review_possible_matches(db, linked, pid_of, person_of_cluster, source, outcomes)
    results = {s: Registration(pseudonym_of(db, keys, pid_of[s]), record_pseudonym(keys, source, s), outcomes[s])
               for s in fresh}
    for source_id in known:
        results[source_id] = _register_one(db, keys, thresholds, source, source_id, latest[source_id],
                                           normalize(latest[source_id]), [])
    return [results[source_id] for source_id, _ in records], linked.model if len(rows) >= TRAIN_FROM else None


def _records_sharing_keys(db: TrustDatabase, normalized: Iterable[dict[str, Any]]) -> list[tuple[Pid, dict[str, Any]]]:
    """(current PID, normalized IDAT) of the stored records that share a blocking key with any of these."""
    if db.scalar("SELECT count(*) FROM source_record") == 0:  # a first load: nothing to look up
        return []
    wanted = list(dict.fromkeys(key for n in normalized for key in blocking_keys(n)))
    seen: dict[tuple[str, str], tuple[Pid, dict[str, Any]]] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start:start + 500]
        marks = ", ".join("?" for _ in chunk)
        for pid, text, source, source_id in db.rows(
            "SELECT DISTINCT r.pid, r.normalized, r.source, r.source_id FROM blocking_key k JOIN source_record r "
            f"ON r.source = k.source AND r.source_id = k.source_id WHERE k.key IN ({marks})", chunk):
            seen[(source, source_id)] = (current_pid(db, pid), orjson.loads(text))
    return list(seen.values())


def _review_possible_matches(db: TrustDatabase, linked: Any, pid_of: dict[str, Pid],
                             person_of_cluster: dict[int, Pid], source: str, outcomes: dict[str, Outcome]) -> None:
    """One review item per new record whose best pair across persons lies in the review band."""
    def person(record_id: str) -> Pid:
        if record_id.startswith("new\x1f"):
            return pid_of[record_id.split("\x1f", 1)[1]]
        return person_of_cluster.get(linked.clusters[record_id], Pid(record_id.split("\x1f")[1]))

    best: dict[str, tuple[float, Pid]] = {}
    pairs = linked.pairs.to_pydict()
    for left, right, probability in zip(pairs["left_id"], pairs["right_id"], pairs["probability"], strict=True):
        for mine, other in ((left, right), (right, left)):
            if not mine.startswith("new\x1f") or person(mine) == person(other):
                continue
            source_id = mine.split("\x1f", 1)[1]
            if probability > best.get(source_id, (0.0, Pid("")))[0]:
                best[source_id] = (probability, person(other))
    for source_id, (probability, candidate) in sorted(best.items()):
        add_review_item(db, source, source_id, candidate, probability)
        if outcomes[source_id] == "new":
            outcomes[source_id] = "possible-match"


def _register_each(db: TrustDatabase, keys: KeyRing, model: LinkageModel, thresholds: Thresholds, source: str,
                   records: Sequence[tuple[str, Idat]]) -> list[Registration]:
    """Register records one after the other, a later one seeing the earlier ones. The pairs to
    score (each record against the stored records and the earlier records of this call that share
    a blocking key) are scored in ONE call first: the engine's cost is per call (~50 ms), not per
    pair, so scoring record by record would cost 50 ms a record."""
    normalized = [normalize(idat) for _, idat in records]
    pairs: list[tuple[int, Pid | int, dict[str, Any]]] = []  # (record, stored PID or earlier record, candidate)
    earlier_by_key: dict[str, list[int]] = {}
    for i, n in enumerate(normalized):
        pairs += [(i, pid, candidate) for pid, candidate in candidate_records(db, n)]
        record_keys = set(blocking_keys(n))
        pairs += [(i, j, normalized[j]) for j in sorted({j for key in record_keys for j in earlier_by_key.get(key, ())})]
        for key in record_keys:
            earlier_by_key.setdefault(key, []).append(i)
    scores = score_pairs(model, [normalized[i] for i, _, _ in pairs], [c for _, _, c in pairs]) if pairs else []
    scored: dict[int, list[tuple[Pid | int, float]]] = {}
    for (i, owner, _), probability in zip(pairs, scores, strict=True):
        scored.setdefault(i, []).append((owner, float(probability)))
    results: list[Registration] = []
    for i, (source_id, idat) in enumerate(records):
        candidates = [(owner if isinstance(owner, str) else current_pid(db, _pid_of(db, source, records[owner][0])), p)
                      for owner, p in scored.get(i, [])]
        results.append(_register_one(db, keys, thresholds, source, source_id, idat, normalized[i], candidates))
    return results


def _pid_of(db: TrustDatabase, source: str, source_id: str) -> Pid:
    return Pid(db.scalar("SELECT pid FROM source_record WHERE source = ? AND source_id = ?", (source, source_id)))


def _register_one(db: TrustDatabase, keys: KeyRing, thresholds: Thresholds, source: str, source_id: str,
                  idat: Idat, normalized: dict[str, Any], candidates: list[tuple[Pid, float]]) -> Registration:
    idat_text = idat.model_dump_json(exclude_none=True)
    known = db.row("SELECT pid, record_pseudonym, idat FROM source_record WHERE source = ? AND source_id = ?",
                   (source, source_id))
    if known is not None:
        pid, record, stored = known
        if stored != idat_text:  # the source corrected its IDAT: keep the person, update what we compare
            db.execute("UPDATE source_record SET idat = ?, normalized = ?, updated_at = ? WHERE source = ? AND source_id = ?",
                       (idat_text, orjson.dumps(normalized).decode(), _now(), source, source_id))
            _store_keys(db, source, source_id, idat, normalized, replace=True)
        return Registration(pseudonym_of(db, keys, current_pid(db, pid)), record, "known")
    numbered = _person_with_number(db, source, idat)
    if numbered is not None:  # the hospital's own patient number: the same person, whatever the scores say
        pid, outcome, candidate = numbered, "match", None
    else:
        pid, outcome, candidate = _link(db, thresholds, source, source_id, candidates)
    record = record_pseudonym(keys, source, source_id)
    now = _now()
    db.execute("INSERT INTO source_record (source, source_id, pid, record_pseudonym, idat, normalized, registered_at, "
               "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
               (source, source_id, pid, record, idat_text, orjson.dumps(normalized).decode(), now, now))
    _store_keys(db, source, source_id, idat, normalized)
    if candidate is not None:
        add_review_item(db, source, source_id, *candidate)
    return Registration(pseudonym_of(db, keys, pid), record, outcome)


def _store_keys(db: TrustDatabase, source: str, source_id: str, idat: Idat, normalized: dict[str, Any],
                replace: bool = False) -> None:
    if replace:
        db.execute("DELETE FROM blocking_key WHERE source = ? AND source_id = ?", (source, source_id))
    db.executemany("INSERT INTO blocking_key (key, source, source_id) VALUES (?, ?, ?)",
                   [(key, source, source_id) for key in _keys(source, idat, normalized)])


def _keys(source: str, idat: Idat, normalized: dict[str, Any]) -> list[str]:
    """A record's blocking keys, and its hospital patient number's key (looked up, never scored)."""
    number = hospital_number_key(source, idat)
    return list(dict.fromkeys(blocking_keys(normalized))) + ([number] if number else [])


def hospital_number_key(source: str, idat: Idat) -> str | None:
    """The patient number qualified by its hospital: the part of the source system's name after '@'
    ("lab@site-a" -> site-a), since HIS, lab and billing of one hospital share its numbers."""
    if idat.patient_number is None:
        return None
    return f"patient-number:{source.rpartition('@')[2]}|{idat.patient_number}"


def _person_with_number(db: TrustDatabase, source: str, idat: Idat) -> Pid | None:
    """The person already registered under this hospital patient number, if any."""
    key = hospital_number_key(source, idat)
    if key is None:
        return None
    pid = db.scalar("SELECT r.pid FROM blocking_key k JOIN source_record r ON r.source = k.source AND "
                    "r.source_id = k.source_id WHERE k.key = ? ORDER BY r.registered_at LIMIT 1", (key,))
    return current_pid(db, Pid(pid)) if pid is not None else None


def _link(db: TrustDatabase, thresholds: Thresholds, source: str, source_id: str,
          candidates: list[tuple[Pid, float]]) -> tuple[Pid, Outcome, tuple[Pid, float] | None]:
    """(PID, outcome, review candidate) for a new record, from its scored candidates."""
    decisions = {current_pid(db, pid): bool(same) for pid, same in db.rows(
        "SELECT pid, same FROM link_decision WHERE source = ? AND source_id = ?", (source, source_id))}
    for pid, same in decisions.items():
        if same:
            return pid, "match", None
    best: dict[Pid, float] = {}
    for pid, probability in candidates:
        if decisions.get(pid, True):  # staff said "not this person": never again
            best[pid] = max(best.get(pid, 0.0), probability)
    if best:
        pid, probability = max(best.items(), key=lambda item: item[1])
        if probability >= thresholds.match:
            return pid, "match", None
        if probability >= thresholds.review:
            return new_pid(db), "possible-match", (pid, probability)
    return new_pid(db), "new", None


def candidate_records(db: TrustDatabase, normalized: dict[str, Any]) -> list[tuple[Pid, dict[str, Any]]]:
    """(current PID, normalized IDAT) of every record sharing a blocking key with `normalized`."""
    keys = list(dict.fromkeys(blocking_keys(normalized)))
    if not keys:
        return []
    marks = ", ".join("?" for _ in keys)
    rows = db.rows(
        "SELECT DISTINCT r.pid, r.normalized, r.source, r.source_id FROM blocking_key k "
        f"JOIN source_record r ON r.source = k.source AND r.source_id = k.source_id WHERE k.key IN ({marks})",
        keys,
    )
    return [(current_pid(db, pid), orjson.loads(text)) for pid, text, _, _ in rows]


def add_review_item(db: TrustDatabase, source: str, source_id: str, candidate: Pid, probability: float) -> int:
    review_id = int(db.scalar("SELECT coalesce(max(review_id), 0) + 1 FROM review_item"))
    db.execute("INSERT INTO review_item (review_id, source, source_id, candidate_pid, probability, status, created_at) "
               "VALUES (?, ?, ?, ?, ?, 'open', ?)", (review_id, source, source_id, candidate, probability, _now()))
    return review_id


def record_change(db: TrustDatabase, kind: str, from_pid: Pid, to_pid: Pid, records: list[str], actor: str) -> int:
    seq = int(db.scalar("SELECT coalesce(max(seq), 0) + 1 FROM person_change"))
    db.execute("INSERT INTO person_change (seq, at, kind, from_pid, to_pid, records, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (seq, _now(), kind, from_pid, to_pid, orjson.dumps(records).decode(), actor))
    return seq


def merge(db: TrustDatabase, from_pid: Pid, into_pid: Pid, actor: str) -> list[str]:
    """All of `from_pid`'s records now belong to `into_pid`; the old PID stays, pointing there."""
    from_pid, into_pid = current_pid(db, from_pid), current_pid(db, into_pid)
    if from_pid == into_pid:
        return []
    records = [r for (r,) in db.rows("SELECT record_pseudonym FROM source_record WHERE pid = ? ORDER BY record_pseudonym",
                                     (from_pid,))]
    db.execute("UPDATE source_record SET pid = ? WHERE pid = ?", (into_pid, from_pid))
    db.execute("UPDATE consent SET pid = ? WHERE pid = ?", (into_pid, from_pid))
    db.execute("UPDATE person SET merged_into = ? WHERE pid = ?", (into_pid, from_pid))
    record_change(db, "merge", from_pid, into_pid, records, actor)
    return records


def split(db: TrustDatabase, pid: Pid, records: Sequence[str], actor: str) -> Pid:
    """Move the given source records (by record pseudonym) of `pid` to a new person."""
    pid = current_pid(db, pid)
    owned = {r for (r,) in db.rows("SELECT record_pseudonym FROM source_record WHERE pid = ?", (pid,))}
    moving = sorted(set(records))
    if not moving or not set(moving) <= owned or set(moving) == owned:
        raise InputError("a split moves some, not all and not none, of the person's own records")
    new = new_pid(db)
    db.executemany("UPDATE source_record SET pid = ? WHERE record_pseudonym = ?", [(new, r) for r in moving])
    record_change(db, "split", pid, new, moving, actor)
    return new

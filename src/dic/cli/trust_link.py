"""How the DIC's commands reach the trust center named in the repository's settings.

The embedded set-up (a folder) runs the trust center in-process, with its own database and key
file in that folder; a URL reaches `dic trust serve` with the API keys in DIC_TRUST_SOURCE_KEY
(a source system's key, for loads) and DIC_TRUST_DIC_KEY (the DIC's key, for consent and the
change feed). Either way the loaders talk to the same `PatientRegistry` interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dic.engines import Database
from dic.errors import ConfigError
from dic.repository import (
    BatchReport,
    Move,
    attach_specimen_subjects,
    load_records,
    merge_patients,
    read_config,
    reattribute,
    resource_key,
)
from dic.sources import Entry, Rejection, SourceResource, find_fhir_files, read_fhir

FEED_STATE = "trust-feed.json"  # in the repository folder: the last change of the trust center applied
CONSENT_CHUNK = 500


@dataclass
class TrustLink:
    registry: Any  # PatientRegistry of the loading source system
    dic: Any  # the DIC's own client: consents, change feed

    def forward_consents(self, records: Iterable[Entry | Rejection]) -> Iterator[Entry | Rejection]:
        """Pass records through; Consents (already pseudonymized) also go to the trust center,
        which answers consent checks (`may_use`)."""
        pending: list[dict[str, Any]] = []
        for record in records:
            if isinstance(record, Entry) and record.resource_type == "Consent" and record.content:
                pending.append(orjson.loads(record.content))
                if len(pending) >= CONSENT_CHUNK:
                    self.dic.record_consents(pending)
                    pending = []
            yield record
        if pending:
            self.dic.record_consents(pending)


@contextmanager
def trust_link(repo: Path, source_system: str) -> Iterator[TrustLink]:
    from dic.trust import connect

    where = read_config(repo).trust or ""
    if where.startswith(("http://", "https://")):
        keys = {name: os.environ.get(name) for name in ("DIC_TRUST_SOURCE_KEY", "DIC_TRUST_DIC_KEY")}
        if not all(keys.values()):
            raise ConfigError(f"the trust center at {where} needs DIC_TRUST_SOURCE_KEY and DIC_TRUST_DIC_KEY")
        with connect(where, source_system, "source", keys["DIC_TRUST_SOURCE_KEY"]) as registry, \
                connect(where, "dic", "dic", keys["DIC_TRUST_DIC_KEY"]) as dic:
            yield TrustLink(registry, dic)
        return
    from dic.trust import Caller, LocalTrust, TrustCenter

    center = TrustCenter.open(Path(where))  # one in-process center serves both callers
    try:
        yield TrustLink(LocalTrust(center, Caller(source_system, "source")), LocalTrust(center, Caller("dic", "dic")))
    finally:
        center.close()


def apply_changes(db: Database, repo: Path, link: TrustLink) -> int:
    """Re-attribute stored data after merges and splits at the trust center; the number applied."""
    state = repo / FEED_STATE
    since = orjson.loads(state.read_bytes())["applied"] if state.exists() else 0
    changes = link.dic.changes(since)
    if not changes:
        return 0
    moves = []
    for change in changes:
        if change.kind == "merge":
            moves.append(Move(None, change.from_pseudonym, change.to_pseudonym))
        else:
            moves.extend(Move(record, change.from_pseudonym, change.to_pseudonym) for record in change.records)
    reattribute(db, moves)
    state.write_bytes(orjson.dumps({"applied": changes[-1].seq}))
    return len(changes)


def load_source(db: Database, repo: Path, link: TrustLink, source: str, records: Iterable[Any], source_system: str,
                progress: Callable[[int], None] | None = None) -> BatchReport:
    """Load one batch of a source system's records (`SourceResource`s of an adapter, `Rejection`s,
    `PatientMerge`s) through the trust center: codes checked and values normalized, Patients registered
    and ids pseudonymized, observations on a specimen given its patient, consents forwarded, one Patient
    per person; then stored in one transaction (see `dic.repository.load_records`)."""
    from dic.terminology import annotate
    from dic.trust import pseudonymize

    key = resource_key(repo)
    stream = pseudonymize(annotate(records), link.registry, key, source_system=source_system)
    stream = link.forward_consents(attach_specimen_subjects(db, stream))
    return load_records(db, source, merge_patients(db, stream), progress)


def load_through_trust(db: Database, repo: Path, link: TrustLink, paths: Iterable[Path], source_system: str,
                       progress: Any = None) -> list[BatchReport]:
    """Load FHIR files of one source system, Patient files first, pseudonymized through the trust
    center (one batch per file); `progress(path, records)` after each chunk, `progress(path, None)`
    after each file."""
    from dic.trust import patients_first

    reports = []
    for path in patients_first(find_fhir_files(paths)):
        step = (lambda n, p=path: progress(p, n)) if progress else None
        records = read_fhir(path, prepare=SourceResource)
        reports.append(load_source(db, repo, link, str(path), records, source_system, step))
        if progress:
            progress(path, None)
    return reports

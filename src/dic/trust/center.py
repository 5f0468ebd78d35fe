"""The trust center: every operation, authorized by role and written to the audit log.

This class is the one code path. `dic trust serve` puts HTTP in front of it (`service.py`);
the embedded set-up (`dic demo`, tests) calls it in-process through `LocalTrust`. Both
authenticate a `Caller` first; every method here checks the caller's role against
`roles.yaml` and appends an audit entry whether the call is allowed, refused or fails.

A trust-center folder holds `settings.json`, the database (`trust-center.sqlite` unless
settings name a PostgreSQL URL) and the key file `keys.json` (mode 0600).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import ValidationError

from dic.errors import AccessError, ConfigError, InputError
from dic.trust import audit, patient_list
from dic.trust.access import Caller, authenticate, issue_key, list_keys, require, revoke_key
from dic.trust.consent import may_use, purposes, withdrawal_date
from dic.trust.database import TrustDatabase
from dic.trust.identity import Idat
from dic.trust.keys import KeyRing
from dic.trust.linkage import DEFAULT_MODEL, LinkageModel
from dic.trust.patient_list import DIC_DOMAIN, Thresholds, pseudonym_of
from dic.trust.pseudonym import Pid
from dic.trust.registry import Registration

SETTINGS = "settings.json"
PRIOR_FROM_PERSONS = 1_000  # from this many persons the default model's prior is 1/persons
MAX_PRIOR = 1 / PRIOR_FROM_PERSONS
T = TypeVar("T")


class InvalidIdat(InputError):
    """Some records' IDAT is malformed; nothing of the request was written."""

    def __init__(self, problems: list[dict[str, Any]]):
        self.problems = problems
        lines = "; ".join(f"record {p['index']}: {p['message']}" for p in problems[:10])
        super().__init__(f"{len(problems)} record(s) with malformed IDAT, nothing registered: {lines}")


def check_idat(records: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[tuple[str, Idat]], list[dict[str, Any]]]:
    """The records whose IDAT validates, and a problem (index, field, message) for each other one."""
    valid, problems = [], []
    for index, (source_id, raw) in enumerate(records):
        if not isinstance(source_id, str) or not source_id.strip():
            problems.append({"index": index, "field": "source_id", "message": "source patient id is empty"})
            continue
        try:
            valid.append((source_id, Idat.model_validate(raw)))
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "idat"
            problems.append({"index": index, "field": field, "message": f"{field}: {first['msg']}"})
    return valid, problems


@dataclass(frozen=True)
class Change:
    """One entry of the feed the DIC follows: these records' data now belongs to `to_pseudonym`."""

    seq: int
    kind: str  # merge | split
    from_pseudonym: str
    to_pseudonym: str
    records: list[str]


@dataclass(frozen=True)
class Withdrawal:
    pseudonym: str
    since: date


class TrustCenter:
    def __init__(self, db: TrustDatabase, keys: KeyRing, thresholds: Thresholds | None = None):
        self.db = db
        self.keys = keys
        self.thresholds = thresholds or Thresholds()

    @classmethod
    def open(cls, folder: Path, db_url: str | None = None) -> TrustCenter:
        """The trust center kept in `folder` (created on first use)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SETTINGS
        settings = orjson.loads(path.read_bytes()) if path.exists() else {}
        if db_url and settings.get("db_url") not in (None, db_url):
            raise ConfigError(f"{path}: this trust center uses {settings['db_url']}, not {db_url}")
        settings.setdefault("db_url", db_url or str(folder / "trust-center.sqlite"))
        settings.setdefault("thresholds", asdict(Thresholds()))
        path.write_bytes(orjson.dumps(settings, option=orjson.OPT_INDENT_2))
        return cls(TrustDatabase(settings["db_url"]), KeyRing.open(folder / "keys.json"),
                   Thresholds(**settings["thresholds"]))

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ access and audit
    def authenticate(self, api_key: str | None) -> Caller:
        try:
            return authenticate(self.db, api_key)
        except AccessError as error:
            audit.append(self.db, "anonymous", "none", "authenticate", "-", "unauthenticated", {"reason": str(error)})
            raise

    def issue_key(self, system: str, role: str, project: str | None = None) -> str:
        """A new API key (run on the trust-center host by its administrators, audited)."""
        key = issue_key(self.db, system, role, project)
        audit.append(self.db, "administrator", "local", "issue-key", system, "allowed", {"role": role})
        return key

    @contextmanager
    def _audited(self, caller: Caller, action: str, subject: str, detail: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            require(caller, action)
        except AccessError:
            audit.append(self.db, caller.system, caller.role, action, subject, "denied", detail)
            raise
        try:
            with self.db.write():
                yield detail  # the operation may add counts to the detail
                audit.append(self.db, caller.system, caller.role, action, subject, "allowed", detail)
        except Exception as error:
            audit.append(self.db, caller.system, caller.role, action, subject, "failed",
                         {**detail, "error": type(error).__name__})
            raise

    def run_audited(self, caller: Caller, action: str, subject: str, operation: Callable[[dict[str, Any]], T],
             **detail: Any) -> T:
        with self._audited(caller, action, subject, detail) as extra:
            return operation(extra)

    # ------------------------------------------------------------------ source systems
    @property
    def model(self) -> LinkageModel:
        """The trained model, or the default one with the prior this patient list implies: a new
        record is one of N known persons (or nobody), so a pair matches with probability ~1/N.
        The default's prior assumes ~500,000 persons; at a few thousand it sent every record
        with a typo to review (demo, 1,000 patients: recall 0.975, 5 review items; with 1/N:
        1.000, 1 item, precision 1.000 both ways). Below PRIOR_FROM_PERSONS the cautious default
        stays: on a short list a raised prior would make weak agreements matches."""
        text = self.db.scalar("SELECT model FROM linkage_model WHERE name = 'current'")
        if text:
            return LinkageModel.from_json(text)
        persons = int(self.db.scalar("SELECT count(*) FROM person WHERE merged_into IS NULL"))
        if persons < PRIOR_FROM_PERSONS:
            return DEFAULT_MODEL
        prior = min(MAX_PRIOR, max(DEFAULT_MODEL.prior, 1 / persons))
        return DEFAULT_MODEL.model_copy(update={"prior": prior})

    def register(self, caller: Caller, records: Sequence[tuple[str, dict[str, Any]]]) -> list[Registration]:
        """Register a source system's records; all or nothing (InvalidIdat names every bad one)."""
        valid, problems = check_idat(records)

        def run(detail: dict[str, Any]) -> list[Registration]:
            if problems:
                raise InvalidIdat(problems)
            found, trained = patient_list.register(self.db, self.keys, self.model, self.thresholds, caller.system,
                                                   valid)
            if trained is not None:  # a batch run trained the model: later single records use it
                self.db.execute("DELETE FROM linkage_model WHERE name = 'current'")
                self.db.execute("INSERT INTO linkage_model (name, model, trained_at) VALUES ('current', ?, ?)",
                                (trained.to_json(), datetime.now(UTC).isoformat()))
                detail["model_trained"] = True
            for outcome in ("new", "match", "possible-match", "known"):
                detail[outcome] = sum(r.outcome == outcome for r in found)
            return found

        return self.run_audited(caller, "register", caller.system, run, records=len(records))

    def lookup(self, caller: Caller, source_ids: Sequence[str]) -> dict[str, Registration]:
        def run(detail: dict[str, Any]) -> dict[str, Registration]:
            found = {}
            for source_id in source_ids:
                row = self.db.row("SELECT pid, record_pseudonym FROM source_record WHERE source = ? AND source_id = ?",
                                  (caller.system, source_id))
                if row is not None:
                    pid = patient_list.current_pid(self.db, row[0])
                    found[source_id] = Registration(pseudonym_of(self.db, self.keys, pid), row[1], "known")
            detail["found"] = len(found)
            return found

        return self.run_audited(caller, "lookup", caller.system, run, asked=len(source_ids))

    # ------------------------------------------------------------------ consent
    def record_consents(self, caller: Caller, consents: Sequence[dict[str, Any]]) -> int:
        """Store MII Broad Consent resources whose patient is a DIC pseudonym."""

        def run(detail: dict[str, Any]) -> int:
            for consent in consents:
                reference = (consent.get("patient") or {}).get("reference", "")
                if consent.get("resourceType") != "Consent" or not reference.startswith("Patient/") or "id" not in consent:
                    raise InputError("a consent must be a Consent resource with an id and patient 'Patient/<pseudonym>'")
                pid, _ = patient_list.pid_of_pseudonym(self.db, reference.removeprefix("Patient/"))
                self.db.execute("DELETE FROM consent WHERE consent_id = ?", (consent["id"],))
                self.db.execute("INSERT INTO consent (consent_id, pid, resource, recorded_at) VALUES (?, ?, ?, ?)",
                                (consent["id"], pid, orjson.dumps(consent).decode(), datetime.now(UTC).isoformat()))
            return len(consents)

        return self.run_audited(caller, "record-consent", "-", run, consents=len(consents))

    def _consents(self, pid: Pid) -> list[dict[str, Any]]:
        return [orjson.loads(text) for (text,) in self.db.rows("SELECT resource FROM consent WHERE pid = ?", (pid,))]

    def may_use(self, caller: Caller, pseudonym: str, purpose: str, data_date: date, as_of: date | None = None) -> bool:
        def run(detail: dict[str, Any]) -> bool:
            pid, domain = patient_list.pid_of_pseudonym(self.db, pseudonym)
            if caller.role == "project":  # a project asks about its own pseudonyms only
                own = self.db.scalar("SELECT domain FROM project WHERE name = ?", (caller.project,))
                if domain != own:
                    raise InputError(f"unknown pseudonym {pseudonym}")
            allowed = may_use(self._consents(pid), purpose, data_date, as_of or date.today())
            detail["result"] = allowed
            return allowed

        if purpose not in purposes():
            raise InputError(f"unknown purpose {purpose!r}; known: {', '.join(sorted(purposes()))}")
        return self.run_audited(caller, "may-use", pseudonym, run, purpose=purpose, data_date=data_date.isoformat())

    def withdrawals(self, caller: Caller, as_of: date | None = None) -> list[Withdrawal]:
        """Every person who withdrew consent by `as_of`, with the date from which data may not be used."""

        def run(detail: dict[str, Any]) -> list[Withdrawal]:
            found = []
            for (pid,) in self.db.rows("SELECT DISTINCT pid FROM consent ORDER BY pid"):
                since = withdrawal_date(self._consents(pid), as_of or date.today())
                if since is not None:
                    found.append(Withdrawal(pseudonym_of(self.db, self.keys, pid), since))
            detail["withdrawals"] = len(found)
            return sorted(found, key=lambda w: (w.since, w.pseudonym))

        return self.run_audited(caller, "withdrawals", "-", run)

    # ------------------------------------------------------------------ projects
    def add_project(self, caller: Caller, name: str, purpose: str) -> str:
        """Approve a project: its own pseudonym domain (P + a number) and its consent purpose."""
        if purpose not in purposes():
            raise InputError(f"unknown purpose {purpose!r}; known: {', '.join(sorted(purposes()))}")

        def run(detail: dict[str, Any]) -> str:
            known = self.db.scalar("SELECT domain FROM project WHERE name = ?", (name,))
            if known:
                return known
            domain = f"P{int(self.db.scalar('SELECT count(*) FROM project')) + 1}"
            self.db.execute("INSERT INTO project (name, domain, purpose, approved_at) VALUES (?, ?, ?, ?)",
                            (name, domain, purpose, datetime.now(UTC).isoformat()))
            detail["domain"] = domain
            return domain

        return self.run_audited(caller, "manage-projects", name, run, purpose=purpose)

    def project_pseudonyms(self, caller: Caller, project: str, pseudonyms: Sequence[str]) -> dict[str, str]:
        """DIC pseudonym -> the person's pseudonym in `project` (a different one in every project)."""

        def run(detail: dict[str, Any]) -> dict[str, str]:
            domain = self.db.scalar("SELECT domain FROM project WHERE name = ?", (project,))
            if domain is None:
                raise InputError(f"no approved project {project!r}")
            mapped = {}
            for text in pseudonyms:
                pid, source_domain = patient_list.pid_of_pseudonym(self.db, text)
                if source_domain != DIC_DOMAIN:
                    raise InputError(f"{text} is not a DIC pseudonym")
                mapped[text] = pseudonym_of(self.db, self.keys, pid, domain)
            return mapped

        return self.run_audited(caller, "project-pseudonyms", project, run, pseudonyms=len(pseudonyms))

    def project_members(self, caller: Caller, project: str, members: Sequence[tuple[str, date]],
                        as_of: date | None = None) -> dict[str, str]:
        """A cohort's member list for `project`: DIC pseudonym -> project pseudonym, only for persons whose
        consent covers the project's purpose for the data of that date (consent is decided here, where it lives)."""

        def run(detail: dict[str, Any]) -> dict[str, str]:
            row = self.db.row("SELECT domain, purpose FROM project WHERE name = ?", (project,))
            if row is None:
                raise InputError(f"no approved project {project!r}")
            domain, purpose = row
            released = {}
            for text, data_date in members:
                pid, source_domain = patient_list.pid_of_pseudonym(self.db, text)
                if source_domain != DIC_DOMAIN:
                    raise InputError(f"{text} is not a DIC pseudonym")
                if may_use(self._consents(pid), purpose, data_date, as_of or date.today()):
                    released[text] = pseudonym_of(self.db, self.keys, pid, domain)
            detail.update(asked=len(members), released=len(released), purpose=purpose)
            return released

        return self.run_audited(caller, "project-members", project, run)

    # ------------------------------------------------------------------ the change feed
    def changes(self, caller: Caller, since: int = 0) -> list[Change]:
        def run(detail: dict[str, Any]) -> list[Change]:
            rows = self.db.rows("SELECT seq, kind, from_pid, to_pid, records FROM person_change WHERE seq > ? ORDER BY seq",
                                (since,))
            return [Change(seq, kind, pseudonym_of(self.db, self.keys, Pid(a)), pseudonym_of(self.db, self.keys, Pid(b)),
                           orjson.loads(records)) for seq, kind, a, b, records in rows]

        return self.run_audited(caller, "changes", "-", run, since=since)

    # ------------------------------------------------------------------ staff only
    def review_items(self, caller: Caller, status: str = "open") -> list[dict[str, Any]]:
        """Possible matches with both sides' IDAT: shown to trust-center staff only."""

        def run(detail: dict[str, Any]) -> list[dict[str, Any]]:
            items = []
            for review_id, source, source_id, candidate, probability, state in self.db.rows(
                "SELECT review_id, source, source_id, candidate_pid, probability, status FROM review_item "
                "WHERE status = ? ORDER BY review_id", (status,)
            ):
                record = self.db.row("SELECT pid, idat FROM source_record WHERE source = ? AND source_id = ?",
                                     (source, source_id))
                items.append({
                    "review_id": review_id, "probability": probability, "status": state,
                    "record": {"source": source, "source_id": source_id, "idat": orjson.loads(record[1]),
                               "pid": patient_list.current_pid(self.db, record[0])},
                    "candidate": {"pid": patient_list.current_pid(self.db, candidate), "records": [
                        {"source": s, "source_id": i, "idat": orjson.loads(t)} for s, i, t in self.db.rows(
                            "SELECT source, source_id, idat FROM source_record WHERE pid = ? ORDER BY source, source_id",
                            (patient_list.current_pid(self.db, candidate),))]},
                })
            detail["items"] = len(items)
            return items

        return self.run_audited(caller, "review-list", status, run)

    def resolve_review(self, caller: Caller, review_id: int, same: bool) -> Change | None:
        """Staff decide a possible match; the decision is remembered. Same person: a merge."""

        def run(detail: dict[str, Any]) -> Change | None:
            row = self.db.row("SELECT source, source_id, candidate_pid, status FROM review_item WHERE review_id = ?",
                              (review_id,))
            if row is None or row[3] != "open":
                raise InputError(f"no open review item {review_id}")
            source, source_id, candidate, _ = row
            now = datetime.now(UTC).isoformat()
            self.db.execute("UPDATE review_item SET status = ?, decided_at = ?, decided_by = ? WHERE review_id = ?",
                            ("same" if same else "different", now, caller.system, review_id))
            self.db.execute("DELETE FROM link_decision WHERE source = ? AND source_id = ? AND pid = ?",
                            (source, source_id, candidate))
            self.db.execute("INSERT INTO link_decision (source, source_id, pid, same, decided_at, decided_by) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (source, source_id, candidate, same, now, caller.system))
            if not same:
                return None
            pid = self.db.scalar("SELECT pid FROM source_record WHERE source = ? AND source_id = ?", (source, source_id))
            return self._merge(Pid(pid), Pid(candidate), caller)

        return self.run_audited(caller, "review-resolve", str(review_id), run, same=same)

    def _merge(self, from_pid: Pid, into_pid: Pid, caller: Caller) -> Change | None:
        from_pid, into_pid = patient_list.current_pid(self.db, from_pid), patient_list.current_pid(self.db, into_pid)
        records = patient_list.merge(self.db, from_pid, into_pid, caller.system)
        if not records:
            return None
        seq = int(self.db.scalar("SELECT max(seq) FROM person_change"))
        return Change(seq, "merge", pseudonym_of(self.db, self.keys, from_pid), pseudonym_of(self.db, self.keys, into_pid),
                      records)

    def merge_records(self, caller: Caller, prior_id: str, surviving_id: str) -> Registration | None:
        """A source system's own merge of two of its patient records (HL7 ADT^A40): their persons
        become one, the change reaches the DIC's feed. None if either record was never registered."""
        def run(detail: dict[str, Any]) -> Registration | None:
            rows = {source_id: (Pid(pid), record) for source_id, pid, record in self.db.rows(
                "SELECT source_id, pid, record_pseudonym FROM source_record WHERE source = ? AND source_id IN (?, ?)",
                (caller.system, prior_id, surviving_id))}
            if prior_id not in rows or surviving_id not in rows:
                detail["merged"] = False
                return None
            change = self._merge(rows[prior_id][0], rows[surviving_id][0], caller)
            detail["merged"] = change is not None
            pid = patient_list.current_pid(self.db, rows[surviving_id][0])
            return Registration(pseudonym_of(self.db, self.keys, pid), rows[surviving_id][1], "known")

        return self.run_audited(caller, "merge-records", caller.system, run)

    def merge(self, caller: Caller, from_pseudonym: str, into_pseudonym: str) -> Change | None:
        def run(detail: dict[str, Any]) -> Change | None:
            source, _ = patient_list.pid_of_pseudonym(self.db, from_pseudonym)
            target, _ = patient_list.pid_of_pseudonym(self.db, into_pseudonym)
            return self._merge(source, target, caller)

        return self.run_audited(caller, "merge", f"{from_pseudonym} -> {into_pseudonym}", run)

    def split(self, caller: Caller, pseudonym: str, records: Sequence[str]) -> Change:
        def run(detail: dict[str, Any]) -> Change:
            pid, _ = patient_list.pid_of_pseudonym(self.db, pseudonym)
            new = patient_list.split(self.db, pid, records, caller.system)
            return Change(int(self.db.scalar("SELECT max(seq) FROM person_change")), "split", pseudonym,
                          pseudonym_of(self.db, self.keys, new), sorted(set(records)))

        return self.run_audited(caller, "split", pseudonym, run, records=len(records))

    def reidentify(self, caller: Caller, pseudonym: str) -> dict[str, Any]:
        """Pseudonym -> PID -> the IDAT of every source record: staff only, always audited."""

        def run(detail: dict[str, Any]) -> dict[str, Any]:
            pid, domain = patient_list.pid_of_pseudonym(self.db, pseudonym)
            records = [{"source": s, "source_id": i, "record": r, "idat": orjson.loads(t)} for s, i, r, t in self.db.rows(
                "SELECT source, source_id, record_pseudonym, idat FROM source_record WHERE pid = ? ORDER BY source, source_id",
                (pid,))]
            detail["domain"] = domain
            return {"pid": pid, "pseudonym": pseudonym, "domain": domain, "records": records}

        return self.run_audited(caller, "reidentify", pseudonym, run)

    def list_keys(self, caller: Caller) -> list[tuple]:
        """(key_id, system, role, project, created_at, revoked_at) of every key ever issued."""

        def run(detail: dict[str, Any]) -> list[tuple]:
            found = list_keys(self.db)
            detail["keys"] = len(found)
            return found

        return self.run_audited(caller, "manage-keys", "-", run)

    def revoke_key(self, caller: Caller, key_id: str) -> bool:
        """Revoke an API key at once (its next call is 401); False if there is no such active key."""

        def run(detail: dict[str, Any]) -> bool:
            detail["revoked"] = revoke_key(self.db, key_id)
            return detail["revoked"]

        return self.run_audited(caller, "manage-keys", key_id, run)

    def audit_entries(self, caller: Caller, since: int = 0, limit: int = 1000) -> list[audit.AuditEntry]:
        """The audit log after entry `since` (staff only; reading it is itself audited)."""

        def run(detail: dict[str, Any]) -> list[audit.AuditEntry]:
            found = audit.entries(self.db, since, limit)
            detail["entries"] = len(found)
            return found

        return self.run_audited(caller, "audit-read", "-", run, since=since)

    def assignments(self, caller: Caller) -> list[tuple[str, str, str]]:
        """(source, source id, current PID) of every source record: for staff measuring the linkage."""

        def run(detail: dict[str, Any]) -> list[tuple[str, str, str]]:
            rows = self.db.rows("SELECT source, source_id, pid FROM source_record ORDER BY source, source_id")
            found = [(s, i, patient_list.current_pid(self.db, pid)) for s, i, pid in rows]
            detail["records"] = len(found)
            return found

        return self.run_audited(caller, "assignments", "-", run)

    def verify_audit(self, caller: Caller) -> audit.Verification:
        try:
            require(caller, "audit-verify")  # verify before appending this call's own entry
        except AccessError:
            audit.append(self.db, caller.system, caller.role, "audit-verify", "-", "denied", {})
            raise
        result = audit.verify(self.db)
        audit.append(self.db, caller.system, caller.role, "audit-verify", "-", "allowed",
                     {"entries": result.entries, "intact": result.intact})
        return result

    def rotate_key(self, caller: Caller) -> int:
        def run(detail: dict[str, Any]) -> int:
            self.keys = self.keys.rotated()
            detail["key_version"] = self.keys.current
            return self.keys.current

        return self.run_audited(caller, "rotate-key", "-", run)

-- The trust center's tables (SQLite and PostgreSQL). Statements end with two semicolons.
-- Timestamps are ISO-8601 text in UTC; JSON is text.

-- A person of the patient list. merged_into: the PID that absorbed this one (history kept).
CREATE TABLE IF NOT EXISTS person (
    pid TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    merged_into TEXT
);;

-- One source record: a source system's patient with the IDAT it sent (the last version).
CREATE TABLE IF NOT EXISTS source_record (
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    pid TEXT NOT NULL REFERENCES person (pid),
    record_pseudonym TEXT NOT NULL UNIQUE,
    idat TEXT NOT NULL,
    normalized TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (source, source_id)
);;
CREATE INDEX IF NOT EXISTS source_record_pid ON source_record (pid);;

-- Blocking keys of each record: candidates for a new record share at least one key.
CREATE TABLE IF NOT EXISTS blocking_key (
    key TEXT NOT NULL,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL
);;
CREATE INDEX IF NOT EXISTS blocking_key_key ON blocking_key (key);;
CREATE INDEX IF NOT EXISTS blocking_key_record ON blocking_key (source, source_id);;

-- Every pseudonym ever issued: the stored mapping (not the key) is what survives a key rotation.
CREATE TABLE IF NOT EXISTS pseudonym (
    domain TEXT NOT NULL,
    pid TEXT NOT NULL REFERENCES person (pid),
    pseudonym TEXT NOT NULL UNIQUE,
    key_version BIGINT NOT NULL,
    issued_at TEXT NOT NULL,
    PRIMARY KEY (domain, pid)
);;

-- Possible matches waiting for (or decided by) trust-center staff.
CREATE TABLE IF NOT EXISTS review_item (
    review_id BIGINT PRIMARY KEY,
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    candidate_pid TEXT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    status TEXT NOT NULL,              -- open | same | different
    created_at TEXT NOT NULL,
    decided_at TEXT,
    decided_by TEXT
);;

-- Remembered decisions: this record is (not) this person; the linkage obeys them.
CREATE TABLE IF NOT EXISTS link_decision (
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    pid TEXT NOT NULL,
    same BOOLEAN NOT NULL,
    decided_at TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    PRIMARY KEY (source, source_id, pid)
);;

-- Every change of who is who, in order: the DIC follows this feed to re-attribute data.
-- kind: merge (all of from_pid's records now belong to to_pid) | split (the listed records move).
CREATE TABLE IF NOT EXISTS person_change (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_pid TEXT NOT NULL,
    to_pid TEXT NOT NULL,
    records TEXT NOT NULL,             -- JSON list of record pseudonyms that moved
    actor TEXT NOT NULL
);;

-- Callers: one API key per system; only a hash of the key is kept.
CREATE TABLE IF NOT EXISTS api_key (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL,
    system TEXT NOT NULL,
    role TEXT NOT NULL,
    project TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);;

-- Approved research projects: their pseudonym domain and the purpose their consent check uses.
CREATE TABLE IF NOT EXISTS project (
    name TEXT PRIMARY KEY,
    domain TEXT NOT NULL UNIQUE,
    purpose TEXT NOT NULL,
    approved_at TEXT NOT NULL
);;

-- MII Broad Consent resources per person (subject rewritten to the PID's DIC pseudonym).
CREATE TABLE IF NOT EXISTS consent (
    consent_id TEXT PRIMARY KEY,
    pid TEXT NOT NULL REFERENCES person (pid),
    resource TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);;
CREATE INDEX IF NOT EXISTS consent_pid ON consent (pid);;

-- The linkage model in use (m/u probabilities), replaced after each batch training.
CREATE TABLE IF NOT EXISTS linkage_model (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    trained_at TEXT NOT NULL
);;

-- The audit log: append-only, each entry hashed with its predecessor's hash.
CREATE TABLE IF NOT EXISTS audit_entry (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);;

-- sqlite:
CREATE TRIGGER IF NOT EXISTS audit_entry_no_update BEFORE UPDATE ON audit_entry
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;;

-- sqlite:
CREATE TRIGGER IF NOT EXISTS audit_entry_no_delete BEFORE DELETE ON audit_entry
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;;

-- postgres:
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'the audit log is append-only'; END; $$ LANGUAGE plpgsql;;

-- postgres:
CREATE OR REPLACE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry
FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only();;

-- Cross-site linkage: the random linkage ids of each Bloom-filter export and whom they stand for,
-- so the answer of the linkage unit (pairs of linkage ids) can be turned back into persons here.
CREATE TABLE IF NOT EXISTS linkage_export (
    export_id TEXT NOT NULL,
    linkage_id TEXT NOT NULL,
    pid TEXT NOT NULL REFERENCES person (pid),
    exported_at TEXT NOT NULL,
    PRIMARY KEY (export_id, linkage_id)
);;

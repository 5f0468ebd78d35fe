"""Callers of the trust center: API keys per system, one role each, permissions as data.

A key is shown once when it is issued (`dic_<id>_<secret>`); the database keeps only the
SHA-256 of the secret (the secret is 32 random bytes, so a plain hash cannot be guessed
backwards) and compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import yaml

from dic.errors import ConfigError, NotAuthenticated, NotAuthorized
from dic.trust.database import TrustDatabase

ROLES_PATH = Path(__file__).with_name("roles.yaml")


@dataclass(frozen=True)
class Caller:
    system: str  # e.g. "his@site-a", "dic@site-a", "alice (staff)"
    role: str
    project: str | None = None  # for the project role: the one project it acts for


@cache
def permissions() -> dict[str, frozenset[str]]:
    roles = yaml.safe_load(ROLES_PATH.read_text(encoding="utf-8"))["roles"]
    return {name: frozenset(entry["actions"]) for name, entry in roles.items()}


def require(caller: Caller, action: str) -> None:
    if action not in permissions().get(caller.role, frozenset()):
        raise NotAuthorized(f"{caller.system} (role {caller.role}) may not {action}")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(db: TrustDatabase, system: str, role: str, project: str | None = None) -> str:
    """A new API key for `system` with `role`; returned once, stored only as a hash."""
    if role not in permissions():
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(sorted(permissions()))}")
    if (role == "project") != (project is not None):
        raise ConfigError("a project key names its project (--project), and only a project key does")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with db.write():
        db.execute("INSERT INTO api_key (key_id, key_hash, system, role, project, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                   (key_id, _hash(secret), system, role, project, datetime.now(UTC).isoformat()))
    return f"dic_{key_id}_{secret}"


def revoke_key(db: TrustDatabase, key_id: str) -> bool:
    with db.write():
        known = db.scalar("SELECT count(*) FROM api_key WHERE key_id = ? AND revoked_at IS NULL", (key_id,))
        db.execute("UPDATE api_key SET revoked_at = ? WHERE key_id = ?", (datetime.now(UTC).isoformat(), key_id))
    return bool(known)


def authenticate(db: TrustDatabase, api_key: str | None) -> Caller:
    if not api_key:
        raise NotAuthenticated("no API key (send 'Authorization: Bearer <key>')")
    prefix, _, rest = api_key.partition("_")
    key_id, _, secret = rest.partition("_")
    row = db.row("SELECT key_hash, system, role, project, revoked_at FROM api_key WHERE key_id = ?", (key_id,))
    if prefix != "dic" or row is None or not hmac.compare_digest(row[0], _hash(secret)):
        raise NotAuthenticated("unknown API key")
    if row[4] is not None:
        raise NotAuthenticated("this API key was revoked")
    return Caller(system=row[1], role=row[2], project=row[3])


def list_keys(db: TrustDatabase) -> list[tuple]:
    return db.rows("SELECT key_id, system, role, project, created_at, revoked_at FROM api_key ORDER BY created_at")

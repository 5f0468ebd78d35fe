"""Who may receive which output of the DIC's research API: API keys, one role each (roles.yaml),
shown once, kept as hashes.

Keys live in `<repo>/api-keys.json` (owner-only; refused if others can read it): the
repository holds no IDAT and the key file no secrets, only SHA-256 hashes of 32-byte random
secrets, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import yaml

from dic.errors import ConfigError, NotAuthenticated, NotAuthorized

KEYS_FILE = "api-keys.json"
ROLES_PATH = Path(__file__).with_name("roles.yaml")


@dataclass(frozen=True)
class Client:
    name: str
    role: str
    project: str | None = None


@cache
def permissions() -> dict[str, frozenset[str]]:
    roles = yaml.safe_load(ROLES_PATH.read_text(encoding="utf-8"))["roles"]
    return {name: frozenset(entry["actions"]) for name, entry in roles.items()}


def require(client: Client, action: str, project: str | None = None) -> None:
    if action not in permissions().get(client.role, frozenset()):
        raise NotAuthorized(f"{client.name} (role {client.role}) may not {action}")
    if project is not None and client.role == "project" and client.project != project:
        raise NotAuthorized(f"{client.name} acts for project {client.project}, not {project}")


def _path(repo: Path) -> Path:
    return repo / KEYS_FILE


def _read(repo: Path) -> dict[str, dict]:
    path = _path(repo)
    if not path.exists():
        return {}
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: must be readable by its owner only (chmod 600)")
    return orjson.loads(path.read_bytes())


def _write(repo: Path, keys: dict[str, dict]) -> None:
    path = _path(repo)
    staged = path.with_suffix(".tmp")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(orjson.dumps(keys, option=orjson.OPT_INDENT_2))
    staged.replace(path)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_key(repo: Path, name: str, role: str, project: str | None = None) -> str:
    if role not in permissions():
        raise ConfigError(f"unknown role {role!r}; roles: {', '.join(sorted(permissions()))}")
    if (role == "project") != (project is not None):
        raise ConfigError("a project key names its project (--project), and only a project key does")
    keys = _read(repo)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    keys[key_id] = {"hash": _hash(secret), "name": name, "role": role, "project": project,
                    "created_at": datetime.now(UTC).isoformat(), "revoked": False}
    _write(repo, keys)
    return f"dic_{key_id}_{secret}"


def revoke_key(repo: Path, key_id: str) -> bool:
    keys = _read(repo)
    if key_id not in keys or keys[key_id]["revoked"]:
        return False
    keys[key_id]["revoked"] = True
    _write(repo, keys)
    return True


def list_keys(repo: Path) -> list[dict]:
    return [{"key_id": k, **{f: v for f, v in entry.items() if f != "hash"}} for k, entry in sorted(_read(repo).items())]


def authenticate(repo: Path, api_key: str | None) -> Client:
    parts = (api_key or "").split("_", 2)
    if len(parts) != 3 or parts[0] != "dic":
        raise NotAuthenticated("an API key 'dic_<id>_<secret>' is needed")
    entry = _read(repo).get(parts[1])
    if entry is None or entry["revoked"] or not hmac.compare_digest(entry["hash"], _hash(parts[2])):
        raise NotAuthenticated("unknown or revoked API key")
    return Client(entry["name"], entry["role"], entry["project"])

"""A repository on disk: a folder with its settings, user views and (for DuckDB) its database file.

    <repo>/config.json      {"engine": "duckdb", "url": "<repo>/repository.duckdb", "trust": "<repo>-trust"}
    <repo>/views/*.json     the site's own ViewDefinitions, beside the standard ones
    <repo>/resource-ids.key the DIC's own secret for the stored ids of source resources (mode 0600)

`trust` is where the trust center is: a folder (the embedded set-up runs it in-process, with its
own database and key file there, never inside the repository) or the URL of `dic trust serve`.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import orjson

from dic.engines import Database, Engine, connect
from dic.errors import ConfigError
from dic.repository.load import ensure_schema

CONFIG_NAME = "config.json"
RESOURCE_KEY_NAME = "resource-ids.key"


@dataclass(frozen=True)
class RepositoryConfig:
    engine: Engine
    url: str
    trust: str | None = None  # trust-center folder or URL


def default_url(engine: Engine, folder: Path) -> str:
    if engine is Engine.duckdb:
        return str(folder / "repository.duckdb")
    if engine is Engine.spark:
        return f"local[2]?warehouse={folder / 'warehouse'}&database=dic"
    raise ConfigError("a postgres repository needs --url postgresql://user@host:port/database")


def default_trust(folder: Path) -> str:
    return str(folder.resolve().with_name(f"{folder.resolve().name}-trust"))


def init_repository(folder: Path, engine: Engine = Engine.duckdb, url: str | None = None,
                    trust: str | None = None) -> RepositoryConfig:
    """Create (or re-open, if it exists with the same settings) a repository in `folder`."""
    folder = folder.resolve()
    config = RepositoryConfig(engine, url or default_url(engine, folder), trust or default_trust(folder))
    existing = folder / CONFIG_NAME
    if existing.exists():
        current = read_config(folder)
        if trust is None:
            config = RepositoryConfig(config.engine, config.url, current.trust)
        if current != config:
            raise ConfigError(f"{existing}: a repository with other settings exists ({current.engine}, {current.url})")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "views").mkdir(exist_ok=True)
    existing.write_bytes(orjson.dumps({"engine": config.engine.value, "url": config.url, "trust": config.trust},
                                      option=orjson.OPT_INDENT_2))
    resource_key(folder)
    db = connect(config.engine, config.url)
    try:
        ensure_schema(db)
    finally:
        db.close()
    return config


def read_config(folder: Path) -> RepositoryConfig:
    path = folder / CONFIG_NAME
    if not path.exists():
        raise ConfigError(f"{folder}: no repository here; create one with 'dic init'")
    try:
        raw = orjson.loads(path.read_bytes())
        return RepositoryConfig(Engine(raw["engine"]), str(raw["url"]), raw.get("trust") or default_trust(folder))
    except (orjson.JSONDecodeError, KeyError, ValueError) as error:
        raise ConfigError(f"{path}: invalid repository settings: {error}") from error


def open_repository(folder: Path, *, read_only: bool = False) -> Database:
    config = read_config(folder)
    db = connect(config.engine, config.url, read_only=read_only)
    if not read_only:
        ensure_schema(db)
    return db


def user_views_folder(folder: Path) -> Path:
    return folder / "views"


def resource_key(folder: Path) -> bytes:
    """The repository's secret for stored resource ids (created on first use, owner-only)."""
    path = folder / RESOURCE_KEY_NAME
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(secrets.token_bytes(32))
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path}: must be readable by its owner only (chmod 600)")
    key = path.read_bytes()
    if len(key) < 32:
        raise ConfigError(f"{path}: a resource key needs 32 bytes")
    return key

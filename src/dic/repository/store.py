"""A repository on disk: a folder with its settings, user views and (for DuckDB) its database file.

    <repo>/config.json      {"engine": "duckdb", "url": "<repo>/repository.duckdb"}
    <repo>/views/*.json     the site's own ViewDefinitions, beside the standard ones
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from dic.engines import Database, Engine, connect
from dic.errors import ConfigError
from dic.repository.load import ensure_schema

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class RepositoryConfig:
    engine: Engine
    url: str


def default_url(engine: Engine, folder: Path) -> str:
    if engine is Engine.duckdb:
        return str(folder / "repository.duckdb")
    if engine is Engine.spark:
        return f"local[2]?warehouse={folder / 'warehouse'}&database=dic"
    raise ConfigError("a postgres repository needs --url postgresql://user@host:port/database")


def init_repository(folder: Path, engine: Engine = Engine.duckdb, url: str | None = None) -> RepositoryConfig:
    """Create (or re-open, if it exists with the same settings) a repository in `folder`."""
    folder = folder.resolve()
    config = RepositoryConfig(engine, url or default_url(engine, folder))
    existing = folder / CONFIG_NAME
    if existing.exists():
        current = read_config(folder)
        if current != config:
            raise ConfigError(f"{existing}: a repository with other settings exists ({current.engine}, {current.url})")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "views").mkdir(exist_ok=True)
    existing.write_bytes(orjson.dumps({"engine": config.engine.value, "url": config.url}, option=orjson.OPT_INDENT_2))
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
        return RepositoryConfig(Engine(raw["engine"]), str(raw["url"]))
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

"""The stored form of a resource: its JSON text and a content hash that ignores server noise."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

_NOISE = frozenset({"versionId", "lastUpdated"})


def content_hash(resource: dict[str, Any]) -> str:
    """sha256 of the canonical JSON without meta.versionId and meta.lastUpdated, which a
    server changes on every export of the same content."""
    meta = resource.get("meta")
    if isinstance(meta, dict) and not _NOISE.isdisjoint(meta):
        rest = {k: v for k, v in meta.items() if k not in _NOISE}
        resource = {**resource, "meta": rest} if rest else {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


def last_updated(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None

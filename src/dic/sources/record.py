"""What an input reader yields: a resource to store, or a rejection for quarantine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource (or, with `delete`, the retirement of one) read from a source."""

    resource_type: str
    id: str
    resource: dict[str, Any] | None  # None when `delete`
    source: str
    position: str  # "line 12", "entry 3", "resource"
    delete: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be stored, with where it was and why. It goes to quarantine."""

    source: str
    position: str
    reason: str
    raw: bytes  # at most the first RAW_LIMIT_BYTES of the record
    raw_bytes: int  # the record's full size

"""What an input reader yields: a resource to store, or a rejection for quarantine.

Source adapters (HL7 v2, §21, mapped CSV, VCF) yield `SourceResource`s instead: FHIR resources
as the source knows them, with its own ids and the Patient's identifying data, which the trust
center's pseudonymizer turns into Entries. A `PatientMerge` is a source system's own statement
that two of its patient records are one person (HL7 ADT^A40).

An `Entry` carries the resource already serialized (its JSON text and content hash), so
that parsing can run in worker processes and the loader never touches the dict again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from dic.fhir import content_hash, last_updated


@dataclass(frozen=True, slots=True)
class Entry:
    """One resource (or, with `delete`, the retirement of one) read from a source."""

    resource_type: str
    id: str
    content: str | None  # the resource's JSON text; None when `delete`
    content_hash: str | None
    last_updated: str | None
    source: str
    position: str  # "line 12", "entry 3", "resource"
    delete: bool = False

    @classmethod
    def of(cls, resource: dict[str, Any], source: str, position: str, text: bytes | None = None) -> Entry:
        """An entry for a checked resource; `text` is its JSON as received, if unchanged."""
        content = (text if text is not None else orjson.dumps(resource)).decode()
        return cls(resource["resourceType"], resource["id"], content, content_hash(resource),
                   last_updated(resource), source, position)

    @classmethod
    def deletion(cls, resource_type: str, id: str, source: str, position: str) -> Entry:
        return cls(resource_type, id, None, None, None, source, position, delete=True)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that cannot be stored, with where it was and why. It goes to quarantine."""

    source: str
    position: str
    reason: str
    raw: bytes  # at most the first RAW_LIMIT_BYTES of the record
    raw_bytes: int  # the record's full size


@dataclass(frozen=True, slots=True)
class SourceResource:
    """A checked resource as the source system knows it: its own ids, identifying elements included."""

    resource: dict[str, Any]
    source: str
    position: str


@dataclass(frozen=True, slots=True)
class PatientMerge:
    """The source system merged two of its patient records: `prior_id`'s data belongs to `surviving_id`."""

    prior_id: str
    surviving_id: str
    source: str
    position: str

"""What a source system's loader needs of the trust center: register IDAT, get pseudonyms back.

Both ways of running the trust center (in-process and over HTTP) implement `PatientRegistry`,
so the loaders have one code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["new", "match", "possible-match", "known"]


@dataclass(frozen=True)
class Registration:
    """The answer for one source record."""

    pseudonym: str  # the person's pseudonym in the DIC domain
    record: str  # the source record's own pseudonym (domain REC): finds its data again after a split
    outcome: Outcome  # new person, matched a known one, possible match (queued for review), already known


class PatientRegistry(Protocol):
    """The trust center as one source system sees it (bound to that system's credentials)."""

    def register(self, records: Sequence[tuple[str, dict[str, str]]]) -> list[Registration | str]:
        """(source patient id, IDAT with `Idat` field names) per record -> a Registration, or the
        reason the record was refused (malformed IDAT). Chunks of up to 1,000 records."""
        ...

    def lookup(self, source_ids: Sequence[str]) -> dict[str, Registration]:
        """The registrations already known for these source patient ids (unknown ones absent)."""
        ...

    def merge_records(self, prior_id: str, surviving_id: str) -> Registration | None:
        """The source system merged two of its patient records (HL7 ADT^A40): the person of
        `prior_id` becomes that of `surviving_id` (a change the DIC follows in its feed). The
        surviving record's registration, or None if either record is unknown."""
        ...

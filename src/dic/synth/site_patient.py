"""What every source writer of the test world receives: one person as one site knows them.

    Identity        identifying data (IDAT) as one source spells it
    SitePatient     a person at a site: the HIS's FHIR record, identities per source, genotype
    SiteContext     per-site settings and the linkage-truth sink shared by the writers
    SourceWriter    the protocol of a writer: add(patient) per person, close() -> counts per file

The hospital information system's FHIR resources are the site's facts; every other source
(billing, laboratory feed, registries, biobank, genomics) is written from them in its own
format, with its own record ids and its own spelling of the person. Writers draw randomness
from their own `random.Random(f"{seed}:{site}:{name}")`, so that choosing fewer formats does
not change the bytes of the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType, Protocol

from dic.errors import ConfigError

PersonId = NewType("PersonId", str)  # the true person: truth files only, never in a source file


@dataclass(frozen=True, slots=True)
class Identity:
    """A person's identifying data as one source holds it (fields may be missing or wrong)."""

    given: str | None
    family: str | None
    birth_date: str | None  # ISO yyyy-mm-dd
    sex: str | None  # FHIR administrative gender: female, male, other, unknown
    street: str | None  # street and house number, e.g. "Lindenstraße 12"
    postal_code: str | None  # five digits
    city: str | None
    insurance_number: str | None  # German statutory insurance number (Krankenversichertennummer)
    birth_name: str | None = None  # family name at birth when it differs (marriage)


@dataclass(slots=True)
class SitePatient:
    """One person at one site. `resources` are shared with other writers: treat as read-only."""

    person_id: PersonId
    site: str
    patient_number: str  # the HIS's local patient number; the lab system and billing use it too
    resources: list[dict[str, Any]]  # HIS FHIR R4 resources, Patient first
    identity: Callable[[str], Identity]  # identity(source name) -> that source's spelling
    genotype: dict[str, int] = field(default_factory=dict)  # variant id -> alt allele count 0/1/2
    genotyped: bool = False  # in the genomics subset (VCF written)


@dataclass(slots=True)
class SiteContext:
    """Per-site settings handed to each writer, and the sink for linkage truth."""

    site: str
    seed: int
    years: tuple[int, int]
    link: Callable[[str, str, PersonId], None]  # link(source, source record id, person): truth row


class SourceWriter(Protocol):
    """A source system's export, written patient by patient into its own folder."""

    name: str  # folder name under the site, e.g. "billing"

    def add(self, patient: SitePatient) -> None: ...

    def close(self) -> dict[str, int]:
        """Finish the files; return records written per file name."""
        ...


WriterFactory = Callable[[Path, SiteContext], SourceWriter]


def case_number(encounter: dict[str, Any]) -> str:
    """The Encounter's hospital case number (Aufnahmenummer): its visit-number (VN) identifier.
    Billing, the lab feed and the biobank all key cases by it, so a missing one is an error."""
    for identifier in encounter.get("identifier", ()):
        if any(c.get("code") == "VN" for c in identifier.get("type", {}).get("coding", ())):
            return identifier["value"]
    raise ConfigError(f"Encounter/{encounter.get('id')} has no case number (identifier of type VN)")


def accession(specimen: dict[str, Any]) -> str:
    """The Specimen's lab order (accession) number, the key of the lab's results."""
    found = specimen.get("accessionIdentifier") or {}
    if not found.get("value"):
        raise ConfigError(f"Specimen/{specimen.get('id')} has no accession number")
    return found["value"]

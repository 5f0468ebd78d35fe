"""`dic synth`: synthetic hospitals with every source system, and the truth kept apart.

    write_world(out, sites=3, patients=20_000, seed=7) -> WorldReport

Layout: `out/<site>/<source>/...` per site and source, and `out/truth/` (linkage truth, true
identities, planted effects, manifest). The truth is for evaluation only: nothing in the
product may read it to do its job.

Who is who: `patients` is the total number of patient records over all sites, split evenly.
A declared share of each later site's patients are persons already treated at an earlier site
(same person: same sex, birth, death, genotype and true identity; their own medical record).
Everything is a deterministic function of (seed, sites, patients, years): a site can work out
any earlier site's person without generating that site (see `fhir_population.person_demographics`),
which keeps memory bounded and leaves room to generate sites in parallel.
"""

from __future__ import annotations

import csv
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from dic.errors import ConfigError
from dic.synth.billing import BillingWriter
from dic.synth.biobank import BiobankWriter
from dic.synth.catalog import Catalog, load_catalog
from dic.synth.fhir_population import Demographics, calendar_day, patient_draws, person_demographics
from dic.synth.genomics import GenomicsWriter
from dic.synth.his_export import HisExportWriter
from dic.synth.identity import TruePerson, draw_person, spell_with_errors
from dic.synth.lab_feed import LabFeedWriter
from dic.synth.ms_registry import MsRegistryWriter
from dic.synth.ms_registry import planted_effects as ms_effects
from dic.synth.planted import effect_definitions
from dic.synth.site_patient import PersonId, SiteContext, SitePatient, SourceWriter, WriterFactory

# source folder -> writer, in the order they are fed
WRITERS: dict[str, WriterFactory] = {
    "his-fhir": HisExportWriter,
    "billing": BillingWriter,
    "lab": LabFeedWriter,
    "ms-registry": MsRegistryWriter,
    "biobank": BiobankWriter,
    "genomics": GenomicsWriter,
}
SOURCES = tuple(WRITERS)
MAX_SITES = 26
_BIOMAT = "2.16.840.1.113883.3.1937.777.24.5.3.19"  # MII consent: BIOMAT_erheben


@dataclass
class WorldReport:
    """What was written: records per site, source and file; persons; seconds."""

    out: Path
    sites: list[str]
    patients: int
    persons: int
    files: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)  # site -> source -> file -> n
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "sites": self.sites, "patients": self.patients, "persons": self.persons,
                "files": self.files, "seconds": round(self.seconds, 3)}


def site_names(sites: int) -> list[str]:
    if not 1 <= sites <= MAX_SITES:
        raise ConfigError(f"sites must be 1..{MAX_SITES} (got {sites})")
    return [f"site-{chr(ord('a') + s)}" for s in range(sites)]


def site_sizes(sites: int, patients: int) -> list[int]:
    if patients < sites:
        raise ConfigError(f"patients must be at least one per site (got {patients} for {sites} sites)")
    return [patients // sites + (1 if s < patients % sites else 0) for s in range(sites)]


class _People:
    """Who each site's patients are: person ids, sharing between sites, true identities."""

    def __init__(self, catalog: Catalog, seed: int, names: list[str], sizes: list[int], years: tuple[int, int]):
        self.catalog, self.seed, self.names, self.sizes, self.years = catalog, seed, names, sizes, years
        self.shared_pct = catalog.world.cross_site_pct
        self._maps: dict[int, dict[int, tuple[int, int]]] = {}

    def sharing(self, s: int) -> dict[int, tuple[int, int]]:
        """Site s's patients who are earlier sites' persons: local index -> (site, local index)."""
        if s not in self._maps:
            rand = random.Random(f"{self.seed}:sharing:{self.names[s]}")
            found: dict[int, tuple[int, int]] = {}
            for i in range(self.sizes[s] if s else 0):
                if rand.random() * 100 < self.shared_pct:
                    t = int(rand.random() * s)
                    found[i] = (t, int(rand.random() * self.sizes[t]))
            self._maps[s] = found
        return self._maps[s]

    def origin(self, s: int, i: int) -> tuple[int, int]:
        """The site and local index where the person of (s, i) was first a patient."""
        while (earlier := self.sharing(s).get(i)) is not None:
            s, i = earlier
        return s, i

    def person_id(self, s: int, i: int) -> PersonId:
        s, i = self.origin(s, i)
        return PersonId(f"P{s:02d}{i:08d}")

    @lru_cache(maxsize=4096)  # noqa: B019 - one world per instance; bounded
    def demographics(self, s: int, i: int) -> Demographics:
        s, i = self.origin(s, i)
        return person_demographics(self.seed, self.names[s], i, patients=self.sizes[s], years=self.years,
                                   catalog=self.catalog)

    def shared_demographics(self, s: int) -> dict[int, Demographics]:
        return {i: self.demographics(*earlier) for i, earlier in self.sharing(s).items()}

    def true_person(self, s: int, i: int, demographics: Demographics) -> TruePerson:
        s, i = self.origin(s, i)
        rand = random.Random(f"{self.seed}:person:{s}:{i}")
        sex = self.catalog.population.sexes[demographics.sex].gender
        return draw_person(rand, sex, calendar_day(demographics.birth), self.names[s], serial=s * 10**8 + i,
                           years=self.years)


def write_world(out: Path, *, sites: int = 3, patients: int = 20_000, seed: int = 7,
                years: tuple[int, int] = (2015, 2025), formats: list[str] | None = None,
                catalog: Catalog | None = None, overwrite: bool = False,
                progress: Callable[[int], None] | None = None) -> WorldReport:
    """Write the synthetic sites and the truth folder; `progress(n)` after every n patients."""
    started = time.perf_counter()
    catalog = catalog or load_catalog()
    chosen = _formats(formats)
    names, sizes = site_names(sites), site_sizes(sites, patients)
    if seed < 0:
        raise ConfigError(f"seed must be >= 0 (got {seed})")
    out = Path(out)
    _prepare(out, overwrite)
    people = _People(catalog, seed, names, sizes, years)
    report = WorldReport(out, names, patients, 0)
    truth = out / "truth"
    truth.mkdir(parents=True)
    persons_seen: set[str] = set()
    with (truth / "linkage.csv").open("w", newline="", encoding="utf-8") as linkage_file, \
         (truth / "persons.csv").open("w", newline="", encoding="utf-8") as persons_file, \
         (truth / "identity_errors.csv").open("w", newline="", encoding="utf-8") as errors_file:
        linkage = csv.writer(linkage_file, lineterminator="\n")
        linkage.writerow(["site", "source", "record_id", "person_id"])
        persons = csv.writer(persons_file, lineterminator="\n")
        persons.writerow(_PERSON_COLUMNS)
        errors = csv.writer(errors_file, lineterminator="\n")
        errors.writerow(["site", "source", "patient_number", "person_id", "errors"])
        for s, site in enumerate(names):
            context = SiteContext(site, seed, years, _linker(linkage, site))
            writers: list[SourceWriter] = []
            for source in chosen:
                folder = out / site / source
                folder.mkdir(parents=True)
                writers.append(WRITERS[source](folder, context))
            for patient, person in _site_patients(people, s, catalog, errors):
                if patient.person_id not in persons_seen:
                    persons_seen.add(patient.person_id)
                    first_site = names[people.origin(s, patient_index(patient))[0]]
                    persons.writerow(_person_row(patient, person, first_site))
                for writer in writers:
                    writer.add(patient)
                if progress is not None:
                    progress(1)
            report.files[site] = {source: writer.close() for source, writer in zip(chosen, writers)}
    report.persons = len(persons_seen)
    effects = effect_definitions(catalog, years, names)
    if "ms-registry" in chosen:
        effects += ms_effects()
    (truth / "effects.json").write_bytes(orjson.dumps(effects, option=orjson.OPT_INDENT_2))
    manifest = {"generator": "dic synth", "seed": seed, "sites": names, "patients_per_site": dict(zip(names, sizes)),
                "persons": report.persons, "years": list(years), "formats": chosen, "files": report.files}
    (truth / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    report.seconds = time.perf_counter() - started
    return report


def site_patients(patients: int, seed: int, site: str = "site-a", years: tuple[int, int] = (2015, 2025),
                  catalog: Catalog | None = None) -> Iterator[SitePatient]:
    """One site's patients as the writers see them (a single-site world, for tests and tools)."""
    catalog = catalog or load_catalog()
    people = _People(catalog, seed, [site], [patients], years)
    for patient, _ in _site_patients(people, 0, catalog, None):
        yield patient


def patient_index(patient: SitePatient) -> int:
    """The patient's position in its site (the HIS numbers patients in order)."""
    return int(patient.patient_number) - _FIRST_NUMBER


_FIRST_NUMBER = 1_000_000_001


def _site_patients(people: _People, s: int, catalog: Catalog,
                   errors: Any) -> Iterator[tuple[SitePatient, TruePerson]]:
    site = people.names[s]
    genotyped_pct = catalog.world.genotyped_pct
    pick = random.Random(f"{people.seed}:genotyped:{site}")
    for draw in patient_draws(people.sizes[s], people.seed, site=site, years=people.years,
                              shared=people.shared_demographics(s), catalog=catalog):
        i = draw.index
        person = people.true_person(s, i, draw.demographics)
        number = str(_FIRST_NUMBER + i)
        person_id = people.person_id(s, i)
        genotyped = _biomaterial_permitted(draw.resources) and pick.random() * 100 < genotyped_pct
        patient = SitePatient(person_id, site, number, draw.resources,
                              _identities(person, people.seed, site, number, person_id, errors),
                              draw.genotype, genotyped)
        yield patient, person


def _identities(person: TruePerson, seed: int, site: str, number: str, person_id: PersonId,
                errors: Any) -> Callable[[str], Any]:
    """identity(source): the person as that source spells them; drawn once per source, on demand."""
    cache: dict[str, Any] = {}

    def identity(source: str) -> Any:
        found = cache.get(source)
        if found is None:
            found, applied = spell_with_errors(person, source, random.Random(f"{seed}:{site}:{number}:{source}"))
            cache[source] = found
            if errors is not None and applied:
                errors.writerow([site, source, number, person_id, " ".join(applied)])
        return found

    return identity


def _biomaterial_permitted(resources: list[dict[str, Any]]) -> bool:
    for resource in resources:
        if resource["resourceType"] == "Consent":
            return any(p.get("type") == "permit" and p["code"][0]["coding"][0]["code"] == _BIOMAT
                       for p in resource["provision"].get("provision", []))
    return False


def _linker(writer: Any, site: str) -> Callable[[str, str, PersonId], None]:
    def link(source: str, record_id: str, person_id: PersonId) -> None:
        writer.writerow([site, source, record_id, person_id])
    return link


_PERSON_COLUMNS = ["person_id", "first_site", "given_names", "family", "birth_name", "nickname", "birth_date",
                   "sex", "street", "postal_code", "city", "previous_street", "previous_postal_code",
                   "previous_city", "moved_on", "insurance_number", "title", "genotype"]


def _person_row(patient: SitePatient, person: TruePerson, first_site: str) -> list[str]:
    old = person.previous_address
    genotype = " ".join(f"{k}={v}" for k, v in patient.genotype.items() if v)
    return [patient.person_id, first_site, " ".join(person.given_names), person.family, person.birth_name,
            person.nickname or "", person.birth_date, person.sex, person.address.street, person.address.postal_code,
            person.address.city, old.street if old else "", old.postal_code if old else "", old.city if old else "",
            person.moved_on or "", person.insurance_number or "", person.title or "", genotype]


def _formats(formats: list[str] | None) -> list[str]:
    if not formats:
        return list(SOURCES)
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ConfigError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    return [s for s in SOURCES if s in formats]


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; choose another folder or overwrite it")
        for child in out.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)

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
import multiprocessing
import random
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from dic.errors import ConfigError
from dic.synth.billing import BillingWriter
from dic.synth.biobank import BiobankWriter, biomaterial_consent
from dic.synth.catalog import Catalog, load_catalog
from dic.synth.fhir_population import Demographics, patient_draws, person_demographics
from dic.synth.genomics import GenomicsWriter
from dic.synth.his_export import HisExportWriter
from dic.synth.identity import TruePerson, draw_person, spell_with_errors
from dic.synth.lab_feed import LabFeedWriter
from dic.synth.ms_registry import MsRegistryWriter
from dic.synth.ms_registry import planted_effects as ms_effects
from dic.synth.planted import effect_definitions
from dic.synth.population_tables import calendar_day
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
                catalog: Catalog | None = None, overwrite: bool = False, gzip: bool = False,
                workers: int | None = None, progress: Callable[[int], None] | None = None) -> WorldReport:
    """Write the synthetic sites and the truth folder; `progress(n)` as patients are done.

    Sites are written by `workers` processes (default: one per site from 50,000 patients on,
    else one); the bytes do not depend on how many. `gzip` compresses the HIS export (`.ndjson.gz`).
    """
    started = time.perf_counter()
    catalog = catalog or load_catalog()
    chosen = _formats(formats)
    names, sizes = site_names(sites), site_sizes(sites, patients)
    if seed < 0:
        raise ConfigError(f"seed must be >= 0 (got {seed})")
    out = Path(out)
    _prepare(out, overwrite)
    (out / "truth" / _PARTS).mkdir(parents=True)
    jobs = [_SiteJob(out, catalog, seed, names, sizes, years, chosen, gzip, s) for s in range(sites)]
    if workers is None:  # starting a worker costs seconds (imports); worth it for big worlds only.
        # One per site even beyond the cores: equal sites then finish together (3 sites on 2 cores:
        # 1.5 site-times instead of 2).
        workers = sites if patients >= _PARALLEL_FROM else 1
    workers = max(1, min(workers, sites))
    if workers == 1:
        results = [_write_site(job, progress) for job in jobs]
    else:
        results = _in_processes(jobs, workers, progress)
    report = WorldReport(out, names, patients, sum(persons for _, persons in results))
    report.files = {site: files for site, (files, _) in zip(names, results)}
    _gather_truth(out / "truth", names)
    effects = effect_definitions(catalog, years, names)
    if "ms-registry" in chosen:
        effects += ms_effects()
    (out / "truth" / "effects.json").write_bytes(orjson.dumps(effects, option=orjson.OPT_INDENT_2))
    manifest = {"generator": "dic synth", "seed": seed, "sites": names, "patients_per_site": dict(zip(names, sizes)),
                "persons": report.persons, "years": list(years), "formats": chosen, "files": report.files}
    (out / "truth" / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    report.seconds = time.perf_counter() - started
    return report


@dataclass(frozen=True)
class _SiteJob:
    out: Path
    catalog: Catalog
    seed: int
    names: list[str]
    sizes: list[int]
    years: tuple[int, int]
    formats: list[str]
    gzip: bool
    s: int  # the site's position


_PARALLEL_FROM = 50_000  # patients
_PARTS = ".parts"  # truth rows per site, concatenated in site order at the end
_TRUTH_FILES = {"linkage.csv": ["site", "source", "record_id", "person_id"],
                "persons.csv": None,  # _PERSON_COLUMNS, set below
                "identity_errors.csv": ["site", "source", "patient_number", "person_id", "errors"]}


def _write_site(job: _SiteJob, progress: Callable[[int], None] | None) -> tuple[dict[str, dict[str, int]], int]:
    """One site: every chosen source, plus its part of the truth. Returns (files, new persons)."""
    people = _People(job.catalog, job.seed, job.names, job.sizes, job.years)
    site = job.names[job.s]
    parts = job.out / "truth" / _PARTS
    new_persons = 0
    with (parts / f"{site}-linkage.csv").open("w", newline="", encoding="utf-8") as linkage_file, \
         (parts / f"{site}-persons.csv").open("w", newline="", encoding="utf-8") as persons_file, \
         (parts / f"{site}-identity_errors.csv").open("w", newline="", encoding="utf-8") as errors_file:
        linkage = csv.writer(linkage_file, lineterminator="\n")
        persons = csv.writer(persons_file, lineterminator="\n")
        errors = csv.writer(errors_file, lineterminator="\n")
        context = SiteContext(site, job.seed, job.years, _linker(linkage, site))
        writers: list[SourceWriter] = []
        for source in job.formats:
            folder = job.out / site / source
            folder.mkdir(parents=True)
            writers.append(HisExportWriter(folder, context, gzip=True) if source == "his-fhir" and job.gzip
                           else WRITERS[source](folder, context))
        done = 0
        for patient, person, first_seen in _site_patients(people, job.s, job.catalog, errors):
            if first_seen:
                persons.writerow(_person_row(patient, person, site))
                new_persons += 1
            for writer in writers:
                writer.add(patient)
            done += 1
            if progress is not None and done % 100 == 0:
                progress(100)
        if progress is not None:
            progress(done % 100)
        return {source: writer.close() for source, writer in zip(job.formats, writers)}, new_persons


_counter: Any = None  # a worker process's shared progress counter


def _count_progress(n: int) -> None:
    with _counter.get_lock():
        _counter.value += n


def _init_worker(counter: Any) -> None:
    global _counter
    _counter = counter


def _run_job(job: _SiteJob) -> tuple[dict[str, dict[str, int]], int]:
    return _write_site(job, _count_progress)


def _in_processes(jobs: list[_SiteJob], workers: int,
                  progress: Callable[[int], None] | None) -> list[tuple[dict[str, dict[str, int]], int]]:
    """Sites in worker processes (spawned: the parent may run threads, e.g. a progress bar)."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    reported = 0
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(counter,)) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        while not all(f.done() for f in futures):
            wait(futures, timeout=0.5, return_when=FIRST_EXCEPTION)
            if progress is not None and counter.value > reported:
                progress(counter.value - reported)
                reported = counter.value
            if any(f.done() and f.exception() for f in futures):
                break
        results = [f.result() for f in futures]  # raises the first worker's error
    if progress is not None and counter.value > reported:
        progress(counter.value - reported)
    return results


def _gather_truth(truth: Path, names: list[str]) -> None:
    for name, header in _TRUTH_FILES.items():
        with (truth / name).open("w", newline="", encoding="utf-8") as target:
            csv.writer(target, lineterminator="\n").writerow(header or _PERSON_COLUMNS)
            for site in names:
                part = truth / _PARTS / f"{site}-{name}"
                with part.open(encoding="utf-8", newline="") as source:
                    shutil.copyfileobj(source, target)
                part.unlink()
    (truth / _PARTS).rmdir()


def site_patients(patients: int, seed: int, site: str = "site-a", years: tuple[int, int] = (2015, 2025),
                  catalog: Catalog | None = None) -> Iterator[SitePatient]:
    """One site's patients as the writers see them (a single-site world, for tests and tools)."""
    catalog = catalog or load_catalog()
    people = _People(catalog, seed, [site], [patients], years)
    for patient, _, _ in _site_patients(people, 0, catalog, None):
        yield patient


_FIRST_NUMBER = 1_000_000_001


def _site_patients(people: _People, s: int, catalog: Catalog,
                   errors: Any) -> Iterator[tuple[SitePatient, TruePerson, bool]]:
    """The site's patients, each with the true person and whether the person is first seen here."""
    site = people.names[s]
    genotyped_pct = catalog.world.genotyped_pct
    pick = random.Random(f"{people.seed}:genotyped:{site}")
    for draw in patient_draws(people.sizes[s], people.seed, site=site, years=people.years,
                              shared=people.shared_demographics(s), catalog=catalog):
        i = draw.index
        person = people.true_person(s, i, draw.demographics)
        number = str(_FIRST_NUMBER + i)
        person_id = people.person_id(s, i)
        genotyped = biomaterial_consent(draw.resources) is not None and pick.random() * 100 < genotyped_pct
        patient = SitePatient(person_id, site, number, draw.resources,
                              _identities(person, people.seed, site, number, person_id, errors),
                              draw.genotype, genotyped)
        yield patient, person, people.origin(s, i)[0] == s


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

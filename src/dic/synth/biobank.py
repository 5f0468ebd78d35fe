"""The biobank: donors and samples as the biobank's LIMS exports them, from each HIS record.

    BiobankWriter(folder, context)    the SourceWriter "biobank": donors.csv, samples.csv
    dna_sample_id(site, patient)      a patient's DNA sample id (the VCF sample name), no randomness
    biomaterial_consent(resources)    (signed, permit start, permit end) if the Broad Consent permits BIOMAT
    load_biobank()                    the declarations (`biobank.yaml`), validated

Who donates and what is collected is declared in `biobank.yaml`. A visit's samples are drawn
in declaration order: primary tubes first, then what the lab makes of them (plasma, serum,
buffy coat, DNA, CSF aliquots). Every stored aliquot gets the next free position of its storage
pool, so no two share a location. Collections happen at HIS encounters after the consent, and
carry the encounter's case number and primary diagnosis.
"""

from __future__ import annotations

import csv
import hashlib
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from dic.errors import ConfigError, Problem
from dic.synth.declarations import load_declarations
from dic.synth.site_patient import SiteContext, SitePatient, case_number

BIOBANK_PATH = Path(__file__).with_name("biobank.yaml")
ICD_SYSTEM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
OPS_SYSTEM = "http://fhir.de/CodeSystem/bfarm/ops"
_DNA_MODULUS = 9_999_999_967  # the largest prime below 10**10: ids stay ten digits and never collide
_DNA_FACTOR = 7_346_071_529  # any factor coprime to the modulus; it scatters consecutive numbers


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Storage(_Entry):
    id: str
    temperature: str  # MIABIS storage temperature code
    unit_prefix: str
    racks: int
    boxes: int
    rows: int
    columns: int


class SampleType(_Entry):
    id: str
    display: str
    snomed: str
    snomed_display: str
    level: Literal["primary", "derivative"]
    parent: str | None = None
    when: Literal["every", "dna", "ops"]
    ops_prefixes: list[str] = []
    pct: float
    count: tuple[int, int]
    quantity: tuple[float, float]
    unit: str
    storage: str | None
    processing_days: tuple[int, int] | None = None


class Eligible(_Entry):
    classes: list[str]
    departments: list[str]


class Biobank(_Entry):
    id_prefix: str
    donation_pct: float
    repeat_collection_pct: float
    dna_pct: float
    consent_codes: list[str]
    eligible: Eligible
    collection_minutes: tuple[int, int]
    received_minutes: tuple[int, int]
    processing_minutes: tuple[int, int]
    used_pct: float
    sex_codes: dict[str, str]
    storage: list[Storage]
    sample_types: list[SampleType]
    columns: dict[Literal["donors.csv", "samples.csv"], list[str]]

    def problems(self) -> list[Problem]:
        """Cross-references the schema cannot see."""
        found: list[Problem] = []
        pools, seen = {s.id for s in self.storage}, {}
        for n, t in enumerate(self.sample_types):
            where = f"/sample_types/{n}"
            if (t.level == "derivative") != (t.parent is not None):
                found.append(Problem(where, "a derivative needs a parent, a primary has none"))
            if t.parent is not None and t.parent not in seen:
                found.append(Problem(f"{where}/parent", f"{t.parent!r} is not a sample type declared above"))
            if t.storage is not None and t.storage not in pools:
                found.append(Problem(f"{where}/storage", f"unknown storage pool {t.storage!r}"))
            if (t.when == "ops") != bool(t.ops_prefixes):
                found.append(Problem(f"{where}/ops_prefixes", "needed exactly when `when: ops`"))
            seen[t.id] = t
        dna = [t for t in self.sample_types if t.when == "dna"]
        if len(dna) != 1 or dna[0].count != (1, 1):
            found.append(Problem("/sample_types", "exactly one type needs `when: dna`, with count [1, 1]"))
        else:  # genotyped patients must always get their DNA: every ancestor is always collected
            chain, parent = [], dna[0].parent
            while parent in seen:
                chain.append(seen[parent])
                parent = seen[parent].parent
            if any(t.when != "every" or t.pct < 100 or t.count[0] < 1 for t in chain):
                found.append(Problem("/sample_types", "the DNA type's ancestors need `when: every`, pct 100"))
        return found


@cache
def load_biobank(path: Path = BIOBANK_PATH) -> Biobank:
    """The biobank's declarations, validated; every problem is reported at once (DefinitionError)."""
    return load_declarations(path, Biobank)


def dna_sample_id(site: str, patient: SitePatient) -> str:
    """The DNA sample id of a patient: a fixed permutation of the patient number (unique per site)."""
    number = patient.patient_number
    value = int(number) if number.isdigit() and int(number) < _DNA_MODULUS else \
        int.from_bytes(hashlib.sha256(number.encode()).digest()[:8], "big")
    return f"{_site_letter(site)}D{value * _DNA_FACTOR % _DNA_MODULUS:010d}"


def biomaterial_consent(resources: list[dict[str, Any]],
                        codes: list[str] | None = None) -> tuple[str, str, str] | None:
    """(consent dateTime, permit start, permit end) if an active Consent permits all BIOMAT codes;
    a later Consent that denies them (a withdrawal) ends the permit at its start."""
    codes = codes if codes is not None else load_biobank().consent_codes
    found = None
    for r in resources:
        if r["resourceType"] != "Consent" or r.get("status") != "active":
            continue
        permits: dict[str, dict[str, str]] = {}
        for p in r.get("provision", {}).get("provision", ()):
            for concept in p.get("code", ()):
                for coding in concept.get("coding", ()):
                    if coding.get("code") in codes:
                        if p.get("type") != "permit":
                            if found is None:
                                return None
                            withdrawn = p.get("period", {}).get("start", found[2])
                            return found[0], found[1], min(found[2], withdrawn)
                        permits[coding["code"]] = p.get("period", {})
        if found is None and len(permits) == len(codes) and r.get("dateTime"):
            start = max(p.get("start", "") for p in permits.values())
            end = min(p.get("end", "9999-12-31") for p in permits.values())
            found = (r["dateTime"], start, end)
    return found


def _site_letter(site: str) -> str:
    return site.removeprefix("site-").upper()


def _local(stamp: str) -> datetime:
    """A FHIR dateTime as local wall-clock time (the LIMS stores no offset)."""
    return datetime.fromisoformat(stamp[:19]) if len(stamp) > 10 else datetime.fromisoformat(stamp + "T00:00:00")


@dataclass(slots=True)
class _Visit:
    """One HIS encounter as the biobank records a collection there."""

    start: datetime
    end: datetime
    case_number: str
    diagnosis: str  # ICD-10-GM code of the primary diagnosis, or ""
    ops: list[str] = field(default_factory=list)


def _visits(resources: list[dict[str, Any]], eligible: Eligible, since: str,
            until: str) -> list[tuple[str, bool, int]]:
    """Encounters starting in [since, until] (local ISO text compares in time order), sorted:
    (start, eligible, position in `resources`). Times are parsed later, for the chosen few."""
    found = []
    for n, r in enumerate(resources):
        if (r["resourceType"] == "Encounter" and (start := (r.get("period") or {}).get("start"))
                and since <= start[:19] and start[:10] <= until):
            found.append((start[:19], (r.get("class") or {}).get("code") in eligible.classes
                              or _code(r.get("serviceType"), None) in eligible.departments, n))
    found.sort()
    return found


def _visit(resources: list[dict[str, Any]], position: int) -> _Visit:
    """The collection's encounter: times, case number, primary diagnosis, OPS codes. The HIS lists
    an encounter's Conditions and Procedures right after it; if the diagnosis is not found there,
    the whole record is searched."""
    encounter = resources[position]
    reference = "Encounter/" + encounter["id"]
    links = sorted(encounter.get("diagnosis", ()), key=lambda d: d.get("rank", 99))
    primary = links[0]["condition"]["reference"].split("/")[-1] if links else None
    diagnosis, ops = "", []
    following = iter(resources[position + 1:])
    for window in (following, resources):
        for r in window:
            kind = r["resourceType"]
            if kind == "Encounter" and window is following:
                break
            if kind == "Condition" and r["id"] == primary:
                diagnosis = _code(r.get("code"), ICD_SYSTEM)
            elif kind == "Procedure" and (r.get("encounter") or {}).get("reference") == reference:
                ops.append(_code(r.get("code"), OPS_SYSTEM))
        if diagnosis or primary is None:
            break
        ops = []
    period = encounter.get("period") or {}
    start = _local(period["start"])
    return _Visit(start, _local(period["end"]) if period.get("end") else start, case_number(encounter), diagnosis,
                  ops)


def _code(concept: dict[str, Any] | None, system: str | None) -> str:
    for coding in (concept or {}).get("coding", ()):
        if system is None or coding.get("system") == system:
            return coding.get("code", "")
    return ""


class _Pools:
    """Storage positions handed out in order: unit / rack / box / position, each used once."""

    def __init__(self, pools: list[Storage]):
        self.pools = {p.id: p for p in pools}
        self.used = {p.id: 0 for p in pools}
        self.slots = {p.id: [f"{chr(ord('A') + r)}{c + 1}" for r in range(p.rows) for c in range(p.columns)]
                      for p in pools}
        self.box: dict[str, str] = {}

    def take(self, pool_id: str) -> str:
        """'temperature;unit;rack;box;position' of the next free position."""
        n = self.used[pool_id]
        self.used[pool_id] = n + 1
        slots = self.slots[pool_id]
        box, slot = divmod(n, len(slots))
        if slot == 0 or pool_id not in self.box:  # a new box: name it once
            p = self.pools[pool_id]
            unit, rest = divmod(box, p.racks * p.boxes)
            rack, number = divmod(rest, p.boxes)
            self.box[pool_id] = f"{p.temperature};{p.unit_prefix}{unit + 1:03d};R{rack + 1:02d};B{number + 1:02d};"
        return self.box[pool_id] + slots[slot]


class BiobankWriter:
    """The biobank LIMS export of one site (see the module docstring and `biobank.yaml`)."""

    name = "biobank"

    def __init__(self, folder: Path, context: SiteContext) -> None:
        self.bank = load_biobank()
        self.context = context
        self.rand = random.Random(f"{context.seed}:{context.site}:{self.name}")
        self.letter = _site_letter(context.site)
        self.pools = _Pools(self.bank.storage)
        self.donors = self.samples = 0
        self.files = {name: (folder / name).open("w", newline="", encoding="utf-8") for name in self.bank.columns}
        self.out = {name: csv.writer(f, delimiter=";", lineterminator="\n") for name, f in self.files.items()}
        for name, columns in self.bank.columns.items():
            self.out[name].writerow(columns)
        self.sample_file = self.files["samples.csv"]

    def add(self, patient: SitePatient) -> None:
        bank, rand = self.bank, self.rand
        if not patient.genotyped and rand.random() * 100 >= bank.donation_pct:
            return  # drawn before reading the record: most patients leave here, cheaply
        consent = biomaterial_consent(patient.resources, bank.consent_codes)
        if consent is None:
            if patient.genotyped:
                raise ConfigError(f"{self.context.site}: Patient/{patient.resources[0].get('id')} is genotyped but "
                                  "its Consent does not permit BIOMAT; draw the genomics subset among "
                                  "BIOMAT-permitting patients")
            return
        signed, permit_start, permit_end = consent
        since = max(signed[:19], permit_start)
        visits = _visits(patient.resources, bank.eligible, since, permit_end)
        chosen = [v for v in visits if v[1]]
        if not chosen and not patient.genotyped:
            return
        if not chosen:  # genotyped without an eligible stay: blood is taken at the next contact
            chosen = visits[:1]
        picked = chosen[:1] + [v for v in chosen[1:] if rand.random() * 100 < bank.repeat_collection_pct]
        episodes = [_visit(patient.resources, n) for _, _, n in picked] or [_Visit(_local(since), _local(since), "", "")]
        self.donors += 1
        donor = f"{bank.id_prefix}-{self.letter}-{self.donors:07d}"
        self.context.link(self.name, donor, patient.person_id)
        who = patient.identity(self.name)
        self.out["donors.csv"].writerow([
            donor, who.given or "", who.family or "", who.birth_date or "",
            bank.sex_codes.get(who.sex, "") if who.sex else "", signed[:10], permit_end[:10]])
        dna = patient.genotyped or rand.random() * 100 < bank.dna_pct
        for n, visit in enumerate(episodes):
            self._collect(donor, visit, dna and n == 0, dna_sample_id(self.context.site, patient))

    def _collect(self, donor: str, visit: _Visit, with_dna: bool, dna_id: str) -> None:
        """All samples of one collection: primary tubes, then their aliquots and derivatives."""
        bank, rand = self.bank, self.rand
        span = max(0, int((visit.end - visit.start).total_seconds() // 60) - 1)
        taken = visit.start + timedelta(minutes=min(span, _between(rand, bank.collection_minutes)))
        received = taken + timedelta(minutes=_between(rand, bank.received_minutes))
        made: dict[str, str] = {}  # sample type -> its first sample id (the parent of derivatives)
        done_at: dict[str, datetime] = {}  # sample type -> processing time
        times = f"{visit.case_number};{_minute(taken)};{_minute(received)}"
        for t in bank.sample_types:
            if t.parent is not None and t.parent not in made:
                continue
            if t.when == "dna":
                if not with_dna:
                    continue
            elif t.when == "ops" and not any(op.startswith(tuple(t.ops_prefixes)) for op in visit.ops):
                continue
            if t.pct < 100 and rand.random() * 100 >= t.pct:
                continue
            done = (self._later(taken, t.processing_days) if t.processing_days is not None
                    else done_at[t.parent] if t.parent is not None
                    else received + timedelta(minutes=_between(rand, bank.processing_minutes)))
            done_at[t.id] = done
            level = "primary" if t.parent is None else "aliquot"
            head = f"{donor};{made.get(t.parent, '')};{level};{t.id};{t.display};{t.snomed};{times};{_minute(done)}"
            tail = f"{t.unit};{visit.diagnosis}"
            plain = self._plain(head, tail)
            low, high = t.quantity
            for k in range(_between(rand, t.count)):
                self.samples += 1
                sample = dna_id if t.when == "dna" else f"{self.letter}{self.samples:09d}"
                if k == 0:
                    made[t.id] = sample
                amount = f"{low:g}" if low == high else f"{low + rand.random() * (high - low):.1f}"
                if t.storage is None:
                    where, status = ";;;;", "depleted"
                else:
                    where = self.pools.take(t.storage)
                    status = "used" if rand.random() * 100 < bank.used_pct else "available"
                line = f"{sample};{head};{where};{amount};{tail};{status}\n"
                if plain:
                    self.sample_file.write(line)
                else:
                    self.out["samples.csv"].writerow(line[:-1].split(";"))

    def _plain(self, head: str, tail: str) -> bool:
        """Whether a row's text needs no CSV quoting: then it is joined by hand (csv.writer costs
        ~8 us a row). Fields that do need quoting (a ';' in a diagnosis) fall back to the writer,
        split on the declared number of separators."""
        return (head.count(";") == 9 and tail.count(";") == 1
                and not any(c in head or c in tail for c in '"\n\r'))

    def _later(self, day: datetime, days: tuple[int, int]) -> datetime:
        """A working-hours time some days later (DNA extraction, tissue embedding)."""
        base = day.replace(hour=8, minute=0) + timedelta(days=_between(self.rand, days))
        return base + timedelta(minutes=_between(self.rand, (0, 480)))

    def close(self) -> dict[str, int]:
        for f in self.files.values():
            f.close()
        return {"donors.csv": self.donors, "samples.csv": self.samples}


def _minute(moment: datetime) -> str:
    return moment.isoformat(" ", "minutes")


def _between(rand: random.Random, bounds: tuple[int, int]) -> int:
    """A whole number in [low, high]; random.randint costs three times as much."""
    return bounds[0] + int(rand.random() * (bounds[1] - bounds[0] + 1))

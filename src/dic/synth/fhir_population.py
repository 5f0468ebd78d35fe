"""A synthetic hospital population as FHIR R4 resources shaped like the MII core data set.

    patient_draws(patients, seed, site=, years=, shared=) -> Iterator[PatientDraw]
    generate_population(patients, seed)   -> Iterator[dict]   (Patient first, then that patient's data)
    write_ndjson(out_dir, patients, seed)  -> {resource type: count}, Bulk-export style files

The medicine is data (`catalog.yaml`: code lists, units, reference ranges, prevalences by age
and sex, risk factors, the planted effects); this module is the small engine over it, with no
code per disease. Per block of patients, NumPy draws the bulk numbers (demographics, smoking,
effect-variant genotypes, diseases, encounter dates, lab and vital values, background events);
a plain loop then places each patient's contacts (regular ones and one per acute event) and
assembles the resources. The medical record carries no identifying data: a Patient has
gender, birth date, death date, a two-digit postcode prefix and country; `dic synth`'s HIS
export (his_export.py) adds the identifiers, names and address a real export has.

Same seed, same site, same years: byte-identical output. Memory stays bounded by one block.
Sub-objects (meta, references, CodeableConcepts, reference ranges) are shared between yielded
resources to keep generation fast: treat resources as read-only, or copy deeply before editing.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dic.errors import ConfigError
from dic.synth.catalog import Catalog, Coded, Drug
from dic.synth.his_export import NdjsonFiles
from dic.synth.planted import Exposure
from dic.synth.population_tables import (
    FIRST_YEAR,
    LAST_YEAR,
    Tables,
    calendar,
    codeable,
    day_number_of,
    pick,
    tables_for,
)

BLOCK_PATIENTS = 1000


# ------------------------------------------------------------------ the engine
def generate_population(patients: int, seed: int, *, site: str = "site-a",
                        years: tuple[int, int] = (2015, 2025)) -> Iterator[dict[str, Any]]:
    """Yield a synthetic population's FHIR R4 resources, each patient's Patient first.

    About 50 resources per patient on average (Encounter, Condition, Procedure, Observation,
    MedicationStatement, MedicationAdministration, Consent, Specimen). Deterministic in
    (patients, seed, site, years); streams block by block.
    """
    for draw in patient_draws(patients, seed, site=site, years=years):
        yield from draw.resources


@dataclass(frozen=True, slots=True)
class Demographics:
    """What must agree when one person is a patient at two sites: sex (index into the catalog's
    sexes), birth day and death day (None: alive at the window end), as calendar day numbers."""

    sex: int
    birth: int
    death: int | None
    genotype: tuple[int, ...]  # alternate allele counts of the catalog's effect variants


@dataclass(slots=True)
class PatientDraw:
    """One patient as generated: the resources (Patient first) and what other writers need."""

    index: int  # position in the site's population
    resources: list[dict[str, Any]]
    demographics: Demographics
    genotype: dict[str, int]  # effect variant id -> alternate allele count
    ever_smoker: bool


def patient_draws(patients: int, seed: int, *, site: str = "site-a", years: tuple[int, int] = (2015, 2025),
                  shared: dict[int, Demographics] | None = None,
                  catalog: Catalog | None = None) -> Iterator[PatientDraw]:
    """Each patient's resources as one list, with their draws (validates the arguments).

    `shared` gives fixed demographics for some positions (the same person seen at another site).
    """
    if patients < 0 or seed < 0:
        raise ConfigError(f"patients and seed must be >= 0 (got patients={patients}, seed={seed})")
    if not (FIRST_YEAR + 1 <= years[0] <= years[1] <= LAST_YEAR - 50):
        raise ConfigError(f"years must be within {FIRST_YEAR + 1}..{LAST_YEAR - 50}, first <= last "
                          f"(got {years[0]}-{years[1]})")
    tables = tables_for(catalog)
    shared = shared or {}
    for number, first in enumerate(range(0, patients, BLOCK_PATIENTS)):
        count = min(BLOCK_PATIENTS, patients - first)
        fixed = {i - first: shared[i] for i in range(first, first + count) if i in shared}
        block = _Block(tables, _block_rng(seed, site, number), site, seed, years, first, count, fixed)
        for i in range(count):
            yield block.draw(i)


def _block_rng(seed: int, site: str, number: int) -> np.random.Generator:
    site_key = int.from_bytes(hashlib.blake2b(site.encode(), digest_size=8).digest(), "big")
    return np.random.default_rng([seed, site_key, number])


def person_demographics(seed: int, site: str, index: int, *, patients: int, years: tuple[int, int] = (2015, 2025),
                        catalog: Catalog | None = None) -> Demographics:
    """Demographics of the site's patient at `index` as `patient_draws` draws them, without
    generating the site (replays the block's first draws). Patients shared with an earlier site
    are not resolved here: the caller follows its own sharing map."""
    number = index // BLOCK_PATIENTS
    count = min(BLOCK_PATIENTS, patients - number * BLOCK_PATIENTS)
    people = _People(tables_for(catalog), _block_rng(seed, site, number), count, years)
    k = index - number * BLOCK_PATIENTS
    return Demographics(int(people.sex[k]), int(people.birth[k]),
                        int(people.death[k]) if people.dead[k] else None, tuple(people.genotype[k].tolist()))


class _People:
    """A block's first draws: who the people are. Replayable from the block's generator alone."""

    def __init__(self, t: Tables, rng: np.random.Generator, n: int, years: tuple[int, int]):
        self.rand_seed = int(rng.integers(2**62))
        win_start, win_end = day_number_of(years[0]), day_number_of(years[1], 12, 31)
        self.sex = rng.choice(len(t.sex_p), n, p=t.sex_p)
        band = rng.choice(len(t.band_p), n, p=t.band_p)
        age_end = t.band_low[band] + rng.random(n) * t.band_span[band]
        self.birth = win_end - (age_end * 365.25).astype(np.int64)
        start = np.maximum(win_start, self.birth)
        self.dead = rng.random(n) < t.death_p[band]
        self.death = start + (rng.random(n) * (win_end - start + 1)).astype(np.int64)
        self.u_smoke = rng.random(n)
        self.genotype = rng.binomial(2, t.allele_frequency, (n, len(t.variant_ids)))


class _Block:
    """One block of patients: bulk draws in NumPy up front, then resources patient by patient."""

    def __init__(self, t: Tables, rng: np.random.Generator, site: str, seed: int,
                 years: tuple[int, int], first: int, n: int, fixed: dict[int, Demographics]):
        cat, pop = t.cat, t.cat.population
        self.t, self.cat, self.n, self.first, self.site = t, cat, n, first, site
        self.systems = {k: f"https://fhir.{site}.example.org/sid/{k}" for k in ("case-number", "lab-order",
                                                                                 "lab-result")}
        people = _People(t, rng, n, years)
        self.rand = random.Random(people.rand_seed)
        self.meta = {k: {"profile": [v], "source": f"urn:dic:site:{site}"} for k, v in cat.profiles.items()}
        self.meta_source = {"source": f"urn:dic:site:{site}"}
        self.vital_meta = {k: {"profile": [v.profile], "source": f"urn:dic:site:{site}"}
                           for k, v in cat.vital_signs.items() if v.profile}
        self.postal = pop.postal_prefixes.get(site, pop.postal_prefixes.get("default", ["00"]))
        self.ids = [hashlib.blake2b(f"{site}:{seed}:{first + i}".encode(), digest_size=10).hexdigest()
                    for i in range(n)]
        win_start, win_end = day_number_of(years[0]), day_number_of(years[1], 12, 31)
        d_count, labs = len(cat.diseases), cat.labs
        # people; the same person at another site keeps sex, birth, death and genotype
        sex, birth, dead, death, genotype = people.sex, people.birth, people.dead, people.death, people.genotype
        for i, known in fixed.items():
            sex[i], birth[i] = known.sex, known.birth
            dead[i], death[i] = known.death is not None, known.death if known.death is not None else win_end
            genotype[i] = known.genotype
        age_end = (win_end - birth) / 365.25
        band = np.clip(np.searchsorted(t.band_low, age_end, side="right") - 1, 0, len(t.band_low) - 1)
        table = t.sex_table[sex]
        start = np.maximum(win_start, birth)
        end = np.where(dead, death, win_end)
        # smoking status and effect-variant genotypes come first: they are risk factors
        female = table == 0
        cum = [np.cumsum(p / p.sum()) for p in t.smoking_p]
        smoke = np.minimum(np.where(female, np.searchsorted(cum[0], people.u_smoke),
                                    np.searchsorted(cum[1], people.u_smoke)), len(cum[0]) - 1)
        ever_smoker = (smoke > 0) & (age_end >= 14)
        carrier = {"variant:" + v: (genotype[:, k] == 2) if t.recessive[k] else (genotype[:, k] >= 1)
                   for k, v in enumerate(t.variant_ids)}
        # diseases, in catalog order so that risk factors see earlier diseases
        has = np.zeros((n, d_count), dtype=bool)
        u = rng.random((n, d_count))
        for d in range(d_count):
            p = t.prevalence[d][table, band]
            for factor, relative_risk in t.risk[d]:
                exposed = (ever_smoker if factor == "smoking" else carrier[factor] if factor in carrier
                           else has[:, t.disease_index[factor]])
                p = np.where(exposed, np.minimum(p * relative_risk, 1.0), p)
            has[:, d] = (u[:, d] < p) & (age_end >= t.min_age[d])
        # encounters
        window_share = np.clip((end - start + 1) / (win_end - win_start + 1), 0.1, 1.0)
        n_enc = np.minimum(1 + rng.poisson((pop.encounters_base + has @ t.extra_encounters) * window_share), 60)
        owner = np.repeat(np.arange(n), n_enc)
        e_count = len(owner)
        eday = start[owner] + (rng.random(e_count) * (end - start + 1)[owner]).astype(np.int64)
        eday = eday[np.lexsort((eday, owner))]
        # labs: per patient distribution (sex, diseases), per encounter value and interpretation
        lab_index = {lab.loinc: i for i, lab in enumerate(labs)}
        mean = np.array([np.where(female, lab.mean_for("female"), lab.mean_for("male")) for lab in labs]).T
        sd = np.tile(np.array([lab.sd for lab in labs]), (n, 1))
        boost = np.zeros((n, len(labs)))
        for d in reversed(range(d_count)):
            for code, shift in cat.diseases[d].labs.items():
                rows, col = has[:, d], lab_index[code]
                mean[rows, col], sd[rows, col] = shift.mean, shift.sd
                boost[rows, col] = np.maximum(boost[rows, col], shift.pct / 100)
        values = mean[owner] + sd[owner] * rng.standard_normal((e_count, len(labs)))
        log_normal = np.array([lab.log_normal for lab in labs])
        values[:, log_normal] = np.exp(values[:, log_normal])
        values = np.maximum(values, 0.0)
        limits = np.array([[lab.limits(s) for lab in labs] for s in ("female", "male")])  # (2, L, 2)
        self.lab_limits = limits.tolist()
        self.lab_values = []
        for col, lab in enumerate(labs):
            rounded = np.round(values[:, col], lab.decimals)
            values[:, col] = rounded
            self.lab_values.append(rounded.astype(np.int64).tolist() if lab.decimals == 0 else rounded.tolist())
        e_limits = limits[table[owner]]
        self.lab_flag = np.where(values > e_limits[:, :, 1], 1, np.where(values < e_limits[:, :, 0], 2, 0)).tolist()
        self.lab_u = rng.random((e_count, len(labs))).tolist()
        self.lab_boost = boost.tolist()
        self.lab_p = [[lab.pct.get(c.code, 0.0) / 100 for lab in labs] for c in cat.encounter_classes]
        # vital signs
        growth = np.clip((eday - birth[owner]) / 365.25 / 18, 0, 1)
        heights = np.array([pop.body_height_cm["female"], pop.body_height_cm["male"]])[table]
        height = (heights[:, 0] + heights[:, 1] * rng.standard_normal(n))[owner] * (0.3 + 0.7 * growth)
        bmi_shift = np.array([dz.body_mass_index_shift for dz in cat.diseases])
        bmi = np.clip(pop.body_mass_index[0] + pop.body_mass_index[1] * rng.standard_normal(n) + has @ bmi_shift,
                      16, 60)[owner] * (0.62 + 0.38 * growth) * (1 + 0.03 * rng.standard_normal(e_count))
        height = np.round(height)
        weight = np.round(bmi * (height / 100) ** 2, 1)
        self.height, self.weight = height.astype(np.int64).tolist(), weight.tolist()
        self.bmi = np.round(weight / (height / 100) ** 2, 1).tolist()
        hr_shift = np.array([dz.heart_rate_shift for dz in cat.diseases])
        self.heart_rate = np.clip(np.round(pop.heart_rate[0] + (has @ hr_shift)[owner] + pop.heart_rate[1]
                                           * rng.standard_normal(e_count)), 35, 190).astype(np.int64).tolist()
        sys_shift = np.array([dz.systolic_shift for dz in cat.diseases])
        systolic = np.clip(np.round(pop.systolic[0] + (has @ sys_shift)[owner]
                                    + pop.systolic[1] * rng.standard_normal(e_count)), 80, 230)
        self.systolic = systolic.astype(np.int64).tolist()
        self.diastolic = np.clip(np.round(pop.diastolic_per_systolic * systolic + 6 * rng.standard_normal(e_count)),
                                 40, 140).astype(np.int64).tolist()
        # smoking status, stated at the first encounter (children: never)
        first_age = (eday[np.concatenate([[0], np.cumsum(n_enc)[:-1]])] - birth) / 365.25
        self.smoke = np.where(first_age < 14, 0, smoke).tolist()
        self.ever_smoker = ever_smoker.tolist()
        self.genotype = [dict(zip(t.variant_ids, row)) for row in genotype.tolist()]
        # acute events at their background rate over each person's observation time
        self.observed = list(zip(start.tolist(), end.tolist()))
        self.event_counts = t.planted.background_counts(rng, (end - start + 1).astype(np.float64)).tolist()
        # encounter timing draws
        self.u_time, self.u_duration = rng.random(e_count).tolist(), rng.random(e_count).tolist()
        los_means = [c.length_of_stay_days or 1.0 for c in cat.encounter_classes]
        self.los = [rng.geometric(1 / m, e_count).tolist() for m in los_means]
        self.classes = rng.choice(len(t.class_p), e_count, p=t.class_p).tolist()
        self.eday = eday.tolist()
        self.offsets = np.concatenate([[0], np.cumsum(n_enc)]).tolist()
        self.has = has.tolist()
        self.sex, self.birth, self.dead = sex.tolist(), birth.tolist(), dead.tolist()
        self.death, self.table = death.tolist(), table.tolist()
        self.coding: dict[tuple, dict[str, Any]] = {}
        self.lab_units = [lab.unit for lab in labs]
        self.ucum = cat.systems["ucum"]
        self.class_codes_index = {c.code: k for k, c in enumerate(cat.encounter_classes)}
        self.inpatient = next(k for k, c in enumerate(cat.encounter_classes) if c.length_of_stay_days)

    # -------------------------------------------------------------- helpers
    def _coded(self, system: str, code: str, display: str, year: str) -> dict[str, Any]:
        key = (system, code, year)
        found = self.coding.get(key)
        if found is None:
            found = self.coding[key] = codeable(self.cat.systems[system], code, display, year)
        return found

    def _quantity(self, value: float, unit: str) -> dict[str, Any]:
        return {"value": value, "unit": unit, "system": self.ucum, "code": unit}

    # -------------------------------------------------------------- patients
    def draw(self, i: int) -> PatientDraw:
        """Patient i's resources and the draws other source writers need."""
        death = self.death[i] if self.dead[i] else None
        genotype = self.genotype[i]
        return PatientDraw(self.first + i, self.patient(i),
                           Demographics(self.sex[i], self.birth[i], death, tuple(genotype.values())),
                           genotype, self.ever_smoker[i])

    def patient(self, i: int) -> list[dict[str, Any]]:
        """The patient's resources, Patient first (a list: one patient is small)."""
        t, cat, rand = self.t, self.cat, self.rand
        days, offsets, times = calendar()
        pid = self.ids[i]
        subject = "Patient/" + pid
        o0, o1 = self.offsets[i], self.offsets[i + 1]
        ne = o1 - o0
        eday = self.eday[o0:o1]
        classes = self.classes[o0:o1]
        birth = self.birth[i]
        # disease onsets: a regular encounter index and a day
        onset_k: dict[int, int] = {}
        onset_day: dict[int, int] = {}
        icd: dict[int, int] = {}
        incident: dict[int, list[int]] = {}
        for d, present in enumerate(self.has[i]):
            if not present:
                continue
            dz = cat.diseases[d]
            first_day = birth + int(dz.min_age * 365.25)
            lo = bisect.bisect_left(eday, first_day)
            if lo >= ne:
                continue
            if lo == 0 and rand.random() * 100 < dz.prevalent_pct:
                onset_k[d], onset_day[d] = 0, max(first_day, eday[0] - int(rand.random() * 3650))
            else:
                k = lo + int(rand.random() * (ne - lo))
                lag = int(rand.random() * 21) if dz.course == "chronic" else 0
                onset_k[d], onset_day[d] = k, max(first_day, eday[k] - lag)
                if k not in incident:
                    classes[k] = self.class_codes_index[dz.onset_class]
                incident.setdefault(k, []).append(d)
            icd[d] = pick(rand, t.icd_cum[d])
        # long-term medications, stated when the disease is first seen; they are exposures
        stated: dict[int, list[tuple[int, int, Drug, int, int | None]]] = {}
        exposures: list[Exposure] = []
        for d, k in onset_k.items():
            day = eday[k]
            for m, drug in enumerate(cat.diseases[d].medications):
                if rand.random() * 100 >= drug.pct:
                    continue
                first = day if onset_day[d] >= day - 30 else onset_day[d] + int(rand.random() * (day - onset_day[d]))
                stopped = rand.random() * 100 < cat.rules.stopped_medication_pct
                last = first + 30 + int(rand.random() * 2000) if stopped else None
                stated.setdefault(k, []).append((d, m, drug, first, last))
                exposures.append(Exposure(drug.atc, first, last))
        # acute events (background, adverse drug effects, prodromes), each at a contact of its own
        events = t.planted.events_of(rand, self.event_counts[i], self.observed[i], exposures, onset_day)
        slots = sorted([(eday[k], 0, k) for k in range(ne)] + [(day, 1, ev) for day, ev in events])
        regular: dict[int, int] = {}
        contact_day, contact_class, contact_event, contact_draws = [], [], [], []
        for position, (day, kind, index) in enumerate(slots):
            contact_day.append(day)
            if kind == 0:
                regular[index] = position
                contact_class.append(classes[index])
                contact_event.append(None)
                contact_draws.append(o0 + index)
            else:
                contact_class.append(t.event_class[index])
                contact_event.append(index)
                contact_draws.append(None)
        onset_k = {d: regular[k] for d, k in onset_k.items()}
        incident = {regular[k]: v for k, v in incident.items()}
        stated = {regular[k]: v for k, v in stated.items()}
        contacts = len(slots)
        in_hospital = self.dead[i] and rand.random() * 100 < cat.population.in_hospital_death_pct
        if in_hospital:
            contact_class[-1] = self.inpatient
        # contact times (minutes since the calendar start); no overlapping stays
        starts, ends = [], []
        previous_end = -1
        for j in range(contacts):
            c = cat.encounter_classes[contact_class[j]]
            e = contact_draws[j]
            h0, h1 = c.hours
            u_time = self.u_time[e] if e is not None else rand.random()
            s = contact_day[j] * 1440 + h0 * 60 + int(u_time * (h1 - h0) * 60)
            if s <= previous_end:
                s = previous_end + 1440
            u_duration = self.u_duration[e] if e is not None else rand.random()
            if c.length_of_stay_days is not None:
                los = (self.los[contact_class[j]][e] if e is not None
                       else 1 + int(rand.random() * 2 * c.length_of_stay_days))
                end = (s // 1440 + los) * 1440 + 540 + int(u_duration * 300)
            else:
                m0, m1 = c.duration_minutes
                end = s + m0 + int(u_duration * (m1 - m0))
            starts.append(s)
            ends.append(end)
            previous_end = end
        death_minute = None
        if self.dead[i]:
            death_minute = ends[-1] if in_hospital else max(self.death[i] * 1440 + 720, ends[-1] + 1440)

        def stamp(minute: int) -> str:
            d = minute // 1440
            return days[d] + times[minute - d * 1440] + offsets[d]

        patient = {"resourceType": "Patient", "id": pid, "meta": self.meta["Patient"],
                   "gender": t.genders[self.sex[i]], "birthDate": days[birth]}
        if death_minute is not None:
            patient["deceasedDateTime"] = stamp(death_minute)
        patient["address"] = [{"type": "both", "postalCode": self.postal[int(rand.random() * len(self.postal))],
                               "country": "DE"}]
        out = [patient]
        subject_ref = {"reference": subject}
        out += self._consents(pid, subject_ref, starts[0], self.observed[i][1], stamp)
        running: list[tuple[Drug, int, int | None]] = []
        for j in range(contacts):
            contact = _Contact(j, contact_draws[j], contact_class[j], starts[j], ends[j], contact_event[j],
                               contact_day[j], incident.get(j, []), stated.get(j, []),
                               death_minute if (in_hospital and j == contacts - 1) else None)
            self._encounter(out, i, pid, subject_ref, contact, stamp, onset_k, onset_day, icd, running, exposures)
        return out

    # -------------------------------------------------------------- consent
    def _consents(self, pid: str, subject_ref: dict[str, str], minute: int, last_day: int,
                  stamp: Any) -> list[dict[str, Any]]:
        """The Broad Consent asked at the first contact, and a later withdrawal of every module
        (a second Consent of deny provisions from its date, as the MII consent module models it)."""
        policy, rand, days = self.cat.consent, self.rand, calendar()[0]
        if rand.random() * 100 < policy.no_consent_pct:
            return []
        refused = rand.random() * 100 < policy.refused_pct
        day = minute // 1440
        provisions = []
        for module in policy.modules:
            denied = refused or rand.random() * 100 < module.deny_pct
            period = {"start": days[day], "end": days[day + int(module.years * 365.25)]}
            provisions += [{"type": "deny" if denied else "permit", "period": period, "code": [code]}
                           for code in self.t.consent_codes[module.name]]
        longest = day + int(max(m.years for m in policy.modules) * 365.25)
        found = [self._consent(pid + "-consent", subject_ref, stamp(minute), days[day], days[longest], provisions)]
        if not refused and last_day - day > 60 and rand.random() * 100 < policy.withdrawn_pct:
            withdrawn = day + 30 + int(rand.random() * (last_day - day - 30))
            # open-ended: from its date on, nothing may be used, whatever a module's period was
            denials = [{"type": "deny", "period": {"start": days[withdrawn]}, "code": p["code"]} for p in provisions]
            found.append(self._consent(pid + "-consent-withdrawal", subject_ref, stamp(withdrawn * 1440 + 600),
                                       days[withdrawn], days[max(longest, withdrawn)], denials))
        return found

    def _consent(self, cid: str, subject_ref: dict[str, str], when: str, start: str, end: str,
                 provisions: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "Consent", "id": cid, "meta": self.meta["Consent"],
            "status": "active", "scope": self.t.consent_scope, "category": self.t.consent_category,
            "patient": subject_ref, "dateTime": when, "policy": [{"uri": self.cat.consent.policy_uri}],
            "provision": {"type": "deny", "period": {"start": start, "end": end}, "provision": provisions},
        }

    # -------------------------------------------------------------- one encounter and what happened in it
    def _encounter(self, out: list[dict[str, Any]], i: int, pid: str, subject_ref: dict[str, str],
                   contact: _Contact, stamp: Any, onset_k: dict[int, int], onset_day: dict[int, int],
                   icd: dict[int, int], running: list[tuple[Drug, int, int | None]],
                   exposures: list[Exposure]) -> None:
        t, cat, rand, rules = self.t, self.cat, self.rand, self.cat.rules
        days = calendar()[0]
        j, c, start, end = contact.j, contact.klass, contact.start, contact.end
        klass = cat.encounter_classes[c]
        eid = f"{pid}-e{j}"
        case_number = f"{self.first + i + 1:08d}{j:03d}"
        encounter = {"reference": "Encounter/" + eid}
        day = start // 1440
        year = days[day][:4]
        start_s = stamp(start)
        # diagnoses: (kind, index) with kind d = disease, f = follow-up of an acute disease,
        # r = reason, e = acute event at its own contact, x = complication of a stay
        coded: list[tuple[str, int]] = []
        chronic: list[tuple[str, int]] = []
        for d, k in onset_k.items():
            dz = cat.diseases[d]
            if k == j:
                (coded if d in contact.incident else chronic).append(("d", d))
            elif k < j and rand.random() * 100 < klass.coded_chronic_pct:
                if dz.course == "chronic":
                    chronic.append(("d", d))
                elif dz.followup is not None:
                    coded.append(("f", d))
        event_day: dict[int, int] = {}
        if contact.event is not None:
            primary = ("e", contact.event)
            event_day[contact.event] = contact.event_day
        elif contact.incident:
            primary = ("d", contact.incident[0])
        elif chronic and rand.random() * 100 < rules.primary_chronic_pct:
            primary = chronic[int(rand.random() * len(chronic))]
        else:
            primary = ("r", pick(rand, t.reason_cum[c]))
        if c == self.inpatient:
            for n, (event, _, _) in enumerate(t.planted.complications):
                if rand.random() < t.planted.complication_probability(n, self.site, day):
                    coded.append(("x", event))
                    event_day[event] = day + 1 + int(rand.random() * max(1, end // 1440 - day))
        diagnoses = [primary] + [x for x in coded + chronic if x != primary]
        department = (cat.diseases[primary[1]].department if primary[0] == "d"
                      else cat.events[primary[1]].department if primary[0] == "e"
                      else t.reasons[c][primary[1]].department)
        conditions, links = [], []
        for m, (kind, idx) in enumerate(diagnoses):
            cid = f"{pid}-c{j}-{m}"
            if kind == "r":
                reason = t.reasons[c][idx]
                code, onset = self._coded("icd10gm", reason.icd, reason.display, year), days[day]
            elif kind in ("e", "x"):  # x: a complication found during the stay, coded at discharge
                event = cat.events[idx]
                code, onset = self._coded("icd10gm", event.icd, event.display, year), days[event_day[idx]]
            else:
                dz = cat.diseases[idx]
                entry = dz.icd[icd[idx]] if kind == "d" else dz.followup
                code, onset = self._diagnosis(entry, year), days[onset_day[idx]]
            verification = ("provisional" if kind == "r" and rand.random() * 100 < rules.provisional_reason_pct
                            else "confirmed")
            conditions.append({
                "resourceType": "Condition", "id": cid, "meta": self.meta["Condition"],
                "clinicalStatus": t.clinical["active"], "verificationStatus": t.verification[verification],
                "code": code, "subject": subject_ref, "encounter": encounter,
                "onsetDateTime": onset, "recordedDate": stamp(end) if kind == "x" else start_s})
            links.append({"condition": {"reference": "Condition/" + cid},
                          "use": t.use["primary" if m == 0 else "secondary"], "rank": m + 1})
        admit_codes, admit_cum = t.admit[c]
        discharge_codes, discharge_cum = t.discharge[c]
        discharge = (rules.death_discharge if contact.death_minute is not None
                     else discharge_codes[pick(rand, discharge_cum)])
        out.append({
            "resourceType": "Encounter", "id": eid, "meta": self.meta["Encounter"],
            "identifier": [{"type": _VISIT_NUMBER, "system": self.systems["case-number"], "value": case_number}],
            "status": "finished",
            "class": t.class_cc[c], "type": t.contact_types[c], "serviceType": t.department_cc[department],
            "subject": subject_ref, "period": {"start": start_s, "end": stamp(end)},
            "diagnosis": links,
            "hospitalization": {"admitSource": t.admit_cc[admit_codes[pick(rand, admit_cum)]],
                                "dischargeDisposition": t.discharge_cc[discharge]},
        })
        out += conditions
        # procedures: for the primary disease, and for the class
        operations = [*t.class_procedures[c]]
        if primary[0] == "d":
            operations += cat.diseases[primary[1]].procedures
        for m, op in enumerate(operations):
            if rand.random() * 100 < op.pct:
                out.append({"resourceType": "Procedure", "id": f"{pid}-p{j}-{m}", "meta": self.meta["Procedure"],
                            "status": "completed", "code": self._coded("ops", op.ops, op.display, year),
                            "subject": subject_ref, "encounter": encounter,
                            "performedDateTime": stamp(start + int(rand.random() * (end - start)))})
        if contact.draws is not None:  # contacts for an acute event carry no observations
            self._observations(out, i, j, contact.draws, pid, subject_ref, encounter, c, start, stamp, case_number,
                               exposures)
        self._medications(out, j, pid, subject_ref, encounter, c, start, end, stamp, year, contact.stated,
                          primary, running)

    def _diagnosis(self, entry: Coded, year: str) -> dict[str, Any]:
        """ICD-10-GM coding; rare diseases carry their ORPHAcode alongside."""
        key = ("diagnosis", entry.code, year)
        found = self.coding.get(key)
        if found is None:
            found = codeable(self.cat.systems["icd10gm"], entry.code, entry.display, year)
            if entry.orpha:
                found["coding"].append({"system": self.cat.systems["orpha"], "code": entry.orpha,
                                        "display": entry.orpha_display or entry.display})
            self.coding[key] = found
        return found

    def _observations(self, out: list[dict[str, Any]], i: int, j: int, e: int, pid: str, subject_ref: dict[str, str],
                      encounter: dict[str, str], c: int, start: int, stamp: Any, case_number: str,
                      exposures: list[Exposure]) -> None:
        t, cat, rand = self.t, self.cat, self.rand
        klass = cat.encounter_classes[c]
        if rand.random() * 100 >= klass.lab_order_pct:
            measured = []
        else:
            measured = [col for col, (u, p, b) in enumerate(zip(self.lab_u[e], self.lab_p[c], self.lab_boost[i]))
                        if u < p or u < b]
        if measured:
            sid = f"{pid}-s{j}"
            accession = "L" + case_number
            taken_minute = start + 15 + int(rand.random() * 45)
            taken = stamp(taken_minute)
            out.append({"resourceType": "Specimen", "id": sid, "meta": self.meta["Specimen"],
                        "accessionIdentifier": {"system": self.systems["lab-order"], "value": accession},
                        "status": "available",
                        "type": t.specimen_cc, "subject": subject_ref, "collection": {"collectedDateTime": taken}})
            specimen = {"reference": "Specimen/" + sid}
            ranges, flags, meta = t.reference_range[self.table[i]], self.lab_flag[e], self.meta["Observation"]
            for col in measured:
                value, flag = self.lab_values[col][e], flags[col]
                if exposures and t.planted.drug_lab:
                    factor = t.planted.lab_factor(exposures, col, taken_minute // 1440)
                    if factor != 1.0:
                        value, flag = self._scaled(col, value * factor, self.table[i])
                out.append({"resourceType": "Observation", "id": f"{pid}-l{j}-{col}", "meta": meta,
                            "identifier": [{"type": _RESULT_ID, "system": self.systems["lab-result"],
                                            "value": f"{accession}-{cat.labs[col].loinc}"}],
                            "status": "final", "category": t.lab_category, "code": t.lab_cc[col],
                            "subject": subject_ref, "encounter": encounter, "effectiveDateTime": taken,
                            "valueQuantity": self._quantity(value, self.lab_units[col]),
                            "interpretation": t.interpretation[flag], "referenceRange": ranges[col],
                            "specimen": specimen})
        vitals = cat.vital_signs
        when = stamp(start + 5 + int(rand.random() * 20))
        found: list[tuple[str, dict[str, Any]]] = []
        if rand.random() * 100 < klass.vitals_pct:
            rate = self._quantity(self.heart_rate[e], vitals["heart_rate"].unit)
            found.append(("heart_rate", {"valueQuantity": rate}))
            unit = vitals["systolic"].unit
            found.append(("blood_pressure", {"component": [
                {"code": t.vitals["systolic"], "valueQuantity": self._quantity(self.systolic[e], unit)},
                {"code": t.vitals["diastolic"], "valueQuantity": self._quantity(self.diastolic[e], unit)}]}))
        if rand.random() * 100 < klass.anthropometry_pct:
            found += [("body_height", {"valueQuantity": self._quantity(self.height[e], vitals["body_height"].unit)}),
                      ("body_weight", {"valueQuantity": self._quantity(self.weight[e], vitals["body_weight"].unit)}),
                      ("bmi", {"valueQuantity": self._quantity(self.bmi[e], vitals["bmi"].unit)})]
        for kind, value in found:
            out.append({"resourceType": "Observation", "id": f"{pid}-v{j}-{kind.replace('_', '-')}",
                        "meta": self.vital_meta[kind], "status": "final", "category": t.vital_category,
                        "code": t.vitals[kind], "subject": subject_ref,
                        "encounter": encounter, "effectiveDateTime": when, **value})
        if e == self.offsets[i]:  # the patient's first regular contact
            out.append({"resourceType": "Observation", "id": f"{pid}-smoking", "meta": self.meta_source,
                        "status": "final", "category": t.social_category, "code": t.smoking_cc,
                        "subject": subject_ref, "encounter": encounter,
                        "effectiveDateTime": when, "valueCodeableConcept": t.smoking_values[self.smoke[i]]})

    def _scaled(self, col: int, value: float, table: int) -> tuple[float, int]:
        """A lab value changed by a planted effect: rounded and interpreted like the others."""
        lab = self.cat.labs[col]
        rounded = round(value, lab.decimals)
        low, high = self.lab_limits[table][col]
        flag = 1 if rounded > high else 2 if rounded < low else 0
        return (int(rounded) if lab.decimals == 0 else rounded), flag

    def _medications(self, out: list[dict[str, Any]], j: int, pid: str, subject_ref: dict[str, str],
                     encounter: dict[str, str], c: int, start: int, end: int, stamp: Any, year: str,
                     stated: list[tuple[int, int, Drug, int, int | None]], primary: tuple[str, int],
                     running: list[tuple[Drug, int, int | None]]) -> None:
        t, cat, rand = self.t, self.cat, self.rand
        days = calendar()[0]
        day = start // 1440
        # long-term medication, stated when the disease is first seen
        for d, m, drug, first, last in stated:
            running.append((drug, first, last))
            period = {"start": days[first]} if last is None else {"start": days[first], "end": days[last]}
            out.append({"resourceType": "MedicationStatement", "id": f"{pid}-ms{d}-{m}",
                        "meta": self.meta["MedicationStatement"],
                        "status": "active" if last is None or last > day else "completed",
                        "medicationCodeableConcept": self._coded("atc", drug.atc, drug.display, year),
                        "subject": subject_ref, "context": encounter,
                        "effectivePeriod": period, "dateAsserted": stamp(start),
                        "dosage": [{"timing": _DAILY, "route": t.routes[drug.route],
                                    "doseAndRate": [{"doseQuantity": self._quantity(drug.dose, drug.unit)}]}]})
        # administrations: single doses for the primary disease, continued and ward drugs during a stay
        given: list[tuple[Drug, bool]] = []
        if c == self.inpatient:
            if primary[0] == "d":
                given += [(drug, True) for drug in cat.diseases[primary[1]].acute_medications
                          if rand.random() * 100 < drug.pct]
            given += [(drug, False) for drug, first, last in running
                      if first <= day and (last is None or last >= day)
                      and rand.random() * 100 < cat.rules.continued_medication_pct]
            given += [(drug, False) for drug in cat.inpatient_medications if rand.random() * 100 < drug.pct]
        for m, (drug, single) in enumerate(given):
            begin = start + 30 + int(rand.random() * 120)
            effective = ({"effectiveDateTime": stamp(begin)} if single
                         else {"effectivePeriod": {"start": stamp(begin), "end": stamp(max(begin + 60, end - 120))}})
            out.append({"resourceType": "MedicationAdministration", "id": f"{pid}-ma{j}-{m}",
                        "meta": self.meta["MedicationAdministration"], "status": "completed",
                        "medicationCodeableConcept": self._coded("atc", drug.atc, drug.display, year),
                        "subject": subject_ref, "context": encounter, **effective,
                        "dosage": {"route": t.routes[drug.route], "dose": self._quantity(drug.dose, drug.unit)}})


@dataclass(frozen=True, slots=True)
class _Contact:
    """One encounter of a patient as the timeline placed it."""

    j: int  # position in the patient's timeline
    draws: int | None  # row of the block's per-encounter draws; None for an acute event's contact
    klass: int
    start: int  # minutes
    end: int
    event: int | None  # the acute event this contact is for
    event_day: int
    incident: list[int]  # diseases first seen here
    stated: list[tuple[int, int, Drug, int, int | None]]  # long-term medications stated here
    death_minute: int | None


_VISIT_NUMBER = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "VN"}]}
_RESULT_ID = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "OBI"}]}


_DAILY = {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}}


# ------------------------------------------------------------------ files
def write_ndjson(out_dir: Path, patients: int, seed: int, *, site: str = "site-a",
                 years: tuple[int, int] = (2015, 2025), gzip: bool = False) -> dict[str, int]:
    """Write a Bulk-export style folder (`Patient.ndjson`, ... or `.ndjson.gz`); counts per type.

    Medical data only (no identifying data); `dic synth` writes the HIS export with it.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = NdjsonFiles(out_dir, gzip)
    try:
        for draw in patient_draws(patients, seed, site=site, years=years):
            for resource in draw.resources:
                files.write(resource)
    finally:
        counts = files.close()
    return counts

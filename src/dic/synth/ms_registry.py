"""The multiple sclerosis registry: a research source written from each MS patient's HIS record.

    MsRegistryWriter(folder, context)   the SourceWriter "ms-registry": five CSV files
    planted_effects()                   what the registry plants, exactly defined, for truth/effects.json
    load_registry()                     the declarations (`ms_registry.yaml`), validated

Who: patients with an ICD-10-GM G35 Condition; a declared share is enrolled. The course comes from
the first MS Condition's code, the first therapy from the HIS's earliest MedicationStatement of an
MS substance (else drawn). From enrolment to the end of follow-up, a small continuous-time model
runs per patient: progression events, relapses and new lesions are Poisson processes whose rates
are a rate per course times a ratio for the therapy class at the time; therapy switches are drawn
at a rate per class and take effect at the next visit. Visits every ~6 months read the latent EDSS with rating errors; MRIs count
the lesions since the previous scan. Days are proleptic ordinals (`date.toordinal`), times floats.
"""

from __future__ import annotations

import bisect
import csv
import random
from dataclasses import dataclass
from datetime import date
from functools import cache
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from dic.errors import Problem
from dic.synth.declarations import load_declarations
from dic.synth.site_patient import SiteContext, SitePatient

REGISTRY_PATH = Path(__file__).with_name("ms_registry.yaml")
YEAR_DAYS = 365.25
ICD_SYSTEM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
ATC_SYSTEM = "http://fhir.de/CodeSystem/bfarm/atc"
UNTREATED = "untreated"
# The EDSS scale has no 0.5: index 0 is 0.0, index i >= 1 is (i + 1) / 2, up to 9.5 at index 18.
EDSS_SCALE = (0.0, *((i + 1) / 2 for i in range(1, 19)))
_TOP = len(EDSS_SCALE) - 1
_EDSS_TEXT = [f"{x:.1f}" for x in EDSS_SCALE]
_ROW_WIDTH = {"patients.csv": 11, "visits.csv": 5, "relapses.csv": 6, "mri.csv": 5, "therapies.csv": 7}


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Course(_Entry):
    id: Literal["RRMS", "SPMS", "PPMS"]
    icd_prefixes: list[str]
    default: bool = False
    cdp_per_year: float
    relapses_per_year: float
    lesions_per_year: float
    baseline_edss: dict[float, float]
    first_therapy: dict[str, float]


class TherapyClass(_Entry):
    id: str
    rank: int
    cdp_hazard_ratio: float
    relapse_rate_ratio: float
    lesion_rate_ratio: float
    switch_per_year: float
    next: dict[str, float]


class Substance(_Entry):
    atc: str
    name: str
    therapy_class: str


class Pregnancy(_Entry):
    sex: str
    age_years: tuple[float, float]
    otherwise: str


class Visits(_Entry):
    interval_days: int
    jitter_days: int
    missed_pct: float
    edss_up_pct: float
    edss_down_pct: float
    confirmation_days: int


class Mri(_Entry):
    every_visits: int
    pct: float
    gd_window_days: int


class Relapses(_Entry):
    severity: dict[str, float]
    steroid_pct: dict[str, float]
    incomplete_recovery_pct: dict[str, float]


Direction = Literal["escalation", "lateral", "de-escalation", "discontinuation"]


class Registry(_Entry):
    icd_prefix: str
    enrolled_pct: float
    id_prefix: str
    reference_class: str
    courses: list[Course]
    classes: list[TherapyClass]
    substances: list[Substance]
    stop_reasons: list[str]
    stop_reason_weights: dict[Direction, dict[str, float]]
    pregnancy_planning: Pregnancy
    death_stop_reason: str
    visits: Visits
    mri: Mri
    relapses: Relapses
    sex_codes: dict[str, str]
    columns: dict[Literal["patients.csv", "visits.csv", "relapses.csv", "mri.csv", "therapies.csv"], list[str]]

    def problems(self) -> list[Problem]:
        """Cross-references the schema cannot see."""
        classes, atcs = {c.id for c in self.classes}, {s.atc for s in self.substances}
        found = [Problem(f"/substances/{n}/therapy_class", f"unknown class {s.therapy_class}")
                 for n, s in enumerate(self.substances) if s.therapy_class not in classes]
        targets = [(f"/courses/{n}/first_therapy", c.first_therapy) for n, c in enumerate(self.courses)]
        targets += [(f"/classes/{n}/next", c.next) for n, c in enumerate(self.classes)]
        found += [Problem(f"{where}/{key}", "neither a substance ATC nor 'untreated'")
                  for where, weights in targets for key in weights if key not in atcs | {UNTREATED}]
        found += [Problem(f"/courses/{n}/baseline_edss/{x}", "not on the EDSS scale, or below 1.0")
                  for n, c in enumerate(self.courses) for x in c.baseline_edss if x not in EDSS_SCALE[1:]]
        reasons = {*self.stop_reasons}
        found += [Problem(f"/stop_reason_weights/{d}/{r}", "not in /stop_reasons")
                  for d, weights in self.stop_reason_weights.items() for r in weights if r not in reasons]
        found += [Problem(f"/{key}", f"{value!r} not in /stop_reasons") for key, value in
                  (("pregnancy_planning/otherwise", self.pregnancy_planning.otherwise),
                   ("death_stop_reason", self.death_stop_reason)) if value not in reasons]
        if UNTREATED not in classes or self.reference_class not in classes:
            found.append(Problem("/classes", f"needs '{UNTREATED}' and the reference class"))
        if sum(c.default for c in self.courses) != 1:
            found.append(Problem("/courses", "exactly one course needs default: true"))
        if len(self.stop_reason_weights) != 4 or len(self.columns) != 5:
            found.append(Problem("/", "needs all four stop_reason_weights and all five column lists"))
        found += [Problem(f"/columns/{file}", f"the writer fills {width} columns, in the published order")
                  for file, width in _ROW_WIDTH.items() if len(self.columns.get(file, ())) != width]
        return found


@cache
def load_registry(path: Path = REGISTRY_PATH) -> Registry:
    """The registry's declarations, validated; every problem is reported at once (DefinitionError)."""
    return load_declarations(path, Registry)


def _weights(table: dict[Any, float]) -> tuple[list[Any], list[float]]:
    return list(table), list(accumulate(table.values()))


class _Tables:
    """Lookups derived once from the declarations."""

    def __init__(self, reg: Registry):
        self.reg = reg
        self.klass = {c.id: c for c in reg.classes}
        self.substance = {s.atc: s for s in reg.substances}
        self.class_of = {s.atc: self.klass[s.therapy_class] for s in reg.substances} | {
            UNTREATED: self.klass[UNTREATED]}
        self.default = next(c for c in reg.courses if c.default)
        self.first = {c.id: _weights(c.first_therapy) for c in reg.courses}
        self.baseline = {c.id: _weights({EDSS_SCALE.index(x): w for x, w in c.baseline_edss.items()})
                         for c in reg.courses}
        self.next = {c.id: c.next for c in reg.classes}
        self.reasons = {d: _weights(w) for d, w in reg.stop_reason_weights.items()}
        self.severity = _weights(reg.relapses.severity)


@cache
def _tables() -> _Tables:
    return _Tables(load_registry())


def _pick(rand: random.Random, table: tuple[list[Any], list[float]]) -> Any:
    keys, cum = table
    return keys[bisect.bisect(cum, rand.random() * cum[-1])]


def _day(text: str) -> int:
    return date.fromisoformat(text[:10]).toordinal()


def _iso(day: int) -> str:
    return date.fromordinal(day).isoformat()


def _code(concept: dict[str, Any] | None, system: str) -> str | None:
    """The code of `system` in a CodeableConcept (the HIS may add other codings beside it)."""
    for coding in (concept or {}).get("coding", ()):
        if coding.get("system") == system:
            return coding.get("code")
    return None


@dataclass(slots=True)
class MsFacts:
    """What the registry takes from one person's HIS record."""

    icd: str  # code of the first MS Condition
    diagnosis: int  # its onset (or recorded) day
    first_recorded: int  # the first day an MS Condition was recorded
    gender: str | None
    birth: int | None
    death: int | None
    therapy: tuple[str, int, int | None] | None  # earliest MS MedicationStatement: ATC, start, end


def _may_have_ms(resources: list[dict[str, Any]], icd_prefix: str) -> bool:
    """A fast first look (every patient passes here; few have MS): any Condition code with the prefix."""
    for r in resources:
        if r["resourceType"] == "Condition":
            for coding in r.get("code", {}).get("coding", ()):
                if coding.get("code", "").startswith(icd_prefix):
                    return True
    return False


def ms_facts(resources: list[dict[str, Any]], icd_prefix: str, atcs: dict[str, Any]) -> MsFacts | None:
    """The MS facts of a HIS record, or None without an MS Condition (the cheap common case)."""
    if not _may_have_ms(resources, icd_prefix):
        return None
    first: tuple[int, str] | None = None
    recorded: int | None = None
    therapy: tuple[int, int, str, int | None] | None = None  # start, declared order, ATC, end
    for r in resources:
        kind = r["resourceType"]
        if kind == "Condition":
            icd = _code(r.get("code"), ICD_SYSTEM)
            if icd is None or not icd.startswith(icd_prefix):
                continue
            when = r.get("recordedDate") or r.get("onsetDateTime")
            if when is None:
                continue
            seen = _day(when)
            onset = _day(r["onsetDateTime"]) if r.get("onsetDateTime") else seen
            recorded = seen if recorded is None else min(recorded, seen)
            if first is None or onset < first[0]:
                first = (onset, icd)
        elif kind == "MedicationStatement":
            atc = _code(r.get("medicationCodeableConcept"), ATC_SYSTEM)
            period = r.get("effectivePeriod") or {}
            if atc in atcs and period.get("start"):
                end = _day(period["end"]) if period.get("end") else None
                key = (_day(period["start"]), atcs[atc], atc, end)
                therapy = key if therapy is None or key[:2] < therapy[:2] else therapy
    if first is None or recorded is None:
        return None
    patient = resources[0]
    return MsFacts(icd=first[1], diagnosis=first[0], first_recorded=recorded, gender=patient.get("gender"),
                   birth=_day(patient["birthDate"]) if patient.get("birthDate") else None,
                   death=_day(patient["deceasedDateTime"]) if patient.get("deceasedDateTime") else None,
                   therapy=None if therapy is None else (therapy[2], therapy[0], therapy[3]))


class MsRegistryWriter:
    """The MS registry's CSV export of one site (see the module docstring and `ms_registry.yaml`)."""

    name = "ms-registry"

    def __init__(self, folder: Path, context: SiteContext):
        self.t = _tables()
        self.reg = self.t.reg
        self.context = context
        self.rand = random.Random(f"{context.seed}:{context.site}:{self.name}")
        self.letter = context.site.rsplit("-", 1)[-1].upper()
        self.window = (date(context.years[0], 1, 1).toordinal(), date(context.years[1], 12, 31).toordinal())
        self.order = {s.atc: n for n, s in enumerate(self.reg.substances)}
        self.handles = {file: (Path(folder) / file).open("w", encoding="utf-8", newline="", buffering=1 << 20)
                        for file in self.reg.columns}
        self.out = {file: csv.writer(h, delimiter=";", lineterminator="\n") for file, h in self.handles.items()}
        self.counts = dict.fromkeys(self.reg.columns, 0)
        for file, columns in self.reg.columns.items():
            self.out[file].writerow(columns)

    def _write(self, file: str, row: list[Any]) -> None:
        self.out[file].writerow(row)
        self.counts[file] += 1

    def close(self) -> dict[str, int]:
        for handle in self.handles.values():
            handle.close()
        return dict(self.counts)

    def add(self, patient: SitePatient) -> None:
        facts = ms_facts(patient.resources, self.reg.icd_prefix, self.order)
        if facts is None:
            return
        start, end = self.window
        t0 = facts.diagnosis if facts.diagnosis >= start else max(start, facts.first_recorded)
        t1 = end if facts.death is None else min(end, facts.death)
        if t0 >= t1 or self.rand.random() * 100 >= self.reg.enrolled_pct:
            return
        course = next((c for c in self.reg.courses if facts.icd.startswith(tuple(c.icd_prefixes))), self.t.default)
        rid = f"{self.reg.id_prefix}-{self.letter}-{self.counts['patients.csv'] + 1:06d}"
        who = patient.identity(self.name)
        self._write("patients.csv", [
            rid, who.given or "", who.family or "", who.birth_date or "", self.reg.sex_codes.get(who.sex or "", ""),
            who.postal_code or "", who.city or "", _iso(facts.diagnosis), course.id, _iso(t0),
            "" if facts.death is None else _iso(facts.death)])
        self.context.link(self.name, rid, patient.person_id)
        visits = self._schedule(t0, t1)
        therapies = self._therapies(rid, facts, course, t0, t1, [day for day, _ in visits])
        # (from, to, class): the therapy class over follow-up
        pieces = [(max(s, t0), min(e, t1), self.t.class_of[atc]) for atc, s, e in therapies if e > t0 and s < t1]
        self._visits(rid, course, visits, pieces)
        self._relapses(rid, course, pieces, visits[-1][0])

    # -------------------------------------------------------------- the model
    def _events(self, per_year: float, ratio: str, pieces: list[tuple[int, int, TherapyClass]],
                until: float) -> list[float]:
        """Times of a Poisson process whose rate is per_year x the class's `ratio`, up to `until`."""
        found, expo = [], self.rand.expovariate
        for a, b, klass in pieces:
            rate = per_year * getattr(klass, ratio) / YEAR_DAYS
            if rate <= 0 or a >= until:
                continue
            t, stop = a + expo(rate), min(b, until)
            while t < stop:
                found.append(t)
                t += expo(rate)
        return found

    def _schedule(self, t0: int, t1: int) -> list[tuple[int, int]]:
        """Visit days from enrolment to the end of follow-up, as (day, scheduled number); some missed."""
        rand, plan = self.rand, self.reg.visits
        visits, day, scheduled = [(t0, 0)], t0, 0
        while True:
            day += plan.interval_days + rand.randint(-plan.jitter_days, plan.jitter_days)
            if day > t1:
                return visits
            scheduled += 1
            if rand.random() * 100 >= plan.missed_pct:
                visits.append((day, scheduled))

    def _therapies(self, rid: str, facts: MsFacts, course: Course, t0: int, t1: int,
                   visits: list[int]) -> list[tuple[str, int, int]]:
        """Write the therapy rows; return the timeline (ATC or untreated, from, to) up to follow-up end.

        Drawn changes take effect at the next visit (decisions are made there), so within a visit
        interval the class is constant and a progression seen at a visit belongs to the interval before it.
        """
        rand, t, reg = self.rand, self.t, self.reg
        timeline: list[tuple[str, int, int]] = []
        if facts.therapy is not None and facts.therapy[1] < t1:
            atc, begin, stop = facts.therapy  # the HIS's first therapy: its own stop, or running on
            stop, fixed = None if stop is None else max(stop, begin + 1), True
            if begin > t0:
                timeline.append((UNTREATED, t0, begin))
        else:
            atc, begin, stop, fixed = _pick(rand, t.first[course.id]), t0, None, False
        number = 0
        while True:
            klass = t.class_of[atc]
            if not fixed:
                stop = begin + max(1, int(rand.expovariate(klass.switch_per_year) * YEAR_DAYS))
                if stop > t0:
                    k = bisect.bisect_left(visits, stop)
                    stop = visits[k] if k < len(visits) else stop
            if stop is None or stop >= t1:
                timeline.append((atc, begin, t1))
                if atc != UNTREATED:
                    number += 1
                    died = facts.death is not None and facts.death <= t1
                    self._therapy_row(rid, number, atc, begin, t1 if died else None,
                                      reg.death_stop_reason if died else "")
                return timeline
            following = _pick(rand, _weights({k: w for k, w in t.next[klass.id].items() if k != atc}))
            timeline.append((atc, begin, stop))
            if atc != UNTREATED:
                number += 1
                self._therapy_row(rid, number, atc, begin, stop, self._stop_reason(facts, klass, following, stop))
            atc, begin, stop, fixed = following, stop, None, False

    def _stop_reason(self, facts: MsFacts, klass: TherapyClass, following: str, day: int) -> str:
        rank = self.t.class_of[following].rank
        direction = ("discontinuation" if following == UNTREATED else "escalation" if rank > klass.rank
                     else "lateral" if rank == klass.rank else "de-escalation")
        reason = _pick(self.rand, self.t.reasons[direction])
        rule = self.reg.pregnancy_planning
        if reason == "pregnancy planning":
            age = None if facts.birth is None else (day - facts.birth) / YEAR_DAYS
            if facts.gender != rule.sex or age is None or not rule.age_years[0] <= age <= rule.age_years[1]:
                return rule.otherwise
        return reason

    def _therapy_row(self, rid: str, number: int, atc: str, begin: int, stop: int | None, reason: str) -> None:
        self._write("therapies.csv", [f"{rid}-T{number:02d}", rid, self.t.substance[atc].name, atc, _iso(begin),
                                      "" if stop is None else _iso(stop), reason])

    def _visits(self, rid: str, course: Course, visits: list[tuple[int, int]],
                pieces: list[tuple[int, int, TherapyClass]]) -> None:
        """Write the visits (the latent EDSS as rated) and the MRIs done at them."""
        rand, plan, mri, last = self.rand, self.reg.visits, self.reg.mri, visits[-1][0]
        progression = self._events(course.cdp_per_year, "cdp_hazard_ratio", pieces, last)
        first, *rest = pieces  # lesions from before enrolment too: the baseline scan's Gd+ lesions
        lesions = self._events(course.lesions_per_year, "lesion_rate_ratio",
                               [(first[0] - mri.gd_window_days, *first[1:]), *rest], last)
        baseline = _pick(rand, self.t.baseline[course.id])
        down, up = plan.edss_down_pct, plan.edss_down_pct + plan.edss_up_pct
        previous_mri: int | None = None
        scans = 0
        for n, (day, number) in enumerate(visits):
            level = min(_TOP, baseline + 2 * bisect.bisect_left(progression, day))  # +1.0 per event
            if n:
                u = rand.random() * 100
                level = max(0, level - 1) if u < down else min(_TOP, level + 1) if u < up else level
            self._write("visits.csv", [f"{rid}-V{n + 1:02d}", rid, _iso(day), "follow-up" if n else "baseline",
                                       _EDSS_TEXT[level]])
            if number % mri.every_visits == 0 and rand.random() * 100 < mri.pct:
                upto = bisect.bisect_left(lesions, day)
                new = "" if previous_mri is None else upto - bisect.bisect_left(lesions, previous_mri)
                gd = upto - bisect.bisect_left(lesions, day - mri.gd_window_days)
                scans += 1
                self._write("mri.csv", [f"{rid}-M{scans:02d}", rid, _iso(day), new, gd])
                previous_mri = day

    def _relapses(self, rid: str, course: Course, pieces: list[tuple[int, int, TherapyClass]], last: int) -> None:
        rand, plan = self.rand, self.reg.relapses
        for n, t in enumerate(self._events(course.relapses_per_year, "relapse_rate_ratio", pieces, last)):
            severity = _pick(rand, self.t.severity)
            steroid = rand.random() * 100 < plan.steroid_pct[severity]
            incomplete = rand.random() * 100 < plan.incomplete_recovery_pct[severity]
            self._write("relapses.csv", [f"{rid}-R{n + 1:02d}", rid, _iso(int(t)), severity,
                                         "yes" if steroid else "no", "incomplete" if incomplete else "complete"])


# ------------------------------------------------------------------ truth
def planted_effects() -> list[dict[str, Any]]:
    """The registry's planted effects with exact definitions and magnitudes (for truth/effects.json)."""
    reg, t = load_registry(), _tables()
    ref = reg.reference_class
    members = {c.id: [s.atc for s in reg.substances if s.therapy_class == c.id] for c in reg.classes}
    ratios = {field: {c.id: getattr(c, field) for c in reg.classes}
              for field in ("cdp_hazard_ratio", "relapse_rate_ratio", "lesion_rate_ratio")}
    courses = ", ".join(f"{'/'.join(c.icd_prefixes)}: {c.id}" for c in reg.courses) + f", else {t.default.id}"
    population = (f"Population: persons in the registry's patients.csv ({reg.enrolled_pct:g} % of the site's "
                  f"patients with an ICD-10-GM {reg.icd_prefix} Condition), by course, from the code of the first "
                  f"MS Condition ({courses}). ")
    exposure = ("Exposure: the therapy class at the time, from therapies.csv: a row covers [start_date, "
                "stop_date) (an empty stop_date runs on), its ATC gives the class ("
                + "; ".join(f"{k}: {', '.join(v)}" for k, v in members.items() if v)
                + f"); a day no row covers is {UNTREATED}. The first therapy is the HIS's (its dates) or drawn "
                "at enrolment; later changes are drawn at rates per class ("
                + ", ".join(f"{c.id} {c.switch_per_year:g}" for c in reg.classes) + " per year) and take effect "
                "at the next visit, independently of relapses and progression (no confounding by indication). "
                f"Reference class: {ref}. ")
    follow_up = ("Time origin: enrolment_date (the baseline visit). Visits come every "
                 f"{reg.visits.interval_days} +- {reg.visits.jitter_days} days ({reg.visits.missed_pct:g} % missed) "
                 "until the window end or death_date. ")
    rates = {c.id: {"cdp_per_year": c.cdp_per_year, "relapses_per_year": c.relapses_per_year,
                    "lesions_per_year": c.lesions_per_year} for c in reg.courses}
    common = {"source": "ms-registry", "reference_class": ref, "therapy_classes": members}
    slopes = {c.id: {k.id: round(c.cdp_per_year * k.cdp_hazard_ratio, 6) for k in reg.classes} for c in reg.courses}
    return [
        {"id": "ms-registry:cdp-by-therapy-class", "kind": "time-to-event", **common,
         "definition": population + exposure + follow_up + (
             "Model: latent progression events form a Poisson process with rate cdp_per_year[course] x "
             "hazard_ratio[class at the time] per person-year (an exponential hazard, piecewise constant in the "
             "class); each raises the latent EDSS by 1.0 (capped at 9.5), and nothing else moves it. Baseline "
             "EDSS is 1.0 or more, and the baseline rating is exact; follow-up ratings are one scale step too "
             f"high ({reg.visits.edss_up_pct:g} %) or too low ({reg.visits.edss_down_pct:g} %). Outcome: "
             "6-month confirmed disability progression (CDP) in visits.csv: the first follow-up visit whose EDSS "
             "is >= baseline + 1.0 (>= + 1.5 if the baseline is 0, >= + 0.5 if it is 5.5 or more) where every "
             f"visit up to and including the first visit >= {reg.visits.confirmation_days} days later meets the "
             "same threshold; the event date is that first visit's date. Censoring: the last visit that has a "
             f"visit >= {reg.visits.confirmation_days} days after it. Estimator: events per person-year, an "
             "event counting for the class on the day before its visit (the interval in which it happened), "
             f"person-time split by class; the Mantel-Haenszel rate ratio against {ref}, stratified by course, "
             "estimates the hazard ratio. Rating errors and confirmation delays pull it about 5 % towards 1."),
         "magnitude": {"hazard_ratio": ratios["cdp_hazard_ratio"],
                       "cdp_per_year_on_reference": {c: r["cdp_per_year"] for c, r in rates.items()}}},
        {"id": "ms-registry:edss-slope", "kind": "trajectory-slope", **common,
         "definition": population + exposure + follow_up + (
             "Model: the latent EDSS rises only by progression events (+1.0 each, capped at 9.5; see "
             "ms-registry:cdp-by-therapy-class), so its expected change per person-year for a course on a class "
             "is cdp_per_year[course] x hazard_ratio[class]; follow-up rating errors are symmetric (zero mean "
             "between 1.5 and 9.0). Estimator: per course and class, the pooled annualised change "
             "sum(EDSS[v+1] - EDSS[v]) / sum(years from v to v+1) over consecutive visits v, v+1 of one person "
             "with the same class on the day of v and on the day before v+1; the cap at 9.5 makes it up to 5 % "
             "smaller for the progressive courses."),
         "magnitude": {"slope_edss_per_year": slopes}},
        {"id": "ms-registry:relapse-rate", "kind": "rate-ratio", **common,
         "definition": population + exposure + follow_up + (
             "Model: relapses form a Poisson process with rate relapses_per_year[course] x rate_ratio[class at "
             "the time] per person-year; relapses.csv holds those from enrolment to the last visit (onset_date). "
             "Estimator: relapses per person-year by class at onset, person-time from enrolment to the last "
             f"visit split by class; the Mantel-Haenszel rate ratio against {ref}, stratified by course, "
             "estimates rate_ratio (the annualised relapse rate of a course on a class is relapses_per_year x "
             "rate_ratio)."),
         "magnitude": {"rate_ratio": ratios["relapse_rate_ratio"],
                       "relapses_per_year_on_reference": {c: r["relapses_per_year"] for c, r in rates.items()}}},
        {"id": "ms-registry:mri-activity", "kind": "rate-ratio", **common,
         "definition": population + exposure + follow_up + (
             "Model: new or enlarging T2 lesions form a Poisson process with rate lesions_per_year[course] x "
             "rate_ratio[class at the time] per person-year. MRIs come at the baseline visit and every "
             f"{reg.mri.every_visits}nd scheduled visit ({reg.mri.pct:g} % done); new_enlarging_t2 counts the "
             "lesions since the previous MRI (empty at the first), gd_enhancing those of the last "
             f"{reg.mri.gd_window_days} days. Estimator: sum(new_enlarging_t2) / sum(years since the previous "
             "MRI) per course and class, over consecutive MRIs with the same class on the day of the first and "
             "on the day before the second; their Mantel-Haenszel ratio against the reference class."),
         "magnitude": {"rate_ratio": ratios["lesion_rate_ratio"],
                       "lesions_per_year_on_reference": {c: r["lesions_per_year"] for c, r in rates.items()}}},
    ]

"""What the population generator derives once from its catalog: the calendar (ISO days, the
Berlin UTC offset of each day, times of day), probabilities as arrays and codings as shared
dicts. `tables_for(catalog)` builds them once per catalog object."""

from __future__ import annotations

import bisect
import random
from datetime import date, timedelta
from functools import cache
from itertools import accumulate
from typing import Any

import numpy as np

from dic.synth.catalog import Catalog, Lab, load_catalog
from dic.synth.planted import PlantedEffects, day_number

FIRST_YEAR, LAST_YEAR = 1900, 2080  # calendar table bounds (consent periods reach decades ahead)


@cache
def calendar() -> tuple[list[str], list[str], list[str]]:
    """ISO day strings, the Berlin UTC offset of each day (EU summer time rule), times of day."""
    first = date(FIRST_YEAR, 1, 1)
    days = [(first + timedelta(d)).isoformat() for d in range((date(LAST_YEAR, 1, 1) - first).days)]
    offsets = []
    for year in range(FIRST_YEAR, LAST_YEAR):
        march, october = date(year, 3, 31), date(year, 10, 31)
        summer_from = march - timedelta((march.weekday() + 1) % 7)
        summer_to = october - timedelta((october.weekday() + 1) % 7)
        length = (date(year + 1, 1, 1) - date(year, 1, 1)).days
        offsets += ["+02:00" if summer_from <= date(year, 1, 1) + timedelta(d) < summer_to else "+01:00"
                    for d in range(length)]
    times = [f"T{m // 60:02d}:{m % 60:02d}:00" for m in range(1440)]
    return days, offsets, times


def calendar_day(day: int) -> str:
    """The ISO date of a calendar day number (as in Demographics)."""
    return calendar()[0][day]


def day_number_of(year: int, month: int = 1, day: int = 1) -> int:
    return (date(year, month, day) - date(FIRST_YEAR, 1, 1)).days


def codeable(system: str, code: str, display: str, version: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "version": version, "code": code, "display": display}
    return {"coding": [{k: v for k, v in coding.items() if v is not None}]}


def cumulative(weights: list[float]) -> list[float]:
    return list(accumulate(weights))


class Tables:
    """Everything derived once from the catalog: probabilities as arrays, codings as shared dicts."""

    def __init__(self, cat: Catalog):
        s, pop = cat.systems, cat.population
        self.cat = cat
        self.sex_p = np.array([x.weight for x in pop.sexes]) / sum(x.weight for x in pop.sexes)
        self.sex_table = np.array([0 if x.table == "female" else 1 for x in pop.sexes])
        self.genders = [x.gender for x in pop.sexes]
        bands = pop.age_bands
        self.band_p = np.array([b.weight for b in bands]) / sum(b.weight for b in bands)
        self.band_low = np.array([b.low for b in bands])
        self.band_span = np.array([b.high - b.low for b in bands])
        self.death_p = np.array([b.death_pct / 100 for b in bands])
        # diseases
        ids = [d.id for d in cat.diseases]
        self.prevalence = [np.array([d.prevalence_pct["female"], d.prevalence_pct["male"]]) / 100
                           for d in cat.diseases]
        self.risk = [list(d.risk_factors.items()) for d in cat.diseases]
        self.disease_index = {d: n for n, d in enumerate(ids)}
        self.variant_ids = [v.id for v in cat.variants]
        self.allele_frequency = np.array([v.allele_frequency for v in cat.variants])
        self.recessive = [v.model == "recessive" for v in cat.variants]
        self.planted = PlantedEffects(cat, day_number(FIRST_YEAR))
        self.min_age = np.array([d.min_age for d in cat.diseases])
        self.extra_encounters = np.array([d.extra_encounters for d in cat.diseases])
        self.icd_cum = [cumulative([c.weight for c in d.icd]) for d in cat.diseases]
        # encounters
        classes = cat.encounter_classes
        self.class_codes = [c.code for c in classes]
        self.event_class = [self.class_codes.index(e.class_) for e in cat.events]
        self.class_p = np.array([c.weight for c in classes]) / sum(c.weight for c in classes)
        self.class_cc = [{"system": s["act_code"], "code": c.code, "display": c.display} for c in classes]
        self.contact_types = [[codeable(s["contact_level"], "einrichtungskontakt", "Einrichtungskontakt"),
                               codeable(s["contact_type"], c.contact_type.code, c.contact_type.display)] for c in classes]
        self.admit = [(list(c.admit_sources), cumulative(list(c.admit_sources.values()))) for c in classes]
        self.discharge = [(list(c.discharge), cumulative(list(c.discharge.values()))) for c in classes]
        self.admit_cc = {k: codeable(s["admit_source"], k, v) for k, v in cat.admit_sources.items()}
        self.discharge_cc = {k: codeable(s["discharge_disposition"], k, v) for k, v in cat.discharge_dispositions.items()}
        self.department_cc = {k: codeable(s["department"], k, v) for k, v in cat.departments.items()}
        self.reasons = [[r for r in cat.encounter_reasons if c.code in r.classes] for c in classes]
        self.reason_cum = [cumulative([r.weight for r in rs]) for rs in self.reasons]
        self.class_procedures = [[p for p in cat.class_procedures if c.code in p.classes] for c in classes]
        self.use = {k: codeable(s["diagnosis_role"], v.code, v.display) for k, v in cat.diagnosis_use.items()}
        self.clinical = {k: codeable(s["condition_clinical"], k, k.capitalize()) for k in ("active", "resolved")}
        self.verification = {k: codeable(s["condition_verification"], k, k.capitalize())
                             for k in ("confirmed", "provisional")}
        self.routes = {k: codeable(s["snomed"], v.code, v.display) for k, v in cat.routes.items()}
        # observations
        labs = cat.labs
        self.lab_cc = [codeable(s["loinc"], lab.loinc, lab.display) for lab in labs]
        self.lab_category = [
            {"coding": [{"system": s["observation_category"], "code": "laboratory", "display": "Laboratory"},
                        {"system": s["loinc"], "code": "26436-6", "display": "Laboratory studies (set)"}]}]
        self.vital_category = [codeable(s["observation_category"], "vital-signs", "Vital Signs")]
        self.social_category = [codeable(s["observation_category"], "social-history", "Social History")]
        self.interpretation = [[codeable(s["interpretation"], c, d)] for c, d in (("N", "Normal"), ("H", "High"),
                                                                           ("L", "Low"))]
        self.reference_range = [[self._range(lab, t) for lab in labs] for t in ("female", "male")]
        self.vitals = {k: codeable(s["loinc"], v.loinc, v.display) for k, v in cat.vital_signs.items()}
        self.smoking_cc = codeable(s["loinc"], cat.smoking.loinc, cat.smoking.display)
        self.smoking_values = [codeable(s["snomed"], v.code, v.display) for v in cat.smoking.values]
        self.smoking_p = [np.array([getattr(v, t) for v in cat.smoking.values]) for t in ("female", "male")]
        self.specimen_cc = codeable(s["snomed"], cat.specimen.code, cat.specimen.display)
        self.consent_codes = {m.name: [codeable(s["consent_policy"], c.code, c.display) for c in m.codes]
                              for m in cat.consent.modules}
        self.consent_scope = codeable(s["consent_scope"], "research", "Research")
        self.consent_category = [codeable(s["loinc"], "57016-8", "Privacy policy acknowledgment Document"),
                                 codeable(s["consent_category"], "2.16.840.1.113883.3.1937.777.24.2.184",
                                     "MII Broad Consent")]

    def _range(self, lab: Lab, table: str) -> list[dict[str, Any]]:
        low, high = lab.limits(table)
        ucum = self.cat.systems["ucum"]
        return [{"low": {"value": low, "unit": lab.unit, "system": ucum, "code": lab.unit},
                 "high": {"value": high, "unit": lab.unit, "system": ucum, "code": lab.unit}}]


_TABLES: dict[int, tuple[Catalog, Tables]] = {}


def tables_for(catalog: Catalog | None = None) -> Tables:
    """Tables per catalog object (tests pass modified catalogs; the default one is built once)."""
    catalog = catalog or load_catalog()
    found = _TABLES.get(id(catalog))
    if found is None or found[0] is not catalog:
        found = _TABLES[id(catalog)] = (catalog, Tables(catalog))
    return found[1]




def pick(rand: random.Random, cum: list[float]) -> int:
    return bisect.bisect(cum, rand.random() * cum[-1])

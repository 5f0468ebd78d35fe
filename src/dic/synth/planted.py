"""The planted effects of the test world as the generator uses them: per-day event rates,
adverse drug effects, drug-lab effects, prodromes and a complication cluster.

The declarations are in `catalog.yaml` (events, drug_effects, negative_controls,
drug_lab_effects, prodromes, complications); `effect_definitions` turns them into the exact
definitions that `dic synth` writes to truth/effects.json, and `PlantedEffects.events_of`
draws one patient's acute events. Days count from the generator's calendar start.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from dic.synth.catalog import Catalog

_YEAR_DAYS = 365.25


@dataclass(frozen=True, slots=True)
class Exposure:
    """A long-term medication as the HIS states it: drug code, first and last day (None: ongoing)."""

    atc: str
    first: int
    last: int | None


class PlantedEffects:
    """Lookup tables derived once from the catalog."""

    def __init__(self, cat: Catalog, day_of: Any):
        self.events = cat.events
        index = {e.id: n for n, e in enumerate(cat.events)}
        self.rate_per_day = np.array([e.per_1000_years / 1000 / _YEAR_DAYS for e in cat.events])
        self.drug_effects: dict[str, list[tuple[int, float, int]]] = {}
        for effect in cat.drug_effects:
            self.drug_effects.setdefault(effect.atc, []).append(
                (index[effect.event], effect.relative_risk, effect.window_days))
        lab_index = {lab.loinc: n for n, lab in enumerate(cat.labs)}
        self.drug_lab: dict[str, list[tuple[int, float, int]]] = {}
        for lab_effect in cat.drug_lab_effects:
            self.drug_lab.setdefault(lab_effect.atc, []).append(
                (lab_index[lab_effect.loinc], lab_effect.factor, lab_effect.window_days))
        disease_index = {d.id: n for n, d in enumerate(cat.diseases)}
        self.prodromes: dict[int, list[tuple[int, float, float, float]]] = {}
        for p in cat.prodromes:
            self.prodromes.setdefault(disease_index[p.disease], []).append(
                (index[p.event], p.cases_pct / 100, p.lead_years[0], p.lead_years[1]))
        self.complications = [
            (index[c.event], c.base_pct / 100,
             None if c.cluster is None else (c.cluster.site, day_of(c.cluster.start), day_of(c.cluster.end),
                                             c.cluster.factor))
            for c in cat.complications]

    def background_counts(self, rng: np.random.Generator, observed_days: np.ndarray) -> np.ndarray:
        """Background event counts per patient (rows) and event (columns) over the observation time."""
        return rng.poisson(np.outer(observed_days, self.rate_per_day))

    def events_of(self, rand: random.Random, background: list[int], observed: tuple[int, int],
                  exposures: list[Exposure], incident_onsets: dict[int, int]) -> list[tuple[int, int]]:
        """One patient's acute events as (day, event index), sorted, all within the observation."""
        first, last = observed
        span = last - first + 1
        found = [(first + int(rand.random() * span), e) for e, count in enumerate(background) for _ in range(count)]
        for exposure in exposures:
            for e, relative_risk, window in self.drug_effects.get(exposure.atc, ()):
                low, high = max(first, exposure.first), min(last, exposure.first + window - 1)
                if high < low:
                    continue
                extra = (relative_risk - 1) * self.rate_per_day[e] * (high - low + 1)
                found += [(low + int(rand.random() * (high - low + 1)), e) for _ in range(_poisson(rand, extra))]
        for disease, onset in incident_onsets.items():
            for e, p, lead_low, lead_high in self.prodromes.get(disease, ()):
                if rand.random() < p:
                    day = onset - int((lead_low + rand.random() * (lead_high - lead_low)) * _YEAR_DAYS)
                    if first <= day <= last:
                        found.append((day, e))
        found.sort()
        return found

    def lab_factor(self, exposures: list[Exposure], lab: int, day: int) -> float:
        factor = 1.0
        for exposure in exposures:
            for col, f, window in self.drug_lab.get(exposure.atc, ()):
                if col == lab and exposure.first <= day < exposure.first + window:
                    factor *= f
        return factor

    def complication_probability(self, complication: int, site: str, day: int) -> float:
        _, base, cluster = self.complications[complication]
        if cluster is not None and cluster[0] == site and cluster[1] <= day <= cluster[2]:
            return base * cluster[3]
        return base


def _poisson(rand: random.Random, mean: float) -> int:
    """Knuth's method: means here are small (expected extra events in one window)."""
    limit, count, product = math.exp(-mean), 0, rand.random()
    while product > limit:
        count += 1
        product *= rand.random()
    return count


def effect_definitions(cat: Catalog, years: tuple[int, int], sites: list[str]) -> list[dict[str, Any]]:
    """The planted effects with their exact definitions and magnitudes, for truth/effects.json."""
    observation = (f"observation time: from the later of {years[0]}-01-01 and the birth date to the earlier "
                   f"of the death date and {years[1]}-12-31")
    event = {e.id: e for e in cat.events}
    found: list[dict[str, Any]] = []
    for kind, items in (("adverse-drug-effect", cat.drug_effects), ("negative-control", cat.negative_controls)):
        for effect in items:
            e = event[effect.event]
            found.append({
                "id": f"{kind}:{effect.atc}:{e.icd}", "kind": kind, "source": "his-fhir",
                "exposure": {"atc": effect.atc, "window_days": effect.window_days},
                "outcome": {"icd10gm": e.icd, "display": e.display},
                "magnitude": {"incidence_rate_ratio": effect.relative_risk if kind == "adverse-drug-effect" else 1.0,
                              "background_per_1000_years": e.per_1000_years},
                "definition": (f"Events are Conditions with code {e.icd} (onsetDateTime = event day). Exposure "
                               f"windows are the {effect.window_days} days from each MedicationStatement's "
                               f"effectivePeriod.start for ATC {effect.atc}. The event rate per person-day inside "
                               "exposure windows divided by the rate in all other observed person-days is the "
                               f"planted incidence rate ratio; {observation}."),
                "rare": e.per_1000_years < 2,  # events per 1,000 person-years without exposure
            })
    for lab_effect in cat.drug_lab_effects:
        found.append({
            "id": f"drug-lab:{lab_effect.atc}:{lab_effect.loinc}", "kind": "drug-lab-effect", "source": "his-fhir",
            "exposure": {"atc": lab_effect.atc, "window_days": lab_effect.window_days},
            "outcome": {"loinc": lab_effect.loinc},
            "magnitude": {"value_ratio": lab_effect.factor},
            "definition": (f"Laboratory values with LOINC {lab_effect.loinc} taken within {lab_effect.window_days} "
                           f"days after a MedicationStatement start of ATC {lab_effect.atc} are the value the "
                           f"person would have had, times {lab_effect.factor} (before rounding): the geometric "
                           "mean ratio of in-window values to the same persons' other values estimates it."),
        })
    diseases = {d.id: d for d in cat.diseases}
    for p in cat.prodromes:
        e = event[p.event]
        found.append({
            "id": f"prodrome:{p.disease}:{e.icd}", "kind": "prodrome", "source": "his-fhir",
            "disease": {"id": p.disease, "icd10gm": [c.code for c in diseases[p.disease].icd]},
            "outcome": {"icd10gm": e.icd, "display": e.display},
            "magnitude": {"cases_pct": p.cases_pct, "lead_years": list(p.lead_years),
                          "background_per_1000_years": e.per_1000_years},
            "definition": (f"Each case of {p.disease} gets, with probability {p.cases_pct} %, one {e.icd} event "
                           f"{p.lead_years[0]}-{p.lead_years[1]} years (uniform) before the disease's onset "
                           "(the earliest Condition onsetDateTime of the disease), if inside the observation "
                           f"time; everyone keeps the background rate; {observation}."),
        })
    for c in cat.complications:
        e = event[c.event]
        entry: dict[str, Any] = {
            "id": f"complication:{e.icd}", "kind": "complication-cluster", "source": "his-fhir",
            "outcome": {"icd10gm": e.icd, "display": e.display},
            "magnitude": {"base_pct_of_inpatient_stays": c.base_pct},
            "definition": (f"Each inpatient Encounter (class IMP) has a secondary diagnosis {e.icd} with "
                           f"probability {c.base_pct} %"),
        }
        if c.cluster is not None:
            entry["magnitude"] |= {"cluster_site": c.cluster.site, "cluster_start": c.cluster.start.isoformat(),
                                   "cluster_end": c.cluster.end.isoformat(), "cluster_factor": c.cluster.factor}
            entry["definition"] += (f", times {c.cluster.factor} for stays that start at {c.cluster.site} between "
                                    f"{c.cluster.start} and {c.cluster.end}"
                                    + ("" if c.cluster.site in sites else " (that site was not generated)"))
        entry["definition"] += "."
        found.append(entry)
    for d in cat.diseases:
        for factor, relative_risk in d.risk_factors.items():
            kind = ("gene-disease" if factor.startswith("variant:") else
                    "lifestyle" if factor == "smoking" else "comorbidity")
            found.append({
                "id": f"{kind}:{factor}:{d.id}", "kind": kind, "source": "his-fhir",
                "factor": factor, "disease": {"id": d.id, "icd10gm": [c.code for c in d.icd]},
                "magnitude": {"prevalence_ratio": relative_risk},
                "definition": (f"The probability of having {d.id} in the window is multiplied by {relative_risk} "
                               f"for persons with {_factor_words(factor, cat)} (capped at 1), within the same "
                               "sex and age band (age at the window end); a prevalence ratio stratified by sex "
                               "and age band estimates it."),
            })
    return found


def _factor_words(factor: str, cat: Catalog) -> str:
    if factor == "smoking":
        return "a smoking status other than never smoked (ever smokers)"
    if factor.startswith("variant:"):
        variant = next(v for v in cat.variants if v.id == factor[8:])
        alleles = "one or two" if variant.model == "dominant" else "two"
        return f"{alleles} alternate alleles of {variant.id}"
    return f"{factor} (an earlier-drawn disease)"


def day_number(first_year: int) -> Any:
    base = date(first_year, 1, 1)
    return lambda d: (d - base).days

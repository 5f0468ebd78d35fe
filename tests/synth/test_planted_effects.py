"""The planted effects are recoverable: crude estimates computed from the generated HIS facts
(Conditions, MedicationStatements, Observations, Encounters, Patients; never the truth files)
lie within a stated tolerance of the planted values, and negative controls show nothing.

One module-scoped population of 20,000 patients at site-b (the site of the planted cluster).
Tolerances are statistical: |log(estimate) - log(planted)| < 3.5 standard errors, so a test
fails by chance about once in 2,000 runs, and a wrong mechanism (no effect, or the effect on
the wrong window) fails it for sure at this size, as the power assertions check.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pytest

from dic.synth.catalog import load_catalog
from dic.synth.fhir_population import patient_draws

YEARS = (2015, 2025)
SITE = "site-b"
PATIENTS = 20_000
Z = 3.5
SEED = int(os.environ.get("DIC_TEST_EFFECTS_SEED", "5"))


def day(text: str) -> int:
    return date.fromisoformat(text[:10]).toordinal()


@dataclass
class Person:
    sex: str
    birth: int
    observed: tuple[int, int]
    smoker: bool | None = None
    genotype: dict[str, int] = field(default_factory=dict)
    conditions: list[tuple[str, int]] = field(default_factory=list)  # (icd, onset day)
    drugs: list[tuple[str, int]] = field(default_factory=list)  # (atc, start day)
    labs: list[tuple[str, int, float]] = field(default_factory=list)  # (loinc, day, value)
    stays: list[tuple[int, list[str]]] = field(default_factory=list)  # inpatient (start day, icd codes)


@pytest.fixture(scope="module")
def people() -> list[Person]:
    first, last = date(YEARS[0], 1, 1).toordinal(), date(YEARS[1], 12, 31).toordinal()
    never = load_catalog().smoking.values[0].code
    found = []
    for draw in patient_draws(PATIENTS, SEED, site=SITE, years=YEARS):
        patient = draw.resources[0]
        birth = day(patient["birthDate"])
        end = day(patient["deceasedDateTime"]) if "deceasedDateTime" in patient else last
        person = Person(patient["gender"], birth, (max(first, birth), min(end, last)), genotype=draw.genotype)
        conditions: dict[str, str] = {}
        for r in draw.resources[1:]:
            kind = r["resourceType"]
            if kind == "Condition":
                code = r["code"]["coding"][0]["code"]
                person.conditions.append((code, day(r["onsetDateTime"])))
                conditions[r["id"]] = code
            elif kind == "MedicationStatement":
                person.drugs.append((r["medicationCodeableConcept"]["coding"][0]["code"],
                                     day(r["effectivePeriod"]["start"])))
            elif kind == "Observation" and "valueQuantity" in r and r["category"][0]["coding"][0]["code"] == "laboratory":
                person.labs.append((r["code"]["coding"][0]["code"], day(r["effectiveDateTime"]),
                                    r["valueQuantity"]["value"]))
            elif kind == "Observation" and r["code"]["coding"][0]["code"] == "72166-2":
                person.smoker = r["valueCodeableConcept"]["coding"][0]["code"] != never
            elif kind == "Encounter" and r["class"]["code"] == "IMP":
                person.stays.append((day(r["period"]["start"]),
                                     [x["condition"]["reference"].split("/")[1] for x in r["diagnosis"]]))
        person.stays = [(start, [conditions[c] for c in ids]) for start, ids in person.stays]
        found.append(person)
    return found


def rate_ratio(people: list[Person], atc: str, icd: str, window: int) -> tuple[float, float, int, float]:
    """Incidence rate ratio of `icd` inside `window` days after each start of `atc` vs all other
    observed time: (estimate, standard error of its log, events in windows, expected in windows
    under no effect)."""
    events_in = events_out = 0
    days_in = days_out = 0
    for p in people:
        first, last = p.observed
        covered: set[int] = set()
        for drug, start in p.drugs:
            if drug == atc:
                covered.update(range(max(first, start), min(last, start + window - 1) + 1))
        inside = len(covered)
        days_in += inside
        days_out += last - first + 1 - inside
        for code, onset in p.conditions:
            if code == icd and first <= onset <= last:
                if onset in covered:
                    events_in += 1
                else:
                    events_out += 1
    if not events_in or not events_out:
        return float("nan"), float("inf"), events_in, events_out / days_out * days_in
    estimate = (events_in / days_in) / (events_out / days_out)
    return estimate, math.sqrt(1 / events_in + 1 / events_out), events_in, events_out / days_out * days_in


def test_adverse_drug_effects_are_recovered(people: list[Person]) -> None:
    cat = load_catalog()
    icd = {e.id: e.icd for e in cat.events}
    checked = 0
    for effect in cat.drug_effects:
        estimate, se, events, expected_null = rate_ratio(people, effect.atc, icd[effect.event], effect.window_days)
        if expected_null * effect.relative_risk < 15:  # too rare to estimate at this size (the rare event)
            continue
        z = abs(math.log(estimate) - math.log(effect.relative_risk)) / se
        assert z < Z, f"{effect.atc}->{effect.event}: IRR {estimate:.2f} vs planted {effect.relative_risk} ({events} events)"
        if math.log(effect.relative_risk) > 4 * se:  # powered (> 97 %): the signal must stand out from no effect
            assert math.log(estimate) - 1.96 * se > 0, f"{effect.atc}->{effect.event}: no signal ({estimate:.2f})"
        checked += 1
    assert checked >= 8, f"only {checked} adverse drug effects were estimable"


def test_negative_controls_show_no_effect(people: list[Person]) -> None:
    cat = load_catalog()
    icd = {e.id: e.icd for e in cat.events}
    checked = 0
    for control in cat.negative_controls:
        estimate, se, events, expected = rate_ratio(people, control.atc, icd[control.event], control.window_days)
        if expected < 4:
            continue
        assert abs(math.log(estimate)) / se < Z, f"{control.atc}->{control.event}: IRR {estimate:.2f} ({events})"
        checked += 1
    assert checked >= 6, f"only {checked} negative controls were estimable"


def test_drug_lab_effect_is_recovered(people: list[Person]) -> None:
    (effect,) = load_catalog().drug_lab_effects
    inside, outside = [], []
    for p in people:
        starts = [start for drug, start in p.drugs if drug == effect.atc]
        if not starts:
            continue
        for loinc, when, value in p.labs:
            if loinc == effect.loinc and value > 0:
                hit = any(s <= when < s + effect.window_days for s in starts)
                (inside if hit else outside).append(math.log(value))
    assert len(inside) >= 30 and len(outside) >= 30
    ratio = math.exp(np.mean(inside) - np.mean(outside))
    se = math.sqrt(np.var(inside) / len(inside) + np.var(outside) / len(outside))
    assert abs(math.log(ratio) - math.log(effect.factor)) < Z * se, f"ALT ratio {ratio:.2f} vs {effect.factor}"
    assert abs(ratio - effect.factor) / effect.factor < 0.15


def test_prodromal_events_precede_parkinsons_as_planted(people: list[Person]) -> None:
    cat = load_catalog()
    disease = next(d for d in cat.diseases if d.id == "parkinsons-disease")
    codes = {c.code for c in disease.icd}
    events = {e.id: e for e in cat.events}
    totals = [0.0, 0.0, 0.0]
    for prodrome in cat.prodromes:
        event = events[prodrome.event]
        rate = event.per_1000_years / 1000 / 365.25
        lo, hi = (int(y * 365.25) for y in prodrome.lead_years)
        observed = expected = background = 0.0
        for p in people:
            onsets = [onset for code, onset in p.conditions if code in codes]
            if not onsets:
                continue
            onset = min(onsets)
            first, last = p.observed
            window = (max(first, onset - hi), min(last, onset - lo))
            seen_days = max(0, window[1] - window[0] + 1)
            observed += any(code == event.icd and window[0] <= when <= window[1] for code, when in p.conditions)
            p_planted = prodrome.cases_pct / 100 * seen_days / (hi - lo)
            expected += 1 - (1 - p_planted) * math.exp(-rate * seen_days)
            background += 1 - math.exp(-rate * seen_days)
        assert expected > 5, prodrome
        assert abs(observed - expected) < Z * math.sqrt(expected), f"{event.icd}: {observed} vs {expected:.1f}"
        totals = [totals[0] + observed, totals[1] + expected, totals[2] + background]
    observed, expected, background = totals
    assert abs(observed - expected) < Z * math.sqrt(expected), f"prodromes: {observed} vs {expected:.1f}"
    assert observed > background + Z * math.sqrt(background), f"prodromes: {observed} not above {background:.1f}"


def test_complication_cluster_at_the_stated_site_and_months(people: list[Person]) -> None:
    (complication,) = load_catalog().complications
    cluster = complication.cluster
    icd = next(e.icd for e in load_catalog().events if e.id == complication.event)
    start, end = cluster.start.toordinal(), cluster.end.toordinal()
    counts = defaultdict(lambda: [0, 0])  # in cluster? -> [stays, with the complication]
    for p in people:
        for when, codes in p.stays:
            key = start <= when <= end
            counts[key][0] += 1
            counts[key][1] += icd in codes
    (n_in, x_in), (n_out, x_out) = counts[True], counts[False]
    base = x_out / n_out
    assert abs(base * 100 - complication.base_pct) < Z * math.sqrt(base * (1 - base) / n_out) * 100
    ratio = (x_in / n_in) / base
    se = math.sqrt(1 / x_in + 1 / x_out)
    assert abs(math.log(ratio) - math.log(cluster.factor)) < Z * se, f"cluster ratio {ratio:.1f} vs {cluster.factor}"


def prevalence_ratio(people: list[Person], exposed: Any, disease_codes: set[str],
                     strata: Any) -> tuple[float, float]:
    """Mantel-Haenszel prevalence ratio with the Greenland-Robins standard error of its log."""
    table: dict[Any, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # a (exp case), n1, c (unexp case), n0
    for p in people:
        e = exposed(p)
        if e is None:
            continue
        case = any(code in disease_codes for code, _ in p.conditions)
        cell = table[strata(p)]
        if e:
            cell[0] += case
            cell[1] += 1
        else:
            cell[2] += case
            cell[3] += 1
    num = den = 0.0
    p_sum = r_sum = s_sum = 0.0
    for a, n1, c, n0 in table.values():
        n = n1 + n0
        if not n1 or not n0:
            continue
        num += a * n0 / n
        den += c * n1 / n
        p_sum += (n1 * n0 * (a + c) - a * c * n) / n**2
        r_sum += a * n0 / n
        s_sum += c * n1 / n
    return num / den, math.sqrt(p_sum / (r_sum * s_sum))


def age_band(p: Person) -> int:
    age = (date(YEARS[1], 12, 31).toordinal() - p.birth) / 365.25
    return sum(age >= b.low for b in load_catalog().population.age_bands)


def codes_of(disease_id: str) -> set[str]:
    return {c.code for c in next(d for d in load_catalog().diseases if d.id == disease_id).icd}


@pytest.mark.parametrize(("factor", "disease", "exposed"), [
    ("smoking", "copd", lambda p: p.smoker),
    ("smoking", "lung-cancer", lambda p: p.smoker),
    ("variant:F5:c.1601G>A", "venous-thromboembolism", lambda p: p.genotype["F5:c.1601G>A"] >= 1),
    ("multiple-sclerosis", "depression", lambda p: any(c in codes_of("multiple-sclerosis") for c, _ in p.conditions)),
    ("atrial-fibrillation", "ischaemic-stroke",
     lambda p: any(c in codes_of("atrial-fibrillation") for c, _ in p.conditions)),
])
def test_risk_factors_raise_prevalence_as_planted(people: list[Person], factor: str, disease: str, exposed: Any) -> None:
    planted = next(d for d in load_catalog().diseases if d.id == disease).risk_factors[factor]
    others = [f for f in next(d for d in load_catalog().diseases if d.id == disease).risk_factors if f != factor
              and not f.startswith("variant:") and f != "smoking"]

    def strata(p: Person) -> tuple:
        return (p.sex, age_band(p), *(any(c in codes_of(f) for c, _ in p.conditions) for f in others))

    estimate, se = prevalence_ratio(people, exposed, codes_of(disease), strata)
    assert abs(math.log(estimate) - math.log(planted)) < Z * se + 0.1, \
        f"{factor} -> {disease}: PR {estimate:.2f} vs planted {planted} (se {se:.2f})"
    if math.log(planted) > 4 * se:  # powered (> 97 %): the signal must stand out from no effect
        assert math.log(estimate) - 1.96 * se > 0, f"{factor} -> {disease}: no signal"

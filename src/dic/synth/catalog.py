"""The generator's declarations: the Pydantic model of `catalog.yaml` and its validating loader.

Code lists, units, reference ranges, prevalences by age band and sex, risk factors and rule
probabilities are data; `fhir_population.py` is the engine that reads them.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dic.errors import Problem
from dic.synth.declarations import load_declarations

CATALOG_PATH = Path(__file__).with_name("catalog.yaml")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Coded(_Entry):
    code: str
    display: str
    weight: float = 1.0
    orpha: str | None = None  # rare diseases: the ORPHAcode coded alongside ICD-10-GM
    orpha_display: str | None = None


class Drug(_Entry):
    atc: str
    display: str
    dose: float
    unit: str
    route: str
    pct: float


class Operation(_Entry):
    ops: str
    display: str
    pct: float
    classes: list[str] = []


class Reason(_Entry):
    icd: str
    display: str
    department: str
    weight: float
    classes: list[str]


class LabShift(_Entry):
    mean: float
    sd: float
    pct: float


class Lab(_Entry):
    loinc: str
    display: str
    unit: str
    decimals: int
    range: tuple[float, float] | None = None
    female: tuple[float, float] | None = None
    male: tuple[float, float] | None = None
    mean: float | dict[Literal["female", "male"], float]
    sd: float
    log_normal: bool = False
    pct: dict[str, float]

    def limits(self, table: str) -> tuple[float, float]:
        return self.range or getattr(self, table)

    def mean_for(self, table: str) -> float:
        return self.mean[table] if isinstance(self.mean, dict) else self.mean


class EncounterClass(_Entry):
    code: str
    display: str
    weight: float
    contact_type: Coded
    duration_minutes: tuple[int, int] | None = None
    length_of_stay_days: float | None = None
    hours: tuple[int, int]
    coded_chronic_pct: float
    lab_order_pct: float
    vitals_pct: float
    anthropometry_pct: float
    admit_sources: dict[str, float]
    discharge: dict[str, float]


class Disease(_Entry):
    id: str
    department: str
    course: Literal["chronic", "acute"]
    onset_class: str
    prevalent_pct: float
    min_age: float
    prevalence_pct: dict[Literal["female", "male"], list[float]]
    risk_factors: dict[str, float] = {}
    extra_encounters: float
    icd: list[Coded]
    followup: Coded | None = None
    labs: dict[str, LabShift] = {}
    procedures: list[Operation] = []
    medications: list[Drug] = []
    acute_medications: list[Drug] = []
    body_mass_index_shift: float = 0.0
    systolic_shift: float = 0.0
    heart_rate_shift: float = 0.0


class AgeBand(_Entry):
    low: float
    high: float
    weight: float
    death_pct: float


class Sex(_Entry):
    gender: Literal["female", "male", "other", "unknown"]
    weight: float
    table: Literal["female", "male"]


class Population(_Entry):
    sexes: list[Sex]
    age_bands: list[AgeBand]
    in_hospital_death_pct: float
    postal_prefixes: dict[str, list[str]]
    encounters_base: float
    body_height_cm: dict[Literal["female", "male"], tuple[float, float]]
    body_mass_index: tuple[float, float]
    heart_rate: tuple[float, float]
    systolic: tuple[float, float]
    diastolic_per_systolic: float


class Vital(_Entry):
    loinc: str
    display: str
    unit: str | None = None
    profile: str | None = None


class SmokingValue(_Entry):
    code: str
    display: str
    female: float
    male: float


class Smoking(_Entry):
    loinc: str
    display: str
    values: list[SmokingValue]


class ConsentModule(_Entry):
    name: str
    deny_pct: float
    years: int
    codes: list[Coded]


class ConsentPolicy(_Entry):
    no_consent_pct: float
    refused_pct: float
    withdrawn_pct: float
    policy_uri: str
    modules: list[ConsentModule]


class Rules(_Entry):
    primary_chronic_pct: float
    provisional_reason_pct: float
    stopped_medication_pct: float
    continued_medication_pct: float
    death_discharge: str


class Variant(_Entry):
    id: str  # "GENE:c.notation", as genomics.yaml names it
    gene: str
    allele_frequency: float
    model: Literal["dominant", "recessive"]


class Event(_Entry):
    id: str
    icd: str
    display: str
    per_1000_years: float
    department: str
    class_: str = Field(alias="class")


class DrugEffect(_Entry):
    atc: str
    event: str
    window_days: int
    relative_risk: float = 1.0


class DrugLabEffect(_Entry):
    atc: str
    loinc: str
    factor: float
    window_days: int


class Prodrome(_Entry):
    disease: str
    event: str
    cases_pct: float
    lead_years: tuple[float, float]


class Cluster(_Entry):
    site: str
    start: date
    end: date
    factor: float


class Complication(_Entry):
    event: str
    base_pct: float
    cluster: Cluster | None = None


class World(_Entry):
    cross_site_pct: float  # of each later site's patients: persons already treated at an earlier site
    genotyped_pct: float  # of patients whose consent permits biomaterial: in the genomics subset


class Catalog(_Entry):
    systems: dict[str, str]
    profiles: dict[str, str]
    population: Population
    rules: Rules
    diagnosis_use: dict[Literal["primary", "secondary"], Coded]
    admit_sources: dict[str, str]
    discharge_dispositions: dict[str, str]
    encounter_classes: list[EncounterClass]
    departments: dict[str, str]
    encounter_reasons: list[Reason]
    class_procedures: list[Operation]
    inpatient_medications: list[Drug]
    routes: dict[str, Coded]
    labs: list[Lab]
    vital_signs: dict[str, Vital]
    smoking: Smoking
    specimen: Coded
    consent: ConsentPolicy
    diseases: list[Disease]
    world: World
    variants: list[Variant] = []
    events: list[Event] = []
    drug_effects: list[DrugEffect] = []
    negative_controls: list[DrugEffect] = []
    drug_lab_effects: list[DrugLabEffect] = []
    prodromes: list[Prodrome] = []
    complications: list[Complication] = []

    def long_term_drugs(self) -> set[str]:
        return {m.atc for d in self.diseases for m in d.medications}

    def problems(self) -> list[Problem]:
        """What the schema cannot see: references between entries, and what the engine relies on."""
        found: list[Problem] = []

        def check(ok: bool, path: str, message: str) -> None:
            if not ok:
                found.append(Problem(path, message))

        classes = {c.code for c in self.encounter_classes}
        labs = {lab.loinc for lab in self.labs}
        bands = len(self.population.age_bands)
        seen: set[str] = {"smoking"} | {"variant:" + v.id for v in self.variants}
        for n, d in enumerate(self.diseases):
            where = f"/diseases/{n}"
            for factor in d.risk_factors:
                check(factor in seen, f"{where}/risk_factors/{factor}",
                      f"{d.id}: not 'smoking', a declared variant or a disease listed before it")
            for code in d.labs:
                check(code in labs, f"{where}/labs/{code}", f"{d.id}: no such lab in /labs")
            for sex in ("female", "male"):
                check(len(d.prevalence_pct.get(sex, [])) == bands, f"{where}/prevalence_pct/{sex}",
                      f"{d.id}: needs {bands} values, one per age band")
            check(d.department in self.departments, f"{where}/department", f"{d.id}: unknown {d.department}")
            check(d.onset_class in classes, f"{where}/onset_class", f"{d.id}: unknown class {d.onset_class}")
            check(bool(d.icd), f"{where}/icd", f"{d.id}: needs at least one code")
            for kind in ("medications", "acute_medications"):
                for m, drug in enumerate(getattr(d, kind)):
                    check(drug.route in self.routes, f"{where}/{kind}/{m}/route", f"unknown route {drug.route}")
            seen.add(d.id)
        for m, drug in enumerate(self.inpatient_medications):
            check(drug.route in self.routes, f"/inpatient_medications/{m}/route", f"unknown route {drug.route}")
        for n, reason in enumerate(self.encounter_reasons):
            check(reason.department in self.departments, f"/encounter_reasons/{n}/department",
                  f"unknown {reason.department}")
        for kind, items in (("encounter_reasons", self.encounter_reasons), ("class_procedures", self.class_procedures)):
            for n, item in enumerate(items):
                for c in item.classes:
                    check(c in classes, f"/{kind}/{n}/classes", f"unknown encounter class {c}")
        for n, lab in enumerate(self.labs):
            check(lab.range is not None or (lab.female is not None and lab.male is not None), f"/labs/{n}",
                  f"{lab.loinc}: needs range, or female and male")
            for c in lab.pct:
                check(c in classes, f"/labs/{n}/pct/{c}", "unknown encounter class")
        for n, c in enumerate(self.encounter_classes):
            for k in c.admit_sources:
                check(k in self.admit_sources, f"/encounter_classes/{n}/admit_sources/{k}", "unknown admit source")
            for k in c.discharge:
                check(k in self.discharge_dispositions, f"/encounter_classes/{n}/discharge/{k}",
                      "unknown discharge disposition")
            check((c.duration_minutes is None) != (c.length_of_stay_days is None), f"/encounter_classes/{n}",
                  f"{c.code}: needs either duration_minutes or length_of_stay_days")
        check(any(c.length_of_stay_days for c in self.encounter_classes), "/encounter_classes",
              "needs an inpatient class (one with length_of_stay_days)")
        check(self.rules.death_discharge in self.discharge_dispositions, "/rules/death_discharge",
              f"unknown discharge disposition {self.rules.death_discharge}")
        events, drugs = {e.id for e in self.events}, self.long_term_drugs()
        for n, e in enumerate(self.events):
            check(e.class_ in classes, f"/events/{n}/class", f"unknown encounter class {e.class_}")
            check(e.department in self.departments, f"/events/{n}/department", f"unknown {e.department}")
        for kind in ("drug_effects", "negative_controls", "drug_lab_effects"):
            for n, effect in enumerate(getattr(self, kind)):
                check(effect.atc in drugs, f"/{kind}/{n}/atc", f"{effect.atc}: not a long-term medication")
                if kind != "drug_lab_effects":
                    check(effect.event in events, f"/{kind}/{n}/event", f"unknown event {effect.event}")
                else:
                    check(effect.loinc in labs, f"/{kind}/{n}/loinc", f"no such lab {effect.loinc}")
        for n, p in enumerate(self.prodromes):
            check(p.disease in seen, f"/prodromes/{n}/disease", f"unknown disease {p.disease}")
            check(p.event in events, f"/prodromes/{n}/event", f"unknown event {p.event}")
        for n, c in enumerate(self.complications):
            check(c.event in events, f"/complications/{n}/event", f"unknown event {c.event}")
        for key in _VITAL_SIGNS:
            check(key in self.vital_signs, f"/vital_signs/{key}", "missing")
        missing_profiles = set(_PROFILED_TYPES) - set(self.profiles)
        check(not missing_profiles, "/profiles", f"missing {sorted(missing_profiles)}")
        return found


_VITAL_SIGNS = ("heart_rate", "blood_pressure", "systolic", "diastolic", "body_height", "body_weight", "bmi")
_PROFILED_TYPES = ("Patient", "Encounter", "Condition", "Procedure", "Observation", "MedicationAdministration",
                   "MedicationStatement", "Consent", "Specimen")


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """The generator's catalog, validated; every problem is reported at once (DefinitionError)."""
    return load_declarations(path, Catalog)

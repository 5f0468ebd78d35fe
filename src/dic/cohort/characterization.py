"""A cohort's table 1: demographics and what was recorded at its index date, disclosure-controlled.

The index date of a member is its earliest event of the query's first inclusion criterion
(the reference date when that criterion has no dated event). Around it:

    conditions    ICD-10-GM 3-character categories recorded on or before the index day
    procedures    OPS codes (to the first dot) in the year up to the index day
    medications   ATC substances (Administration, Statement, Request) in the year up to the index day
    labs          LOINC codes measured in the 90 days up to the index day: patients and median value

Every count is released through `dic.privacy` like a feasibility count, seeded by the cohort
and the row's label; a cohort below the threshold is not characterized at all. Medians are
shown only for rows whose patient count clears the breakdown's minimum cell.
"""

from __future__ import annotations

import hashlib
import secrets
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlglot import exp

from dic.cohort.feasibility import Member, age_at, breakdown_cells, cohort_rows, query_hash, release_cells
from dic.cohort.model import Query
from dic.engines import ColumnDef, Database, column, table
from dic.errors import DisclosureError
from dic.privacy import ReleasedCell, ReleasedCount, age_band, fingerprint, query_log, release_count

TOP = 10
LOOKBACK_DAYS = 365
LAB_DAYS = 90

# (row kind, view, code expression, date expressions in order of preference, lookback days or None = all history)
_SECTIONS: list[tuple[str, str, exp.Expression, list[str], int | None]] = [
    ("conditions", "condition", exp.Substring(this=column("icd_code", "e"), start=exp.Literal.number(1),
                                                length=exp.Literal.number(3)),
     ["onset_date_time", "recorded_date"], None),
    ("procedures", "procedure", column("ops_code", "e"), ["performed_date_time", "performed_start"], LOOKBACK_DAYS),
    ("medications", "medication_administration", column("atc_code", "e"), ["effective_date_time", "effective_start"],
     LOOKBACK_DAYS),
    ("medications", "medication_statement", column("atc_code", "e"), ["effective_date_time", "effective_start"],
     LOOKBACK_DAYS),
    ("medications", "medication_request", column("atc_code", "e"), ["authored_on"], LOOKBACK_DAYS),
]


@dataclass(frozen=True)
class Row:
    label: str
    patients: ReleasedCount
    median: float | None = None
    unit: str | None = None

    def as_dict(self) -> dict[str, Any]:
        found = {"label": self.label, "patients": self.patients.text}
        if self.median is not None:
            found |= {"median": self.median, "unit": self.unit}
        return found


@dataclass(frozen=True)
class Characterization:
    patients: ReleasedCount
    reference_date: date
    median_age: int | None
    sex: list[ReleasedCell]
    age: list[ReleasedCell]
    sections: dict[str, list[Row]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"patients": self.patients.text, "reference_date": self.reference_date.isoformat(),
                "median_age": self.median_age, "sex": [c.as_dict() for c in self.sex],
                "age": [c.as_dict() for c in self.age],
                **{name: [r.as_dict() for r in rows] for name, rows in self.sections.items()}}


def _day_text(expression: exp.Expression) -> exp.Expression:
    return exp.Substring(this=expression, start=exp.Literal.number(1), length=exp.Literal.number(10))


def _event_day(dates: list[str]) -> exp.Expression:
    return _day_text(exp.Coalesce(this=column(dates[0], "e"), expressions=[column(d, "e") for d in dates[1:]]))


def _section_counts(db: Database, members_table: str, view: str, code: exp.Expression, dates: list[str],
                    lookback: int | None) -> dict[str, int]:
    day = _event_day(dates)
    window = exp.LTE(this=day, expression=column("index_day", "m"))
    if lookback is not None:
        window = exp.and_(window, exp.GTE(this=day, expression=column("since_day", "m")))
    select = (exp.select(exp.alias_(code, "label"),
                         exp.alias_(exp.Count(this=exp.Distinct(expressions=[column("patient_key", "e")])), "n"))
              .from_(table(view, "e"))
              .join(table(members_table, "m"), on=exp.EQ(this=column("patient_key", "m"), expression=column("patient_key", "e")))
              .where(exp.and_(exp.Not(this=exp.Is(this=code.copy(), expression=exp.Null())), window))
              .group_by(exp.Literal.number(1)))
    return {label: int(n) for label, n in db.fetch(select, f"characterize {view}").rows}


def _lab_values(db: Database, members_table: str) -> dict[tuple[str, str], tuple[set[str], list[float]]]:
    day = _event_day(["effective_date_time", "effective_start"])
    select = (exp.select(column("loinc_code", "e"), column("value_unit", "e"), column("patient_key", "e"),
                         column("value_quantity", "e"))
              .from_(table("observation", "e"))
              .join(table(members_table, "m"), on=exp.EQ(this=column("patient_key", "m"), expression=column("patient_key", "e")))
              .where(exp.and_(exp.Not(this=exp.Is(this=column("loinc_code", "e"), expression=exp.Null())),
                              exp.LTE(this=day, expression=column("index_day", "m")),
                              exp.GTE(this=day.copy(), expression=column("lab_since_day", "m")))))
    found: dict[tuple[str, str], tuple[set[str], list[float]]] = {}
    for loinc, unit, patient, value in db.fetch(select, "characterize labs").rows:
        patients, values = found.setdefault((loinc, unit or ""), (set(), []))
        patients.add(patient)
        if value is not None:
            values.append(float(value))
    return found


def _stage_members(db: Database, members: Sequence[Member], reference_date: date) -> str:
    name = f"_cohort_{secrets.token_hex(6)}"
    db.create_table(name, [ColumnDef("patient_key", "TEXT"), ColumnDef("index_day", "TEXT"),
                           ColumnDef("since_day", "TEXT"), ColumnDef("lab_since_day", "TEXT")], step="stage cohort")
    rows = []
    for member in members:
        index = member.index_date or reference_date
        rows.append((member.patient_key, index.isoformat(), (index - timedelta(days=LOOKBACK_DAYS)).isoformat(),
                     (index - timedelta(days=LAB_DAYS)).isoformat()))
    db.insert_rows(name, ["patient_key", "index_day", "since_day", "lab_since_day"], rows)
    return name


def _ranked(counts: dict[str, int], whole: bytes, kind: str, rules: Any, secret: bytes) -> list[Row]:
    # a row's members are not fetched: its noise is seeded by the cohort and the row
    rows = [Row(label, release_count(n, hashlib.sha256(whole + f"{kind}:{label}".encode()).digest(), rules, secret))
            for label, n in counts.items()]
    rows.sort(key=lambda r: (-(r.patients.value or 0), r.label))
    return rows[:TOP]


def characterize(db: Database, query: Query, reference_date: date, *, rules: Any, secret: bytes,
                 actor: str) -> Characterization:
    members = cohort_rows(db, query, reference_date)
    keys = [m.patient_key for m in members]
    whole = fingerprint(keys)
    patients = release_count(len(keys), whole, rules, secret)
    query_log.record(db, actor, "characterize", query_hash(query, reference_date), len(keys), patients.text,
                     {"reference_date": reference_date.isoformat()})
    if patients.value is None:
        raise DisclosureError(f"the cohort has {patients.text} patients: too few to characterize")
    sex = release_cells(breakdown_cells(members, "sex", reference_date, rules), whole, rules, secret)
    ages = [a for m in members if (a := age_at(m.birth_date, m.index_date or reference_date)) is not None]
    age_cells: dict[tuple[str, ...], list[str]] = {}
    for member in members:
        label = _band(age_at(member.birth_date, member.index_date or reference_date), rules)
        age_cells.setdefault((label,), []).append(member.patient_key)
    age = release_cells(age_cells, whole, rules, secret)
    staged = _stage_members(db, members, reference_date)
    try:
        sections: dict[str, list[Row]] = {}
        merged: dict[str, dict[str, int]] = {}
        for kind, view, code, dates, lookback in _SECTIONS:
            for label, n in _section_counts(db, staged, view, code, dates, lookback).items():
                # a patient on the same substance in two medication resources counts once per view; take the max
                merged.setdefault(kind, {})[label] = max(merged.get(kind, {}).get(label, 0), n)
        for kind, counts in merged.items():
            sections[kind] = _ranked(counts, whole, kind, rules, secret)
        labs = _lab_values(db, staged)
        lab_rows = _ranked({f"{loinc} [{unit}]" if unit else loinc: len(p) for (loinc, unit), (p, _) in labs.items()},
                           whole, "labs", rules, secret)
        medians = {f"{loinc} [{unit}]" if unit else loinc: (statistics.median(v) if v else None, unit)
                   for (loinc, unit), (_, v) in labs.items()}
        min_cell = _min_cell(rules)
        sections["labs"] = [Row(r.label, r.patients, *(medians[r.label] if (r.patients.value or 0) >= min_cell else (None, None)))
                            for r in lab_rows]
    finally:
        db.drop_table(staged, "drop staged cohort")
    return Characterization(patients, reference_date, int(statistics.median(ages)) if ages else None, sex, age, sections)


def _band(age: int | None, rules: Any) -> str:
    return age_band(age, rules) if age is not None else "unknown"


def _min_cell(rules: Any) -> int:
    return rules.breakdowns.min_cell

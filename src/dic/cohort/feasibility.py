"""The feasibility answer: how many patients match, released only through disclosure control.

The raw count never leaves this module except into the query log. What goes out is the
released count of `dic.privacy` (a range below the threshold, a small deterministic
perturbation above it) and optional breakdowns with small cells suppressed. The noise is
seeded by the cohort's member set, so the same question on the same data gets the same
answer however it is phrased, and repeating or rephrasing it to average the noise gains
nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlglot import exp

from dic.cohort.compiler import compile_query
from dic.cohort.model import Query
from dic.engines import Database, column, table
from dic.errors import InputError
from dic.privacy import (
    ReleasedCell,
    ReleasedCount,
    age_band,
    fingerprint,
    query_log,
    release_breakdown,
    release_count,
)

BREAKDOWNS = ("age", "sex", "site")


@dataclass(frozen=True)
class Member:
    patient_key: str
    index_date: date | None
    gender: str | None
    birth_date: str | None
    site: str | None


@dataclass(frozen=True)
class FeasibilityAnswer:
    count: ReleasedCount
    reference_date: date
    breakdowns: dict[str, list[ReleasedCell]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count.text,
            "lower": self.count.lower,
            "upper": self.count.upper,
            "reference_date": self.reference_date.isoformat(),
            "breakdowns": {name: [cell.as_dict() for cell in cells] for name, cells in self.breakdowns.items()},
            "warnings": list(self.warnings),
        }


def query_hash(query: Query, reference_date: date) -> str:
    """Identifies a question in the log (the parsed query: cosmetic differences of the JSON do not count)."""
    return hashlib.sha256(f"{query!r}|{reference_date.isoformat()}".encode()).hexdigest()


def cohort_rows(db: Database, query: Query, reference_date: date, *, index_date: bool = True) -> list[Member]:
    """The members with what breakdowns and consent need (inside the DIC only); a count does not
    need their index dates (then never computed)."""
    compiled = compile_query(query, reference_date, index_date=index_date)
    cohort = compiled.select.subquery("c")
    select = (exp.select(column("patient_key", "c"), column("index_date", "c"), column("gender", "p"),
                         column("birth_date", "p"), column("managing_organization_key", "p"))
              .from_(cohort)
              .join(table("patient", "p"), on=exp.EQ(this=column("patient_key", "p"), expression=column("patient_key", "c")),
                    join_type="left"))
    rows = db.fetch(select, "cohort members").rows
    members: dict[str, Member] = {}
    for key, index, gender, birth, site in rows:
        index_day = index.date() if hasattr(index, "date") else (date.fromisoformat(str(index)[:10]) if index else None)
        members.setdefault(key, Member(key, index_day, gender, birth, site))
    return sorted(members.values(), key=lambda m: m.patient_key)


def age_at(birth_date: str | None, day: date) -> int | None:
    """Completed years at `day`, from the earliest day the (possibly partial) birth date allows."""
    if not birth_date:
        return None
    parts = [int(p) for p in birth_date[:10].split("-")]
    year, month, dom = (parts + [1, 1])[:3]
    return day.year - year - ((day.month, day.day) < (month, dom))


def breakdown_cells(members: Sequence[Member], name: str, reference_date: date, rules: Any) -> dict[tuple[str, ...], list[str]]:
    cells: dict[tuple[str, ...], list[str]] = {}
    for member in members:
        if name == "age":
            age = age_at(member.birth_date, reference_date)
            label = age_band(age, rules) if age is not None else "unknown"
        elif name == "sex":
            label = member.gender or "unknown"
        elif name == "site":
            label = member.site or "unknown"
        else:
            raise InputError(f"unknown breakdown {name!r}; known: {', '.join(BREAKDOWNS)}")
        cells.setdefault((label,), []).append(member.patient_key)
    return cells


def release_cells(cells: dict[tuple[str, ...], list[str]], whole: bytes, rules: Any, secret: bytes) -> list[ReleasedCell]:
    """A breakdown released cell by cell, each seeded by its own members (the cell key method)."""
    return release_breakdown({label: len(ids) for label, ids in cells.items()}, whole, rules, secret,
                             cell_fingerprints={label: fingerprint(ids) for label, ids in cells.items()})


def count_cohort(db: Database, query: Query, reference_date: date, *, rules: Any, secret: bytes, actor: str,
                 breakdowns: Sequence[str] = ()) -> FeasibilityAnswer:
    """The disclosure-controlled count (and breakdowns) of `query`; the raw count goes to the query log only."""
    unknown = sorted(set(breakdowns) - set(BREAKDOWNS))
    if unknown:
        raise InputError(f"unknown breakdown(s) {', '.join(unknown)}; known: {', '.join(BREAKDOWNS)}")
    members = cohort_rows(db, query, reference_date, index_date=False)
    keys = [m.patient_key for m in members]
    whole = fingerprint(keys)
    released = release_count(len(keys), whole, rules, secret)
    tables = {name: release_cells(breakdown_cells(members, name, reference_date, rules), whole, rules, secret)
              for name in breakdowns}
    query_log.record(db, actor, "count", query_hash(query, reference_date), len(keys), released.text,
                     {"breakdowns": list(breakdowns), "reference_date": reference_date.isoformat()})
    return FeasibilityAnswer(released, reference_date, tables, query.warnings)

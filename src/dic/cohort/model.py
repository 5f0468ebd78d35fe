"""The cohort model both CCDL versions are read into (see docs/cohorts.md).

    Query ─ inclusion: (GroupArray, …) OR    exclusion: (GroupArray, …) OR
    GroupArray = (Group, …) AND
    Group ─ criteria: (Clause, …) AND; relative restrictions; anchor occurrence and point
    Clause = (Criterion, …) OR

Every node keeps `path`, the JSON pointer of its origin in the submitted document, so a
problem found later (an unknown code, a unit) names the place the author has to fix.
Criteria are resolved (kind, expanded codes, canonical units) before they reach the model:
the compiler and the answers never look at raw term codes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Kind = Literal["diagnosis", "procedure", "observation", "medication", "specimen", "consent", "encounter",
               "age", "gender", "now"]
Occurrence = Literal["first", "last", "any"]
Comparator = Literal["gt", "ge", "lt", "le", "eq", "ne"]


@dataclass(frozen=True)
class Coding:
    system: str  # "" when the query gave none (then only the code is compared)
    code: str


@dataclass(frozen=True)
class Offset:
    """A signed ISO 8601 duration: calendar months (years × 12 + months) and exact seconds."""

    months: int = 0
    seconds: int = 0
    text: str = ""

    @property
    def is_zero(self) -> bool:
        return self.months == 0 and self.seconds == 0


@dataclass(frozen=True)
class ValueFilter:
    """A value or attribute filter on an event's value (resolved: numbers in the compared unit)."""

    type: Literal["concept", "quantity-comparator", "quantity-range"]
    path: str
    concepts: tuple[Coding, ...] = ()  # concept: any of these (gender: Patient.gender codes)
    comparator: Comparator | None = None
    value: float | None = None  # quantity-comparator, in `unit`
    low: float | None = None  # quantity-range, inclusive, in `unit`
    high: float | None = None
    unit: str | None = None  # the unit values are compared in (canonical UCUM, or the raw unit)
    normalized: bool = False  # compare the normalized value (canonical unit) rather than the raw one


@dataclass(frozen=True)
class AttributeFilter:
    attribute: str  # the attribute name from contexts.yaml, e.g. "status", "bodySite", "diagnosis"
    path: str
    filter: ValueFilter | None = None  # concept / quantity
    references: tuple[Criterion, ...] = ()  # type "reference": any of these (OR)


@dataclass(frozen=True)
class TimeRestriction:
    after: date | None  # inclusive day
    before: date | None  # inclusive day


@dataclass(frozen=True)
class Criterion:
    path: str
    kind: Kind
    resource_types: tuple[str, ...] = ()  # e.g. ("Condition",); medication may be several
    codes: tuple[Coding, ...] = ()  # expanded (term codes and their descendants)
    value: ValueFilter | None = None
    attributes: tuple[AttributeFilter, ...] = ()
    time: TimeRestriction | None = None
    display: str = ""


@dataclass(frozen=True)
class RelativeRestriction:
    path: str
    anchor: str  # the referenced group's id
    min_offset: Offset | None
    max_offset: Offset | None


@dataclass(frozen=True)
class Group:
    path: str
    id: str | None
    criteria: tuple[tuple[Criterion, ...], ...]  # clauses (AND) of criteria (OR)
    relative: tuple[RelativeRestriction, ...] = ()
    occurrence: Occurrence | None = None
    point: Literal["start", "end"] = "start"


GroupArray = tuple[Group, ...]


@dataclass(frozen=True)
class Query:
    version: Literal["2", "3"]
    inclusion: tuple[GroupArray, ...]
    exclusion: tuple[GroupArray, ...] = ()
    display: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)  # codes matched literally, …

    def groups(self) -> dict[str, Group]:
        """Every group with an id, wherever it sits (anchor references resolve globally)."""
        found: dict[str, Group] = {}
        for side in (self.inclusion, self.exclusion):
            for array in side:
                for group in array:
                    if group.id:
                        found.setdefault(group.id, group)
        return found

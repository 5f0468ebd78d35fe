"""The schema and loader of `event_views.yaml`: which view columns hold a criterion's events.

    load_event_views() -> EventViews   (cached; raises DefinitionError naming every problem)

Data declares, code executes: the SQL built from these declarations lives in `events.py`.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from dic.errors import DefinitionError, Problem

FILE = "event_views.yaml"
EVENT_KINDS = ("diagnosis", "procedure", "observation", "medication", "specimen", "consent", "encounter")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodingElements(_Strict):
    view: str  # a member of the `coding` union view, e.g. coding_condition
    elements: tuple[str, ...]


class CodePair(_Strict):
    system: str
    code: str


class CodeMatch(_Strict):
    column: str | None = None  # fast path: the code of `system`
    system: str | None = None
    pair: CodePair | None = None
    coding: CodingElements | None = None
    medication: str | None = None  # column with the key of a referenced Medication

    @model_validator(mode="after")
    def _complete(self) -> CodeMatch:
        if (self.column is None) != (self.system is None):
            raise ValueError("`column` and `system` go together")
        if self.coding is None and self.pair is None:
            raise ValueError("needs `coding` or `pair` to match codes of every system")
        return self


class TimeOption(_Strict):
    at: str | None = None
    start: str | None = None
    end: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TimeOption:
        if (self.at is None) == (self.start is None and self.end is None):
            raise ValueError("either `at` or `start`/`end`")
        return self


class QuantityColumns(_Strict):
    value: str
    unit: str
    normalized: str
    normalized_unit: str


class ConceptElement(_Strict):
    view: str
    element: str


class ValueColumns(_Strict):
    quantity: QuantityColumns | None = None
    concept: ConceptElement | None = None


class Attribute(_Strict):
    column: str | None = None
    coding: str | None = None
    reference: str | None = None
    aliases: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_kind(self) -> Attribute:
        if sum(x is not None for x in (self.column, self.coding, self.reference)) != 1:
            raise ValueError("exactly one of `column`, `coding`, `reference`")
        return self


class EventSource(_Strict):
    view: str
    resource_type: str
    key: str
    patient: str = "patient_key"
    where: dict[str, str] = {}
    code: CodeMatch
    time: tuple[TimeOption, ...]
    value: ValueColumns | None = None
    attributes: dict[str, Attribute] = {}

    def attribute(self, name: str) -> Attribute | None:
        """The attribute called `name` or one of its aliases (case-insensitive)."""
        wanted = name.casefold()
        for key, attribute in self.attributes.items():
            if wanted == key.casefold() or wanted in (a.casefold() for a in attribute.aliases):
                return attribute
        return None


class MedicationResource(_Strict):
    view: str
    key: str
    code: CodeMatch


class PatientColumns(_Strict):
    view: str
    key: str
    birth_date: str
    gender: str


class EventViews(_Strict):
    diagnosis: tuple[EventSource, ...]
    procedure: tuple[EventSource, ...]
    observation: tuple[EventSource, ...]
    medication: tuple[EventSource, ...]
    specimen: tuple[EventSource, ...]
    consent: tuple[EventSource, ...]
    encounter: tuple[EventSource, ...]
    medication_resource: MedicationResource
    patient: PatientColumns

    def sources(self, kind: str) -> tuple[EventSource, ...]:
        return getattr(self, kind)


@cache
def load_event_views() -> EventViews:
    raw = yaml.safe_load((files("dic.cohort") / FILE).read_text())
    try:
        return EventViews.model_validate(raw)
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(part) for part in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(f"cohort/{FILE}", problems) from error

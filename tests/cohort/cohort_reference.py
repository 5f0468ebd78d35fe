"""The reference evaluator: docs/cohorts.md in plain Python, one patient at a time.

    evaluate(ccdl, resources, reference_date) -> the ids of the Patients in the cohort

Written from the semantics (docs/cohorts.md, /work/shared/docs/ccdl/*) and not from the SQL
compiler, so the two can be compared. It reads the CCDL JSON itself (v2 and v3) and the raw
FHIR R4 resources; nothing of dic.cohort is used. Quantities are converted from the RAW
valueQuantity with ucumvert/pint here (the SQL side reads the normalized-value extension the
loader's annotation writes, so a disagreement also points at the annotation). Code descendants
and canonical units come from dic.terminology, which is not what is under test.

v3 anchors are brute force: per group array every assignment of one witness per anchor id
is tried (`_assignments`), which is the existential of the scope rule written out. Deliberately
slow and obvious; histories are a handful of resources. The input is trusted to be valid.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any

from dic.terminology import canonical_unit, code_system, resolve_system

ICD10GM, OPS, ATC, LOINC = ("http://fhir.de/CodeSystem/bfarm/icd-10-gm", "http://fhir.de/CodeSystem/bfarm/ops",
                            "http://fhir.de/CodeSystem/bfarm/atc", "http://loinc.org")
SNOMED = "http://snomed.info/sct"
DIAGNOSE_EXTENSION = "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Diagnose"
NEVER, FOREVER = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)  # -inf, +inf
Span = tuple[datetime, datetime]  # half-open [lo, hi), UTC

# ---------------------------------------------------------------- the tables of docs/cohorts.md
MEDICATIONS = ("MedicationAdministration", "MedicationStatement", "MedicationRequest")
CONTEXTS: dict[str, tuple[str, tuple[str, ...]]] = {
    **dict.fromkeys(("diagnose", "diagnosis", "condition"), ("diagnosis", ("Condition",))),
    **dict.fromkeys(("prozedur", "procedure"), ("procedure", ("Procedure",))),
    **dict.fromkeys(("laboruntersuchung", "laboratory", "observation", "labor"), ("observation", ("Observation",))),
    **dict.fromkeys(("medikation", "medication"), ("medication", MEDICATIONS)),
    "medikamentenverabreichung": ("medication", ("MedicationAdministration",)),
    "medikamentenverordnung": ("medication", ("MedicationRequest",)),
    **{name.lower(): ("medication", (name,)) for name in MEDICATIONS},
    **dict.fromkeys(("bioprobe", "specimen"), ("specimen", ("Specimen",))),
    **dict.fromkeys(("einwilligung", "consent"), ("consent", ("Consent",))),
    **dict.fromkeys(("fall", "encounter", "versorgungsstellenkontakt"), ("encounter", ("Encounter",))),
    **dict.fromkeys(("patient", "person"), ("patient", ("Patient",))),
}
BY_SYSTEM = {ICD10GM: CONTEXTS["diagnosis"], OPS: CONTEXTS["procedure"], ATC: CONTEXTS["medication"],
             LOINC: CONTEXTS["observation"]}
AGE = {(LOINC, "30525-0"), (SNOMED, "424144002")}
GENDER = {(LOINC, "LL2191-6"), (SNOMED, "263495000")}
GENDER_CODES = {**dict.fromkeys(("male", "m", "la2-8"), "male"), **dict.fromkeys(("female", "f", "la3-6"), "female"),
                **dict.fromkeys(("other", "d", "diverse", "divers"), "other"),
                **dict.fromkeys(("unknown", "u", "x", "unk"), "unknown")}
AGE_UNITS = {"a": "a", "year": "a", "years": "a", "jahr": "a", "mo": "mo", "wk": "wk", "d": "d"}
# where an event's code and time are; a time choice `x` is read as xDateTime, xPeriod or xInstant
CODE_ELEMENTS = {"Condition": ("code",), "Procedure": ("code",), "Observation": ("code",), "Specimen": ("type",),
                 "Encounter": ("class", "type", "serviceType"),
                 **dict.fromkeys(MEDICATIONS, ("medicationCodeableConcept",))}
TIME_ELEMENTS = {"Condition": ("onset", "recordedDate"), "Procedure": ("performed",),
                 "Observation": ("effective", "issued"), "MedicationAdministration": ("effective",),
                 "MedicationStatement": ("effective",), "MedicationRequest": ("authoredOn",),
                 "Specimen": ("collection.collected",), "Encounter": ("period",)}
ATTRIBUTES = {  # attributeCode.code (lower case) -> element path(s), per kind
    "diagnosis": {"clinicalstatus": "clinicalStatus", "status": "clinicalStatus", "bodysite": "bodySite",
                  "verificationstatus": "verificationStatus", "severity": "severity", "stage": "stage.summary"},
    "procedure": {"status": "status", "bodysite": "bodySite", "category": "category"},
    "observation": {"interpretation": "interpretation", "method": "method", "status": "status",
                    "bodysite": "bodySite"},
    "medication": {"status": "status", "route": "dosage.route|dosageInstruction.route"},
    "specimen": {"bodysite": "collection.bodySite", "status": "status"},
    "encounter": {"status": "status"},
}
REFERENCE_ATTRIBUTES = {"diagnose", "diagnosis"}


# ---------------------------------------------------------------- time
def fhir_span(text: str) -> Span:
    """The interval a FHIR date/dateTime/instant covers at its precision (seconds; fractions ignored)."""
    if len(text) == 4:
        return _utc(int(text), 1, 1), _utc(int(text) + 1, 1, 1)
    if len(text) == 7:
        year, month = int(text[:4]), int(text[5:7])
        return _utc(year, month, 1), add_months(_utc(year, month, 1), 1)
    if len(text) == 10:
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return day, day + timedelta(days=1)
    moment = datetime.fromisoformat(text).replace(microsecond=0)
    moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    return moment, moment + timedelta(seconds=1)


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar arithmetic: the same day-of-month, clamped to the month's last day."""
    year, month0 = divmod(moment.month - 1 + months, 12)
    day = min(moment.day, calendar.monthrange(year + moment.year, month0 + 1)[1])
    return moment.replace(year=year + moment.year, month=month0 + 1, day=day)


@dataclass(frozen=True)
class Offset:
    months: int
    seconds: float

    def shift(self, moment: datetime) -> datetime:
        return add_months(moment, self.months) + timedelta(seconds=self.seconds)


_DURATION = re.compile(r"(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def parse_offset(text: str | None) -> Offset | None:
    if text is None:
        return None
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    sign = -1 if match[1] else 1
    y, mo, w, d, h, mi = (int(g or 0) for g in match.groups()[1:7])
    seconds = float(match[8] or 0) + 60 * mi + 3600 * h + 86400 * (d + 7 * w)
    return Offset(sign * (12 * y + mo), sign * seconds)


def overlaps(lo: datetime, hi: datetime, window: Span) -> bool:
    return lo < window[1] and window[0] < hi


# ---------------------------------------------------------------- the query
@dataclass(eq=False)
class Criterion:
    kind: str  # diagnosis … encounter, age, gender, now
    resource_types: tuple[str, ...] = ()
    codes: frozenset[tuple[str, str]] = frozenset()  # (system URI or "" for any system, code)
    value: dict | None = None
    attributes: tuple[dict, ...] = ()
    window: Span | None = None  # the absolute timeRestriction


@dataclass(eq=False)
class Group:
    id: str | None
    clauses: list[list[Criterion]]  # AND of ORs
    entries: list[tuple[str, Offset | None, Offset | None]] = field(default_factory=list)  # anchor, min, max
    occurrence: str | None = None
    point: str = "start"


def _system(text: str | None) -> str:
    return (resolve_system(text) or text) if text else ""


@cache
def expanded(system: str, code: str) -> frozenset[tuple[str, str]]:
    """The code and, in a hierarchical catalogue, its descendants; unknown codes match literally."""
    uri = _system(system)
    if uri in (ICD10GM, OPS, ATC):
        concept, _ = code_system(uri).find(code)
        if concept is not None:
            return frozenset((uri, c) for c in [concept.code, *code_system(uri).descendants(concept.code)])
        if uri == ICD10GM:
            raise ValueError(f"ICD-10-GM has no code {code!r}: the query is invalid")
    return frozenset({(uri, code)})


def read_criterion(raw: dict) -> Criterion:
    if raw.get("type") == "now":
        return Criterion("now")
    codes = frozenset(c for term in raw["termCodes"] for c in expanded(term.get("system", ""), term["code"]))
    plain = {(_system(t.get("system")), t["code"]) for t in raw["termCodes"]}
    if plain & AGE or plain & GENDER or any(t["code"] == "gender" for t in raw["termCodes"]):
        kind, types = ("age" if plain & AGE else "gender"), ("Patient",)
    else:
        kind, types = CONTEXTS[raw["context"]["code"].lower()]
        if kind == "patient":  # dispatched by the term code's system
            kind, types = BY_SYSTEM[_system(raw["termCodes"][0].get("system"))]
    restriction = raw.get("timeRestriction")
    window = None
    if restriction:
        after, before = restriction.get("afterDate"), restriction.get("beforeDate")
        window = (fhir_span(after)[0] if after else NEVER, fhir_span(before)[1] if before else FOREVER)
    return Criterion(kind, types, codes, raw.get("valueFilter"), tuple(raw.get("attributeFilters", ())), window)


def read_query(ccdl: dict) -> tuple[list[list[Group]], list[list[Group]]]:
    """(inclusion, exclusion) as group arrays: v2 converted, never reinterpreted."""
    if ccdl["version"] == "2":
        inclusion = [[Group(None, [[read_criterion(c) for c in ors] for ors in ccdl["inclusionCriteria"]])]]
        exclusion = [[Group(None, [[read_criterion(c)] for c in ands])]
                     for ands in ccdl.get("exclusionCriteria") or []]  # split at level 1, never distribute
        return inclusion, exclusion

    def group(raw: dict) -> Group:
        entries = [(e["anchorRef"], parse_offset(e.get("minOffset")), parse_offset(e.get("maxOffset")))
                   for e in raw.get("relativeTimeRestrictions") or []]
        return Group(raw.get("id"), [[read_criterion(c) for c in ors] for ors in raw["criteria"]], entries,
                     raw.get("anchorOccurrence"), raw.get("anchorPoint", "start"))

    inclusion = [[group(g) for g in array] for array in ccdl["inclusionCriteria"]]
    exclusion = [[group(g) for g in array] for array in ccdl.get("exclusionCriteria") or []]
    return inclusion, exclusion


# ---------------------------------------------------------------- events
@dataclass(frozen=True)
class Event:
    span: Span | None  # None: undated
    start: Span | None = None  # the point an anchorPoint "start" reduces the event to
    end: Span | None = None


def _path(node: Any, path: str) -> list[Any]:
    """The values at a dotted path, lists flattened; `a|b` tries each."""
    found: list[Any] = []
    for alternative in path.split("|"):
        values = [node]
        for name in alternative.split("."):
            values = [v.get(name) for v in values if isinstance(v, dict)]
            values = [x for v in values for x in (v if isinstance(v, list) else [v]) if x is not None]
        found += values
    return found


def _codings(values: list[Any]) -> list[tuple[str | None, str]]:
    """(system, code) of CodeableConcepts, Codings and plain codes (system None: not compared)."""
    found: list[tuple[str | None, str]] = []
    for value in values:
        if isinstance(value, str):
            found.append((None, value))
        elif isinstance(value, dict):
            for coding in value.get("coding", [value]):
                if "code" in coding:
                    found.append((_system(coding.get("system")), coding["code"]))
    return found


def _event(node: dict, element: str) -> Event | None:
    """The event of a time element (`x` is read as x, xDateTime, xInstant or xPeriod); None if absent."""
    *parents, name = element.split(".")
    for parent in parents:
        node = node.get(parent)
        if not isinstance(node, dict):
            return None
    for suffix in ("", "DateTime", "Instant"):
        if isinstance(node.get(name + suffix), str):
            point = fhir_span(node[name + suffix])
            return Event(point, point, point)
    period = node.get(name if name == "period" else name + "Period")
    if isinstance(period, dict) and (period.get("start") or period.get("end")):
        start = fhir_span(period["start"]) if period.get("start") else None
        end = fhir_span(period["end"]) if period.get("end") else None
        return Event((start[0] if start else NEVER, end[1] if end else FOREVER), start, end)
    return None


def _time(resource: dict) -> Event:
    for element in TIME_ELEMENTS[resource["resourceType"]]:
        if (event := _event(resource, element)) is not None:
            return event
    return Event(None)


def _matches_code(criterion: Criterion, codings: list[tuple[str | None, str]]) -> bool:
    return any((system, code) in criterion.codes or ("", code) in criterion.codes for system, code in codings)


def _concept_holds(selected: list[dict], codings: list[tuple[str | None, str]]) -> bool:
    return any(s["code"] == code and (not s.get("system") or system is None or _system(s["system"]) == system)
               for s in selected for system, code in codings)


class Patient:
    """One patient's resources and the events each criterion selects from them."""

    def __init__(self, patient: dict | None, resources: list[dict], by_key: dict[str, dict], reference: date):
        self.patient, self.resources, self.by_key = patient, resources, by_key
        self.reference = reference
        self.today = (_utc(reference.year, reference.month, reference.day),
                      _utc(reference.year, reference.month, reference.day) + timedelta(days=1))
        self._events: dict[int, list[Event]] = {}

    def events(self, criterion: Criterion, resources: list[dict] | None = None) -> list[Event]:
        """The events of the criterion (code, value, attribute filters, absolute time restriction)
        among the patient's resources or the given ones."""
        if resources is not None or id(criterion) not in self._events:
            found = [e for e in self._select(criterion, self.resources if resources is None else resources)
                     if criterion.window is None or (e.span is not None and overlaps(*e.span, criterion.window))]
            if resources is not None:
                return found
            self._events[id(criterion)] = found
        return self._events[id(criterion)]

    def _select(self, criterion: Criterion, resources: list[dict]) -> list[Event]:
        if criterion.kind == "now":
            return [Event(self.today, self.today, self.today)]
        if criterion.kind in ("age", "gender"):
            ok = self.patient is not None and self._demographic_holds(criterion, self.patient)
            return [Event(None)] if ok else []
        found = []
        for resource in resources:
            if resource["resourceType"] not in criterion.resource_types:
                continue
            if criterion.kind == "consent":
                found += self._consent_events(criterion, resource)
            elif (_matches_code(criterion, self._codes(resource)) and self._value_holds(criterion, resource)
                  and all(self._attribute_holds(criterion, f, resource) for f in criterion.attributes)):
                found.append(_time(resource))
        return found

    def _codes(self, resource: dict) -> list[tuple[str | None, str]]:
        values = [v for element in CODE_ELEMENTS[resource["resourceType"]] for v in _path(resource, element)]
        reference = (resource.get("medicationReference") or {}).get("reference")
        if reference in self.by_key:
            values += _path(self.by_key[reference], "code")
        return _codings(values)

    def _consent_events(self, criterion: Criterion, consent: dict) -> list[Event]:
        if consent.get("status") != "active":
            return []
        return [_event(p, "period") or Event(None) for p in _path(consent, "provision.provision")
                if p.get("type") == "permit" and _matches_code(criterion, _codings(p.get("code", [])))]

    def _demographic_holds(self, criterion: Criterion, patient: dict) -> bool:
        wanted = criterion.value
        if criterion.kind == "gender":
            if wanted is None:
                return bool(patient.get("gender"))
            genders = {GENDER_CODES.get(c["code"].lower()) for c in wanted["selectedConcepts"]}
            return patient.get("gender") in genders
        if "birthDate" not in patient:
            return False
        if wanted is None:
            return True
        born = fhir_span(patient["birthDate"])[0].date()
        unit = AGE_UNITS[(wanted.get("unit") or {}).get("code", "a").lower()]
        return _compare(float(completed(born, self.reference, unit)), wanted, lambda number: number)

    def _value_holds(self, criterion: Criterion, resource: dict) -> bool:
        wanted = criterion.value
        if wanted is None:
            return True
        if wanted["type"] == "concept":
            return _concept_holds(wanted["selectedConcepts"], _codings(_path(resource, "valueCodeableConcept")))
        quantity = resource.get("valueQuantity")
        if not quantity or not isinstance(quantity.get("value"), int | float):
            return False
        loinc = next((code for system, code in self._codes(resource) if system == LOINC), None)
        canonical = canonical_unit(loinc) if loinc else None
        raw_unit, filter_unit = quantity.get("code"), (wanted.get("unit") or {}).get("code")
        if canonical is None:  # raw values, and only in the filter's own unit
            if filter_unit not in (None, raw_unit):
                return False
            return _compare(quantity["value"], wanted, lambda number: number)
        value = ucum_convert(quantity["value"], raw_unit, canonical, loinc)
        if value is None:
            return False
        return _compare(value, wanted, lambda number: ucum_convert(number, filter_unit or canonical, canonical, loinc))

    def _attribute_holds(self, criterion: Criterion, attribute: dict, resource: dict) -> bool:
        name = attribute["attributeCode"]["code"].lower()
        if attribute["type"] == "reference" and name in REFERENCE_ATTRIBUTES:
            keys = [e["valueReference"]["reference"] for e in resource.get("extension", [])
                    if e.get("url") == DIAGNOSE_EXTENSION and "valueReference" in e]
            conditions = [self.by_key[k] for k in keys if any(self.by_key.get(k) is r for r in self.resources)]
            return any(self.events(read_criterion(c), conditions) for c in attribute["criteria"])
        values = _path(resource, ATTRIBUTES[criterion.kind][name])
        if attribute["type"] == "concept":
            return _concept_holds(attribute["selectedConcepts"], _codings(values))
        raise NotImplementedError(f"attribute filter of type {attribute['type']!r} on {name!r}")


def completed(born: date, on: date, unit: str) -> int:
    """Completed years, months, weeks or days of age on a day (a birthday count)."""
    months = (on.year - born.year) * 12 + on.month - born.month - (on.day < born.day)
    days = (on - born).days
    return {"a": months // 12, "mo": months, "wk": days // 7, "d": days}[unit]


def _compare(value: float, wanted: dict, to_unit: Any) -> bool:
    """The filter on one value; filter numbers pass `to_unit` first. Both sides rounded to 9 digits."""
    def r(x: float | None) -> float | None:
        return None if x is None else float(f"{x:.9g}")

    v = r(value)
    if wanted["type"] == "quantity-range":
        low, high = r(to_unit(wanted["minValue"])), r(to_unit(wanted["maxValue"]))
        return low is not None and high is not None and low <= v <= high
    limit = r(to_unit(wanted["value"]))
    if limit is None:
        return False
    return {"gt": v > limit, "ge": v >= limit, "lt": v < limit, "le": v <= limit, "eq": v == limit,
            "ne": v != limit}[wanted["comparator"]]


@cache
def _ucum() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@cache
def _pint_units(code: str) -> Any:
    return _ucum().from_ucum(code).units


def ucum_convert(value: float, unit: str | None, target: str, loinc: str | None) -> float | None:
    """`value` in `unit` expressed in `target`, through mass = substance × molar mass if needed; None if not."""
    from pint.errors import DimensionalityError

    if unit is None:
        return None
    if unit == target:
        return float(value)
    try:
        quantity = _ucum().Quantity(value, _pint_units(unit))
        target_units = _pint_units(target)
    except Exception:  # noqa: BLE001 - not UCUM: ucumvert raises its own and lark's errors
        return None
    molar_mass = dict(code_system("loinc").concepts[loinc].properties).get("MOLAR_MASS") if loinc else None
    per_mol = _ucum().Quantity(molar_mass, "g/mol") if molar_mass else None
    for factor in [1, per_mol, 1 / per_mol] if per_mol is not None else [1]:
        try:
            return float((quantity if factor == 1 else quantity * factor).to(target_units).magnitude)
        except DimensionalityError:
            continue
    return None


# ---------------------------------------------------------------- groups, anchors, witnesses
Witness = tuple[Span, ...]  # one point interval per clause of the anchor group


class Evaluation:
    def __init__(self, groups: dict[str, Group], patient: Patient):
        self.groups, self.patient = groups, patient

    def window(self, group: Group, witnesses: dict[str, Witness]) -> Span | None:
        """The group's relative window under these witnesses; None when the group has none."""
        if not group.entries:
            return None
        starts, ends = [NEVER], [FOREVER]
        for anchor, low, high in group.entries:
            points = witnesses[anchor]
            if low is not None:
                starts.append(low.shift(max(p[0] for p in points)))
            if high is not None:
                ends.append(high.shift(min(p[1] for p in points)))
        return max(starts), min(ends)

    def qualifying(self, criterion: Criterion, window: Span | None) -> list[Event]:
        return [e for e in self.patient.events(criterion)
                if window is None or (e.span is not None and overlaps(*e.span, window))]

    def holds(self, group: Group, witnesses: dict[str, Witness]) -> bool:
        window = self.window(group, witnesses)
        if window is not None and window[0] >= window[1]:
            return False  # an empty or inverted window matches nothing
        return all(any(self.qualifying(c, window) for c in clause) for clause in group.clauses)

    def candidates(self, anchor: str, witnesses: dict[str, Witness]) -> list[Witness]:
        """The eligible witnesses of an anchor group: a tuple of one point per clause."""
        group = self.groups[anchor]
        window = self.window(group, witnesses)
        if window is not None and window[0] >= window[1]:
            return []
        per_clause = []
        for clause in group.clauses:
            points = {getattr(e, group.point) for c in clause for e in self.qualifying(c, window) if e.span}
            points.discard(None)
            ordered = sorted(points)  # by lo, then hi
            if not ordered:
                return []
            per_clause.append({"first": ordered[:1], "last": ordered[-1:]}.get(group.occurrence, ordered))
        return list(itertools.product(*per_clause))

    def array_holds(self, array: list[Group]) -> bool:
        order = self.anchors_needed(array)
        return any(all(self.holds(g, witnesses) for g in array) for witnesses in self.assignments(order, {}))

    def anchors_needed(self, array: list[Group]) -> list[str]:
        """Every anchor id the array's groups depend on, each after the anchors it depends on."""
        order: list[str] = []

        def visit(group: Group) -> None:
            for anchor, _, _ in group.entries:
                if anchor not in order:
                    visit(self.groups[anchor])
                    if anchor not in order:
                        order.append(anchor)

        for group in array:
            visit(group)
        return order

    def assignments(self, order: list[str], chosen: dict[str, Witness]) -> Iterator[dict[str, Witness]]:
        """Every way to pick one witness per anchor id (the scope rule: one per id per group array)."""
        if len(chosen) == len(order):
            yield chosen
            return
        anchor = order[len(chosen)]
        for witness in self.candidates(anchor, chosen):
            yield from self.assignments(order, {**chosen, anchor: witness})


def _patient_id(resource: dict) -> str | None:
    if resource["resourceType"] == "Patient":
        return resource["id"]
    reference = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def evaluate(ccdl: dict, resources: list[dict], reference_date: date) -> set[str]:
    """The ids of the patients in the cohort the CCDL query `ccdl` (v2 or v3) defines."""
    inclusion, exclusion = read_query(ccdl)
    groups: dict[str, Group] = {}
    for array in [*inclusion, *exclusion]:
        for group in array:
            if group.id:
                groups.setdefault(group.id, group)
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    owned: dict[str, list[dict]] = {}
    for resource in resources:
        if (pid := _patient_id(resource)) is not None:
            owned.setdefault(pid, []).append(resource)
    cohort = set()
    for pid, mine in owned.items():
        evaluation = Evaluation(groups, Patient(by_key.get(f"Patient/{pid}"), mine, by_key, reference_date))
        if any(map(evaluation.array_holds, inclusion)) and not any(map(evaluation.array_holds, exclusion)):
            cohort.add(pid)
    return cohort

"""Small FHIR patient histories and valid CCDL queries over the same few codes, for property tests.

    Resource builders (also used by hand-made tests):
        patient(pid, gender, birth_date), condition(pid, n, code, when, …), observation(pid, n, loinc,
        value, unit, when, …), administration(pid, n, atc, when, by_reference), specimen(…), consent(…)
        `when` is a date/dateTime string, a (start, end) Period (either may be None) or None (undated).
    Hypothesis strategies:
        histories()    1–6 patients: Conditions from 3 ICD-10-GM families (parents and children),
                       two LOINC lab values in two units each, MedicationAdministrations (also
                       -Statements, -Requests; by code or Medication reference), Procedures (OPS),
                       Specimens with a Diagnose extension, Consents; year/month/day/dateTime precision, Periods,
                       undated; the first option of a choice is the one Hypothesis draws most
        v2_queries()   1–3 AND clauses of 1–2 ORs, optional exclusion, value filters, time restrictions
        v3_queries()   1–2 inclusion group arrays (+ optional exclusion), 1–4 groups, first/last/any
                       anchors incl. chains, 1–2 entries, offsets in days/hours/weeks/months, `now`;
                       only valid queries: acyclic, defined ids, anchorOccurrence where referenced,
                       never first/last chained off any
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache
from typing import Any

from cohort_reference import fhir_span
from hypothesis import strategies as st

ICD, ATC, LOINC, UCUM = ("http://fhir.de/CodeSystem/bfarm/icd-10-gm", "http://fhir.de/CodeSystem/bfarm/atc",
                         "http://loinc.org", "http://unitsofmeasure.org")
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
ICD_DIMDI = "http://fhir.de/CodeSystem/dimdi/icd-10-gm"
DIAGNOSE_EXTENSION = "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Diagnose"
REFERENCE_DATE = date(2021, 4, 15)
BASE_DAY = date(2021, 3, 1)  # histories and windows live in the weeks around it

# the data use leaves and mid-level codes; the queries use every level, so descendants matter
DATA_ICD = {"E11": ["E11.9", "E11.90", "E11.91", "E11.20"], "I10": ["I10.00", "I10.90"], "J45": ["J45.0", "J45.9"]}
QUERY_ICD = ["E11", "E11", "I10", "I10", "J45", "E11.9", "E11.90", "E11.2", "I10.0", "I10.00", "J45.9"]
DATA_ATC = ["B01AC06", "B01AA03"]
DATA_OPS, QUERY_OPS = ["1-632.0", "1-632.1", "8-854"], ["1-632", "1-632.0", "8-854"]
QUERY_ATC = ["B01A", "B01AC", "B01AC06", "B01AA03"]
LAB_VALUES = {  # LOINC -> unit -> values (boundaries in the other unit on purpose: 12 g/dL = 120 g/L)
    "718-7": {"g/dL": [8, 10, 12, 12.5, 13, 15.1], "g/L": [80, 100, 120, 125, 130]},
    "2345-7": {"mg/dL": [70, 99.088, 126, 180], "mmol/L": [3.9, 5.5, 7, 10]},
}
GENDERS = ["male", "female", "other", "unknown"]
MEDICATION_TYPES = ["MedicationAdministration", "MedicationAdministration", "MedicationStatement", "MedicationRequest"]
MEDICATION_CONTEXTS = ["Medikation", "Medikamentenverabreichung", "Medikamentenverordnung"]
SPECIMEN_TYPES = ["119297000", "119376003"]  # SNOMED blood, tissue specimen
CONSENT_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
CONSENT_CODES = ["2.16.840.1.113883.3.1937.777.24.5.3.8", "2.16.840.1.113883.3.1937.777.24.5.3.6"]
GENDER_CONCEPTS = ["male", "female", "M", "F", "other", "D", "unknown"]


def choice(options: Any) -> st.SearchStrategy:
    """st.sampled_from, built once per list of options: building strategies is what costs in a draw."""
    return _choice(tuple(options))


@cache
def _choice(options: tuple) -> st.SearchStrategy:
    return st.sampled_from(options)


@cache
def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


@cache
def lists(strategy: st.SearchStrategy, low: int, high: int, unique: bool = False) -> st.SearchStrategy:
    return st.lists(strategy, min_size=low, max_size=high, unique=unique)


between = cache(st.integers)
BOOLEANS = st.booleans()


# ---------------------------------------------------------------- resource builders
def _time(prefix: str, when: Any) -> dict[str, Any]:
    if when is None:
        return {}
    if isinstance(when, tuple):
        return {f"{prefix}Period": {k: v for k, v in zip(("start", "end"), when, strict=True) if v}}
    return {f"{prefix}DateTime": when}


def _subject(pid: str) -> dict[str, Any]:
    return {"subject": {"reference": f"Patient/{pid}"}}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def patient(pid: str, gender: str | None = None, birth_date: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": pid}
    if gender:
        resource["gender"] = gender
    if birth_date:
        resource["birthDate"] = birth_date
    return resource


def condition(pid: str, n: int, code: str, when: Any = None, recorded: str | None = None,
              status: str | None = None) -> dict[str, Any]:
    resource = {"resourceType": "Condition", "id": f"{pid}-c{n}", "code": _coded(ICD, code), **_subject(pid),
                **_time("onset", when)}
    if recorded:
        resource["recordedDate"] = recorded
    if status:
        resource["clinicalStatus"] = _coded("http://terminology.hl7.org/CodeSystem/condition-clinical", status)
    return resource


def observation(pid: str, n: int, loinc: str, value: float | None, unit: str, when: Any = None,
                issued: str | None = None, status: str = "final") -> dict[str, Any]:
    resource = {"resourceType": "Observation", "id": f"{pid}-o{n}", "status": status,
                "code": _coded(LOINC, loinc), **_subject(pid), **_time("effective", when)}
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if issued:
        resource["issued"] = issued
    return resource


def administration(pid: str, n: int, atc: str, when: Any, by_reference: bool = False,
                   resource_type: str = "MedicationAdministration") -> list[dict[str, Any]]:
    """A MedicationAdministration (or -Statement, or -Request dated by authoredOn when `when` is a
    dateTime), and its Medication when it names the drug by reference."""
    resource = {"resourceType": resource_type, "id": f"{pid}-m{n}", **_subject(pid)}
    if resource_type == "MedicationRequest":
        resource.update(status="active", intent="order", **({"authoredOn": when} if isinstance(when, str) else {}))
    else:
        resource.update(status="completed", **_time("effective", when))
    if not by_reference:
        return [{**resource, "medicationCodeableConcept": _coded(ATC, atc)}]
    medication = {"resourceType": "Medication", "id": f"{pid}-med{n}", "code": _coded(ATC, atc)}
    return [medication, {**resource, "medicationReference": {"reference": f"Medication/{pid}-med{n}"}}]


def procedure(pid: str, n: int, code: str, when: Any) -> dict[str, Any]:
    return {"resourceType": "Procedure", "id": f"{pid}-pr{n}", "status": "completed", "code": _coded(OPS, code),
            **_subject(pid), **_time("performed", when)}


def specimen(pid: str, n: int, snomed: str, when: Any, diagnosis: str | None = None) -> dict[str, Any]:
    resource = {"resourceType": "Specimen", "id": f"{pid}-s{n}", "type": _coded("http://snomed.info/sct", snomed),
                **_subject(pid), "collection": _time("collected", when)}
    if diagnosis:
        resource["extension"] = [{"url": DIAGNOSE_EXTENSION, "valueReference": {"reference": f"Condition/{diagnosis}"}}]
    return resource


def consent(pid: str, n: int, provisions: list[tuple[str, str, Any]], status: str = "active") -> dict[str, Any]:
    """A Consent whose nested provisions are (type, code, (start, end))."""
    system = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
    return {"resourceType": "Consent", "id": f"{pid}-consent{n}", "status": status,
            "scope": _coded("http://terminology.hl7.org/CodeSystem/consentscope", "research"),
            "category": [_coded(LOINC, "57016-8")], "patient": {"reference": f"Patient/{pid}"},
            "provision": {"type": "deny", "provision": [
                {"type": kind, "code": [_coded(system, code)],
                 "period": {k: v for k, v in zip(("start", "end"), period, strict=True) if v}}
                for kind, code, period in provisions]}}


# ---------------------------------------------------------------- histories
@cache
@st.composite
def moments(draw: st.DrawFn) -> str:
    """A date or dateTime near BASE_DAY at year, month, day or seconds precision."""
    day = BASE_DAY + timedelta(days=draw(between(-5, 30)))
    precision = draw(choice(["dateTime"] * 8 + ["day"] * 4 + ["month", "year"]))
    if precision == "year":
        return f"{day.year}"
    if precision == "month":
        return day.isoformat()[:7]
    if precision == "day":
        return day.isoformat()
    hour, minute = draw(choice([11, 0, 1, 22, 23])), draw(choice([0, 30, 59]))
    zone = draw(choice(["+01:00", "+02:00", "Z"]))
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00{zone}"


@cache
def date_times() -> st.SearchStrategy:
    return moments().filter(lambda m: "T" in m)


@cache
@st.composite
def times(draw: st.DrawFn, undated: bool = True) -> Any:
    """A dateTime (mostly), a Period with start and/or end, or nothing."""
    kind = draw(choice(["moment"] * 4 + ["period"] * 2 + (["none"] if undated else [])))
    if kind == "none":
        return None
    if kind == "moment":
        return draw(moments())
    start, end = draw(maybe(moments())), draw(maybe(moments()))
    if start is None and end is None:
        start = draw(moments())
    if start and end and fhir_span(end)[0] < fhir_span(start)[0]:  # FHIR: a Period does not end before it starts
        start, end = end, start
    return (start, end)


@cache
@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for p in range(draw(choice([3, 2, 4, 5, 6, 1]))):  # Hypothesis favours the first option
        pid = f"p{p}"
        born = draw(choice(["1950", "1980-07", "1980-04-15", "2003-04-16", "2003-04-15", None]))
        resources.append(patient(pid, draw(choice([*GENDERS, None])), born))
        # a patient's events come from one or two families, so anchors often have several candidates
        codes = [c for family in draw(lists(choice(sorted(DATA_ICD)), 1, 2, True)) for c in DATA_ICD[family]]
        for n in range(draw(choice([3, 2, 4, 5, 1, 6]))):
            when = draw(times())
            recorded = draw(maybe(moments())) if draw(BOOLEANS) else None
            status = draw(choice([None, "active", "resolved"]))
            resources.append(condition(pid, n, draw(choice(codes)), when, recorded, status))
        loincs = draw(lists(choice(sorted(LAB_VALUES)), 1, 2, True))
        for n in range(draw(choice([2, 1, 3]))):
            loinc = draw(choice(loincs))
            unit = draw(choice(sorted(LAB_VALUES[loinc])))
            value = draw(choice(LAB_VALUES[loinc][unit])) if draw(between(0, 7)) else None
            issued = draw(maybe(date_times()))
            resources.append(observation(pid, n, loinc, value, unit, draw(times()), issued,
                                         draw(choice(["final", "preliminary"]))))
        for n in range(draw(choice([1, 0, 2]))):
            resources += administration(pid, n, draw(choice(DATA_ATC)), draw(times(undated=False)),
                                        draw(BOOLEANS), draw(choice(MEDICATION_TYPES)))
        for n in range(draw(choice([0, 1, 2]))):
            resources.append(procedure(pid, n, draw(choice(DATA_OPS)), draw(times())))
        if draw(between(0, 2)) == 0:  # a specimen, maybe for one of the patient's diagnoses
            diagnoses = [r["id"] for r in resources if r["resourceType"] == "Condition" and r["id"].startswith(pid)]
            resources.append(specimen(pid, 0, draw(choice(SPECIMEN_TYPES)), draw(times(undated=False)),
                                      draw(maybe(choice(diagnoses))) if diagnoses else None))
        if draw(between(0, 2)) == 0:
            provisions = draw(lists(st.tuples(choice(["permit", "permit", "deny"]), choice(CONSENT_CODES),
                                              times(undated=False)), 1, 2))
            resources.append(consent(pid, 0, [(kind, code, when if isinstance(when, tuple) else (when, None))
                                              for kind, code, when in provisions],
                                     draw(choice(["active", "active", "inactive"]))))
    return resources


# ---------------------------------------------------------------- criteria
def _day(offset: int) -> str:
    return (BASE_DAY + timedelta(days=offset)).isoformat()


@cache
@st.composite
def time_restrictions(draw: st.DrawFn) -> dict[str, str]:
    after, before = draw(maybe(between(-15, 40))), draw(maybe(between(-15, 40)))
    if after is None and before is None:
        after = 0
    if after is not None and before is not None and after > before:
        after, before = before, after
    return {**({"afterDate": _day(after)} if after is not None else {}),
            **({"beforeDate": _day(before)} if before is not None else {})}


def _context(code: str) -> dict[str, str]:
    return {"code": code, "system": "fdpg.mii.cds", "version": "1.0.0", "display": code}


def _term(system: str, code: str) -> dict[str, str]:
    return {"code": code, "system": system, "display": code}


@cache
@st.composite
def diagnosis_criteria(draw: st.DrawFn) -> dict[str, Any]:
    codes = draw(lists(choice(QUERY_ICD), 1, 2, True))
    system = draw(choice([ICD, ICD, ICD_DIMDI]))
    criterion: dict[str, Any] = {"context": _context(draw(choice(["Diagnose", "Condition"]))),
                                 "termCodes": [_term(system, c) for c in codes]}
    if draw(between(0, 4)) == 0:
        criterion["attributeFilters"] = [{
            "type": "concept", "attributeCode": _term("mii.abide", "clinicalStatus"),
            "selectedConcepts": [_term("http://terminology.hl7.org/CodeSystem/condition-clinical", "active")]}]
    return criterion


@cache
@st.composite
def value_filters(draw: st.DrawFn, loinc: str) -> dict[str, Any]:
    units = sorted(LAB_VALUES[loinc])
    unit = draw(choice(units))
    values = LAB_VALUES[loinc][unit]
    unit_part = {"unit": {"code": unit, "display": unit}} if draw(between(0, 5)) else {}
    if not unit_part:  # no unit: the canonical one (the first listed)
        values = LAB_VALUES[loinc][units[0] if loinc == "718-7" else "mg/dL"]
    if draw(BOOLEANS):
        return {"type": "quantity-comparator", "comparator": draw(choice(["gt", "ge", "lt", "le", "eq", "ne"])),
                "value": draw(choice(values)), **unit_part}
    low, high = sorted(draw(lists(choice(values), 2, 2)))
    return {"type": "quantity-range", "minValue": low, "maxValue": high, **unit_part}


@cache
@st.composite
def observation_criteria(draw: st.DrawFn) -> dict[str, Any]:
    loinc = draw(choice(sorted(LAB_VALUES)))
    criterion: dict[str, Any] = {"context": _context(draw(choice(["Laboruntersuchung", "Observation"]))),
                                 "termCodes": [_term(LOINC, loinc)]}
    if draw(BOOLEANS):
        criterion["valueFilter"] = draw(value_filters(loinc))
    if draw(between(0, 4)) == 0:
        criterion["attributeFilters"] = [{"type": "concept", "attributeCode": _term("mii.abide", "status"),
                                          "selectedConcepts": [_term("http://hl7.org/fhir/observation-status",
                                                                     "final")]}]
    return criterion


@cache
@st.composite
def medication_criteria(draw: st.DrawFn) -> dict[str, Any]:
    return {"context": _context(draw(choice(MEDICATION_CONTEXTS))),
            "termCodes": [_term(ATC, draw(choice(QUERY_ATC)))]}


@cache
@st.composite
def procedure_criteria(draw: st.DrawFn) -> dict[str, Any]:
    return {"context": _context(draw(choice(["Prozedur", "Procedure"]))), "termCodes": [_term(OPS, draw(choice(QUERY_OPS)))]}


@cache
@st.composite
def specimen_criteria(draw: st.DrawFn) -> dict[str, Any]:
    criterion: dict[str, Any] = {"context": _context(draw(choice(["Bioprobe", "Specimen"]))),
                                 "termCodes": [_term("http://snomed.info/sct", draw(choice(SPECIMEN_TYPES)))]}
    if draw(BOOLEANS):
        diagnosis = {"context": _context("Diagnose"), "termCodes": [_term(ICD, draw(choice(QUERY_ICD)))]}
        if draw(between(0, 2)) == 0:
            diagnosis["timeRestriction"] = draw(time_restrictions())
        criterion["attributeFilters"] = [{"type": "reference", "attributeCode": _term("mii.abide", "diagnose"),
                                          "criteria": [diagnosis]}]
    return criterion


@cache
@st.composite
def consent_criteria(draw: st.DrawFn) -> dict[str, Any]:
    return {"context": _context("Einwilligung"), "termCodes": [_term(CONSENT_SYSTEM, draw(choice(CONSENT_CODES)))]}


@cache
def _event_kinds() -> st.SearchStrategy:
    return st.one_of(diagnosis_criteria(), observation_criteria(), medication_criteria(), diagnosis_criteria(),
                     observation_criteria(), medication_criteria(), specimen_criteria(), consent_criteria(),
                     procedure_criteria())


@cache
@st.composite
def event_criteria(draw: st.DrawFn) -> dict[str, Any]:
    """A criterion that selects dated events (diagnosis, observation, medication), maybe time-restricted."""
    criterion = draw(_event_kinds())
    if draw(between(0, 4)) == 0:
        criterion["timeRestriction"] = draw(time_restrictions())
    return criterion


@cache
@st.composite
def plain_criteria(draw: st.DrawFn) -> dict[str, Any]:
    """A broad criterion without filters (a family, a lab code, B01A): frequent events, so windows decide."""
    kind = draw(choice(["diagnosis", "diagnosis", "observation", "medication"]))
    if kind == "diagnosis":
        return {"context": _context("Diagnose"), "termCodes": [_term(ICD, draw(choice(sorted(DATA_ICD))))]}
    if kind == "observation":
        return {"context": _context("Laboruntersuchung"), "termCodes": [_term(LOINC, draw(choice(sorted(LAB_VALUES))))]}
    return {"context": _context("Medikation"), "termCodes": [_term(ATC, "B01A")]}


@cache
def group_criteria() -> st.SearchStrategy:
    return st.one_of(plain_criteria(), plain_criteria(), event_criteria())


@cache
@st.composite
def demographic_criteria(draw: st.DrawFn) -> dict[str, Any]:
    if draw(BOOLEANS):
        concepts = draw(lists(choice(GENDER_CONCEPTS), 1, 2, True))
        return {"context": _context("Patient"), "termCodes": [_term(LOINC, "LL2191-6")],
                "valueFilter": {"type": "concept", "selectedConcepts": [_term("", c) for c in concepts]}}
    unit = {"code": "a", "display": "Jahr"}
    if draw(BOOLEANS):
        value_filter = {"type": "quantity-comparator", "comparator": draw(choice(["gt", "ge", "lt", "le"])),
                        "value": draw(choice([17, 18, 40, 70])), "unit": unit}
    else:
        value_filter = {"type": "quantity-range", "minValue": 18, "maxValue": 40, "unit": unit}
    return {"context": _context("Patient"), "termCodes": [_term(LOINC, "30525-0")], "valueFilter": value_filter}


# ---------------------------------------------------------------- v2
@cache
@st.composite
def v2_queries(draw: st.DrawFn) -> dict[str, Any]:
    criteria = _v2_criteria()
    clauses = draw(choice([1, 1, 2, 2, 3]))
    query: dict[str, Any] = {"version": "2", "display": "generated",
                             "inclusionCriteria": draw(lists(lists(criteria, 1, 2), clauses, clauses))}
    if draw(between(0, 2)) == 0:
        query["exclusionCriteria"] = draw(lists(lists(criteria, 1, 2), 1, 2))
    return query


@cache
def _v2_criteria() -> st.SearchStrategy:
    return st.one_of(event_criteria(), event_criteria(), demographic_criteria())


# ---------------------------------------------------------------- v3
@cache
@st.composite
def offsets(draw: st.DrawFn) -> tuple[str | None, str | None]:
    """(minOffset, maxOffset), at least one, min ≤ max when they are comparable."""
    unit = draw(choice(["D", "D", "H", "W", "M"]))
    limit = {"D": 10, "H": 48, "W": 2, "M": 1}[unit]
    low, high = sorted(draw(lists(between(-limit, limit), 2, 2)))

    def text(n: int) -> str:
        return ("-" if n < 0 else "") + ("PT" if unit == "H" else "P") + f"{abs(n)}{unit}"

    which = draw(choice(["both", "min", "max"]))
    return (text(low) if which != "max" else None, text(high) if which != "min" else None)


@cache
@st.composite
def v3_queries(draw: st.DrawFn) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    depends_on_any: dict[str, bool] = {}
    if draw(between(0, 3)) == 0:
        groups.append({"id": "now", "criteria": [[{"type": "now"}]]})
        depends_on_any["now"] = False
    for i in range(draw(choice([2, 3, 4, 1]))):
        gid = f"g{i}"
        if draw(between(0, 7)) == 0:  # an unanchored demographic group
            groups.append({"id": gid, "criteria": [[draw(demographic_criteria())]]})
            continue
        clauses = draw(choice([1, 1, 2]))
        group: dict[str, Any] = {"id": gid, "criteria": draw(lists(lists(group_criteria(), 1, 2), clauses, clauses))}
        anchors = [g["id"] for g in groups if g["id"] in depends_on_any]
        entries = min(len(anchors), draw(choice([1, 1, 1, 2, 0])))
        refs = draw(lists(choice(anchors), entries, entries, True)) if entries else []
        if refs:
            group["relativeTimeRestrictions"] = []
            for anchor in refs:
                low, high = draw(offsets())
                group["relativeTimeRestrictions"].append(
                    {"anchorRef": anchor, **({"minOffset": low} if low else {}), **({"maxOffset": high} if high else {})})
        chained_off_any = any(depends_on_any[a] or _occurrence(groups, a) == "any" for a in refs)
        group["anchorOccurrence"] = "any" if chained_off_any else draw(choice(["first", "last", "any"]))
        group["anchorPoint"] = draw(choice(["start", "start", "end"]))
        depends_on_any[gid] = chained_off_any
        groups.append(group)
    referenced = {e["anchorRef"] for g in groups for e in g.get("relativeTimeRestrictions", [])}
    for group in groups:
        if group["id"] not in referenced:
            group.pop("anchorOccurrence", None)
            group.pop("anchorPoint", None)
    # every group sits in exactly one array; a reference across arrays takes only the anchor's date
    arrays = min(len(groups), draw(choice([1, 1, 2])) + (excluded := draw(choice([0, 0, 1]))))
    places = draw(st.permutations(list(range(arrays)) + [draw(between(0, arrays - 1)) for _ in groups[arrays:]]))
    placed = [[g for g, place in zip(groups, places, strict=True) if place == a] for a in range(arrays)]
    if excluded and len(placed) > 1:
        return {"version": "3", "display": "generated", "inclusionCriteria": placed[:-1],
                "exclusionCriteria": placed[-1:]}
    return {"version": "3", "display": "generated", "inclusionCriteria": placed}


def _occurrence(groups: list[dict[str, Any]], gid: str) -> str | None:
    return next(g.get("anchorOccurrence") for g in groups if g["id"] == gid)

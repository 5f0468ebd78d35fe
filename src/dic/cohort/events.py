"""The events one criterion selects, as one SELECT over the standard views (docs/cohorts.md).

    event_query(criterion, reference_date, timed, points) -> EventQuery (.scans, .events(scans))
    criterion_events(criterion, reference_date) -> exp.Select with EVENT_COLUMNS:
        patient_key, resource_key,
        lo, hi      the event's half-open UTC interval (NULL, NULL when it has no date;
                    FAR_PAST/FAR_FUTURE for open Period ends)
        s_lo, s_hi  the interval of its start (for anchorPoint start; NULL without one)
        e_lo, e_hi  the interval of its end (for anchorPoint end; NULL without one)

Code, value, attribute and absolute time filters are applied here; relative windows are the
compiler's. Where the view comes from is declared in event_views.yaml; every user value enters
the SQL as a sqlglot literal.
"""

from __future__ import annotations

import math
from calendar import monthrange
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlglot import exp

from dic.cohort.event_views import (
    Attribute,
    CodeMatch,
    EventSource,
    EventViews,
    MedicationResource,
    load_event_views,
)
from dic.cohort.model import Coding, Criterion, TimeRestriction, ValueFilter
from dic.engines import FAR_FUTURE, FAR_PAST, column, fhir_time_after, fhir_time_low, table, timestamp_literal
from dic.errors import DefinitionError, Problem

EVENT_COLUMNS = ("patient_key", "resource_key", "lo", "hi", "s_lo", "s_hi", "e_lo", "e_hi")
ROW = "v"  # alias of the view row inside an event query
AGE_UNITS = {"a": "years", "year": "years", "years": "years", "jahr": "years", "jahre": "years",
             "mo": "months", "month": "months", "months": "months",
             "wk": "weeks", "week": "weeks", "weeks": "weeks", "d": "days", "day": "days", "days": "days"}
SIGNIFICANT_DIGITS = 9  # eq/ne compare at this precision (docs/cohorts.md)


def _s(text: str) -> exp.Literal:
    return exp.Literal.string(text)


def _number(value: float) -> exp.Literal:
    return exp.Literal.number(repr(float(value)))


def _null_timestamp() -> exp.Expression:
    return exp.cast(exp.null(), "TIMESTAMP")


def _problem(path: str, message: str) -> DefinitionError:
    return DefinitionError("query", [Problem(path, message)])


# ------------------------------------------------------------------------------- codes
def _by_system(codes: Iterable[Coding]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for coding in codes:
        grouped.setdefault(coding.system, [])
        if coding.code not in grouped[coding.system]:
            grouped[coding.system].append(coding.code)
    return grouped


def _codes_in(system_column: exp.Expression | None, code_column: exp.Expression,
              grouped: dict[str, list[str]]) -> exp.Condition:
    """(system = S AND code IN (...)) OR …; an empty system compares the code only."""
    parts = []
    for system, codes in grouped.items():
        match = code_column.copy().isin(*[_s(c) for c in codes])
        if system and system_column is not None:
            match = exp.and_(system_column.copy().eq(_s(system)), match)
        parts.append(match)
    return exp.or_(*parts) if parts else exp.false()


def _coding_semi_join(key: exp.Expression, view: str, elements: Iterable[str],
                      grouped: dict[str, list[str]]) -> exp.Condition:
    inner = (exp.select(column("resource_key", "c")).from_(table(view, "c"), copy=False)
             .where(column("element", "c").isin(*[_s(e) for e in elements]), copy=False)
             .where(_codes_in(column("system", "c"), column("code", "c"), grouped), copy=False))
    return key.isin(query=inner)


def _code_condition(match: CodeMatch, key: exp.Expression, row: str, codes: tuple[Coding, ...],
                    medication: MedicationResource | None = None) -> exp.Condition:
    grouped = _by_system(codes)
    fast = {s: c for s, c in grouped.items() if match.column and s == match.system}
    rest = {s: c for s, c in grouped.items() if s not in fast}
    parts: list[exp.Condition] = []
    if fast:
        parts.append(column(match.column, row).isin(*[_s(c) for c in fast[match.system]]))  # type: ignore[index]
    if rest and match.pair is not None:
        parts.append(_codes_in(column(match.pair.system, row), column(match.pair.code, row), rest))
    elif rest and match.coding is not None:
        parts.append(_coding_semi_join(key, match.coding.view, match.coding.elements, rest))
    if match.medication and medication is not None:
        inner = (exp.select(column(medication.key, "m")).from_(table(medication.view, "m"), copy=False)
                 .where(_code_condition(medication.code, column(medication.key, "m"), "m", codes), copy=False))
        parts.append(column(match.medication, row).isin(query=inner))
    return exp.or_(*parts) if parts else exp.false()


# ------------------------------------------------------------------------------- values
def _rounded(value: float) -> tuple[float, float]:
    """The value at SIGNIFICANT_DIGITS and half a unit of its last digit."""
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if rounded == 0:
        return 0.0, 0.0
    return rounded, 0.5 * 10 ** (math.floor(math.log10(abs(rounded))) - SIGNIFICANT_DIGITS + 1)


def _compare(value: exp.Expression, f: ValueFilter) -> exp.Condition:
    if f.type == "quantity-range":
        if f.low is None or f.high is None:
            raise _problem(f.path, "a quantity-range needs minValue and maxValue")
        return exp.and_(exp.GTE(this=value.copy(), expression=_number(f.low)),
                        exp.LTE(this=value.copy(), expression=_number(f.high)))
    if f.comparator is None or f.value is None:
        raise _problem(f.path, "a quantity-comparator needs comparator and value")
    if f.comparator in ("eq", "ne"):
        center, half = _rounded(f.value)
        equal = (value.copy().eq(_number(center)) if half == 0 else
                 exp.and_(exp.GTE(this=value.copy(), expression=_number(center - half)),
                          exp.LT(this=value.copy(), expression=_number(center + half))))
        return equal if f.comparator == "eq" else exp.not_(equal)
    op = {"gt": exp.GT, "ge": exp.GTE, "lt": exp.LT, "le": exp.LTE}[f.comparator]
    return op(this=value.copy(), expression=_number(f.value))


def _value_condition(source: EventSource, key: exp.Expression, f: ValueFilter, row: str) -> exp.Condition:
    declared = source.value
    if f.type == "concept":
        if declared is None or declared.concept is None:
            raise _problem(f.path, f"{source.resource_type} has no coded value to filter on")
        return _coding_semi_join(key, declared.concept.view, [declared.concept.element], _by_system(f.concepts))
    if declared is None or declared.quantity is None:
        raise _problem(f.path, f"{source.resource_type} has no quantity value to filter on")
    q = declared.quantity
    value, unit = (q.normalized, q.normalized_unit) if f.normalized else (q.value, q.unit)
    conditions = [column(value, row).is_(exp.null()).not_(), _compare(column(value, row), f)]
    if f.unit:
        conditions.append(column(unit, row).eq(_s(f.unit)))
    return exp.and_(*conditions)


def _attribute_condition(source: EventSource, key: exp.Expression, attribute: Attribute,
                         f: ValueFilter | None, references: tuple[Criterion, ...], path: str,
                         reference_date: date, row: str) -> exp.Condition:
    if attribute.reference is not None:
        if not references:
            raise _problem(path, "a reference attribute filter needs criteria")
        alternatives = []
        for referenced in references:
            events = criterion_events(referenced, reference_date).subquery("r", copy=False)
            alternatives.append(exp.Exists(this=exp.select(exp.Literal.number(1)).from_(events, copy=False).where(exp.and_(
                column("resource_key", "r").eq(column(attribute.reference, row)),
                column("patient_key", "r").eq(column(source.patient, row))), copy=False)))
        return exp.or_(*alternatives)
    if f is None or f.type != "concept":
        raise _problem(path, "only concept filters are supported on this attribute")
    grouped = _by_system(f.concepts)
    if attribute.column is not None:
        return _codes_in(None, column(attribute.column, row), grouped)
    return _coding_semi_join(key, _coding_view(source), [attribute.coding or ""], grouped)


def _coding_view(source: EventSource) -> str:
    assert source.code.coding is not None  # every source with coded attributes declares its coding view
    return source.code.coding.view


# ------------------------------------------------------------------------------- time
def restriction_window(restriction: TimeRestriction) -> tuple[exp.Expression | None, exp.Expression | None]:
    """[afterDate, beforeDate + 1 day) as TIMESTAMP literals; None for an open side."""
    low = timestamp_literal(restriction.after) if restriction.after else None
    high = timestamp_literal(restriction.before + timedelta(days=1)) if restriction.before else None
    return low, high


def overlaps(lo: exp.Expression, hi: exp.Expression, window_lo: exp.Expression | None,
             window_hi: exp.Expression | None) -> exp.Condition:
    """The event [lo, hi) overlaps the window; an undated event (NULL lo) overlaps nothing."""
    conditions: list[exp.Condition] = [lo.copy().is_(exp.null()).not_()]
    if window_hi is not None:
        conditions.append(exp.LT(this=lo.copy(), expression=window_hi.copy()))
    if window_lo is not None:
        conditions.append(exp.LT(this=window_lo.copy(), expression=hi.copy()))
    return exp.and_(*conditions)


def _time_texts(source: EventSource) -> list[tuple[str, str | None]]:
    """The declared time elements as (name, view column): t<i>_at, or t<i>_s and t<i>_e."""
    found: list[tuple[str, str | None]] = []
    for i, option in enumerate(source.time):
        parts = {"at": option.at} if option.at else {"s": option.start, "e": option.end}
        found += [(f"t{i}_{part}", name) for part, name in parts.items()]
    return found


def _event_interval(source: EventSource, row: str, points: frozenset[str]) -> list[exp.Expression]:
    """From the parsed bounds: the first present time option gives lo/hi and the start ("s") and
    end ("e") point intervals asked for (the others stay NULL: only anchors read them)."""
    def c(name: str) -> exp.Expression:
        if name.endswith("hi"):  # t<i>_<part>hi from the stored lo and text length
            return fhir_time_after(column(name[:-2] + "lo", row), column(name[:-2] + "len", row))
        return column(name, row)

    branches: dict[str, list[exp.If]] = {name: [] for name in EVENT_COLUMNS[2:]}
    for i, option in enumerate(source.time):
        if option.at:
            present = c(f"t{i}_atlo").is_(exp.null()).not_()
            values = {"lo": c(f"t{i}_atlo"), "hi": c(f"t{i}_athi"), "s_lo": c(f"t{i}_atlo"),
                      "s_hi": c(f"t{i}_athi"), "e_lo": c(f"t{i}_atlo"), "e_hi": c(f"t{i}_athi")}
        else:
            present = exp.or_(c(f"t{i}_slo").is_(exp.null()).not_(), c(f"t{i}_elo").is_(exp.null()).not_())
            values = {"lo": exp.Coalesce(this=c(f"t{i}_slo"), expressions=[timestamp_literal(FAR_PAST)]),
                      "hi": exp.Coalesce(this=c(f"t{i}_ehi"), expressions=[timestamp_literal(FAR_FUTURE)]),
                      "s_lo": c(f"t{i}_slo"), "s_hi": c(f"t{i}_shi"), "e_lo": c(f"t{i}_elo"), "e_hi": c(f"t{i}_ehi")}
        for name, value in values.items():
            if name in ("lo", "hi") or name[0] in points:
                branches[name].append(exp.If(this=present.copy(), true=value))
    return [(exp.Case(ifs=ifs, default=_null_timestamp()) if ifs else _null_timestamp()).as_(name)
            for name, ifs in branches.items()]


def _source_scan(source: EventSource, criterion: Criterion, views: EventViews, reference_date: date,
                 timed: bool) -> exp.Select:
    """The view rows of the criterion with every time text parsed once: t<i>_<part>lo, and the
    text's length t<i>_<part>len, which gives its precision and so its hi."""
    row = ROW
    key = column(source.key, row)
    conditions: list[exp.Condition] = [column(source.patient, row).is_(exp.null()).not_()]
    conditions += [column(name, row).eq(_s(value)) for name, value in source.where.items()]
    if criterion.codes:
        conditions.append(_code_condition(source.code, key, row, criterion.codes, views.medication_resource))
    if criterion.value is not None:
        conditions.append(_value_condition(source, key, criterion.value, row))
    for attribute_filter in criterion.attributes:
        attribute = source.attribute(attribute_filter.attribute)
        if attribute is None:
            raise _problem(attribute_filter.path,
                           f"{source.resource_type} has no attribute '{attribute_filter.attribute}'"
                           f" (known: {', '.join(sorted(source.attributes)) or 'none'})")
        conditions.append(_attribute_condition(source, key, attribute, attribute_filter.filter,
                                               attribute_filter.references, attribute_filter.path,
                                               reference_date, row))
    bounds = []
    for name, text in _time_texts(source) if timed else []:
        if text is None:
            bounds += [_null_timestamp().as_(f"{name}lo"), exp.cast(exp.null(), "INT").as_(f"{name}len")]
        else:
            bounds += [fhir_time_low(column(text, row)).as_(f"{name}lo"),
                       exp.Length(this=column(text, row)).as_(f"{name}len")]
    return (exp.select(column(source.patient, row).as_("patient_key"), key.as_("resource_key"), *bounds)
            .from_(table(source.view, row), copy=False).where(exp.and_(*conditions), copy=False))


def _minus(reference: date, amount: int, unit: str) -> date:
    if unit in ("weeks", "days"):
        return reference - timedelta(days=amount * (7 if unit == "weeks" else 1))
    months = reference.year * 12 + reference.month - 1 - amount * (12 if unit == "years" else 1)
    year, month = divmod(months, 12)
    return date(year, month + 1, min(reference.day, monthrange(year, month + 1)[1]))


def _age_condition(birth_lo: exp.Expression, f: ValueFilter, reference_date: date) -> exp.Condition:
    """Age in completed units at the reference date, as bounds on the birth date: age ≥ k ⟺
    birth ≤ reference − k units (calendar arithmetic, month ends clamp)."""
    unit = AGE_UNITS.get((f.unit or "a").casefold())
    if unit is None:
        raise _problem(f.path, f"'{f.unit}' is not an age unit (a, mo, wk, d)")
    if f.type == "concept":
        raise _problem(f.path, "an age filter compares a quantity")

    def at_least(k: int) -> exp.Condition:
        return exp.LTE(this=birth_lo.copy(), expression=timestamp_literal(_minus(reference_date, k, unit)))

    low: int | None = None  # age ≥ low
    below: int | None = None  # age < below
    if f.type == "quantity-range":
        if f.low is None or f.high is None:
            raise _problem(f.path, "a quantity-range needs minValue and maxValue")
        low, below = math.ceil(f.low), math.floor(f.high) + 1
    else:
        v = f.value
        if v is None or f.comparator is None:
            raise _problem(f.path, "a quantity-comparator needs comparator and value")
        if f.comparator in ("eq", "ne"):
            equal = exp.and_(at_least(int(v)), exp.not_(at_least(int(v) + 1))) if v == int(v) else exp.false()
            return exp.and_(birth_lo.copy().is_(exp.null()).not_(),
                            equal if f.comparator == "eq" else exp.not_(equal))
        low = {"gt": math.floor(v) + 1, "ge": math.ceil(v)}.get(f.comparator)
        below = {"lt": math.ceil(v), "le": math.floor(v) + 1}.get(f.comparator)
    conditions: list[exp.Condition] = [birth_lo.copy().is_(exp.null()).not_()]
    if low is not None:
        conditions.append(at_least(low))
    if below is not None:
        conditions.append(exp.not_(at_least(below)))
    return exp.and_(*conditions)


def _patient_events(criterion: Criterion, views: EventViews, reference_date: date) -> exp.Select:
    p = views.patient
    row = ROW
    key = column(p.key, row)
    if criterion.kind == "now":
        lo, hi = timestamp_literal(reference_date), timestamp_literal(reference_date + timedelta(days=1))
        condition: exp.Condition = key.is_(exp.null()).not_()
    else:
        lo = hi = _null_timestamp()
        if criterion.value is None:
            raise _problem(criterion.path, f"an {criterion.kind} criterion needs a value filter")
        if criterion.kind == "age":
            condition = _age_condition(fhir_time_low(column(p.birth_date, row)), criterion.value, reference_date)
        else:
            codes = sorted({c.code for c in criterion.value.concepts})
            condition = column(p.gender, row).isin(*[_s(c) for c in codes])
    points = [x.copy().as_(name) for x, name in ((lo, "lo"), (hi, "hi"), (lo, "s_lo"), (hi, "s_hi"),
                                                (lo, "e_lo"), (hi, "e_hi"))]
    return exp.select(key.as_("patient_key"), key.copy().as_("resource_key"), *points).from_(
        table(p.view, row), copy=False).where(condition, copy=False)


@dataclass(frozen=True)
class EventQuery:
    """A criterion's events in two steps: `scans` read the views (one per source; their time
    texts parsed once, so they are worth materializing) and `events(scans)` turns them into
    EVENT_COLUMNS rows, the absolute time restriction applied."""

    criterion: Criterion
    sources: tuple[EventSource | None, ...]  # None: a patient property (age, gender, now)
    scans: tuple[exp.Select, ...]
    timed: bool
    points: frozenset[str] = frozenset("se")

    def events(self, scans: list[exp.Expression]) -> exp.Select:
        """The events, reading each scan from the FROM item given for it (a table or subquery)."""
        selects = []
        for source, scan in zip(self.sources, scans, strict=True):
            row = scan.alias_or_name
            if source is None:
                selects.append(exp.select(*[column(c, row) for c in EVENT_COLUMNS]).from_(scan, copy=False))
                continue
            interval = _event_interval(source, row, self.points) if self.timed else [
                _null_timestamp().as_(name) for name in EVENT_COLUMNS[2:]]
            selects.append(exp.select(column("patient_key", row), column("resource_key", row), *interval)
                           .from_(scan, copy=False))
        time = self.criterion.time
        if len(selects) == 1 and (time is None or (time.after is None and time.before is None)):
            return selects[0]
        union = selects[0] if len(selects) == 1 else exp.union(*selects, distinct=False, copy=False)
        select = exp.select(*[column(c, "e") for c in EVENT_COLUMNS]).from_(union.subquery("e", copy=False),
                                                                            copy=False)
        if time is not None and (time.after is not None or time.before is not None):
            window_lo, window_hi = restriction_window(time)
            select = select.where(overlaps(column("lo", "e"), column("hi", "e"), window_lo, window_hi), copy=False)
        return select


def event_query(criterion: Criterion, reference_date: date, timed: bool = True,
                points: frozenset[str] = frozenset("se")) -> EventQuery:
    """The criterion's events; `timed=False` leaves them undated (for criteria whose times no
    window, restriction, anchor or index date reads: nothing is parsed); `points` are the anchor
    points ("s" start, "e" end) computed."""
    views = load_event_views()
    timed = timed or (criterion.time is not None)
    if criterion.kind in ("age", "gender", "now"):
        return EventQuery(criterion, (None,), (_patient_events(criterion, views, reference_date),), timed, points)
    sources = tuple(s for s in views.sources(criterion.kind)
                    if not criterion.resource_types or s.resource_type in criterion.resource_types)
    if not sources:
        raise _problem(criterion.path,
                       f"no view holds {criterion.kind} events of {', '.join(criterion.resource_types)}")
    scans = tuple(_source_scan(s, criterion, views, reference_date, timed) for s in sources)
    return EventQuery(criterion, sources, scans, timed, points)


def criterion_events(criterion: Criterion, reference_date: date) -> exp.Select:
    """Every event of `criterion` (EVENT_COLUMNS) as one SELECT, its absolute time restriction applied."""
    query = event_query(criterion, reference_date)
    return query.events([scan.subquery(f"s{i}", copy=False) for i, scan in enumerate(query.scans)])

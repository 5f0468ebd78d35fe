"""FHIR date/dateTime/instant text → UTC TIMESTAMP bounds, as one SQL expression for every engine.

Views keep FHIR times as text with their precision ("2021", "2021-05", "2021-05-03",
"2021-05-03T10:00:00+02:00"). A time covers the half-open UTC interval of its precision:

    fhir_time_low(text)   -> TIMESTAMP: the first instant (NULL if absent or malformed)
    fhir_time_high(text, low=None) -> TIMESTAMP: the first instant after it (a year/month/day/
                             second later); pass `low` when the query already computed it
    timestamp_literal(t)  -> a TIMESTAMP constant (date or naive UTC datetime)
    shift(ts, months, seconds) -> ts + calendar months, then exact seconds (either may be negative)
    FAR_PAST, FAR_FUTURE  -> the sentinels of open Period ends

A date without a time is a UTC day; a time without a zone (not valid FHIR) is read as UTC;
fractions of a second are ignored. Text that is not shaped like a FHIR date is NULL rather
than an error, so one bad value in the repository cannot fail a whole query. The shape is
checked with a regular expression first: casting unchecked text fails on DuckDB/PostgreSQL and
silently yields NULL or fails on Spark, depending on its ANSI mode.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar

from sqlglot import exp

FAR_PAST = datetime(1, 1, 1)
FAR_FUTURE = datetime(9999, 12, 31)

# FHIR's own dateTime/instant shape, with the zone optional; `[.]` rather than `\.` because
# Spark string literals treat a backslash as an escape.
_SHAPE = (
    "^[0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])"
    "(T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]+)?(Z|[+-]((0[0-9]|1[0-3]):[0-5][0-9]|14:00))?)?)?)?$"
)
_TIMESTAMP = exp.DataType.build("TIMESTAMP")
# (text length, suffix completing it to a timestamp, interval unit of its precision)
_DATE_PRECISIONS = ((4, "-01-01", "YEAR"), (7, "-01", "MONTH"), (10, "", "DAY"))


def _n(value: int) -> exp.Literal:
    return exp.Literal.number(value)


def _interval(amount: int | exp.Expression, unit: str) -> exp.Expression:
    if isinstance(amount, int):
        return exp.Interval(this=exp.Literal.string(str(amount)), unit=exp.Var(this=unit))
    return exp.Mul(this=amount, expression=exp.Interval(this=exp.Literal.string("1"), unit=exp.Var(this=unit)))


def _substring(text: exp.Expression, start: int | exp.Expression, length: int) -> exp.Expression:
    return exp.Substring(this=text.copy(), start=start if isinstance(start, exp.Expression) else _n(start),
                         length=_n(length))


def _zone_minutes(text: exp.Expression) -> exp.Expression:
    """Minutes east of UTC of a dateTime's zone suffix ('Z', '+hh:mm', '-hh:mm'; none → 0)."""
    length = exp.Length(this=text.copy())
    sign = _substring(text, exp.Sub(this=length, expression=_n(5)), 1)
    hours = exp.cast(_substring(text, exp.Sub(this=length.copy(), expression=_n(4)), 2), "INT")
    minutes = exp.cast(_substring(text, exp.Sub(this=length.copy(), expression=_n(1)), 2), "INT")
    magnitude = exp.Paren(this=exp.Add(this=exp.Mul(this=hours, expression=_n(60)), expression=minutes))
    has_zone = exp.and_(exp.GT(this=length.copy(), expression=_n(19)), sign.copy().isin("+", "-"))
    signed = exp.Case(ifs=[exp.If(this=sign.copy().eq(exp.Literal.string("-")), true=exp.Neg(this=magnitude))],
                      default=magnitude.copy())
    return exp.Case(ifs=[exp.If(this=has_zone, true=signed)], default=_n(0))


class FhirTimeLow(exp.Expression, exp.Func):
    """fhir_time_low(text): a node of its own, expanded per engine only when rendered (dialects.py),
    so query trees stay small (sqlglot copies whole trees; the expansion is ~150 nodes)."""

    arg_types: ClassVar[dict[str, bool]] = {"this": True}


class FhirTimeHigh(exp.Expression, exp.Func):
    arg_types: ClassVar[dict[str, bool]] = {"this": True, "low": True}


def fhir_time_low(text: exp.Expression) -> exp.Expression:
    """The first UTC instant a FHIR date/dateTime/instant text covers (NULL if absent or malformed)."""
    return FhirTimeLow(this=text)


def fhir_time_high(text: exp.Expression, low: exp.Expression | None = None) -> exp.Expression:
    """The first UTC instant after the one a FHIR date/dateTime/instant text covers.

    `low` is the text's fhir_time_low(), when a query has already computed it; the precision is
    read from the text's length."""
    return FhirTimeHigh(this=text, low=low if low is not None else fhir_time_low(text.copy()))


def expand_low(text: exp.Expression) -> exp.Expression:
    """fhir_time_low in portable SQL (what every dialect renders FhirTimeLow as)."""
    ifs = [exp.If(this=exp.not_(exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(_SHAPE))),
                  true=exp.cast(exp.null(), _TIMESTAMP))]
    for length, suffix, _ in _DATE_PRECISIONS:
        completed = exp.DPipe(this=text.copy(), expression=exp.Literal.string(suffix)) if suffix else text.copy()
        ifs.append(exp.If(this=exp.Length(this=text.copy()).eq(_n(length)), true=exp.cast(completed, _TIMESTAMP)))
    local = exp.cast(_substring(text, 1, 19), _TIMESTAMP)
    return exp.Case(ifs=ifs, default=exp.Sub(this=local, expression=_interval(_zone_minutes(text), "MINUTE")))


def expand_high(text: exp.Expression, low: exp.Expression) -> exp.Expression:
    """fhir_time_high in portable SQL (what every dialect renders FhirTimeHigh as)."""
    ifs = [exp.If(this=low.copy().is_(exp.null()), true=exp.cast(exp.null(), _TIMESTAMP))]
    for length, _, unit in _DATE_PRECISIONS:
        ifs.append(exp.If(this=exp.Length(this=text.copy()).eq(_n(length)),
                          true=exp.Add(this=low.copy(), expression=_interval(1, unit))))
    return exp.Case(ifs=ifs, default=exp.Add(this=low.copy(), expression=_interval(1, "SECOND")))


def timestamp_literal(value: date | datetime) -> exp.Expression:
    """A TIMESTAMP constant; a date is its midnight, a datetime must be naive UTC."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is not None:
        raise ValueError("timestamp_literal takes naive UTC datetimes")
    text = f"{value.year:04d}-{value:%m-%d %H:%M:%S}"  # %Y does not pad year 1
    return exp.cast(exp.Literal.string(text), _TIMESTAMP)


def shift(ts: exp.Expression, months: int = 0, seconds: int = 0) -> exp.Expression:
    """`ts` plus calendar months (month ends clamp, as every engine does), then exact seconds.

    Whole days are written as DAY intervals (exact 24 h on a UTC TIMESTAMP) to keep literals small."""
    result = ts
    days, rest = divmod(abs(seconds), 86_400)
    for amount, unit, negative in ((abs(months), "MONTH", months < 0), (days, "DAY", seconds < 0),
                                   (rest, "SECOND", seconds < 0)):
        if amount:
            op = exp.Sub if negative else exp.Add
            result = op(this=result, expression=_interval(amount, unit))
    return result

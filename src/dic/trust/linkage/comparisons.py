"""The comparisons declared in `comparisons.yaml`, turned into one SQL expression per comparison.

Every comparison level of a record pair is computed by DuckDB SQL (vectorized C++: Jaro-Winkler
and Levenshtein are built in), for millions of batch pairs and for the few pairs of one incoming
record alike, so there is exactly one implementation of each comparison: the incremental and the
batch scores of a pair cannot drift apart. A pair's levels are packed into one integer (4 bits per
comparison), its "pattern": training works on the counts of distinct patterns, scoring looks a
pattern's probability up.
"""

from __future__ import annotations

from functools import cache, reduce
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sqlglot import exp

from dic.errors import Problem
from dic.trust.identity import NORMALIZED_FIELDS
from dic.trust.linkage.declarations import load_declarations

COMPARISONS_PATH = Path(__file__).with_name("comparisons.yaml")
LEVEL_BITS = 4
MAX_LEVELS = 2**LEVEL_BITS  # null included
NULL_LEVEL = 0


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    kind: Literal["exact", "jaro_winkler", "levenshtein", "prefix", "all_equal", "any_equal", "count_equal", "else"]
    field: str | None = None
    min: float | None = None
    max: int | None = None
    length: int | None = None
    pairs: list[tuple[str, str]] | None = None
    fields: list[str] | None = None
    # Cheaper conditions that a pair at this level always meets, checked first: DuckDB evaluates
    # the costly one only on the pairs that pass (Levenshtein of birth dates: 1.35 s -> 0.24 s per
    # million random pairs, measured).
    only_if: list[Level] | None = None

    def problems(self) -> list[Problem]:
        needs = {"exact": ("field",), "jaro_winkler": ("field", "min"), "levenshtein": ("field", "max"),
                 "prefix": ("field", "length"), "all_equal": ("pairs",), "any_equal": ("pairs",),
                 "count_equal": ("fields", "min"), "else": ()}[self.kind]
        found = [Problem(f"/{name}", f"{self.kind} needs {name}") for name in needs if getattr(self, name) is None]
        found += [Problem(f"/only_if/{n}{p.path}", p.message) for n, x in enumerate(self.only_if or [])
                  for p in x.problems()]
        named = [self.field] if self.field else []
        named += [f for pair in self.pairs or [] for f in pair] + list(self.fields or [])
        found += [Problem("", f"unknown field {f!r}; known: {', '.join(NORMALIZED_FIELDS)}")
                  for f in named if f not in NORMALIZED_FIELDS]
        return found


class Comparison(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    missing: list[str]
    levels: list[Level]

    @property
    def labels(self) -> list[str]:
        """Level labels in level order, null first (level 0)."""
        return ["null", *(level.label for level in self.levels)]

    def problems(self) -> list[Problem]:
        found = [Problem(f"/levels/{n}{p.path}", p.message) for n, level in enumerate(self.levels)
                 for p in level.problems()]
        if len(self.levels) + 1 > MAX_LEVELS:
            found.append(Problem("/levels", f"at most {MAX_LEVELS - 1} levels besides null"))
        if not self.levels or self.levels[-1].kind != "else" or any(x.kind == "else" for x in self.levels[:-1]):
            found.append(Problem("/levels", "the last level, and only it, must be of kind else"))
        found += [Problem("/missing", f"unknown field {f!r}") for f in self.missing if f not in NORMALIZED_FIELDS]
        return found


@cache
def load_comparisons(path: Path = COMPARISONS_PATH) -> tuple[Comparison, ...]:
    comparisons = load_declarations(path, list[Comparison])
    return tuple(comparisons)


# ---------------------------------------------------------------- SQL


def _side(field: str, side: str) -> exp.Column:
    return exp.column(field, table=side, quoted=True)


def _equal(left_field: str, right_field: str) -> exp.Expression:
    return exp.EQ(this=_side(left_field, "l"), expression=_side(right_field, "r"))


def similarity_column(field: str) -> str:
    """Name of the column that holds the Jaro-Winkler similarity of `field`, computed once per pair
    (a comparison with two thresholds would otherwise compute it twice: 0.58 s vs 0.40 s per
    million pairs, measured)."""
    return f"jaro_winkler__{field}"


def similarity_fields(comparisons: tuple[Comparison, ...]) -> list[str]:
    return sorted({level.field for c in comparisons for level in c.levels if level.kind == "jaro_winkler"})


def similarity_expression(field: str) -> exp.Expression:
    return exp.JarowinklerSimilarity(this=_side(field, "l"), expression=_side(field, "r"))


def _condition(level: Level) -> exp.Expression:
    """The SQL condition under which a pair is at `level` (if no earlier level holds)."""
    if level.only_if:
        return exp.and_(*(_condition(x) for x in level.only_if), _condition(level.model_copy(update={"only_if": None})))
    if level.kind == "exact":
        return _equal(level.field, level.field)
    if level.kind == "jaro_winkler":
        similarity = exp.column(similarity_column(level.field), table="s", quoted=True)
        return exp.GTE(this=similarity, expression=exp.Literal.number(level.min))
    if level.kind == "levenshtein":
        distance = exp.Levenshtein(this=_side(level.field, "l"), expression=_side(level.field, "r"))
        return exp.LTE(this=distance, expression=exp.Literal.number(level.max))
    if level.kind == "prefix":
        length = exp.Literal.number(level.length)
        return exp.EQ(this=exp.Left(this=_side(level.field, "l"), expression=length),
                      expression=exp.Left(this=_side(level.field, "r"), expression=length))
    if level.kind in ("all_equal", "any_equal"):
        combine = exp.and_ if level.kind == "all_equal" else exp.or_
        return combine(*(_equal(a, b) for a, b in level.pairs))
    if level.kind == "count_equal":
        agreeing = [exp.Cast(this=exp.Coalesce(this=_equal(f, f), expressions=[exp.false()]),
                             to=exp.DataType.build("int")) for f in level.fields]
        return exp.GTE(this=reduce(lambda a, b: exp.Add(this=a, expression=b), agreeing),
                       expression=exp.Literal.number(level.min))
    raise AssertionError(level.kind)  # "else" has no condition


def level_expression(comparison: Comparison) -> exp.Expression:
    """CASE giving the comparison's level of the pair (l, r): 0 null, 1... in declared order."""
    missing = exp.or_(*(exp.Is(this=_side(f, side), expression=exp.null())
                        for f in comparison.missing for side in ("l", "r")))
    case = exp.Case().when(missing, exp.Literal.number(NULL_LEVEL))
    for number, level in enumerate(comparison.levels, start=1):
        if level.kind != "else":
            case = case.when(_condition(level), exp.Literal.number(number))
    return case.else_(exp.Literal.number(len(comparison.levels)))


def pattern_expression(comparisons: tuple[Comparison, ...]) -> exp.Expression:
    """The pair's levels packed into one BIGINT: level of comparison c times 16**c, summed."""
    terms = [exp.Mul(this=exp.Paren(this=level_expression(c)), expression=exp.Literal.number(MAX_LEVELS**n))
             for n, c in enumerate(comparisons)]
    total = reduce(lambda a, b: exp.Add(this=a, expression=b), terms)
    return exp.Cast(this=total, to=exp.DataType.build("bigint"))


def unpack_patterns(patterns: np.ndarray, n_comparisons: int) -> np.ndarray:
    """Patterns (n,) -> levels (n, n_comparisons)."""
    shifts = np.arange(n_comparisons, dtype=np.int64) * LEVEL_BITS
    return ((patterns.astype(np.int64)[:, None] >> shifts) & (MAX_LEVELS - 1)).astype(np.int8)

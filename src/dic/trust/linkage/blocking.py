"""Blocking keys (declared in `blocking.yaml`): which records are compared at all.

    blocking_keys(record) -> ["dob:1982|07|11", "name_year:657|1982", ...]

The trust center stores a record's keys and finds candidates for a new record by key lookup in its
own database; the batch run builds the same keys in SQL (`key_list_expression`) and joins on them.
The two are one declaration rendered twice (a Python join and a SQL concat); a test proves they
give the same keys. Python here because the center asks per registration and a DuckDB round trip
would cost ~1 ms for what string joining does in microseconds.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from sqlglot import exp

from dic.errors import Problem
from dic.trust.identity import NORMALIZED_FIELDS
from dic.trust.linkage.declarations import load_declarations

BLOCKING_PATH = Path(__file__).with_name("blocking.yaml")
SEPARATOR = "|"


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z_]+$")
    variants: tuple[tuple[str, ...], ...] = Field(min_length=1)


class Blocking(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_block_size: int = Field(gt=1)
    rules: tuple[Rule, ...] = Field(min_length=1)

    def problems(self) -> list[Problem]:
        found = [Problem(f"/rules/{n}/variants/{v}", f"unknown field {f!r}")
                 for n, rule in enumerate(self.rules) for v, fields in enumerate(rule.variants)
                 for f in fields if f not in NORMALIZED_FIELDS]
        names = [rule.name for rule in self.rules]
        found += [Problem("/rules", f"rule {name!r} declared twice") for name in set(names) if names.count(name) > 1]
        return found


@cache
def load_blocking(path: Path = BLOCKING_PATH) -> Blocking:
    return load_declarations(path, Blocking)


def blocking_keys(record: dict[str, str | None], blocking: Blocking | None = None) -> list[str]:
    """The keys of one normalized record (`dic.trust.identity.normalize`), sorted, without repeats."""
    blocking = blocking or load_blocking()
    keys = set()
    for rule in blocking.rules:
        for fields in rule.variants:
            values = [record.get(f) for f in fields]
            if all(values):
                keys.add(f"{rule.name}:{SEPARATOR.join(values)}")
    return sorted(keys)


def key_expressions(blocking: Blocking | None = None, table: str = "records") -> list[tuple[exp.Expression, exp.Expression]]:
    """Per rule variant, (SQL condition that all its fields are present, SQL key): the batch twin
    of `blocking_keys`. Empty strings count as missing, as in Python."""
    blocking = blocking or load_blocking()
    keys = []
    for rule in blocking.rules:
        for fields in rule.variants:
            columns = [exp.column(f, table=table, quoted=True) for f in fields]
            parts: list[exp.Expression] = [exp.Literal.string(f"{rule.name}:")]
            for n, column in enumerate(columns):
                parts += [exp.Literal.string(SEPARATOR), column] if n else [column]
            present = exp.and_(*(exp.NEQ(this=exp.Coalesce(this=c, expressions=[exp.Literal.string("")]),
                                         expression=exp.Literal.string("")) for c in columns))
            keys.append((present, exp.Concat(expressions=parts)))
    return keys

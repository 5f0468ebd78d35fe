"""Comparison patterns of record pairs, computed in DuckDB: the one place where records meet the
comparison SQL, used alike by the incremental scoring, training and the batch run.

Records live in a table with an integer `idx` and the normalized fields (NORMALIZED_FIELDS);
pairs in a table (l, r) of idx values. The pattern query joins both sides and packs the levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import duckdb
import pyarrow as pa
from sqlglot import exp

from dic.engines import Engine, render
from dic.trust.identity import NORMALIZED_FIELDS
from dic.trust.linkage.comparisons import (
    load_comparisons,
    pattern_expression,
    similarity_column,
    similarity_expression,
    similarity_fields,
)

STRING_FIELDS = pa.schema([(f, pa.string()) for f in NORMALIZED_FIELDS])


def records_table(records: Sequence[dict[str, str | None]]) -> pa.Table:
    """Normalized record dicts -> an arrow table with `idx` and every normalized field."""
    columns = {f: pa.array([r.get(f) or None for r in records], pa.string()) for f in NORMALIZED_FIELDS}
    return pa.table({"idx": pa.array(range(len(records)), pa.int32()), **columns})


@cache
def pattern_sql(left: str = "records", right: str = "records", pairs: str = "pairs") -> str:
    """SELECT l, r, pattern for every row of `pairs`, the records of each side joined in."""
    def table(name: str, alias: str) -> exp.Expression:
        return exp.Table(this=exp.to_identifier(name, quoted=True), alias=exp.TableAlias(this=exp.to_identifier(alias)))

    def idx(side: str, pair: str) -> exp.Expression:
        return exp.EQ(this=exp.column("idx", table=side, quoted=True), expression=exp.column(side, table=pair))

    comparisons = load_comparisons()
    similarities = [similarity_expression(f).as_(similarity_column(f), quoted=True)
                    for f in similarity_fields(comparisons)]
    # inner: the pair with its similarities; outer: the levels, records joined again (joins by idx
    # are cheap next to the comparisons)
    inner = (exp.select(exp.column("l", table="p"), exp.column("r", table="p"), *similarities)
             .from_(table(pairs, "p")).join(table(left, "l"), on=idx("l", "p")).join(table(right, "r"), on=idx("r", "p")))
    query = (exp.select(exp.column("l", table="s").as_("l"), exp.column("r", table="s").as_("r"),
                        pattern_expression(comparisons).as_("pattern"))
             .from_(inner.subquery("s"))
             .join(table(left, "l"), on=idx("l", "s"))
             .join(table(right, "r"), on=idx("r", "s")))
    return render(query, Engine.duckdb)


def connect(threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for linkage work (never the research repository)."""
    config = {}
    if threads:
        config["threads"] = threads
    if memory_limit:
        config["memory_limit"] = memory_limit
    return duckdb.connect(":memory:", config=config)

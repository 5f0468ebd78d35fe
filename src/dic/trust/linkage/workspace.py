"""The records of one training or batch run, loaded once into an in-memory DuckDB.

The input is an arrow table with `record_id`, every normalized field (NORMALIZED_FIELDS) and, to
link two or more files rather than deduplicate one, a `dataset` column. The `records` table gets
an integer `idx` per row (pairs are pairs of idx) and empty strings as NULL.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from dic.engines import Engine, render
from dic.errors import InputError
from dic.trust.identity import NORMALIZED_FIELDS
from dic.trust.linkage.patterns import connect


@cache
def _load_sql() -> str:
    columns = [exp.column("idx").as_("idx"), exp.column("dataset").as_("dataset")]
    columns += [exp.Nullif(this=exp.Cast(this=exp.column(f, quoted=True), to=exp.DataType.build("text")),
                           expression=exp.Literal.string("")).as_(f, quoted=True) for f in NORMALIZED_FIELDS]
    query = exp.select(*columns).from_("input_records")
    return "CREATE TABLE records AS " + render(query, Engine.duckdb)


class Workspace:
    def __init__(self, records: pa.Table, *, link_only: bool = False, memory_limit: str | None = None):
        missing = [f for f in ("record_id", *NORMALIZED_FIELDS) if f not in records.column_names]
        if link_only and "dataset" not in records.column_names:
            missing.append("dataset")
        if missing:
            raise InputError(f"linkage records lack the column(s) {', '.join(missing)}")
        self.link_only = link_only
        self.n_records = records.num_rows
        self.record_ids = records.column("record_id").cast(pa.string())
        if link_only:
            encoded = pc.dictionary_encode(records.column("dataset").cast(pa.string())).combine_chunks()
            self.datasets = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32)
            sizes = np.bincount(self.datasets).astype(float)
            self.total_pairs = float((sizes.sum() ** 2 - (sizes**2).sum()) / 2)
        else:
            self.datasets = np.zeros(self.n_records, dtype=np.int32)
            self.total_pairs = self.n_records * (self.n_records - 1) / 2
        if self.total_pairs < 1:
            raise InputError("linkage needs at least two records (in two datasets when linking only)")
        self.connection: duckdb.DuckDBPyConnection = connect(memory_limit=memory_limit)
        table = records.select(list(NORMALIZED_FIELDS))
        table = table.append_column("idx", pa.array(np.arange(self.n_records, dtype=np.int32)))
        table = table.append_column("dataset", pa.array(self.datasets))
        self.connection.register("input_records", table)
        self.connection.execute(_load_sql())
        self.connection.unregister("input_records")
        self._present: dict[tuple[str, ...], float] = {}

    def present_share(self, fields: Sequence[str]) -> float:
        """Share of the records on which all `fields` are present."""
        key = tuple(fields)
        if key not in self._present:
            condition = exp.and_(*(exp.Not(this=exp.Is(this=exp.column(f, quoted=True), expression=exp.null()))
                                   for f in fields))
            query = exp.select(exp.func("count_if", condition)).from_("records")
            present = self.connection.execute(render(query, Engine.duckdb)).fetchone()[0]
            self._present[key] = present / self.n_records
        return self._present[key]

    def close(self) -> None:
        self.connection.close()

"""The members of a cohort inside the DIC: `cohort_patients(db, query, reference_date)`.

Runs the compiled query (compiler.py) on the repository's materialized views and returns the
patient keys ('Patient/<id>'), sorted. Counts leave the DIC only through feasibility.py.
"""

from __future__ import annotations

from datetime import date

from dic.cohort.compiler import compile_query
from dic.cohort.model import Query
from dic.engines import Database


def cohort_patients(db: Database, query: Query, reference_date: date) -> list[str]:
    """Patient keys of the cohort, sorted."""
    compiled = compile_query(query, reference_date, index_date=False)
    rows = db.fetch(compiled.select, "cohort patients").rows
    return sorted(str(row[0]) for row in rows)

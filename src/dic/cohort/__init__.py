"""Cohorts: MII CCDL (v2 and the v3 draft) feasibility queries, answered safely.

    parse_ccdl(document)                     CCDL JSON → Query (validated; problems name JSON paths)
    compile_query(query, reference_date)     → one SQL over the standard views (every engine)
    cohort_patients(db, query, date)         the members' patient keys (inside the DIC only)
    count_cohort(...)                        the feasibility answer, disclosure-controlled and logged
    cohort_members(...)                      project pseudonyms of consenting members
    characterize(...)                        the cohort's table 1, disclosure-controlled
    run_cases(folder)                        the CCDL conformance runner

The semantics are written down in docs/cohorts.md.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "parse_ccdl": "dic.cohort.ccdl",
    "load_query": "dic.cohort.ccdl",
    "compile_query": "dic.cohort.compiler",
    "CompiledQuery": "dic.cohort.compiler",
    "cohort_patients": "dic.cohort.select",
    "count_cohort": "dic.cohort.feasibility",
    "FeasibilityAnswer": "dic.cohort.feasibility",
    "cohort_members": "dic.cohort.members",
    "characterize": "dic.cohort.characterization",
    "Characterization": "dic.cohort.characterization",
    "run_cases": "dic.cohort.conformance",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dic.cohort' has no attribute {name!r}")


__all__ = list(_LAZY)

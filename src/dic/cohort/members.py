"""The member list of a cohort, for an approved project only.

The trust center decides: it maps each member's DIC pseudonym to the project's own
pseudonym and leaves out every person whose consent does not cover the project's purpose
for the data of the member's index date (the query's reference date when the cohort has no
dated index event). The DIC never sees which members were left out for which reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from dic.cohort.feasibility import cohort_rows, query_hash
from dic.cohort.model import Query
from dic.engines import Database
from dic.privacy import query_log


@dataclass(frozen=True)
class MemberList:
    project: str
    pseudonyms: list[str]  # project pseudonyms, sorted
    reference_date: date

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "reference_date": self.reference_date.isoformat(),
                "members": self.pseudonyms}


def cohort_members(db: Database, trust: Any, query: Query, reference_date: date, project: str, *,
                   actor: str) -> MemberList:
    """Project pseudonyms of the consenting members; `trust` is the DIC's trust-center client."""
    members = cohort_rows(db, query, reference_date)
    asked = [(m.patient_key.removeprefix("Patient/"), m.index_date or reference_date) for m in members]
    released = trust.project_members(project, asked) if asked else {}
    pseudonyms = sorted(released.values())
    query_log.record(db, actor, "members", query_hash(query, reference_date), len(members),
                     f"{len(pseudonyms)} project pseudonyms", {"project": project})
    return MemberList(project, pseudonyms, reference_date)

"""May this person's data be used for this purpose? The MII Broad Consent semantics over FHIR
Consent resources, with the purposes declared as data (`consent_purposes.yaml`).

    may_use(consents, purpose, data_date, as_of) -> bool

A purpose needs every one of its policy codes permitted by a provision whose period contains
the data's date, in a Consent given on or before `as_of`. A deny provision for a needed code
(a refusal, or a withdrawal: a later Consent of denials from its date) wins over a permit for
the dates it covers, and a withdrawal in force on `as_of` makes every check false from its
date on, whatever the data's date. No Consent: no use (the DIC asks before it uses).
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from dic.errors import InputError

PURPOSES_PATH = Path(__file__).with_name("consent_purposes.yaml")
POLICY_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"


class Purpose(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    codes: list[str]


@cache
def purposes() -> dict[str, Purpose]:
    raw = yaml.safe_load(PURPOSES_PATH.read_text(encoding="utf-8"))["purposes"]
    return {name: Purpose.model_validate(entry) for name, entry in raw.items()}


def may_use(consents: list[dict[str, Any]], purpose: str, data_date: date, as_of: date) -> bool:
    """True if the person's Consents allow using data of `data_date` for `purpose` on `as_of`."""
    known = purposes()
    if purpose not in known:
        raise InputError(f"unknown purpose {purpose!r}; known: {', '.join(sorted(known))}")
    provisions = [p for c in consents if _given_by(c, as_of) for p in _provisions(c)]
    for code in known[purpose].codes:
        own = [(kind, start, end) for kind, codes, start, end in provisions if code in codes]
        if any(kind == "deny" and start <= as_of <= end for kind, start, end in own):
            return False  # withdrawn (or refused) as of the check
        if any(kind == "deny" and start <= data_date <= end for kind, start, end in own):
            return False
        if not any(kind == "permit" and start <= data_date <= end for kind, start, end in own):
            return False
    return True


def _given_by(consent: dict[str, Any], as_of: date) -> bool:
    if consent.get("resourceType") != "Consent" or consent.get("status") != "active":
        return False
    when = consent.get("dateTime")
    return isinstance(when, str) and date.fromisoformat(when[:10]) <= as_of


def _provisions(consent: dict[str, Any]) -> list[tuple[str, set[str], date, date]]:
    found = []
    for p in consent.get("provision", {}).get("provision", []):
        codes = {c.get("code") for concept in p.get("code", []) for c in concept.get("coding", [])
                 if c.get("system") == POLICY_SYSTEM}
        period = p.get("period", {})
        start = date.fromisoformat(period["start"][:10]) if "start" in period else date.min
        end = date.fromisoformat(period["end"][:10]) if "end" in period else date.max
        if p.get("type") in ("permit", "deny") and codes:
            found.append((p["type"], codes, start, end))
    return found


def withdrawal_date(consents: list[dict[str, Any]], as_of: date) -> date | None:
    """The date from which the person withdrew consent they had given, if they did by `as_of`:
    the earliest open-ended deny of a policy code that an earlier Consent permitted."""
    given = sorted((c for c in consents if _given_by(c, as_of)), key=lambda c: c["dateTime"])
    permitted: set[str] = set()
    earliest: date | None = None
    for consent in given:
        for kind, codes, start, end in _provisions(consent):
            if kind == "permit":
                permitted |= codes
            elif end == date.max and codes & permitted and start <= as_of:
                earliest = start if earliest is None else min(earliest, start)
    return earliest

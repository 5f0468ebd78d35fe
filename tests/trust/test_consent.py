"""may_use: the MII Broad Consent semantics on the test world's Consents (permits, denied
modules, refusals, later withdrawals)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import pytest

from dic.errors import InputError
from dic.synth import generate_population
from dic.trust import may_use

MDAT = "research-medical-data"
KKDAT_CODE = "2.16.840.1.113883.3.1937.777.24.5.3.10"


@pytest.fixture(scope="module")
def consents() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in generate_population(3000, 12):
        if r["resourceType"] == "Patient":
            found.setdefault(r["id"], [])  # every patient, also those without a Consent
        elif r["resourceType"] == "Consent":
            found[r["patient"]["reference"].split("/")[1]].append(r)
    return found


def day(text: str) -> date:
    return date.fromisoformat(text[:10])


def kinds(consent: dict[str, Any]) -> set[str]:
    return {p["type"] for p in consent["provision"]["provision"]}


def test_permitted_data_within_the_period_may_be_used_and_outside_it_not(consents: dict) -> None:
    checked = 0
    for own in consents.values():
        if len(own) == 1 and kinds(own[0]) == {"permit"}:
            given = day(own[0]["dateTime"])
            assert may_use(own, MDAT, given + timedelta(days=100), as_of=given + timedelta(days=200))
            assert may_use(own, "research-insurance-data", given, as_of=given)
            assert not may_use(own, MDAT, given - timedelta(days=1), as_of=given + timedelta(days=10)), \
                "data from before the consent's period"
            assert not may_use(own, MDAT, given, as_of=given - timedelta(days=1)), "consent not yet given"
            checked += 1
    assert checked > 1000


def test_a_withdrawal_makes_every_later_check_false(consents: dict) -> None:
    checked = 0
    for own in consents.values():
        withdrawal = next((c for c in own if c["id"].endswith("-withdrawal")), None)
        if withdrawal is None:
            continue
        original = next(c for c in own if c is not withdrawal)
        given, withdrawn = day(original["dateTime"]), day(withdrawal["dateTime"])
        data_day = given + (withdrawn - given) // 2
        if not may_use(own, MDAT, data_day, as_of=withdrawn - timedelta(days=1)):
            continue  # a module was denied from the start
        assert not may_use(own, MDAT, data_day, as_of=withdrawn)
        assert not may_use(own, MDAT, given, as_of=withdrawn + timedelta(days=400))
        checked += 1
    assert checked >= 20


def test_refusals_denied_modules_and_missing_consent(consents: dict) -> None:
    refused = [own for own in consents.values() if own and kinds(own[0]) == {"deny"}]
    assert refused and not any(may_use(own, MDAT, day(own[0]["dateTime"]), day(own[0]["dateTime"]))
                               for own in refused)
    kkdat_denied = [own for own in consents.values() if len(own) == 1 and kinds(own[0]) == {"permit", "deny"}
                    and all(p["type"] == "deny" for p in own[0]["provision"]["provision"]
                            if p["code"][0]["coding"][0]["code"] == KKDAT_CODE)]
    assert kkdat_denied
    for own in kkdat_denied:
        given = day(own[0]["dateTime"])
        assert not may_use(own, "research-insurance-data", given, as_of=given)
    none = [own for own in consents.values() if not own]
    assert none and not may_use(none[0], MDAT, date(2020, 1, 1), as_of=date(2020, 1, 2))
    with pytest.raises(InputError, match="unknown purpose"):
        may_use([], "marketing", date(2020, 1, 1), as_of=date(2020, 1, 1))

"""The trust center in-process, on SQLite and PostgreSQL: linkage outcomes, review decisions,
merges and splits in the change feed, pseudonyms per domain, key rotation, re-identification
by staff only, consent, and an intact audit log after all of it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from dic.errors import InputError, NotAuthorized
from dic.synth import generate_population
from dic.trust import is_valid_pseudonym
from dic.trust.access import Caller
from dic.trust.center import InvalidIdat, TrustCenter

HIS = Caller("his@site-a", "source")
LAB = Caller("lab@site-a", "source")
BILLING = Caller("billing@site-a", "source")
DIC = Caller("dic@site-a", "dic")
STAFF = Caller("alice (staff)", "staff")
MDAT = "research-medical-data"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

JUERGEN = {"given_names": "Jürgen", "family_name": "Müller", "birth_date": "1961-04-12", "sex": "male",
           "street": "Hauptstraße 5", "postal_code": "04109", "city": "Leipzig", "insurance_number": "A123456789"}
ANNA = {"given_names": "Anna", "family_name": "Schmidt", "birth_date": "1980-01-01", "sex": "female",
        "postal_code": "80331", "city": "München", "insurance_number": "B987654321"}
# Same birth date and family name, a different given name, nothing else: the model is unsure.
JOERG = {"given_names": "Jörg", "family_name": "Müller", "birth_date": "1961-04-12", "sex": "male"}


@pytest.fixture
def center(trust_db_url: str, tmp_path: Path) -> Iterator[TrustCenter]:
    opened = TrustCenter.open(tmp_path / "trust-center", trust_db_url)
    yield opened
    opened.close()


def register_one(center: TrustCenter, caller: Caller, source_id: str, idat: dict[str, Any]):
    (found,) = center.register(caller, [(source_id, idat)])
    return found


def count(center: TrustCenter, sql: str, params: tuple = ()) -> int:
    return int(center.db.scalar(sql, params))


# ---------------------------------------------------------------- linkage outcomes
def test_spelling_variants_from_other_sources_are_the_same_person(center: TrustCenter) -> None:
    first = register_one(center, HIS, "h-1", JUERGEN)
    assert first.outcome == "new"
    variants = {
        "l-1": {**JUERGEN, "given_names": "JUERGEN", "family_name": "MUELLER"},  # ASCII system, upper case
        "l-2": {**JUERGEN, "family_name": "Müler", "street": "Hauptstr. 5"},  # a typo, abbreviated street
        "l-3": {k: v for k, v in JUERGEN.items() if k != "insurance_number"} | {"given_names": "jürgen"},
    }
    for source_id, idat in variants.items():
        found = register_one(center, LAB, source_id, idat)
        assert (found.outcome, found.pseudonym) == ("match", first.pseudonym), source_id
        assert found.record != first.record
    other = register_one(center, BILLING, "b-1", ANNA)
    assert other.outcome == "new" and other.pseudonym != first.pseudonym
    assert count(center, "SELECT count(DISTINCT pid) FROM source_record") == 2


def test_the_hospital_patient_number_links_its_systems_within_that_hospital_only(center: TrustCenter) -> None:
    his = register_one(center, HIS, "his-77", {**JUERGEN, "patient_number": "1000000001"})
    # billing knows no name, no full birth date: the patient number alone identifies (and links)
    billing = register_one(center, BILLING, "1000000001", {"patient_number": "1000000001", "sex": "male",
                                                            "insurance_number": "A123456789"})
    assert (billing.outcome, billing.pseudonym) == ("match", his.pseudonym)
    # even a record whose IDAT disagrees: the hospital's own number wins
    lab = register_one(center, LAB, "1000000001", {**ANNA, "patient_number": "1000000001"})
    assert lab.pseudonym == his.pseudonym
    # the same number at another hospital is someone else
    other = register_one(center, Caller("billing@site-b", "source"), "1000000001",
                         {"patient_number": "1000000001", "sex": "female"})
    assert other.outcome == "new" and other.pseudonym != his.pseudonym
    # billing first, HIS later: the number links in that order too
    early = register_one(center, BILLING, "1000000002", {"patient_number": "1000000002", "sex": "female"})
    late = register_one(center, HIS, "his-78", {**ANNA, "patient_number": "1000000002"})
    assert (late.outcome, late.pseudonym) == ("match", early.pseudonym)
    with pytest.raises(InvalidIdat, match="patient number or at least two"):
        center.register(BILLING, [("x", {"sex": "male", "postal_code": "04109"})])


def test_a_source_systems_own_merge_joins_its_records_and_reaches_the_feed(center: TrustCenter) -> None:
    prior = register_one(center, LAB, "p-1", JOERG)
    surviving = register_one(center, LAB, "p-2", ANNA)
    assert prior.pseudonym != surviving.pseudonym
    since = len(center.changes(DIC))
    found = center.merge_records(LAB, "p-1", "p-2")
    assert found is not None and found.pseudonym == surviving.pseudonym
    (change,) = center.changes(DIC)[since:]
    assert (change.kind, change.from_pseudonym, change.to_pseudonym) == ("merge", prior.pseudonym, surviving.pseudonym)
    assert register_one(center, LAB, "p-1", JOERG).pseudonym == surviving.pseudonym
    assert center.merge_records(LAB, "p-1", "never-seen") is None  # nothing to merge
    assert center.merge_records(HIS, "p-1", "p-2") is None  # another system's ids are not its own
    with pytest.raises(NotAuthorized):
        center.merge_records(DIC, "p-1", "p-2")


def test_father_and_son_at_one_address_are_two_persons(center: TrustCenter) -> None:
    father = register_one(center, HIS, "h-1", JUERGEN)
    son = register_one(center, HIS, "h-2", {**JUERGEN, "birth_date": "1990-09-30", "insurance_number": "A555555555"})
    assert son.outcome == "new" and son.pseudonym != father.pseudonym


def test_a_borderline_pair_is_a_possible_match_waiting_for_review(center: TrustCenter) -> None:
    known = register_one(center, HIS, "h-1", JUERGEN)
    unsure = register_one(center, LAB, "l-1", JOERG)
    assert unsure.outcome == "possible-match" and unsure.pseudonym != known.pseudonym
    (item,) = center.review_items(STAFF)
    assert center.thresholds.review <= item["probability"] < center.thresholds.match
    assert (item["record"]["source"], item["record"]["source_id"]) == ("lab@site-a", "l-1")
    assert item["record"]["idat"]["given_names"] == "Jörg"
    assert [(r["source"], r["source_id"]) for r in item["candidate"]["records"]] == [("his@site-a", "h-1")]
    assert item["candidate"]["pid"] == center.reidentify(STAFF, known.pseudonym)["pid"]


def test_resolving_same_merges_and_the_change_feed_tells_the_dic(center: TrustCenter) -> None:
    known = register_one(center, HIS, "h-1", JUERGEN)
    unsure = register_one(center, LAB, "l-1", JOERG)
    (item,) = center.review_items(STAFF)
    change = center.resolve_review(STAFF, item["review_id"], same=True)
    assert change is not None and change.kind == "merge"
    assert (change.from_pseudonym, change.to_pseudonym, change.records) == (
        unsure.pseudonym, known.pseudonym, [unsure.record])
    assert center.changes(DIC) == [change]
    assert center.changes(DIC, since=change.seq) == []
    assert center.review_items(STAFF) == [] and len(center.review_items(STAFF, "same")) == 1
    # the decision holds: the record is now the known person's, also when it is sent again
    again = register_one(center, LAB, "l-1", JOERG)
    assert (again.outcome, again.pseudonym, again.record) == ("known", known.pseudonym, unsure.record)
    assert center.lookup(LAB, ["l-1"])["l-1"].pseudonym == known.pseudonym
    # the old DIC pseudonym still resolves, to the merged person
    assert center.reidentify(STAFF, unsure.pseudonym)["pid"] == center.reidentify(STAFF, known.pseudonym)["pid"]
    with pytest.raises(InputError, match="no open review item"):
        center.resolve_review(STAFF, item["review_id"], same=False)


def test_resolving_different_is_remembered(center: TrustCenter) -> None:
    known = register_one(center, HIS, "h-1", JUERGEN)
    unsure = register_one(center, LAB, "l-1", JOERG)
    (item,) = center.review_items(STAFF)
    assert center.resolve_review(STAFF, item["review_id"], same=False) is None
    assert center.changes(DIC) == []
    again = register_one(center, LAB, "l-1", {**JOERG, "postal_code": "04109"})
    assert (again.outcome, again.pseudonym) == ("known", unsure.pseudonym)
    assert again.pseudonym != known.pseudonym
    assert center.review_items(STAFF) == [], "no second review item for a decided pair"
    assert count(center, "SELECT count(*) FROM link_decision WHERE same = ?", (False,)) == 1


def test_split_moves_records_to_a_new_person_and_appears_in_the_feed(center: TrustCenter) -> None:
    his = register_one(center, HIS, "h-1", JUERGEN)
    lab = register_one(center, LAB, "l-1", {**JUERGEN, "given_names": "JUERGEN"})
    billing = register_one(center, BILLING, "b-1", {**JUERGEN, "family_name": "Mueller"})
    assert {his.pseudonym, lab.pseudonym, billing.pseudonym} == {his.pseudonym}
    change = center.split(STAFF, his.pseudonym, [lab.record])
    assert (change.kind, change.from_pseudonym, change.records) == ("split", his.pseudonym, [lab.record])
    assert change.to_pseudonym != his.pseudonym and is_valid_pseudonym(change.to_pseudonym)
    assert center.changes(DIC) == [change]
    moved = center.reidentify(STAFF, change.to_pseudonym)["records"]
    stayed = center.reidentify(STAFF, his.pseudonym)["records"]
    assert [r["record"] for r in moved] == [lab.record]
    assert sorted(r["record"] for r in stayed) == sorted([his.record, billing.record])
    assert center.lookup(LAB, ["l-1"])["l-1"].pseudonym == change.to_pseudonym
    with pytest.raises(InputError, match="some, not all"):
        center.split(STAFF, change.to_pseudonym, [lab.record])


def test_a_known_record_keeps_its_pseudonyms_also_with_corrected_idat(center: TrustCenter) -> None:
    first = register_one(center, HIS, "h-1", JUERGEN)
    again = register_one(center, HIS, "h-1", JUERGEN)
    assert (again.outcome, again.pseudonym, again.record) == ("known", first.pseudonym, first.record)
    moved = {**JUERGEN, "street": "Ringstraße 1", "postal_code": "39104", "city": "Magdeburg"}
    corrected = register_one(center, HIS, "h-1", moved)
    assert (corrected.outcome, corrected.pseudonym, corrected.record) == ("known", first.pseudonym, first.record)
    (record,) = center.reidentify(STAFF, first.pseudonym)["records"]
    assert record["idat"]["city"] == "Magdeburg"
    assert count(center, "SELECT count(*) FROM source_record") == 1


def test_malformed_idat_refuses_the_whole_request_and_writes_nothing(center: TrustCenter) -> None:
    register_one(center, HIS, "h-1", JUERGEN)
    with pytest.raises(InvalidIdat) as refused:
        center.register(HIS, [("h-2", ANNA), ("h-3", {**ANNA, "birth_date": "1980-02-30"}), ("", JOERG)])
    assert [(p["index"], p["field"]) for p in refused.value.problems] == [(1, "birth_date"), (2, "source_id")]
    assert count(center, "SELECT count(*) FROM source_record") == 1
    assert count(center, "SELECT count(*) FROM person") == 1


# ---------------------------------------------------------------- pseudonyms
def luhn_mod_32_holds(pseudonym: str) -> bool:
    """The validating form of Luhn mod N (written apart from the generating one in pseudonym.py):
    over body and check character, doubling every second from the right, the sum is 0 mod 32."""
    body, check = pseudonym.split("-")[1:]
    total = 0
    for position, char in enumerate(reversed(body + check)):
        addend = CROCKFORD.index(char) * (2 if position % 2 else 1)
        total += addend // 32 + addend % 32
    return total % 32 == 0


def test_pseudonyms_carry_a_valid_check_character(center: TrustCenter) -> None:
    found = [register_one(center, HIS, f"h-{i}", idat) for i, idat in enumerate((JUERGEN, ANNA))]
    for pseudonym in [f.pseudonym for f in found] + [f.record for f in found]:
        assert luhn_mod_32_holds(pseudonym) and is_valid_pseudonym(pseudonym)
        body = pseudonym.split("-")[1]
        typo = pseudonym.replace(body, ("1" if body[3] != "1" else "2").join((body[:3], body[4:])))
        assert not luhn_mod_32_holds(typo) and not is_valid_pseudonym(typo)
    assert found[0].pseudonym.startswith("DIC-") and found[0].record.startswith("REC-")


def test_project_pseudonyms_differ_per_project_and_person_and_cannot_be_joined(center: TrustCenter) -> None:
    people = [register_one(center, HIS, f"h-{i}", idat).pseudonym for i, idat in enumerate((JUERGEN, ANNA))]
    assert center.add_project(STAFF, "heart-study", MDAT) == "P1"
    assert center.add_project(STAFF, "lung-study", MDAT) == "P2"
    assert center.add_project(STAFF, "heart-study", MDAT) == "P1", "approving again changes nothing"
    heart = center.project_pseudonyms(DIC, "heart-study", people)
    lung = center.project_pseudonyms(DIC, "lung-study", people)
    assert center.project_pseudonyms(DIC, "heart-study", people) == heart, "stable"
    every = [*people, *heart.values(), *lung.values()]
    assert len(set(every)) == 6 and all(is_valid_pseudonym(p) for p in every)
    assert all(p.startswith("P1-") for p in heart.values()) and all(p.startswith("P2-") for p in lung.values())
    bodies = [p.split("-")[1] for p in every]
    assert len({b[:4] for b in bodies}) >= 5, "bodies unrelated across domains"
    # Only the trust center maps between domains, and only from DIC pseudonyms: a project's
    # pseudonyms are not accepted as input, and a project cannot ask about another one's.
    with pytest.raises(InputError, match="not a DIC pseudonym"):
        center.project_pseudonyms(DIC, "lung-study", [heart[people[0]]])
    heart_key = Caller("heart-study@uni", "project", "heart-study")
    assert center.may_use(heart_key, heart[people[0]], MDAT, date(2020, 1, 1)) is False  # no consent yet
    with pytest.raises(InputError, match="unknown pseudonym"):
        center.may_use(heart_key, lung[people[0]], MDAT, date(2020, 1, 1))
    with pytest.raises(InputError, match="no approved project"):
        center.project_pseudonyms(DIC, "unknown-study", people)


def test_key_rotation_keeps_issued_pseudonyms_and_uses_the_new_key_for_new_persons(center: TrustCenter) -> None:
    old = register_one(center, HIS, "h-1", JUERGEN)
    center.add_project(STAFF, "heart-study", MDAT)
    old_project = center.project_pseudonyms(DIC, "heart-study", [old.pseudonym])[old.pseudonym]
    assert center.rotate_key(STAFF) == 2
    new = register_one(center, HIS, "h-2", ANNA)
    versions = dict(center.db.rows("SELECT pseudonym, key_version FROM pseudonym"))
    assert (versions[old.pseudonym], versions[new.pseudonym], versions[old_project]) == (1, 2, 1)
    assert center.project_pseudonyms(DIC, "heart-study", [old.pseudonym]) == {old.pseudonym: old_project}
    assert center.reidentify(STAFF, old_project)["records"][0]["source_id"] == "h-1"
    matched = register_one(center, LAB, "l-1", {**JUERGEN, "family_name": "MUELLER"})
    assert (matched.outcome, matched.pseudonym) == ("match", old.pseudonym)
    assert center.lookup(HIS, ["h-1", "h-2"]) == {"h-1": replace(old, outcome="known"),
                                                  "h-2": replace(new, outcome="known")}
    assert sorted(center.keys.keys) == [1, 2] and center.keys.current == 2


# ---------------------------------------------------------------- re-identification
def test_only_staff_may_reidentify_and_refusals_are_audited(center: TrustCenter) -> None:
    person = register_one(center, HIS, "h-1", JUERGEN)
    found = center.reidentify(STAFF, person.pseudonym)
    assert found["pseudonym"] == person.pseudonym and found["domain"] == "DIC"
    assert [(r["source"], r["source_id"], r["idat"]["family_name"]) for r in found["records"]] == [
        ("his@site-a", "h-1", "Müller")]
    for caller in (HIS, DIC, Caller("heart-study@uni", "project", "heart-study")):
        with pytest.raises(NotAuthorized):
            center.reidentify(caller, person.pseudonym)
    rows = center.db.rows("SELECT actor, role, subject, outcome FROM audit_entry WHERE action = 'reidentify' "
                          "ORDER BY seq")
    assert rows == [("alice (staff)", "staff", person.pseudonym, "allowed"),
                    ("his@site-a", "source", person.pseudonym, "denied"),
                    ("dic@site-a", "dic", person.pseudonym, "denied"),
                    ("heart-study@uni", "project", person.pseudonym, "denied")]


# ---------------------------------------------------------------- consent
def day(text: str) -> date:
    return date.fromisoformat(text[:10])


@pytest.fixture(scope="module")
def synth_consents() -> dict[str, list[dict[str, Any]]]:
    """Two persons' MII Broad Consents from the test world: one who permitted everything, one
    who permitted everything and later withdrew."""
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for resource in generate_population(300, 12):
        if resource["resourceType"] == "Consent":
            by_patient.setdefault(resource["patient"]["reference"], []).append(resource)

    def all_permit(consent: dict[str, Any]) -> bool:
        return {p["type"] for p in consent["provision"]["provision"]} == {"permit"}

    permitted = next(own for own in by_patient.values() if len(own) == 1 and all_permit(own[0]))
    withdrew = next(own for own in by_patient.values() if len(own) == 2 and all_permit(own[0]))
    return {"permitted": permitted, "withdrew": withdrew}


def as_patient(consents: list[dict[str, Any]], pseudonym: str) -> list[dict[str, Any]]:
    return [{**c, "patient": {"reference": f"Patient/{pseudonym}"}} for c in consents]


def test_consent_checks_and_withdrawals(center: TrustCenter, synth_consents: dict) -> None:
    permitted = register_one(center, HIS, "h-1", JUERGEN).pseudonym
    withdrew = register_one(center, HIS, "h-2", ANNA).pseudonym
    consents = as_patient(synth_consents["permitted"], permitted) + as_patient(synth_consents["withdrew"], withdrew)
    assert center.record_consents(DIC, consents) == 3

    given = day(synth_consents["permitted"][0]["dateTime"])
    later = given + timedelta(days=100)
    assert center.may_use(DIC, permitted, MDAT, later, as_of=later + timedelta(days=100))
    assert center.may_use(DIC, permitted, "research-insurance-data", given, as_of=given)
    assert not center.may_use(DIC, permitted, MDAT, given - timedelta(days=1), as_of=later), "before the consent"
    assert not center.may_use(DIC, permitted, MDAT, given, as_of=given - timedelta(days=1)), "not yet given"

    original, withdrawal = synth_consents["withdrew"]
    start, withdrawn = day(original["dateTime"]), day(withdrawal["dateTime"])
    data_day = start + (withdrawn - start) // 2
    assert center.may_use(DIC, withdrew, MDAT, data_day, as_of=withdrawn - timedelta(days=1))
    assert not center.may_use(DIC, withdrew, MDAT, data_day, as_of=withdrawn)
    assert not center.may_use(DIC, withdrew, MDAT, start, as_of=withdrawn + timedelta(days=400))

    assert center.withdrawals(DIC, as_of=withdrawn - timedelta(days=1)) == []
    (found,) = center.withdrawals(DIC, as_of=withdrawn)
    assert (found.pseudonym, found.since) == (withdrew, withdrawn)
    with pytest.raises(InputError, match="unknown purpose"):
        center.may_use(DIC, permitted, "marketing", later)
    with pytest.raises(NotAuthorized):
        center.record_consents(HIS, consents)


def test_project_members_are_released_only_with_consent_for_the_projects_purpose(
        center: TrustCenter, synth_consents: dict) -> None:
    permitted = register_one(center, HIS, "h-1", JUERGEN).pseudonym
    withdrew = register_one(center, HIS, "h-2", ANNA).pseudonym
    unconsented = register_one(center, HIS, "h-3", {**ANNA, "given_names": "Berta", "birth_date": "1950-05-05",
                                                    "insurance_number": "C111111111"}).pseudonym
    center.record_consents(DIC, as_patient(synth_consents["permitted"], permitted)
                           + as_patient(synth_consents["withdrew"], withdrew))
    center.add_project(STAFF, "ms-study", MDAT)
    given = day(synth_consents["permitted"][0]["dateTime"])
    withdrawn = day(synth_consents["withdrew"][1]["dateTime"])
    later = max(given, withdrawn) + timedelta(days=10)
    released = center.project_members(DIC, "ms-study", [(permitted, later), (withdrew, later), (unconsented, later)])
    assert set(released) == {permitted}, "no consent, or a withdrawn one: not released"
    assert released[permitted] == center.project_pseudonyms(DIC, "ms-study", [permitted])[permitted]
    assert released[permitted] != permitted
    assert center.project_members(DIC, "ms-study", [(permitted, given - timedelta(days=1))]) == {}, "data before consent"
    with pytest.raises(InputError, match="no approved project"):
        center.project_members(DIC, "nope", [(permitted, later)])
    with pytest.raises(NotAuthorized):
        center.project_members(HIS, "ms-study", [(permitted, later)])
    entry = center.db.row("SELECT detail FROM audit_entry WHERE action = 'project-members' AND outcome = 'allowed'")
    assert orjson.loads(entry[0]) == {"asked": 3, "released": 1, "purpose": MDAT}


def test_a_consent_follows_its_person_through_a_merge(center: TrustCenter, synth_consents: dict) -> None:
    register_one(center, HIS, "h-1", JUERGEN)
    unsure = register_one(center, LAB, "l-1", JOERG)
    center.record_consents(DIC, as_patient(synth_consents["withdrew"], unsure.pseudonym))
    (item,) = center.review_items(STAFF)
    change = center.resolve_review(STAFF, item["review_id"], same=True)
    withdrawn = day(synth_consents["withdrew"][1]["dateTime"])
    (found,) = center.withdrawals(DIC, as_of=withdrawn)
    assert found.pseudonym == change.to_pseudonym


# ---------------------------------------------------------------- the audit log
def test_every_call_leaves_an_audit_entry_and_the_chain_holds(center: TrustCenter) -> None:
    before = count(center, "SELECT count(*) FROM audit_entry")
    person = register_one(center, HIS, "h-1", JUERGEN)
    center.lookup(HIS, ["h-1"])
    center.add_project(STAFF, "heart-study", MDAT)
    center.project_pseudonyms(DIC, "heart-study", [person.pseudonym])
    center.may_use(DIC, person.pseudonym, MDAT, date(2020, 1, 1))
    center.withdrawals(DIC)
    center.changes(DIC)
    center.review_items(STAFF)
    center.reidentify(STAFF, person.pseudonym)
    center.rotate_key(STAFF)
    with pytest.raises(NotAuthorized):
        center.changes(HIS)
    with pytest.raises(NotAuthorized):
        center.verify_audit(DIC)
    with pytest.raises(InvalidIdat):
        center.register(HIS, [("h-2", {"family_name": "Meier"})])
    actions = [a for (a,) in center.db.rows("SELECT action FROM audit_entry WHERE seq > ? ORDER BY seq", (before,))]
    assert actions == ["register", "lookup", "manage-projects", "project-pseudonyms", "may-use", "withdrawals",
                       "changes", "review-list", "reidentify", "rotate-key", "changes", "audit-verify", "register"]
    outcomes = [o for (o,) in center.db.rows("SELECT outcome FROM audit_entry WHERE seq > ? ORDER BY seq", (before,))]
    assert outcomes[-3:] == ["denied", "denied", "failed"] and set(outcomes[:-3]) == {"allowed"}
    result = center.verify_audit(STAFF)
    assert result.intact and result.entries == before + len(actions)
    assert center.db.scalar("SELECT action FROM audit_entry ORDER BY seq DESC LIMIT 1") == "audit-verify"
    text = orjson.dumps(center.db.rows("SELECT * FROM audit_entry")).decode()
    assert not any(value in text for value in ("Müller", "Jürgen", "1961-04-12", "A123456789", "Meier"))

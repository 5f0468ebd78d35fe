"""Identities of the synthetic persons: valid KVNRs, towns that fit their postcodes, realistic name
frequencies, and per source the declared error rates, measured on 20,000 spellings.

Rates are checked as |observed - declared| <= 4 binomial standard errors of the eligible count
(tighter than +-1 percentage point for every rate here; 4 rather than 3 SE because about a hundred
rates are checked at once). Eligibility is recomputed here from the true person and the reported
errors, independently of the engine's own bookkeeping.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from dic.errors import ConfigError, DefinitionError
from dic.synth.catalog import load_catalog
from dic.synth.identity import (
    ERROR_TYPES,
    IDAT_SOURCES,
    IDENTITY_PATH,
    PREVIOUS_ADDRESS,
    Address,
    TruePerson,
    draw_person,
    is_valid_kvnr,
    kvnr_check_digit,
    load_identity_rules,
    spell,
    spell_with_errors,
    transliterate,
)
from dic.synth.site_patient import Identity

N = 20_000
REGIONS = ["site-a", "site-b", "site-c", "elsewhere"]
RULES: dict[str, Any] = yaml.safe_load(IDENTITY_PATH.read_text(encoding="utf-8"))  # the declarations as written


def draw_people(seed: int, n: int = N) -> list[TruePerson]:
    rand = random.Random(seed)
    people = []
    for i in range(n):
        sex = ["female", "male", "female", "male", "other", "unknown"][i % 6]
        birth = f"{1925 + int(rand.random() * 100)}-{1 + int(rand.random() * 12):02d}-{1 + int(rand.random() * 28):02d}"
        people.append(draw_person(rand, sex, birth, REGIONS[i % 4], serial=i, years=(2015, 2025)))
    return people


def when_of(i: int) -> str | None:
    return None if i % 2 else f"{2015 + i % 11}-{1 + i % 12:02d}-15"


def spell_all(people: list[TruePerson], seed: int) -> dict[str, list[tuple[Identity, list[str]]]]:
    rand = random.Random(seed)
    return {s: [spell_with_errors(p, s, rand, when_of(i)) for i, p in enumerate(people)] for s in IDAT_SOURCES}


@pytest.fixture(scope="module")
def people() -> list[TruePerson]:
    return draw_people(3)


@pytest.fixture(scope="module")
def spellings(people: list[TruePerson]) -> dict[str, list[tuple[Identity, list[str]]]]:
    return spell_all(people, 4)


# ------------------------------------------------------------------ KVNR
# By hand from the definition: letter -> two digits, weights 1,2,1,2,..., digit sums of the products.
#   A12345678: 0 1 1 2 3 4 5 6 7 8 -> 0+2+1+4+3+8+5+(12:3)+7+(16:7) = 40 -> 0
#   Z98765432: 2 6 9 8 7 6 5 4 3 2 -> 2+(12:3)+9+(16:7)+7+(12:3)+5+8+3+4 = 51 -> 1
#   M00000000: 1 3 0 0 0 0 0 0 0 0 -> 1+6 = 7 -> 7
#   J55555555: 1 0 5 5 5 5 5 5 5 5 -> 1+0+5+(10:1)+5+1+5+1+5+1 = 25 -> 5
HAND_MADE = ["A123456780", "Z987654321", "M000000007", "J555555555"]


def test_kvnr_check_digit_of_hand_made_numbers() -> None:
    for number in HAND_MADE:
        assert kvnr_check_digit(number[:9]) == int(number[9]), number
        assert is_valid_kvnr(number)


def test_kvnr_every_single_digit_change_is_caught(people: list[TruePerson]) -> None:
    numbers = HAND_MADE + [p.insurance_number for p in people[:300] if p.insurance_number]
    for number in numbers:
        for i in range(1, 10):
            for digit in "0123456789":
                if digit != number[i]:
                    assert not is_valid_kvnr(number[:i] + digit + number[i + 1:]), (number, i, digit)
    for bad in ["a123456780", "A12345678", "A1234567800", "AB23456780", ""]:
        assert not is_valid_kvnr(bad)


def test_kvnr_of_persons_valid_unique_and_spread(people: list[TruePerson]) -> None:
    numbers = [p.insurance_number for p in people if p.insurance_number]
    assert all(is_valid_kvnr(x) for x in numbers)
    assert len(set(numbers)) == len(numbers)
    insured = len(numbers) / len(people) * 100
    assert abs(insured - RULES["statutory_insured_pct"]) < 4 * se(RULES["statutory_insured_pct"], len(people))
    assert len({x[0] for x in numbers}) == 26  # all letters; and serials do not leak as runs of digits
    assert len({x[1:3] for x in numbers[:2000]}) > 90


# ------------------------------------------------------------------ the true person
def town_of(code: str) -> list[str]:
    return [t["city"] for t in RULES["postal_codes"].get(code[:2], []) if t["first"] <= code <= t["last"]]


def test_postal_codes_fit_region_and_city(people: list[TruePerson]) -> None:
    prefixes = load_catalog().population.postal_prefixes
    moved = 0
    for i, p in enumerate(people):
        allowed = prefixes.get(REGIONS[i % 4]) or prefixes["default"]
        for a in filter(None, [p.address, p.previous_address]):
            assert len(a.postal_code) == 5 and a.postal_code.isdigit() and a.postal_code[:2] in allowed
            assert a.city in town_of(a.postal_code), (a.postal_code, a.city)
            assert a.street[-1].isdigit() or a.street[-1] in "abc"
        if p.previous_address is not None:
            moved += 1
            assert p.moved_on is not None and p.birth_date < p.moved_on and "2015" <= p.moved_on[:4] <= "2025"
    assert {p.address.city for p in people} >= {"Leipzig", "Hamburg", "München", "Berlin"}
    assert 15 < moved / len(people) * 100 < RULES["moved_pct"] + 1


def test_town_table_agrees_with_known_postcodes() -> None:
    """Anchors from the Deutsche Post directory, written down here independently of identity.yaml."""
    known = {"01067": "Dresden", "04109": "Leipzig", "06108": "Halle (Saale)", "07743": "Jena", "09111": "Chemnitz",
             "10115": "Berlin", "14467": "Potsdam", "19053": "Schwerin", "20095": "Hamburg", "23552": "Lübeck",
             "24103": "Kiel", "39104": "Magdeburg", "80331": "München", "85049": "Ingolstadt", "86150": "Augsburg"}
    for code, city in known.items():
        assert town_of(code) == [city], code


def test_postal_prefix_can_be_pinned() -> None:
    p = draw_person(random.Random(1), "female", "1980-01-01", "site-c", postal_prefix="83")
    assert p.address.postal_code.startswith("83") and p.address.city in town_of(p.address.postal_code)


def test_common_surnames_as_declared(people: list[TruePerson]) -> None:
    common = RULES["origins"][0]["common_family_names_pct"]
    counts = Counter(p.birth_name for p in people)  # at birth: not the spouse's
    assert counts.most_common(1)[0][0] == "Müller"
    assert abs(counts["Müller"] / N * 100 - common["Müller"]) < 4 * se(common["Müller"], N)
    top = sum(counts[name] for name in common) / N * 100
    assert abs(top - sum(common.values())) < 4 * se(sum(common.values()), N)
    assert len(counts) > 2500  # a long tail, so collisions stay realistic


def test_names_come_from_the_pools_and_fit_sex(people: list[TruePerson]) -> None:
    providers = [importlib.import_module(f"faker.providers.person.{o['given_locale']}").Provider
                 for o in RULES["origins"]]
    female = {n for provider in providers for n in provider.first_names_female}
    male = {n for provider in providers for n in provider.first_names_male}
    assert all(p.given_names[0] in female for p in people if p.sex == "female")
    assert all(p.given_names[0] in male for p in people if p.sex == "male")  # "Andrea" is both, in Italy
    two = sum(len(p.given_names) == 2 for p in people) / N * 100
    assert abs(two - RULES["second_given_pct"]) < 1.0  # minus the rare draws of the same name twice


def test_birth_names_differ_for_married_adults(people: list[TruePerson]) -> None:
    rule = RULES["birth_name"]
    adults = [p for p in people if p.sex == "female" and 2025 - int(p.birth_date[:4]) >= rule["min_age_years"]]
    share = sum(p.birth_name != p.family for p in adults) / len(adults) * 100
    assert abs(share - rule["pct"]["female"]) < 4 * se(rule["pct"]["female"], len(adults))
    assert not any(p.birth_name != p.family for p in people if 2025 - int(p.birth_date[:4]) < rule["min_age_years"])
    assert any(p.family.endswith(f"-{p.birth_name}") for p in adults)  # double names


def test_nickname_table_used(people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    table = RULES["nicknames"]
    for p in people:
        first = p.given_names[0]
        assert p.nickname in table[first] if first in table else p.nickname is None
    assert len({p.nickname for p in people if p.nickname}) > 20
    used = [(p, ident, errs) for p, (ident, errs) in zip(people, spellings["ms-registry"]) if "nickname" in errs]
    assert len(used) > 10
    for p, ident, errs in used:
        if not {"given_typo", "transliterated", "whitespace_noise", "case_noise"} & set(errs):
            assert ident.given.split(" ")[0] == p.nickname


# ------------------------------------------------------------------ spellings
def se(pct: float, n: int) -> float:
    return 100 * math.sqrt(pct / 100 * (1 - pct / 100) / max(n, 1))


def eligible(p: TruePerson, fields: set[str], errs: list[str], when: str | None, ascii_only: bool) -> set[str]:
    """The error types that could apply to this record, given the truth and the errors reported."""
    has = set(errs)
    given = "given" in fields and "given_missing" not in has
    family = "family" in fields and "family_missing" not in has
    birth = "birth_date" in fields and "birth_date_missing" not in has
    address = bool(fields & {"street", "postal_code", "city"}) and "address_missing" not in has
    insured = "insurance_number" in fields and p.insurance_number is not None
    before_move = p.moved_on is not None and when is not None and when < p.moved_on
    names = (p.nickname,) if "nickname" in has else p.given_names[:1]
    names += () if "second_given_dropped" in has else p.given_names[1:]
    current = p.birth_name if "birth_name_as_family" in has else p.family
    text = (" ".join(names) if given else "") + (current + (p.title or "") if family else "")
    if "birth_name" in fields and p.birth_name != p.family and "birth_name_as_family" not in has:
        text += p.birth_name
    used = p.previous_address if {"stale_address", PREVIOUS_ADDRESS} & has else p.address
    day, month = p.birth_date[8:10], p.birth_date[5:7]
    table = {
        "given_missing": "given" in fields, "family_missing": "family" in fields,
        "birth_date_missing": "birth_date" in fields, "sex_missing": "sex" in fields,
        "address_missing": bool(fields & {"street", "postal_code", "city"}), "insurance_missing": insured,
        "nickname": given and p.nickname is not None, "second_given_dropped": given and len(p.given_names) > 1,
        "birth_name_as_family": family and p.birth_name != p.family, "title_in_name": family and p.title is not None,
        "stale_address": address and p.moved_on is not None and not before_move,
        "street_abbreviated": "street" in fields and address and used is not None and "straße" in used.street,
        "transliterated": not ascii_only and not text.isascii(),
        "given_typo": given, "family_typo": family, "street_typo": "street" in fields and address,
        "birth_date_swap": birth and day <= "12" and day != month, "birth_date_typo": birth,
        "insurance_digit": insured and "insurance_missing" not in has,
        "case_noise": given or family, "whitespace_noise": given or family,
    }
    return {kind for kind, ok in table.items() if ok}


@pytest.mark.parametrize("source", IDAT_SOURCES)
def test_error_rates_as_declared(source: str, people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    rules = RULES["sources"][source]
    fields, ascii_only = set(rules["fields"]), rules.get("ascii_only", False)
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for i, (p, (_, errs)) in enumerate(zip(people, spellings[source])):
        could = eligible(p, fields, errs, when_of(i), ascii_only)
        totals.update(could)
        hits.update(could & set(errs))
        assert set(errs) <= could | {PREVIOUS_ADDRESS, "transliterated"}  # nothing applied where it cannot be
    for kind, pct in rules["errors_pct"].items():
        observed = hits[kind] / totals[kind] * 100
        assert abs(observed - pct) <= 4 * se(pct, totals[kind]), \
            f"{source} {kind}: {observed:.3f}% of {totals[kind]} vs {pct}%"
        if totals[kind] * pct / 100 >= 5:
            assert hits[kind] > 0, kind
    assert not set(hits) - set(rules["errors_pct"])  # nothing undeclared


def test_unreported_means_exact(people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    """A record without reported errors is the truth, field by field (as far as the source records it)."""
    for source in ("his", "billing", "biobank", "ms-registry"):
        fields = set(RULES["sources"][source]["fields"])
        clean = 0
        for p, (ident, errs) in zip(people, spellings[source]):
            if errs:
                continue
            clean += 1
            expect = Identity(" ".join(p.given_names), p.family, p.birth_date, p.sex, p.address.street,
                              p.address.postal_code, p.address.city, p.insurance_number,
                              p.birth_name if p.birth_name != p.family else None)
            for name in Identity.__slots__:
                assert getattr(ident, name) == (getattr(expect, name) if name in fields else None), (source, name)
        assert clean > N / 3


def osa_distance(a: str, b: str) -> int:
    """Optimal string alignment distance (edits incl. adjacent transposition)."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_errors_show_as_declared(people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    for source in ("his", "billing", "biobank", "ms-registry"):
        for p, (ident, errs) in zip(people, spellings[source]):
            if errs == ["family_typo"]:
                assert osa_distance(p.family, ident.family) == 1
            if errs == ["given_typo"]:
                assert osa_distance(" ".join(p.given_names), ident.given) == 1
            if "birth_date_swap" in errs and "birth_date_typo" not in errs:
                y, m, d = p.birth_date.split("-")
                assert int(d) <= 12 and ident.birth_date == f"{y}-{d}-{m}"
            if "birth_date_typo" in errs and "birth_date_swap" not in errs:
                leap_day = p.birth_date[5:] == "02-29" and ident.birth_date[5:] == "02-28"
                assert sum(a != b for a, b in zip(p.birth_date, ident.birth_date)) == 1 + leap_day
            if "insurance_digit" in errs:
                assert not is_valid_kvnr(ident.insurance_number) and osa_distance(
                    p.insurance_number, ident.insurance_number) == 1
            for kind, field in (("given_missing", "given"), ("family_missing", "family"), ("sex_missing", "sex"),
                                ("birth_date_missing", "birth_date"), ("insurance_missing", "insurance_number")):
                if kind in errs:
                    assert getattr(ident, field) is None
            if not {"birth_date_swap", "birth_date_typo"} & set(errs) and ident.birth_date is not None:
                assert ident.birth_date == p.birth_date  # swapped or altered dates are always reported


def test_ascii_only_source_always_transliterates(people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    for p, (ident, errs) in zip(people, spellings["lab"]):
        for text in (ident.given, ident.family, ident.street, ident.city, ident.birth_name):
            assert text is None or (text.isascii() and text == text.upper())
        has = set(errs)
        address = p.previous_address if {"stale_address", PREVIOUS_ADDRESS} & has else p.address
        texts = [] if "given_missing" in has else [" ".join(p.given_names)]
        texts += [] if "family_missing" in has else [p.family]
        texts += [] if "address_missing" in has else [address.street, address.city]
        if not has & {"nickname", "second_given_dropped", "birth_name_as_family", "title_in_name",
                      "street_abbreviated"}:
            assert ("transliterated" in has) == (not "".join(texts).isascii()) or {"given_typo", "family_typo",
                                                                                 "street_typo"} & has
    muller = TruePerson(("Jörg",), "Müller", "Müller", None, "1970-03-04", "male",
                        Address("Große Straße 3", "04103", "Leipzig"), None, None, "A123456780", None)
    clean = [spell_with_errors(muller, "lab", random.Random(k)) for k in range(200)]
    assert any(i == Identity("JOERG", "MUELLER", "1970-03-04", "male", "GROSSE STRASSE 3", "04103", "LEIPZIG",
                             "A123456780") and e == ["transliterated"] for i, e in clean)


def test_transliterate() -> None:
    assert transliterate("Müller") == "Mueller" and transliterate("Weiß") == "Weiss"
    assert transliterate("Öztürk Yılmaz") == "Oeztuerk Yilmaz" and transliterate("Đurić") == "Duric"
    assert transliterate("Çelik") == "Celik"


def test_previous_address_at_the_time(people: list[TruePerson]) -> None:
    movers = [p for p in people if p.moved_on is not None][:300]
    for k, p in enumerate(movers):
        before, errs = spell_with_errors(p, "his", random.Random(k), "2014-12-31")
        if "address_missing" not in errs:
            assert PREVIOUS_ADDRESS in errs and before.postal_code == p.previous_address.postal_code
        after, errs = spell_with_errors(p, "his", random.Random(k), p.moved_on)
        if not {"address_missing", "stale_address"} & set(errs):
            assert after.postal_code == p.address.postal_code and PREVIOUS_ADDRESS not in errs


def test_his_cleanest_registry_noisiest(spellings: dict[str, list[Any]]) -> None:
    def noisy(source: str) -> float:
        return sum(bool(set(e) - {PREVIOUS_ADDRESS, "transliterated", "second_given_dropped"})
                   for _, e in spellings[source]) / N
    assert noisy("his") < noisy("billing") < noisy("biobank") < noisy("ms-registry")


def test_never_every_linking_field_wrong(spellings: dict[str, list[Any]]) -> None:
    touched = {"given": {"given_missing", "given_typo", "nickname"}, "family": {"family_missing", "family_typo"},
               "birth_date": {"birth_date_missing", "birth_date_swap", "birth_date_typo"}}
    for source, rows in spellings.items():
        max_drawn = max(len(set(e) & set(ERROR_TYPES) - {"transliterated"}) for _, e in rows)
        assert max_drawn <= RULES["max_errors"]
        all_three = sum(all(set(e) & kinds for kinds in touched.values()) for _, e in rows)
        assert all_three / N < 0.001, source


def test_deterministic(people: list[TruePerson], spellings: dict[str, list[Any]]) -> None:
    def digest(obj: Any) -> str:
        return hashlib.sha256(repr(obj).encode()).hexdigest()
    again = draw_people(3, 2000)
    assert digest(again) == digest(people[:2000])
    assert digest(spell_all(again, 4)["lab"]) != digest(spell_all(again, 5)["lab"])
    assert digest(draw_people(4, 2000)) != digest(again)
    first = spell_all(again[:500], 9)
    assert digest(first) == digest(spell_all(again[:500], 9))
    assert spell(again[0], "his", random.Random(1)) == spell_with_errors(again[0], "his", random.Random(1))[0]


def test_declarations_load_and_report_every_problem(tmp_path: Path) -> None:
    rules = load_identity_rules()
    assert set(rules.sources) == set(IDAT_SOURCES)
    pools = set()
    from faker.providers.person.de_DE import Provider as German
    pools |= set(German.first_names_female) | set(German.first_names_male)
    assert set(rules.nicknames) <= pools  # every nickname can be used
    broken = dict(RULES, origins=[dict(RULES["origins"][0], pct=50.0)] + RULES["origins"][1:],
                  postal_codes={k: v for k, v in RULES["postal_codes"].items() if k != "80"},
                  sources=dict(RULES["sources"], biobank=dict(RULES["sources"]["biobank"],
                                                              errors_pct={"street_typo": 1.0})))
    path = tmp_path / "identity.yaml"
    path.write_text(yaml.safe_dump(broken, allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_identity_rules(path)
    paths = {p.path for p in caught.value.problems}
    assert {"/origins", "/postal_codes/80", "/sources/biobank/errors_pct/street_typo"} <= paths
    path.write_text(yaml.safe_dump(dict(RULES, sources={"his": {"fields": ["given"], "errors_pct": {"typo": 1}}}),
                                   allow_unicode=True), encoding="utf-8")
    with pytest.raises(DefinitionError, match="errors_pct"):
        load_identity_rules(path)
    with pytest.raises(ConfigError, match="genomics"):
        spell(draw_people(1, 1)[0], "genomics", random.Random(1))

"""Identities (IDAT) of the synthetic persons: who a person truly is, and how each source spells them.

    draw_person(rand, sex, birth_date, region) -> TruePerson   names, addresses, KVNR, title
    spell(person, source, rand, when)           -> Identity     one source's spelling, with errors
    spell_with_errors(...)                      -> (Identity, [error type, ...]) for the truth files
    kvnr_check_digit(body), is_valid_kvnr(number)

Everything that varies is declared in `identity.yaml`: name origins and frequencies, towns per
postal prefix, nicknames, and per source the fields it records, whether it stores ASCII only or
upper case, and its error rates. Names come from Faker's provider lists, loaded once and sampled
with the caller's `random.Random` (Faker's own random API is global and slow).

Every declared error type is drawn as an independent Bernoulli per record and applied where it is
eligible (a swap needs day <= 12, a nickname needs one), so a rate is per eligible record. Missing
fields are decided first, so a typo only lands on a value that is there; at most `max_errors` are
applied, so no record garbles every linking field at once. `when` (the record's date) decides the
address: before the person's move, the previous one (reported as PREVIOUS_ADDRESS, not an error).

The Krankenversichertennummer (KVNR, § 290 SGB V, GKV-Spitzenverband) is one letter, eight digits
and a check digit. The check digit: replace the letter by its two-digit alphabet position
(A = 01 ... Z = 26), which with the eight digits gives ten digits; multiply them from left to right
by 1, 2, 1, 2, ...; add the digit sums (Quersummen) of the products; the check digit is that sum
modulo 10. As with Luhn, doubling with digit sum is a permutation of 0-9, so every change of a
single digit changes the check digit.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from itertools import accumulate
from math import prod
from pathlib import Path
from random import Random
from typing import Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from dic.errors import ConfigError, Problem
from dic.synth.catalog import load_catalog
from dic.synth.declarations import load_declarations
from dic.synth.site_patient import Identity

IDENTITY_PATH = Path(__file__).with_name("identity.yaml")
IDAT_SOURCES = ("his", "lab", "billing", "ms-registry", "biobank")
T = TypeVar("T")

# Drawn in this order; the missing-field errors come first (see the module docstring).
ErrorType = Literal[
    "given_missing", "family_missing", "birth_date_missing", "sex_missing", "address_missing", "insurance_missing",
    "nickname", "second_given_dropped", "birth_name_as_family", "title_in_name", "stale_address",
    "street_abbreviated", "transliterated", "given_typo", "family_typo", "street_typo", "birth_date_swap",
    "birth_date_typo", "insurance_digit", "case_noise", "whitespace_noise"]
ERROR_TYPES: tuple[str, ...] = get_args(ErrorType)
# Reported but never drawn: the address that was correct at `when` (the person moved later).
PREVIOUS_ADDRESS = "previous_address"
Field = Literal["given", "family", "birth_name", "birth_date", "sex", "street", "postal_code", "city",
                "insurance_number"]
_ADDRESS = ("street", "postal_code", "city")
# The fields an error type needs (any one of them) in a source that declares it.
_ERROR_FIELDS = {"given_missing": ("given",), "family_missing": ("family",), "birth_date_missing": ("birth_date",),
                 "sex_missing": ("sex",), "address_missing": _ADDRESS, "insurance_missing": ("insurance_number",),
                 "nickname": ("given",), "second_given_dropped": ("given",), "birth_name_as_family": ("family",),
                 "title_in_name": ("family",), "stale_address": _ADDRESS, "street_abbreviated": ("street",),
                 "transliterated": ("given", "family"), "given_typo": ("given",), "family_typo": ("family",),
                 "street_typo": ("street",), "birth_date_swap": ("birth_date",), "birth_date_typo": ("birth_date",),
                 "insurance_digit": ("insurance_number",), "case_noise": ("given", "family"),
                 "whitespace_noise": ("given", "family")}
_NAME_RE = re.compile(r"^[^\W\d_]{2,}(?:-[^\W\d_]{2,})?$")  # drops Faker's "H.-Dieter", "Koch II", "van der X"


# ------------------------------------------------------------------ declarations
class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Origin(_Entry):
    name: str
    pct: float
    given_locale: str
    family_locales: list[str]
    compound_pct: float = 0.0
    common_family_names_pct: dict[str, float] = {}


class Compounds(_Entry):
    heads: list[str]
    tails: list[str]


class BirthName(_Entry):
    min_age_years: int
    pct: dict[str, float]  # by FHIR administrative gender
    double_name_pct: float


class Titles(_Entry):
    min_age_years: int
    pct: dict[str, float]


class Streets(_Entry):
    common_pct: dict[str, float]
    suffixes: dict[str, float]
    house_number_max: int
    house_letter_pct: float


class Town(_Entry):
    city: str
    first: str
    last: str
    weight: float


class SourceRules(_Entry):
    fields: list[Field]
    ascii_only: bool = False
    upper_case: bool = False
    errors_pct: dict[ErrorType, float]


class IdentityRules(_Entry):
    reference_date: date
    move_window: tuple[int, int]
    origins: list[Origin]
    compound_family_names: Compounds
    second_given_pct: float
    birth_name: BirthName
    titles: Titles
    statutory_insured_pct: float
    moved_pct: float
    streets: Streets
    postal_codes: dict[str, list[Town]]
    nicknames: dict[str, list[str]]
    keyboard_rows: list[str]
    typo_kinds_pct: dict[Literal["substitution", "transposition", "deletion", "insertion"], float]
    max_errors: int
    sources: dict[str, SourceRules]

    def problems(self) -> list[Problem]:
        """What the schema cannot see: sums, the catalog's prefixes, fields an error needs."""
        found: list[Problem] = []
        if abs(sum(o.pct for o in self.origins) - 100) > 1e-9:
            found.append(Problem("/origins", "pct must add up to 100"))
        for n, o in enumerate(self.origins):
            if sum(o.common_family_names_pct.values()) >= o.pct:
                found.append(Problem(f"/origins/{n}/common_family_names_pct", f"must add up to less than {o.pct}"))
        for region, prefixes in load_catalog().population.postal_prefixes.items():
            found += [Problem(f"/postal_codes/{p}", f"no towns for {region}'s prefix (catalog.yaml)")
                      for p in prefixes if p not in self.postal_codes]
        for prefix, towns in self.postal_codes.items():
            found += [Problem(f"/postal_codes/{prefix}/{n}", f"{t.city}: {t.first}-{t.last} not 5 digits under {prefix}")
                      for n, t in enumerate(towns)
                      if not (len(t.first) == len(t.last) == 5 and t.first.startswith(prefix)
                              and t.last.startswith(prefix) and t.first <= t.last)]
        if set(self.sources) != set(IDAT_SOURCES):
            found.append(Problem("/sources", f"must be exactly {sorted(IDAT_SOURCES)}"))
        for name, s in self.sources.items():
            for kind, pct in s.errors_pct.items():
                needed = _ERROR_FIELDS[kind]
                if not set(needed) & set(s.fields):
                    found.append(Problem(f"/sources/{name}/errors_pct/{kind}",
                                         f"{name} records none of {', '.join(needed)}"))
                if not 0 <= pct <= 100:
                    found.append(Problem(f"/sources/{name}/errors_pct/{kind}", "must be within 0-100"))
            for kind, flag in (("transliterated", s.ascii_only), ("case_noise", s.upper_case)):
                if flag and kind in s.errors_pct:
                    found.append(Problem(f"/sources/{name}/errors_pct/{kind}", "always so in this source: drop it"))
        return found


@cache
def load_identity_rules(path: Path = IDENTITY_PATH) -> IdentityRules:
    """The identity declarations, validated; every problem is reported at once (DefinitionError)."""
    return load_declarations(path, IdentityRules)


# ------------------------------------------------------------------ tables derived once
def _faker_names(locale: str, attribute: str) -> list[str]:
    provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
    return sorted({n for n in getattr(provider, attribute) if _NAME_RE.match(n)})  # sorted: no set order


class _Weighted(Generic[T]):
    """Weighted choice from one uniform number: bisect on cumulative weights."""

    def __init__(self, items: list[T], weights: list[float]):
        self.items, self.cum = items, list(accumulate(weights))
        self.total = self.cum[-1]

    def pick(self, rand: Random) -> T:
        return self.items[bisect(self.cum, rand.random() * self.total)]


def _weighted(table: dict[str, float], rest_pct: float | None = None) -> _Weighted[str]:
    """Over a table's keys; with `rest_pct`, the empty string stands for the rest up to 100 %."""
    rest = {"": rest_pct - sum(table.values())} if rest_pct is not None else {}
    return _Weighted(list({**table, **rest}), list({**table, **rest}.values()))


_FREQUENT = 0.05  # error rates drawn one by one; rarer ones share one draw when none fires
_NOTHING: frozenset[str] = frozenset()


class _Plan:
    """One source's rules in the shape `spell` reads fastest."""

    def __init__(self, s: SourceRules):
        f = set(s.fields)
        self.given, self.family, self.birth_name = "given" in f, "family" in f, "birth_name" in f
        self.birth_date, self.sex, self.insurance = "birth_date" in f, "sex" in f, "insurance_number" in f
        self.street, self.postal_code, self.city = "street" in f, "postal_code" in f, "city" in f
        self.address = self.street or self.postal_code or self.city
        self.ascii_only, self.upper_case = s.ascii_only, s.upper_case
        rates: dict[str, float] = {k: v / 100 for k, v in s.errors_pct.items() if v > 0}
        self.frequent = [(k, rates[k]) for k in ERROR_TYPES if rates.get(k, 0) >= _FREQUENT]
        self.rare = [(k, rates[k]) for k in ERROR_TYPES if 0 < rates.get(k, 0) < _FREQUENT]
        # none_from[k]: probability that no error of rare[k:] fires
        self.none_from = [prod(1 - q for _, q in self.rare[k:]) for k in range(len(self.rare) + 1)]

    def fired(self, rand: Random) -> frozenset[str]:
        """Every declared error type drawn as an independent Bernoulli, whether eligible or not (the
        caller ignores the ineligible). The rare ones cost one uniform number when none fires (most
        records); otherwise the first to fire is drawn conditionally on at least one firing, the
        rest unconditionally, which gives exactly the independent draws."""
        r = rand.random
        fired = [kind for kind, p in self.frequent if r() < p]
        if r() >= self.none_from[0]:
            pending = True
            for k, (kind, p) in enumerate(self.rare):
                if (r() * (1 - self.none_from[k]) < p) if pending else (r() < p):
                    fired.append(kind)
                    pending = False
        return frozenset(fired) if fired else _NOTHING


class _Tables:
    def __init__(self, rules: IdentityRules):
        self.rules = rules
        self.origins = _Weighted(list(range(len(rules.origins))), [o.pct for o in rules.origins])
        self.given = [{sex: _faker_names(o.given_locale, f"first_names_{sex}") for sex in ("female", "male")}
                      for o in rules.origins]
        self.common = [(sum(o.common_family_names_pct.values()) / o.pct, _weighted(o.common_family_names_pct))
                       if o.common_family_names_pct else (0.0, None) for o in rules.origins]
        self.compound_p = [o.compound_pct / 100 for o in rules.origins]
        self.family = [sorted({n for loc in o.family_locales for n in _faker_names(loc, "last_names")}
                              - set(o.common_family_names_pct)) for o in rules.origins]
        self.heads, self.tails = rules.compound_family_names.heads, rules.compound_family_names.tails
        self.second_p, self.moved_p = rules.second_given_pct / 100, rules.moved_pct / 100
        self.insured_p = rules.statutory_insured_pct / 100
        self.married_p = {sex: pct / 100 for sex, pct in rules.birth_name.pct.items()}
        self.double_p = rules.birth_name.double_name_pct / 100
        self.married_age, self.title_age = rules.birth_name.min_age_years, rules.titles.min_age_years
        self.nicknames = rules.nicknames
        self.reference_year = rules.reference_date.year
        self.titles = _weighted(rules.titles.pct, 100)
        self.streets = _weighted(rules.streets.common_pct, 100)
        self.suffixes = _weighted(rules.streets.suffixes)
        self.house_max, self.letter_p = rules.streets.house_number_max, rules.streets.house_letter_pct / 100
        self.towns = {prefix: _Weighted([(t.city, int(t.first), int(t.last) - int(t.first) + 1) for t in towns],
                                        [t.weight for t in towns]) for prefix, towns in rules.postal_codes.items()}
        self.prefixes = load_catalog().population.postal_prefixes
        self.typo_kinds = _weighted(rules.typo_kinds_pct)
        self.neighbours: dict[str, str] = {}
        rows = rules.keyboard_rows
        for r, row in enumerate(rows):
            for c, key in enumerate(row):
                near = [row[c + d] for d in (-1, 1) if 0 <= c + d < len(row)]
                near += [rows[r + d][c] for d in (-1, 1) if 0 <= r + d < len(rows) and c < len(rows[r + d])]
                self.neighbours[key] = "".join(near)
        self.sources = {name: _Plan(s) for name, s in rules.sources.items()}


@cache
def _tables() -> _Tables:
    return _Tables(load_identity_rules())


# ------------------------------------------------------------------ the true person
@dataclass(frozen=True, slots=True)
class Address:
    street: str  # street and house number
    postal_code: str
    city: str


@dataclass(frozen=True, slots=True)
class TruePerson:
    """Who a person is. `family` is the current name; `birth_name` equals it unless it changed."""

    given_names: tuple[str, ...]
    family: str
    birth_name: str
    nickname: str | None
    birth_date: str  # ISO yyyy-mm-dd
    sex: str  # FHIR administrative gender
    address: Address  # current
    previous_address: Address | None
    moved_on: str | None  # ISO date of the move from previous_address to address
    insurance_number: str | None  # KVNR; None: privately insured
    title: str | None


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # digit sum of 2 x d: a permutation, hence every slip is caught


def kvnr_check_digit(body: str) -> int:
    """The check digit of a KVNR's first nine characters: one letter A-Z and eight digits."""
    letter = ord(body[0]) - 64
    digits = [letter // 10, letter % 10, *map(int, body[1:9])]
    return (sum(digits[0::2]) + sum(_DOUBLED[d] for d in digits[1::2])) % 10


def is_valid_kvnr(number: str) -> bool:
    return bool(_KVNR_RE.fullmatch(number)) and kvnr_check_digit(number) == int(number[9])


_KVNR_RE = re.compile(r"[A-Z][0-9]{9}")
_KVNR_SPACE = 26 * 10**8
_KVNR_KEYS = (0x5BD1, 0x1CE4, 0xE5B9, 0x3A87)


def _kvnr(rand: Random, serial: int | None) -> str:
    """A KVNR; from a serial through a bijection of [0, 26e8) (a 4-round Feistel network on 32 bits,
    walked back into range), so distinct serials give distinct numbers that still look random."""
    x = int(rand.random() * _KVNR_SPACE) if serial is None else serial % _KVNR_SPACE
    while serial is not None:
        left, right = x >> 16, x & 0xFFFF
        for key in _KVNR_KEYS:
            left, right = right, left ^ ((((right + key) * 0x9E3779B1) >> 11) & 0xFFFF)
        x = left << 16 | right
        if x < _KVNR_SPACE:
            break
    body = f"{chr(65 + x // 10**8)}{x % 10**8:08d}"
    return f"{body}{kvnr_check_digit(body)}"


def _family_name(t: _Tables, origin: int, rand: Random) -> str:
    share, common = t.common[origin]
    r = rand.random
    if common is not None and r() < share:
        return common.pick(rand)
    if r() < t.compound_p[origin]:
        return t.heads[int(r() * len(t.heads))] + t.tails[int(r() * len(t.tails))]
    pool = t.family[origin]
    return pool[int(r() * len(pool))]


def _address(t: _Tables, prefix: str, rand: Random) -> Address:
    r = rand.random
    city, low, span = t.towns[prefix].pick(rand)
    street = t.streets.pick(rand)
    if not street:
        street = t.family[0][int(r() * len(t.family[0]))] + t.suffixes.pick(rand)
    number = int(r() ** 2 * t.house_max) + 1  # small numbers are more frequent
    letter = "abc"[int(r() * 3)] if r() < t.letter_p else ""
    return Address(f"{street} {number}{letter}", f"{low + int(r() * span):05d}", city)


def draw_person(rand: Random, sex: str, birth_date: str, region: str, *, serial: int | None = None,
                postal_prefix: str | None = None, years: tuple[int, int] | None = None) -> TruePerson:
    """A person's true identity. `region` is a site key of catalog.yaml's postal_prefixes (unknown:
    default); `postal_prefix` pins the current address's prefix (the HIS Patient's); `serial`, a
    distinct number per person, makes the KVNR unique; `years` is the window movers moved in."""
    t = _tables()
    r = rand.random
    origin = t.origins.pick(rand)
    pools = t.given[origin]
    pool = pools[sex] if sex in pools else pools["female" if r() < 0.5 else "male"]
    names = [pool[int(r() * len(pool))]]
    if r() < t.second_p:
        second = pool[int(r() * len(pool))]
        if second != names[0]:
            names.append(second)
    family = birth_name = _family_name(t, origin, rand)
    age = t.reference_year - int(birth_date[:4])
    if age >= t.married_age and r() < t.married_p.get(sex, 0.0):
        family = _family_name(t, t.origins.pick(rand), rand)  # the spouse's
        if r() < t.double_p:
            family = f"{family}-{birth_name}"
    nicknames = t.nicknames.get(names[0])
    nickname = nicknames[int(r() * len(nicknames))] if nicknames else None
    title = (t.titles.pick(rand) or None) if age >= t.title_age else None
    prefixes = t.prefixes.get(region) or t.prefixes["default"]
    address = _address(t, postal_prefix or prefixes[int(r() * len(prefixes))], rand)
    previous, moved_on = None, None
    if r() < t.moved_p:
        first, last = years or t.rules.move_window
        low, high = date(first, 1, 1).toordinal(), date(last, 12, 31).toordinal()
        day = date.fromordinal(low + int(r() * (high - low + 1))).isoformat()
        if day > birth_date:
            previous, moved_on = _address(t, prefixes[int(r() * len(prefixes))], rand), day
    insurance = _kvnr(rand, serial) if r() < t.insured_p else None
    return TruePerson(tuple(names), family, birth_name, nickname, birth_date, sex, address, previous, moved_on,
                      insurance, title)


# ------------------------------------------------------------------ one source's spelling
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss", "ı": "i",
                         "İ": "I", "đ": "d", "Đ": "D", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O"})


@lru_cache(maxsize=1 << 16)
def transliterate(text: str) -> str:
    """ASCII as German systems write it: Müller -> Mueller, ß -> ss; other accents dropped (Çelik -> Celik)."""
    out = text.translate(_GERMAN)
    return out if out.isascii() else unicodedata.normalize("NFKD", out).encode("ascii", "ignore").decode()


def _typo(word: str, t: _Tables, rand: Random) -> str:
    """One keyboard slip: a neighbouring key, two letters swapped, one dropped, or one added."""
    r = rand.random
    kind, n = t.typo_kinds.pick(rand), len(word)
    i = int(r() * n)
    if kind == "transposition" and n > 2:
        i = 1 + int(r() * (n - 2))  # not the capital initial
        if word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "deletion" and n > 3:
        return word[:i] + word[i + 1:]
    for j in [*range(i, n), *range(i)]:  # substitution or insertion at the first key with neighbours
        near = t.neighbours.get(word[j].lower())
        if near:
            key = near[int(r() * len(near))]
            key = key.upper() if word[j].isupper() and len(key.upper()) == 1 else key  # not ß -> SS
            return word[:j + 1] + key + word[j + 1:] if kind == "insertion" else word[:j] + key + word[j + 1:]
    return word + word[-1]


def _date_typo(birth_date: str, t: _Tables, rand: Random) -> str:
    """One digit slipped to an adjacent key: the day's last digit if that stays a valid day, else
    the year's last digit (away from the future)."""
    year, month, day = int(birth_date[:4]), birth_date[5:7], int(birth_date[8:10])
    step = -1 if rand.random() < 0.5 else 1
    days = [d for d in (day + step, day - step) if 1 <= d <= 28 and d // 10 == day // 10]
    if days and rand.random() < 0.5:
        return f"{year:04d}-{month}-{days[0]:02d}"
    last = year % 10
    step = -1 if last == 9 or (last > 0 and (step < 0 or year >= t.reference_year)) else 1
    return f"{year + step:04d}-{month}-{min(day, 28) if month == '02' else day:02d}"


def _each(change: Callable[[str], str], *texts: str | None) -> list[str | None]:
    return [change(x) if x else x for x in texts]


def spell(person: TruePerson, source: str, rand: Random, when: str | None = None) -> Identity:
    """`person` as `source` records them on date `when` (ISO; None: now)."""
    return spell_with_errors(person, source, rand, when)[0]


def spell_with_errors(person: TruePerson, source: str, rand: Random,
                      when: str | None = None) -> tuple[Identity, list[str]]:
    """Like `spell`, plus the error types applied (in ERROR_TYPES order, then PREVIOUS_ADDRESS if the
    address is the one that was right at `when`). ASCII-only sources report "transliterated" on every
    record they had to transliterate: not drawn, but a difference from the true spelling."""
    t = _tables()
    plan = t.sources.get(source)
    if plan is None:
        raise ConfigError(f"identity.yaml: unknown source {source!r}; known: {', '.join(IDAT_SOURCES)}")
    fired, errors, cap, r = plan.fired(rand), [], t.rules.max_errors, rand.random
    previous = False

    def hit(kind: str) -> bool:  # only called where `kind` is eligible
        if kind in fired and len(errors) < cap:
            errors.append(kind)
            return True
        return False

    given_on = plan.given and not (fired and hit("given_missing"))
    family_on = plan.family and not (fired and hit("family_missing"))
    birth_on = plan.birth_date and not (fired and hit("birth_date_missing"))
    sex_on = plan.sex and not (fired and hit("sex_missing"))
    address_on = plan.address and not (fired and hit("address_missing"))
    insurance = person.insurance_number if plan.insurance else None
    if insurance is not None and fired and hit("insurance_missing"):
        insurance = None
    given = family = birth_name = street = postal_code = city = None
    if given_on:
        names = person.given_names
        if fired and person.nickname is not None and hit("nickname"):
            names = (person.nickname, *names[1:])
        if fired and len(names) > 1 and hit("second_given_dropped"):
            names = names[:1]
        given = " ".join(names)
    if family_on:
        family = person.family
        if fired and person.birth_name != family and hit("birth_name_as_family"):
            family = person.birth_name
        if fired and person.title is not None and hit("title_in_name"):
            family = f"{person.title} {family}"
    if plan.birth_name and person.birth_name != person.family and "birth_name_as_family" not in errors:
        birth_name = person.birth_name
    if address_on:
        address = person.address
        if person.previous_address is not None and person.moved_on is not None:
            if when is not None and when[:10] < person.moved_on:
                address, previous = person.previous_address, True
            elif fired and hit("stale_address"):
                address = person.previous_address
        street = address.street if plan.street else None
        postal_code = address.postal_code if plan.postal_code else None
        city = address.city if plan.city else None
        if fired and street is not None and "straße" in street and hit("street_abbreviated"):
            street = street.replace("straße", "str.")
    birth_date = person.birth_date if birth_on else None
    if fired:
        if not plan.ascii_only and not f"{given}{family}{birth_name}".isascii() and hit("transliterated"):
            given, family, birth_name = _each(transliterate, given, family, birth_name)
        if given and hit("given_typo"):
            given = _typo(given, t, rand)
        if family and hit("family_typo"):
            family = _typo(family, t, rand)
        if street and hit("street_typo"):
            street = _typo(street, t, rand)
        if birth_date is not None:
            day, month = birth_date[8:10], birth_date[5:7]
            if day <= "12" and day != month and hit("birth_date_swap"):
                birth_date = f"{birth_date[:4]}-{day}-{month}"
            if hit("birth_date_typo"):
                birth_date = _date_typo(birth_date, t, rand)
        if insurance is not None and hit("insurance_digit"):
            i = 1 + int(r() * 9)
            insurance = f"{insurance[:i]}{(int(insurance[i]) + 1 + int(r() * 9)) % 10}{insurance[i + 1:]}"
        if (given or family) and hit("case_noise"):
            u = r()
            fix = str.upper if u < 0.8 else str.lower
            family = fix(family) if family else family
            given = fix(given) if given and (u >= 0.5 or not family) else given
        if (given or family) and hit("whitespace_noise"):
            u = r()
            if given and (u >= 0.6 or not family):
                given = given.replace(" ", "  ", 1) if " " in given else f"{given} "
            elif family:
                family = f"{family} " if u < 0.4 else f" {family}"
    # ASCII-only systems store every field so (typos included): how they store text, not a drawn error
    if plan.ascii_only and not f"{given}{family}{birth_name}{street}{city}".isascii():
        given, family, birth_name, street, city = _each(transliterate, given, family, birth_name, street, city)
        errors.append("transliterated")
    if previous:  # correct at `when`: reported, but not an error
        errors.append(PREVIOUS_ADDRESS)
    if plan.upper_case:
        given, family, birth_name, street, city = _each(str.upper, given, family, birth_name, street, city)
    return Identity(given, family, birth_date, person.sex if sex_on else None, street, postal_code, city, insurance,
                    birth_name), errors

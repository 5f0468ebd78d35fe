"""Pseudonyms: keyed, per domain, unlinkable across domains, with a check character that
catches every single typo and neighbour swap (but the one pair Luhn mod N cannot see)."""

from __future__ import annotations

import hashlib
import hmac
import itertools

import pytest

from dic.errors import ConfigError, InputError
from dic.trust import Pid, derive_pseudonym, is_valid_pseudonym, normalize_pseudonym
from dic.trust.pseudonym import ALPHABET, BODY_CHARS, check_character

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def test_format_determinism_and_independence_of_keys_and_domains() -> None:
    p = derive_pseudonym(KEY, "dic", Pid("PID-1"))
    assert p == derive_pseudonym(KEY, "DIC", Pid("PID-1"))
    prefix, body, check = p.split("-")
    assert prefix == "DIC" and len(body) == BODY_CHARS and set(body) <= set(ALPHABET) and len(check) == 1
    assert is_valid_pseudonym(p)
    # the body is the MAC's first 80 bits: checked against an independent computation
    mac = hmac.new(KEY, b"DIC\x1fPID-1", hashlib.sha256).digest()
    assert int("".join(f"{ALPHABET.index(c):05b}" for c in body), 2) == int.from_bytes(mac[:10], "big")
    others = {derive_pseudonym(KEY, "P0042", Pid("PID-1")), derive_pseudonym(OTHER_KEY, "dic", Pid("PID-1")),
              derive_pseudonym(KEY, "dic", Pid("PID-2"))}
    assert len({b.split("-")[1] for b in others | {p}}) == 4


def test_no_collisions_among_many_persons() -> None:
    made = {derive_pseudonym(KEY, "dic", Pid(str(n))) for n in range(50_000)}
    assert len(made) == 50_000


def test_check_character_catches_every_single_typo_and_neighbour_swap() -> None:
    for n in range(40):
        p = derive_pseudonym(KEY, "dic", Pid(f"x{n}"))
        prefix, body, check = p.split("-")
        for i, wrong in itertools.product(range(BODY_CHARS), ALPHABET):
            if wrong != body[i]:
                assert not is_valid_pseudonym(f"{prefix}-{body[:i]}{wrong}{body[i + 1:]}-{check}")
        for i in range(BODY_CHARS - 1):
            a, b = body[i], body[i + 1]
            if a != b and {a, b} != {"0", "Z"}:
                assert not is_valid_pseudonym(f"{prefix}-{body[:i]}{b}{a}{body[i + 2:]}-{check}")
    assert check_character("0Z") == check_character("Z0"), "the one swap Luhn mod 32 cannot see"


def test_normalize_reads_what_people_type() -> None:
    p = derive_pseudonym(KEY, "dic", Pid("PID-9"))
    typed = p.lower().replace("0", "o").replace("1", "l")
    assert normalize_pseudonym(f"  {typed} ") == p
    with pytest.raises(InputError, match="check character"):
        normalize_pseudonym(p[:-1] + ("0" if p[-1] != "0" else "1"))


def test_weak_keys_and_bad_domains_are_refused() -> None:
    with pytest.raises(ConfigError, match="32 bytes"):
        derive_pseudonym(b"short", "dic", Pid("1"))
    with pytest.raises(ConfigError, match="domain"):
        derive_pseudonym(KEY, "no spaces", Pid("1"))
    with pytest.raises(InputError):
        derive_pseudonym(KEY, "dic", Pid(""))

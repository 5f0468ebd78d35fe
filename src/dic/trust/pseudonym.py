"""Pseudonyms: one per person per domain (the DIC, each research project), derived with a key
that only the trust center holds, with a check character so typed-in pseudonyms are verified.

    derive_pseudonym(key, domain, pid) -> Pseudonym      e.g. "DIC-7K2M9QX4T1VB0R8E-N"
    is_valid_pseudonym(text)           -> bool           (format and check character)
    normalize_pseudonym(text)          -> Pseudonym      (case, O/I/L read as 0/1/1; validated)

HMAC-SHA-256 over (domain, PID) is a keyed one-way function: without the key nobody can go from
a PID to its pseudonym or test a guess, and pseudonyms of two domains cannot be joined. The
body is the first 80 bits of the MAC in Crockford base 32 (no I, L, O, U: easy to read aloud
and type); the check character is Luhn mod 32 over the body, which catches every single wrong
character and every swap of two neighbours except 0<->Z. Key rotation keeps the mapping: the
trust center stores every pseudonym it issues and derives with the current key only for new
persons (the store, not the key, is the mapping).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import NewType

from dic.errors import ConfigError, InputError

Pid = NewType("Pid", str)  # the trust center's person identifier
Pseudonym = NewType("Pseudonym", str)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32
BODY_CHARS = 16  # 80 bits: collisions stay below 1e-9 up to ~50 million persons per domain
MIN_KEY_BYTES = 32
_VALUE = {c: n for n, c in enumerate(ALPHABET)}
_READ_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})
_FORMAT = re.compile(rf"(?:([A-Z0-9]{{1,12}})-)?([{ALPHABET}]{{{BODY_CHARS}}})-([{ALPHABET}])")


def derive_pseudonym(key: bytes, domain: str, pid: Pid) -> Pseudonym:
    """The pseudonym of `pid` in `domain` (the domain's name, upper-cased, is its prefix)."""
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"a pseudonym key needs at least {MIN_KEY_BYTES} bytes (got {len(key)})")
    prefix = domain.upper()
    if not re.fullmatch(r"[A-Z0-9]{1,12}", prefix):
        raise ConfigError(f"domain must be 1-12 letters or digits (got {domain!r})")
    if not pid:
        raise InputError("empty PID")
    mac = hmac.new(key, f"{prefix}\x1f{pid}".encode(), hashlib.sha256).digest()
    number = int.from_bytes(mac[:10], "big")
    body = "".join(ALPHABET[(number >> shift) & 31] for shift in range(5 * (BODY_CHARS - 1), -1, -5))
    return Pseudonym(f"{prefix}-{body}-{check_character(body)}")


def check_character(body: str) -> str:
    """Luhn mod 32 check character of a Crockford base-32 string."""
    total, factor = 0, 2
    for char in reversed(body):
        addend = factor * _VALUE[char]
        total += addend // 32 + addend % 32
        factor = 3 - factor
    return ALPHABET[(32 - total % 32) % 32]


def is_valid_pseudonym(text: str) -> bool:
    match = _FORMAT.fullmatch(text)
    return bool(match) and check_character(match[2]) == match[3]


def normalize_pseudonym(text: str) -> Pseudonym:
    """A pseudonym as typed (any case, spaces, O/I/L for 0/1/1) in its canonical form."""
    prefix, _, rest = text.strip().upper().partition("-")
    canonical = f"{prefix}-{rest.replace(' ', '').translate(_READ_AS)}" if rest else prefix
    if not is_valid_pseudonym(canonical):
        raise InputError(f"not a valid pseudonym (format or check character): {text!r}")
    return Pseudonym(canonical)

"""Identifying data (IDAT) as the trust center receives it, checked, and normalized for linkage.

`Idat` is what a source system sends with its own patient id: names, birth date, sex, address,
health-insurance number. It is validated strictly (a malformed value is refused with the
field and the reason, never guessed at) but may be incomplete, since real sources miss
fields. `normalize` turns it into the comparable form every linkage step uses: folded case,
German transliteration (Müller = Mueller = MUELLER), titles dropped, phonetic codes.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Literal

from cologne_phonetics import encode as cologne_encode
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Sex = Literal["male", "female", "other", "unknown"]

# Fields that say who a person is; at least two of them make a record linkable.
IDENTIFYING_FIELDS = ("given_names", "family_name", "birth_date", "insurance_number")
KVNR = re.compile(r"[A-Z][0-9]{9}")
POSTAL_CODE = re.compile(r"[0-9]{4,5}")
_TITLES = re.compile(r"\b(prof|dr|med|dipl|ing|rer|nat|phil|habil)\.?(?=\s|$)", re.IGNORECASE)
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "æ": "ae", "ø": "oe", "ı": "i"})
_NOT_LETTER = re.compile(r"[^a-z0-9 ]+")
_STREET_ABBREVIATIONS = ((re.compile(r"str\.?(?=\s|\d|$)"), "strasse"), (re.compile(r"\bpl\.(?=\s|\d|$)"), "platz"))
_HOUSE_NUMBER = re.compile(r"\s*(\d+\s*[a-z]?)\s*$")


class Idat(BaseModel):
    """One source record's identifying data. Every field may be missing; none may be malformed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    given_names: str | None = Field(None, max_length=200, description="all given names, space-separated")
    family_name: str | None = Field(None, max_length=200)
    birth_name: str | None = Field(None, max_length=200, description="family name at birth, if different")
    birth_date: date | None = None
    sex: Sex | None = None
    street: str | None = Field(None, max_length=200, description="street and house number")
    postal_code: str | None = Field(None, max_length=10)
    city: str | None = Field(None, max_length=100)
    insurance_number: str | None = Field(None, max_length=10, description="KVNR, the 10-character GKV number")
    patient_number: str | None = Field(None, max_length=64, description=(
        "the hospital's patient number (its patient administration's, one per person), which the HIS, lab and "
        "billing systems of that hospital share; compared only within the hospital of the sending system"))

    @field_validator("given_names", "family_name", "birth_name", "street", "city", "postal_code",
                     "insurance_number", "patient_number", mode="before")
    @classmethod
    def _empty_is_missing(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date | None) -> date | None:
        if value is not None and not date(1870, 1, 1) <= value <= date.today():
            raise ValueError("birth date is not between 1870-01-01 and today")
        return value

    @field_validator("postal_code")
    @classmethod
    def _postal_code(cls, value: str | None) -> str | None:
        if value is not None and not POSTAL_CODE.fullmatch(value):
            raise ValueError("postal code must be 4 or 5 digits")
        return value

    @field_validator("insurance_number")
    @classmethod
    def _kvnr(cls, value: str | None) -> str | None:
        # The shape only: a wrong check digit is a typo the linkage weighs, not a reason to refuse.
        if value is not None and not KVNR.fullmatch(value.upper()):
            raise ValueError("insurance number (KVNR) must be a letter and nine digits")
        return None if value is None else value.upper()

    @model_validator(mode="after")
    def _linkable(self) -> Idat:
        # A hospital patient number identifies on its own (billing exports carry little else).
        present = [name for name in IDENTIFYING_FIELDS if getattr(self, name) is not None]
        if len(present) < 2 and self.patient_number is None:
            raise ValueError(f"too little to identify a person: need a patient number or at least two of "
                             f"{', '.join(IDENTIFYING_FIELDS)}")
        return self


def fold(text: str | None) -> str | None:
    """Lower case, German transliteration, accents and punctuation removed, spaces collapsed."""
    if text is None:
        return None
    text = text.casefold().translate(_GERMAN)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = " ".join(_NOT_LETTER.sub(" ", text.replace("-", " ")).split())
    return text or None


def fold_name(text: str | None) -> str | None:
    """A name folded, without academic titles (sources add 'Dr.' to names inconsistently)."""
    return fold(_TITLES.sub(" ", text)) if text else None


def fold_street(text: str | None) -> str | None:
    if not text:
        return None
    folded = text.casefold().translate(_GERMAN)
    for pattern, replacement in _STREET_ABBREVIATIONS:
        folded = pattern.sub(replacement, folded)
    return fold(folded)


def phonetic(name: str | None) -> str | None:
    """Kölner Phonetik of a folded name (its first word: double names vary most in the second)."""
    if not name:
        return None
    codes = [code for _, code in cologne_encode(name.split()[0])]
    return codes[0] if codes and codes[0] else None


def normalize(idat: Idat) -> dict[str, str | None]:
    """The comparable form of one record: every value a string or None, same keys always."""
    given = fold_name(idat.given_names)
    family = fold_name(idat.family_name)
    birth_name = fold_name(idat.birth_name) or family
    street = fold_street(idat.street)
    number = _HOUSE_NUMBER.search(street) if street else None
    born = idat.birth_date
    return {
        "given": given,
        "given_first": given.split()[0] if given else None,
        "family": family,
        "birth_name": birth_name,
        "given_phonetic": phonetic(given),
        "family_phonetic": phonetic(family),
        "birth_name_phonetic": phonetic(birth_name),
        "birth_date": born.isoformat() if born else None,
        "birth_year": f"{born.year:04d}" if born else None,
        "birth_month": f"{born.month:02d}" if born else None,
        "birth_day": f"{born.day:02d}" if born else None,
        "sex": idat.sex if idat.sex in ("male", "female") else None,
        "street": street[: number.start()].strip() or None if number and street else street,
        "house_number": number.group(1).replace(" ", "") if number else None,
        "postal_code": idat.postal_code,
        "city": fold(idat.city),
        "insurance_number": idat.insurance_number,
    }


NORMALIZED_FIELDS = tuple(normalize(Idat(family_name="x", given_names="y")).keys())

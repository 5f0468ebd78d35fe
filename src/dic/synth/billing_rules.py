"""The billing export's declarations: the Pydantic model of `billing.yaml` and its validating loader.

Column lists, code formats, payers, laterality, intensive care, transfers and the fee tables
are data; `billing.py` is the writer that reads them.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from dic.errors import Problem
from dic.synth.declarations import load_declarations

BILLING_PATH = Path(__file__).with_name("billing.yaml")
CASE_FILES = ("FALL.csv", "FAB.csv", "ICD.csv", "OPS.csv", "ENTGELTE.csv")
CASE_KEY = ("IK", "Entlassender-Standort", "Entgeltbereich", "KH-internes-Kennzeichen")  # case files start so


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileFormat(_Entry):
    delimiter: str
    encoding: str
    line_terminator: str
    icd_dot: bool  # ICD-Kode with its dot
    ops_punctuation: bool  # OPS-Kode with dash and dot


class Hospital(_Entry):
    ik: str
    location: str  # Standortnummer
    name: str
    beds_drg: int
    intensive_beds_drg: int
    beds_psy: int
    intensive_beds_psy: int


class Payer(_Entry):
    ik: str
    weight: float


class AdmissionReason(_Entry):
    emergency_sources: list[str]
    injury_prefixes: list[str]
    injury_weights: dict[str, float]


class Side(_Entry):
    icd: str | None = None
    ops: str | None = None
    side_of: str | None = None  # an OPS rule takes the side the patient has for this ICD rule
    weights: dict[Literal["L", "R", "B"], float]


class IntensiveCare(_Entry):
    icd: str
    pct: float
    hours: tuple[int, int]


class Transfer(_Entry):
    min_days: int
    pct: float
    targets: dict[str, str]
    default_target: str


class AdmissionWeight(_Entry):
    mean: float
    sd: float
    per_day: float


class FeeKey(_Entry):
    prefix: str
    suffix: str


class DrgRule(_Entry):
    icd: str | None = None
    ops: str | None = None
    drg: str
    weight: float


class PeppRule(_Entry):
    icd: str
    pepp: str
    weight: float


class BillingRules(_Entry):
    format: FileFormat
    files: dict[str, list[str]]
    hospitals: dict[str, Hospital]
    default_hospital: Hospital
    hospital_kind: str
    hospital_owner: str
    software: str
    delivery_date: str
    payers: list[Payer]
    self_pay_pct: float
    sex: dict[str, str]
    primary_use_codes: list[str]
    psy_departments: list[str]
    admission_reason: AdmissionReason
    pre_inpatient_pct: float
    post_inpatient_discharge: list[str]
    transfer_admit_sources: list[str]
    transfer_discharge_prefixes: list[str]
    laterality: list[Side]
    secondary_codes: dict[str, str]
    intensive_care: list[IntensiveCare]
    transfer: Transfer
    admission_weight_g: AdmissionWeight
    missing_postal_code_pct: float
    upper_case_city_pct: float
    fee_key: FeeKey
    pepp_key: FeeKey
    base_rate_eur: dict[int, float]
    drg: list[DrgRule]
    psy_base_rate_eur: dict[int, float]
    pepp: list[PeppRule]

    def problems(self) -> list[Problem]:
        """Cross-reference checks the schema cannot express."""
        found: list[Problem] = []
        iks = [(f"/hospitals/{k}/ik", h.ik) for k, h in self.hospitals.items()]
        iks += [(f"/payers/{n}/ik", p.ik) for n, p in enumerate(self.payers)]
        found += [Problem(path, f"IK {ik!r} is not nine digits with a valid check digit")
                  for path, ik in iks if not is_valid_ik(ik)]
        for name in CASE_FILES:
            if tuple(self.files.get(name, ())[:len(CASE_KEY)]) != CASE_KEY:
                found.append(Problem(f"/files/{name}", f"missing, or not starting with {';'.join(CASE_KEY)}"))
        icd_sides = {s.icd for s in self.laterality if s.icd}
        for n, side in enumerate(self.laterality):
            if (side.icd is None) == (side.ops is None):
                found.append(Problem(f"/laterality/{n}", "give exactly one of icd, ops"))
            if side.side_of is not None and side.side_of not in icd_sides:
                found.append(Problem(f"/laterality/{n}/side_of", f"no icd rule {side.side_of!r}"))
        for n, rule in enumerate(self.drg):
            if (rule.icd is None) == (rule.ops is None):
                found.append(Problem(f"/drg/{n}", "give exactly one of icd, ops"))
        for key, rules in (("drg", self.drg), ("pepp", self.pepp)):
            if not rules or rules[-1].icd != "":
                found.append(Problem(f"/{key}", 'the last rule must catch every code (icd: "")'))
        rates = {"base_rate_eur": self.base_rate_eur, "psy_base_rate_eur": self.psy_base_rate_eur}
        for key, table in rates.items():
            if not table or sorted(table) != list(range(min(table), max(table) + 1)):
                found.append(Problem(f"/{key}", "give one rate for every year of a gapless range"))
        return found


@cache
def load_billing_rules(path: Path = BILLING_PATH) -> BillingRules:
    """The billing declarations, validated; every problem is reported at once (DefinitionError)."""
    return load_declarations(path, BillingRules)


def ik_check_digit(body: str) -> str:
    """Check digit of an Institutionskennzeichen: digits 3-8 weighted 2,1,2,1,2,1, digit sums, mod 10."""
    total = 0
    for k, ch in enumerate(body[2:8]):
        product = int(ch) * (2 if k % 2 == 0 else 1)
        total += product // 10 + product % 10
    return str(total % 10)


def is_valid_ik(ik: str) -> bool:
    return len(ik) == 9 and ik.isdigit() and ik[8] == ik_check_digit(ik[:8])


def derived_ik(kind: str, number: int) -> str:
    """A valid IK of class `kind` (26 hospitals, 10 statutory insurers) from any number."""
    body = f"{kind}{1 + number % 16:02d}{number // 16 % 10000:04d}"
    return body + ik_check_digit(body)

"""The §21 KHEntgG billing export of one site, written from the HIS facts of its inpatient cases.

    BillingWriter(folder, context)   a SourceWriter: FALL, FAB, ICD, OPS, ENTGELTE, INFO, KRANKENHAUS.csv

One row in FALL.csv per inpatient Encounter (class IMP), keyed by the hospital case number
(KH-internes-Kennzeichen); its diagnoses (Encounter.diagnosis -> Condition) in ICD.csv, its
procedures (Procedure.encounter) in OPS.csv, its department stays in FAB.csv and one DRG
Fallpauschale (or a PEPP day fee in psychiatry) in ENTGELTE.csv; cases not yet discharged are
not delivered. Columns, codes, rates and weights are data (`billing.yaml`, its model in
`billing_rules.py`); the headers are the published ones, `;`-separated, UTF-8, LF. The person is
the billing system's own record, `patient.identity("billing")`, linked by the patient number.

Irregularities a real delivery has, planted on purpose (structure always stays valid):
- self-payers: no IK-der-Krankenkasse, no Versicherten-ID, empty IK-Krankenkasse in ENTGELTE;
- PLZ empty for some patients whose master record has one; Wohnort in capitals for some (a legacy
  admission terminal); identity fields the billing record lacks stay empty;
- Geburtsjahr/-monat from the billing record (maybe wrong), ages from the HIS: they can disagree;
- Aufnahmegewicht and Alter-in-Tagen only for infants, pre-/post-inpatient dates only where such
  visits happened, an IK-Verlegungs-KH only for transfers;
- provisional diagnoses carry Diagnosensicherheit V, which many exports leave empty;
- a department the HIS does not list (0200 Geriatrie) after an internal transfer in FAB.csv.
"""

from __future__ import annotations

import csv
import hashlib
import random
from bisect import bisect
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from itertools import accumulate
from operator import itemgetter
from pathlib import Path
from typing import Any

from dic.errors import DefinitionError, Problem
from dic.synth.billing_rules import (
    BILLING_PATH,
    CASE_KEY,
    Hospital,
    IntensiveCare,
    derived_ik,
    load_billing_rules,
)
from dic.synth.site_patient import SiteContext, SitePatient, case_number

_BUFFER_BYTES = 1 << 20
_NO_RULE = -1
# The columns the writer fills, per case file, in the order it produces the values; the declared
# column lists decide the order in the file (any other declared column stays empty).
_PERSON = ("Versicherten-ID", "IK-der-Krankenkasse", "Geburtsjahr", "Geburtsmonat", "Geschlecht", "PLZ",
           "Wohnort", "Patientennummer")
_ADMISSION = ("Aufnahmeanlass", "Aufnahmegrund", "Aufnahmegewicht", "Entlassungsgrund",
              "Alter-in-Tagen-am-Aufnahmetag", "Alter-in-Jahren-am-Aufnahmetag",
              "Behandlungsbeginn-vorstationär", "Behandlungstage-vorstationär",
              "Behandlungsende-nachstationär", "Behandlungstage-nachstationär", "IK-Verlegungs-KH")
FIELDS = {
    "FALL.csv": CASE_KEY + _PERSON + _ADMISSION + (
        "Aufnahmedatum", "Entlassungsdatum", "Fallzusammenführung", "Beatmungsstunden",
        "Beurlaubungstage-PSY", "Verweildauer Intensiv"),
    "FAB.csv": CASE_KEY + ("Standortnummer-Behandlungsort", "Fachabteilung", "FAB-Aufnahmedatum",
                           "FAB-Entlassungsdatum", "Kennung Intensivbett"),
    "ICD.csv": CASE_KEY + ("Diagnoseart", "ICD-Version", "ICD-Kode", "Lokalisation", "Diagnosensicherheit",
                           "Sekundär-Kode"),
    "OPS.csv": CASE_KEY + ("OPS-Version", "OPS-Kode", "Lokalisation", "OPS-Datum", "Belegoperateur",
                           "Beleganästhesist", "Beleghebamme"),
    "ENTGELTE.csv": CASE_KEY + ("IK-Krankenkasse", "Entgeltart", "Entgeltbetrag", "Abrechnung-von",
                                "Abrechnung-bis", "Entgeltanzahl", "Tage-ohne-Berechnung-Behandlung"),
}


# ------------------------------------------------------------------ reading the HIS resources
def _code(node: dict[str, Any] | None, default: str = "") -> str:
    return node["coding"][0]["code"] if node else default


def _stamp(moment: str) -> str:
    """FHIR dateTime (local time with offset) -> yyyyMMddHHmm, the local time as billed."""
    if len(moment) < 16:
        return moment[0:4] + moment[5:7] + moment[8:10] + "0000"
    return moment[0:4] + moment[5:7] + moment[8:10] + moment[11:13] + moment[14:16]


def _first(rules: list[Any], field: str, code: str) -> int:
    """Index of the first rule whose `field` prefix the code starts with."""
    for n, rule in enumerate(rules):
        prefix = getattr(rule, field)
        if prefix is not None and code.startswith(prefix):
            return n
    return _NO_RULE


def _gather(file_name: str, columns: list[str]) -> Any:
    """values (the case key, an empty string, the FIELDS after the key) -> the row in the declared order;
    declared columns the writer does not fill take the empty string."""
    fields = FIELDS[file_name]
    if missing := [f for f in fields if f not in columns]:
        problem = Problem(f"/files/{file_name}", f"missing columns the writer fills: {missing}")
        raise DefinitionError(str(BILLING_PATH), [problem])
    at = {f: n if n < len(CASE_KEY) else n + 1 for n, f in enumerate(fields)}
    return itemgetter(*[at.get(c, len(CASE_KEY)) for c in columns])


# ------------------------------------------------------------------ the writer
class BillingWriter:
    """The §21 delivery of one site: one FALL row per inpatient case and its ICD/OPS/FAB/ENTGELTE rows."""

    name = "billing"

    def __init__(self, folder: Path, context: SiteContext) -> None:
        self.rules = rules = load_billing_rules()
        self.context = context
        self.rand = random.Random(f"{context.seed}:{context.site}:{self.name}")
        self.hospital = self._hospital(context.site)
        self.payer_cum = list(accumulate(p.weight for p in rules.payers))
        self.injury_codes = list(rules.admission_reason.injury_weights)
        self.injury_cum = list(accumulate(rules.admission_reason.injury_weights.values()))
        self.side_cum = [(list(s.weights), list(accumulate(s.weights.values()))) for s in rules.laterality]
        self.icd_side = {s.icd: n for n, s in enumerate(rules.laterality) if s.icd}
        self.psy, self.primary_uses = set(rules.psy_departments), set(rules.primary_use_codes)
        self.injury_prefixes = tuple(rules.admission_reason.injury_prefixes)
        self.emergency = set(rules.admission_reason.emergency_sources)
        self.post_discharge = set(rules.post_inpatient_discharge)
        self.transfer_sources = set(rules.transfer_admit_sources)
        self.transfer_discharge = tuple(rules.transfer_discharge_prefixes)
        # plain copies of the settings read per case (a Pydantic attribute read costs about 5 plain ones)
        self.icd_dot, self.ops_punctuation = rules.format.icd_dot, rules.format.ops_punctuation
        self.secondary, self.n_drg = rules.secondary_codes, len(rules.drg)
        self.transfer_days, self.transfer_pct = rules.transfer.min_days, rules.transfer.pct
        self.ik, self.location = self.hospital.ik, self.hospital.location
        # per code, the matching rule: looked up once (codes repeat, rules are scanned in order)
        self.side_memo: dict[tuple[str, str], int] = {}
        self.care_memo: dict[str, IntensiveCare | None] = {}
        self.drg_memo: dict[str, int] = {}  # "ops"/"icd" + code -> rule
        self.pepp_memo: dict[str, int] = {}
        self.fee_memo: dict[tuple[str, int, int], tuple[str, str]] = {}  # (area, rule, year) -> key, amount
        fmt = rules.format
        self.handles, self.writers, self.counts = [], {}, {}
        for file_name, columns in rules.files.items():
            path = folder / file_name
            handle = path.open("w", encoding=fmt.encoding, newline="", buffering=_BUFFER_BYTES)
            self.handles.append(handle)
            writer = csv.writer(handle, delimiter=fmt.delimiter, lineterminator=fmt.line_terminator)
            writer.writerow(columns)
            gather = _gather(file_name, columns) if file_name in FIELDS else None
            self.writers[file_name] = writer.writerow, gather
            self.counts[file_name] = 0
        self._write_hospital(context)

    def _hospital(self, site: str) -> Hospital:
        if (found := self.rules.hospitals.get(site)) is not None:
            return found
        ik = derived_ik("26", int.from_bytes(hashlib.blake2b(site.encode(), digest_size=4).digest(), "big"))
        default = self.rules.default_hospital
        return default.model_copy(update={"ik": ik, "location": f"77{ik[2:6]}000",
                                          "name": default.name.replace("{site}", site)})

    def _row(self, file_name: str, values: tuple[str, ...]) -> None:
        """One row of a case file from the case key (with its empty string) and the file's FIELDS."""
        write, gather = self.writers[file_name]
        write(gather(values))
        self.counts[file_name] += 1

    def _write_hospital(self, context: SiteContext) -> None:
        h, rules, year = self.hospital, self.rules, context.years[1]
        rows = {"INFO.csv": {"IK": h.ik, "Datenerhebung": str(year),
                             "Datum-der-Erstellung": f"{year + 1}{rules.delivery_date}",
                             "E-Mail-Adresse": f"controlling@{context.site}.example.org",
                             "DRG-Grouper": f"G-DRG {year}", "Softwarelösung": rules.software,
                             "Versionskennung": str(year)},
                "KRANKENHAUS.csv": {"IK": h.ik, "KH-Name": h.name, "KH-Art": rules.hospital_kind,
                                    "KH-Träger": rules.hospital_owner, "Betten-DRG": str(h.beds_drg),
                                    "Intensivbetten-DRG": str(h.intensive_beds_drg),
                                    "Betten-PSY": str(h.beds_psy),
                                    "Intensivbetten-PSY": str(h.intensive_beds_psy),
                                    "Regionale-Versorgungsverpflichtung": "0"}}
        for file_name, values in rows.items():
            if file_name in self.writers:  # one row each, all columns by name
                self.writers[file_name][0]([values.get(c, "") for c in rules.files[file_name]])
                self.counts[file_name] += 1

    # -------------------------------------------------------------- one person
    def add(self, patient: SitePatient) -> None:
        cases: list[dict[str, Any]] = []
        conditions: dict[str, dict[str, Any]] = {}
        procedures: dict[str, list[dict[str, Any]]] = {}
        for resource in patient.resources:  # the hot loop of the writer: most resources are Observations
            kind = resource["resourceType"]
            if kind == "Observation":
                continue
            if kind == "Condition":
                conditions[resource["id"]] = resource
            elif kind == "Encounter":
                if resource["class"]["code"] == "IMP" and "end" in resource["period"]:  # discharged: billed
                    cases.append(resource)
            elif kind == "Procedure" and "encounter" in resource:
                procedures.setdefault(resource["encounter"]["reference"], []).append(resource)
        if not cases:
            return
        self.context.link(self.name, patient.patient_number, patient.person_id)
        person = self._person(patient)
        birth = date.fromisoformat(patient.resources[0]["birthDate"])
        sides: dict[int, str] = {}  # laterality rule -> this patient's side
        for encounter in cases:
            done = procedures.get("Encounter/" + encounter["id"], ())
            self._case(encounter, birth, person, conditions, done, sides)

    def _person(self, patient: SitePatient) -> tuple[str, ...]:
        """The _PERSON fields from the billing system's own record of the patient."""
        rules, rand, identity = self.rules, self.rand, patient.identity(self.name)
        payer = "" if rand.random() * 100 < rules.self_pay_pct else \
            rules.payers[bisect(self.payer_cum, rand.random() * self.payer_cum[-1])].ik
        postal = "" if rand.random() * 100 < rules.missing_postal_code_pct else identity.postal_code or ""
        city, born = identity.city or "", identity.birth_date or ""
        if rand.random() * 100 < rules.upper_case_city_pct:
            city = city.upper()
        return ((identity.insurance_number or "") if payer else "", payer, born[:4], born[5:7],
                rules.sex.get(identity.sex or "", ""), postal, city, patient.patient_number)

    def _lateral(self, code: str, field: str, sides: dict[int, str]) -> str:
        """The side of a lateral ICD/OPS code: one per patient and body site, drawn when first seen."""
        rule = self.side_memo.get((field, code))
        if rule is None:
            rule = _first(self.rules.laterality, field, code)
            if rule != _NO_RULE and self.rules.laterality[rule].side_of:
                rule = self.icd_side[self.rules.laterality[rule].side_of]
            self.side_memo[field, code] = rule
        if rule == _NO_RULE:
            return ""
        side = sides.get(rule)
        if side is None:
            codes, cum = self.side_cum[rule]
            side = sides[rule] = codes[bisect(cum, self.rand.random() * cum[-1])]
        return side

    # -------------------------------------------------------------- one inpatient case
    def _case(self, encounter: dict[str, Any], birth: date, person: tuple[str, ...],
              conditions: dict[str, dict[str, Any]], procedures: Sequence[dict[str, Any]],
              sides: dict[int, str]) -> None:
        start, end = encounter["period"]["start"], encounter["period"]["end"]
        department = _code(encounter.get("serviceType"))
        area = "PSY" if department in self.psy else "DRG"
        key = (self.ik, self.location, area, case_number(encounter), "")  # the case key, the empty column
        # diagnoses: the main one first (use code, else lowest rank), the others by rank
        links = sorted(encounter.get("diagnosis", ()), key=lambda link: link.get("rank", 99))
        if links and _code(links[0].get("use")) not in self.primary_uses:
            main = next((k for k, link in enumerate(links) if _code(link.get("use")) in self.primary_uses), 0)
            links.insert(0, links.pop(main))
        primary, icd_dot, secondary = "", self.icd_dot, self.secondary
        for k, link in enumerate(links):
            condition = conditions[link["condition"]["reference"][10:]]  # after "Condition/"
            coding = condition["code"]["coding"][0]
            code = coding["code"]
            primary = primary or code
            provisional = _code(condition.get("verificationStatus")) == "provisional"
            self._row("ICD.csv", key + ("HD" if k == 0 else "ND", coding.get("version") or start[:4],
                                        code if icd_dot else code.replace(".", ""),
                                        self._lateral(code, "icd", sides), "V" if provisional else "",
                                        secondary.get(code, "")))
        ops_codes, punctuation = [], self.ops_punctuation
        for procedure in procedures:
            coding = procedure["code"]["coding"][0]
            code = coding["code"]
            ops_codes.append(code)
            self._row("OPS.csv", key + (coding.get("version") or start[:4],
                                        code if punctuation else code.replace("-", "").replace(".", ""),
                                        self._lateral(code, "ops", sides),
                                        _stamp(procedure.get("performedDateTime", start)), "N", "N", "N"))
        first_day, last_day = date.fromisoformat(start[:10]), date.fromisoformat(end[:10])
        stay_days = (last_day - first_day).days
        intensive_hours = self._department_stays(key, department, start, end, stay_days, primary)
        self._fees(key, area, person[1], start, end, stay_days, primary, ops_codes)
        intensive = f"{intensive_hours / 24:.2f}".replace(".", ",") if intensive_hours else ""
        self._row("FALL.csv", key + person + self._admission(encounter, birth, first_day, last_day, primary)
                  + (_stamp(start), _stamp(end), "N", "0", "0" if area == "PSY" else "", intensive))

    def _admission(self, encounter: dict[str, Any], birth: date, first_day: date, last_day: date,
                   primary: str) -> tuple[str, ...]:
        """The _ADMISSION fields: admission and discharge keys, ages, pre-/post-inpatient visits, transfer."""
        rules, rand = self.rules, self.rand
        stay = encounter.get("hospitalization", {})
        source, discharge = _code(stay.get("admitSource")), _code(stay.get("dischargeDisposition"))
        years = first_day.year - birth.year - ((first_day.month, first_day.day) < (birth.month, birth.day))
        first, second = "01", "07" if source in self.emergency else "01"
        if primary.startswith(self.injury_prefixes):
            second = self.injury_codes[bisect(self.injury_cum, rand.random() * self.injury_cum[-1])]
        days = weight = pre_start = pre_days = post_end = post_days = transfer = ""
        if years == 0:
            age, grams = (first_day - birth).days, rules.admission_weight_g
            days = str(age)
            weight = str(max(400, round(rand.gauss(grams.mean + grams.per_day * age, grams.sd))))
            if age == 0:  # born here
                source, first, second = "G", "06", "01"
        if source == "E" and rand.random() * 100 < rules.pre_inpatient_pct:
            before = 1 + int(rand.random() * 5)
            first = "02"
            pre_start = (first_day - timedelta(before)).strftime("%Y%m%d")
            pre_days = str(1 + int(rand.random() * min(3, before)))
        if discharge in self.post_discharge:
            post_end = (last_day + timedelta(3 + int(rand.random() * 12))).strftime("%Y%m%d")
            post_days = str(1 + int(rand.random() * 3))
        if source in self.transfer_sources or discharge.startswith(self.transfer_discharge):
            transfer = derived_ik("26", int(rand.random() * 160000))
        return (source, first + second, weight, discharge, days, str(years), pre_start, pre_days, post_end,
                post_days, transfer)

    def _department_stays(self, key: tuple[str, ...], department: str, start: str, end: str, stay_days: int,
                          primary: str) -> int:
        """FAB rows: intensive care first for some main diagnoses, a second department for some long
        stays; returns the intensive-care hours."""
        rules, rand = self.rules, self.rand
        care = self.care_memo.get(primary, False)
        if care is False:
            care = next((c for c in rules.intensive_care if primary.startswith(c.icd)), None)
            self.care_memo[primary] = care
        intensive_hours = 0  # none, or drawn for the main diagnosis
        if care is not None and rand.random() * 100 < care.pct:
            intensive_hours = care.hours[0] + int(rand.random() * (care.hours[1] - care.hours[0] + 1))
        transfer = stay_days >= self.transfer_days and rand.random() * 100 < self.transfer_pct
        location = key[1]
        if not intensive_hours and not transfer:
            self._row("FAB.csv", key + (location, "HA" + department, _stamp(start), _stamp(end), "N"))
            return 0
        begin, finish = datetime.fromisoformat(start[:16]), datetime.fromisoformat(end[:16])
        cuts = [(begin, department, "N")]
        if intensive_hours:
            intensive_end = begin + timedelta(hours=intensive_hours)
            if intensive_end >= finish - timedelta(hours=1):  # intensive care until discharge
                intensive_end = finish
                intensive_hours = max(1, int((finish - begin).total_seconds() // 3600))
            cuts = [(begin, department, "J")]
            if intensive_end < finish:
                cuts.append((intensive_end, department, "N"))
        if transfer and cuts[-1][2] == "N":  # not after intensive care until discharge
            day = 2 + int(rand.random() * max(1, stay_days - 3))
            moved = datetime.combine(begin.date() + timedelta(day), datetime.min.time()) + timedelta(
                minutes=600 + int(rand.random() * 240))
            if cuts[-1][0] < moved < finish:
                target = rules.transfer.targets.get(department, rules.transfer.default_target)
                cuts.append((moved, target, "N"))
        for k, (since, unit, bed) in enumerate(cuts):
            until = cuts[k + 1][0] if k + 1 < len(cuts) else finish
            self._row("FAB.csv", key + (location, "HA" + unit, since.strftime("%Y%m%d%H%M"),
                                        until.strftime("%Y%m%d%H%M"), bed))
        return intensive_hours

    def _fees(self, key: tuple[str, ...], area: str, payer: str, start: str, end: str, stay_days: int,
              primary: str, ops_codes: list[str]) -> None:
        """One Fallpauschale (DRG: a procedure's rule first, else the main diagnosis') or PEPP day fee."""
        if area == "PSY":
            n = self.pepp_memo.get(primary)
            if n is None:
                n = self.pepp_memo[primary] = _first(self.rules.pepp, "icd", primary)
            count = max(1, stay_days)
        else:
            n = min((self._drg_rule(code, "ops") for code in ops_codes), default=self.n_drg)
            if n == self.n_drg:  # no procedure has a rule
                n = self._drg_rule(primary, "icd")
            count = 1
        year = int(start[:4])
        fee = self.fee_memo.get((area, n, year))
        if fee is None:
            fee = self.fee_memo[area, n, year] = self._fee(area, n, year)
        self._row("ENTGELTE.csv", key + (payer, fee[0], fee[1], start[0:4] + start[5:7] + start[8:10],
                                         end[0:4] + end[5:7] + end[8:10], str(count), "0"))

    def _fee(self, area: str, n: int, year: int) -> tuple[str, str]:
        """Entgeltart and Entgeltbetrag (decimal comma) of a DRG or PEPP rule in a year."""
        rules = self.rules
        if area == "PSY":
            key, code, weight = rules.pepp_key, rules.pepp[n].pepp, rules.pepp[n].weight
            rates = rules.psy_base_rate_eur
        else:
            key, code, weight = rules.fee_key, rules.drg[n].drg, rules.drg[n].weight
            rates = rules.base_rate_eur
        amount = rates[min(max(year, min(rates)), max(rates))] * weight  # outside the table: the nearest year
        return key.prefix + code + key.suffix, f"{amount:.2f}".replace(".", ",")

    def _drg_rule(self, code: str, field: str) -> int:
        """The first DRG rule for a procedure (field ops; none: len(rules), to sort last) or diagnosis."""
        n = self.drg_memo.get(field + code)
        if n is None:
            n = _first(self.rules.drg, field, code)
            n = self.drg_memo[field + code] = len(self.rules.drg) if n == _NO_RULE and field == "ops" else n
        return n

    def close(self) -> dict[str, int]:
        for handle in self.handles:
            handle.close()
        return dict(self.counts)

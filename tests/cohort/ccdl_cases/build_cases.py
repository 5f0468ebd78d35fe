"""Writes this folder's CCDL conformance cases from the declarations in cases_v2.py and cases_v3.py.

    <name>.json                      the CCDL query (version 2 or 3)
    testdata/<name>-data.json        a FHIR R4 Bundle (transaction, PUT; a few collections) of MII-shaped resources
    testdata/<name>-expected.json    {"ccdl", "referenceDate", "includedPatients", "excludedPatients"}
    README.md                        per case: what it checks, and why each patient is in or out

Run from the repository root after changing a case (a test checks the files are what this writes):

    .venv/bin/python tests/cohort/ccdl_cases/build_cases.py

Every patient, date and expectation is written out by hand in the case modules; this file only
holds the builders that turn them into FHIR and CCDL JSON, so the JSON stays consistent (profiles,
codings, Europe/Berlin offsets) and the reasoning stays next to the data it is about.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

HERE = Path(__file__).resolve().parent
BERLIN = ZoneInfo("Europe/Berlin")

ICD10GM = "http://fhir.de/CodeSystem/bfarm/icd-10-gm"
ICD10GM_DIMDI = "http://fhir.de/CodeSystem/dimdi/icd-10-gm"  # the old URI the v2 example uses
OPS = "http://fhir.de/CodeSystem/bfarm/ops"
ATC = "http://fhir.de/CodeSystem/bfarm/atc"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
MII_CONSENT = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
BIOBANK_DIAGNOSE = "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Diagnose"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

MII = "https://www.medizininformatik-initiative.de/fhir"
PROFILES = {
    "Patient": f"{MII}/core/modul-person/StructureDefinition/Patient",
    "Condition": f"{MII}/core/modul-diagnose/StructureDefinition/Diagnose",
    "Procedure": f"{MII}/core/modul-prozedur/StructureDefinition/Procedure",
    "Observation": f"{MII}/core/modul-labor/StructureDefinition/ObservationLab",
    "MedicationAdministration": f"{MII}/core/modul-medikation/StructureDefinition/MedicationAdministration",
    "MedicationStatement": f"{MII}/core/modul-medikation/StructureDefinition/MedicationStatement",
    "MedicationRequest": f"{MII}/core/modul-medikation/StructureDefinition/MedicationRequest",
    "Medication": f"{MII}/core/modul-medikation/StructureDefinition/Medication",
    "Specimen": f"{MII}/ext/modul-biobank/StructureDefinition/Specimen",
    "Consent": f"{MII}/modul-consent/StructureDefinition/mii-pr-consent-einwilligung",
}
VITAL_SIGNS = {"8310-5", "8867-4", "9279-1", "29463-7"}


@cache
def display_of(system: str, code: str) -> str | None:
    """The display our terminology gives a code (None for codes it does not hold: SNOMED, LOINC answers)."""
    from dic.errors import InputError
    from dic.terminology import lookup

    try:
        return lookup(system, code).display
    except InputError:
        return None


def when(value: str) -> str:
    """A FHIR date/dateTime: 'YYYY-MM-DD HH:MM' is Berlin local time (offset added); dates stay as written."""
    if " " not in value:
        return value
    local = datetime.strptime(value, "%Y-%m-%d %H:%M").replace(tzinfo=BERLIN)
    return local.isoformat(timespec="seconds")


def period(value: tuple[str | None, str | None]) -> dict[str, str]:
    start, end = value
    return {k: when(v) for k, v in (("start", start), ("end", end)) if v is not None}


def timed(prefix: str, value: str | tuple | None) -> dict[str, Any]:
    """onsetDateTime / onsetPeriod (or effective…, performed…) for a dateTime string or a (start, end) Period."""
    if value is None:
        return {}
    if isinstance(value, tuple):
        return {f"{prefix}Period": period(value)}
    return {f"{prefix}DateTime": when(value)}


def coding(system: str, code: str, display: str | None = None, version: str | None = None) -> dict[str, str]:
    out = {"system": system}
    if version:
        out["version"] = version
    out["code"] = code
    display = display or display_of(system, code)
    if display:
        out["display"] = display
    return out


def quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


# ---------------------------------------------------------------- FHIR: one patient and their resources
@dataclass
class PatientRecord:
    id: str
    included: bool
    why: str
    resources: list[dict[str, Any]] = field(default_factory=list)
    _count: int = 0

    def _add(self, resource_type: str, kind: str, body: dict[str, Any], subject: str = "subject") -> str:
        self._count += 1
        resource_id = f"{self.id}-{kind}{self._count}"
        resource = {"resourceType": resource_type, "id": resource_id, "meta": {"profile": [PROFILES[resource_type]]}}
        resource.update(body)
        if subject:
            resource[subject] = {"reference": f"Patient/{self.id}"}
        self.resources.append(resource)
        return resource_id

    def condition(self, code: str, onset: str | tuple | None = None, *, recorded: str | None = None,
                  clinical: str | None = "active", verification: str | None = "confirmed",
                  system: str = ICD10GM, also: tuple[dict, ...] = ()) -> str:
        body: dict[str, Any] = {}
        if clinical:
            body["clinicalStatus"] = {"coding": [coding(CLINICAL, clinical, clinical.capitalize())]}
        if verification:
            body["verificationStatus"] = {"coding": [coding(VERIFICATION, verification, verification.capitalize())]}
        version = "2024" if system == ICD10GM else None
        body["code"] = {"coding": [*also, coding(system, code, version=version)]}
        body.update(timed("onset", onset))
        if recorded:
            body["recordedDate"] = when(recorded)
        return self._add("Condition", "c", body)

    def procedure(self, code: str, performed: str | tuple, *, status: str = "completed") -> str:
        body = {"status": status, "code": {"coding": [coding(OPS, code, version="2024")]}, **timed("performed", performed)}
        return self._add("Procedure", "p", body)

    def observation(self, loinc: str, value: float | None = None, unit: str | None = None, *,
                    at: str | tuple | None = None, concept: tuple[str, str, str] | None = None,
                    method: tuple[str, str, str] | None = None) -> str:
        category = ("vital-signs", "Vital Signs") if loinc in VITAL_SIGNS else ("laboratory", "Laboratory")
        body: dict[str, Any] = {
            "status": "final",
            "category": [{"coding": [coding("http://terminology.hl7.org/CodeSystem/observation-category", *category)]}],
            "code": {"coding": [coding(LOINC, loinc)]},
            **timed("effective", at),
        }
        if value is not None:
            body["valueQuantity"] = quantity(value, unit or "")
        elif concept is not None:
            body["valueCodeableConcept"] = {"coding": [coding(*concept)]}
        else:
            body["dataAbsentReason"] = {"coding": [coding("http://terminology.hl7.org/CodeSystem/data-absent-reason",
                                                          "not-performed", "Not Performed")]}
        if method:
            body["method"] = {"coding": [coding(*method)]}
        return self._add("Observation", "o", body)

    def _medication(self, atc: str, by_reference: bool) -> dict[str, Any]:
        if not by_reference:
            return {"medicationCodeableConcept": {"coding": [coding(ATC, atc, version="2024")]}}
        medication_id = self._add("Medication", "m", {"code": {"coding": [coding(ATC, atc, version="2024")]}}, subject="")
        return {"medicationReference": {"reference": f"Medication/{medication_id}"}}

    def administration(self, atc: str, at: str | tuple, *, by_reference: bool = False) -> str:
        body = {"status": "completed", **self._medication(atc, by_reference), **timed("effective", at)}
        return self._add("MedicationAdministration", "ma", body)

    def statement(self, atc: str, at: str | tuple) -> str:
        return self._add("MedicationStatement", "ms",
                         {"status": "active", **self._medication(atc, False), **timed("effective", at)})

    def request(self, atc: str, authored: str) -> str:
        body = {"status": "active", "intent": "order", **self._medication(atc, False), "authoredOn": when(authored)}
        return self._add("MedicationRequest", "mr", body)

    def specimen(self, snomed: tuple[str, str], collected: str, *, diagnosis: str | None = None,
                 type_system: str = SNOMED) -> str:
        body: dict[str, Any] = {}
        if diagnosis:
            body["extension"] = [{"url": BIOBANK_DIAGNOSE, "valueReference": {"reference": f"Condition/{diagnosis}"}}]
        body.update({"status": "available", "type": {"coding": [coding(type_system, *snomed)]},
                     "collection": {"collectedDateTime": when(collected)}})
        return self._add("Specimen", "s", body)

    def consent(self, *provisions: tuple[str, str, str, str | None], status: str = "active") -> str:
        """MII broad consent: a deny provision holding one nested provision per (type, code, start, end)."""
        nested = [
            {"type": kind, "period": period((start, end)),
             "code": [{"coding": [coding(MII_CONSENT, f"{MII_CONSENT[8:]}.{code}", CONSENT_CODES[code])]}]}
            for kind, code, start, end in provisions
        ]
        body = {
            "status": status,
            "scope": {"coding": [coding("http://terminology.hl7.org/CodeSystem/consentscope", "research", "Research")]},
            "category": [{"coding": [coding(LOINC, "57016-8", "Privacy policy acknowledgment Document")]}],
            "patient": {"reference": f"Patient/{self.id}"},
            "dateTime": when(provisions[0][2] if provisions else "2020-01-01"),
            "policy": [{"uri": "urn:oid:2.16.840.1.113883.3.1937.777.24.2.1790"}],
            "provision": {"type": "deny", "provision": nested},
        }
        return self._add("Consent", "consent", body, subject="")


CONSENT_CODES = {"6": "MDAT_erheben", "7": "MDAT_speichern_verarbeiten", "8": "MDAT_wissenschaftlich_nutzen_EU_DSGVO_NIVEAU"}


# ---------------------------------------------------------------- a case
@dataclass
class Case:
    name: str
    about: str  # what the case checks (README)
    query: dict[str, Any]
    reference_date: str = "2024-06-15"
    bundle_type: Literal["transaction", "collection"] = "transaction"
    patients: list[PatientRecord] = field(default_factory=list)

    def patient(self, patient_id: str, expect: Literal["in", "out"], why: str, *, gender: str | None = "female",
                birth: str | None = "1950-03-14") -> PatientRecord:
        record = PatientRecord(patient_id, expect == "in", why)
        body: dict[str, Any] = {"resourceType": "Patient", "id": patient_id, "meta": {"profile": [PROFILES["Patient"]]}}
        if gender:
            body["gender"] = gender
        if birth:
            body["birthDate"] = birth
        record.resources.append(body)
        self.patients.append(record)
        return record

    def bundle(self) -> dict[str, Any]:
        entries = []
        for record in self.patients:
            for resource in record.resources:
                entry: dict[str, Any] = {"fullUrl": f"https://dic.example.org/fhir/{resource['resourceType']}/{resource['id']}",
                                         "resource": resource}
                if self.bundle_type == "transaction":
                    entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
                entries.append(entry)
        return {"resourceType": "Bundle", "id": f"{self.name}-data", "type": self.bundle_type, "entry": entries}

    def expected(self) -> dict[str, Any]:
        return {
            "ccdl": f"{self.name}.json",
            "referenceDate": self.reference_date,
            "includedPatients": [p.id for p in self.patients if p.included],
            "excludedPatients": [p.id for p in self.patients if not p.included],
        }


# ---------------------------------------------------------------- CCDL
CDS = {"system": "fdpg.mii.cds", "version": "1.0.0"}
CONTEXTS = {
    "diagnosis": ("Diagnose", "Diagnose"), "procedure": ("Prozedur", "Prozedur"),
    "lab": ("Laboruntersuchung", "Laboruntersuchung"), "medication": ("Medikation", "Medikation"),
    "administration": ("Medikamentenverabreichung", "Medikamentenverabreichung"),
    "specimen": ("Specimen", "Bioprobe"), "consent": ("Einwilligung", "Einwilligung"), "patient": ("Patient", "Patient"),
}


def term(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"code": code, "system": system, "display": display or display_of(system, code) or code}


def criterion(context: str, *terms: dict[str, str], value: dict | None = None, attributes: list[dict] | None = None,
              time: dict | None = None) -> dict[str, Any]:
    code, display = CONTEXTS[context]
    out: dict[str, Any] = {"context": {"code": code, "display": display, **CDS}, "termCodes": list(terms)}
    if value:
        out["valueFilter"] = value
    if attributes:
        out["attributeFilters"] = attributes
    if time:
        out["timeRestriction"] = time
    return out


def diagnosis(*codes: str, system: str = ICD10GM, **kw: Any) -> dict[str, Any]:
    return criterion("diagnosis", *(term(system, c) for c in codes), **kw)


def procedure(*codes: str, **kw: Any) -> dict[str, Any]:
    return criterion("procedure", *(term(OPS, c) for c in codes), **kw)


def lab(code: str, **kw: Any) -> dict[str, Any]:
    return criterion("lab", term(LOINC, code), **kw)


def medication(code: str, context: str = "medication", **kw: Any) -> dict[str, Any]:
    return criterion(context, term(ATC, code), **kw)


def age(value: dict) -> dict[str, Any]:
    return criterion("patient", term(LOINC, "30525-0", "Alter"), value=value)


def gender(*concepts: dict[str, str]) -> dict[str, Any]:
    return criterion("patient", term(LOINC, "LL2191-6", "Geschlecht"), value=concept(*concepts))


FEMALE = {"code": "female", "display": "female", "system": ""}
MALE = {"code": "male", "display": "male", "system": ""}


def comparator(op: str, value: float, unit: str) -> dict[str, Any]:
    return {"type": "quantity-comparator", "comparator": op, "value": value, "unit": {"code": unit, "display": unit}}


def quantity_range(low: float, high: float, unit: str) -> dict[str, Any]:
    return {"type": "quantity-range", "minValue": low, "maxValue": high, "unit": {"code": unit, "display": unit}}


def concept(*concepts: dict[str, str]) -> dict[str, Any]:
    return {"type": "concept", "selectedConcepts": list(concepts)}


def attribute(code: str, *concepts: dict[str, str]) -> dict[str, Any]:
    return {"type": "concept", "attributeCode": {"code": code, "system": "mii.abide", "display": code},
            "selectedConcepts": list(concepts)}


def reference(code: str, *criteria: dict) -> dict[str, Any]:
    return {"type": "reference", "attributeCode": {"code": code, "system": "mii.abide", "display": code},
            "criteria": list(criteria)}


def between(after: str | None = None, before: str | None = None) -> dict[str, str]:
    return {k: v for k, v in (("afterDate", after), ("beforeDate", before)) if v}


def v2(display: str, inclusion: list[list[dict]], exclusion: list[list[dict]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"version": "2", "display": display, "inclusionCriteria": inclusion}
    if exclusion:
        out["exclusionCriteria"] = exclusion
    return out


NOW = {"type": "now"}


def group(group_id: str, criteria: list[list[dict]], *relative: dict[str, str], occurrence: str | None = None,
          point: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": group_id}
    if relative:
        out["relativeTimeRestrictions"] = list(relative)
    if occurrence:
        out["anchorOccurrence"] = occurrence
    if point:
        out["anchorPoint"] = point
    out["criteria"] = criteria
    return out


def after(anchor: str, min_offset: str | None = None, max_offset: str | None = None) -> dict[str, str]:
    out = {"anchorRef": anchor}
    if min_offset:
        out["minOffset"] = min_offset
    if max_offset:
        out["maxOffset"] = max_offset
    return out


def v3(display: str, inclusion: list[list[dict]], exclusion: list[list[dict]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"version": "3", "display": display, "inclusionCriteria": inclusion}
    if exclusion:
        out["exclusionCriteria"] = exclusion
    return out


# ---------------------------------------------------------------- writing
def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def all_cases() -> list[Case]:
    sys.path.insert(0, str(HERE))
    import cases_v2
    import cases_v3

    cases = [*cases_v2.cases(), *cases_v3.cases()]
    check(cases)
    return cases


def check(cases: list[Case]) -> None:
    """Names and patient ids are unique across the folder (so the runner can load cases side by side)."""
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), f"duplicate case names: {names}"
    seen: dict[str, str] = {}
    for case in cases:
        assert any(p.included for p in case.patients) and any(not p.included for p in case.patients), case.name
        for record in case.patients:
            for resource in record.resources:
                key = f"{resource['resourceType']}/{resource['id']}"
                assert key not in seen, f"{key} in {case.name} and {seen[key]}"
                seen[key] = case.name


def files(cases: list[Case]) -> dict[Path, str]:
    """Every file this folder should hold, by path, with its text."""
    out: dict[Path, str] = {}
    for case in cases:
        out[HERE / f"{case.name}.json"] = dumps(case.query)
        out[HERE / "testdata" / f"{case.name}-data.json"] = dumps(case.bundle())
        out[HERE / "testdata" / f"{case.name}-expected.json"] = dumps(case.expected())
    out[HERE / "README.md"] = readme(cases)
    return out


README_HEAD = """\
# CCDL conformance cases

Our own test cases for `dic conformance ccdl` (`dic.cohort.run_cases`), in the layout the MII uses
for its CCDL v3 examples: per case the query `<name>.json`, a FHIR Bundle `testdata/<name>-data.json`
and `testdata/<name>-expected.json` (`ccdl`, `referenceDate` = "now", `includedPatients`,
`excludedPatients`). A case passes when every included patient is in the cohort and no excluded
patient is.

Written from the CCDL documents (`documentation.md` for v2, `ccdl-v3-draft.md` for v3) and the
semantics we fixed where they are silent (`docs/cohorts.md`): every event is a half-open UTC
interval at its own precision (a date is a UTC day, `2021` the whole year, a Berlin dateTime is
converted to UTC), a time restriction or relative window is met when the event's interval
overlaps it, a v3 `now` is the reference day. Times below are Europe/Berlin local unless they say UTC.

The files are written by `build_cases.py` from `cases_v2.py` and `cases_v3.py`, where each patient
is built by hand next to the reason it is in or out; edit those and run

    .venv/bin/python tests/cohort/ccdl_cases/build_cases.py

Resource and patient ids are unique across the folder, so the runner may load several cases into
one scratch repository (membership is decided per patient).
"""


def readme(cases: list[Case]) -> str:
    parts = [README_HEAD]
    for case in cases:
        parts.append(f"\n## {case.name}\n\n{case.about.strip()}\n\nReference date {case.reference_date}.\n\n"
                     "| patient | | why |\n|---|---|---|\n")
        for record in case.patients:
            why = " ".join(record.why.split()).replace("|", "\\|")
            parts.append(f"| `{record.id}` | {'in' if record.included else 'out'} | {why} |\n")
    return "".join(parts)


def write(cases: list[Case]) -> list[Path]:
    (HERE / "testdata").mkdir(exist_ok=True)
    wanted = files(cases)
    stale = [p for p in [*HERE.glob("*.json"), *(HERE / "testdata").glob("*.json")] if p not in wanted]
    for path in stale:
        path.unlink()
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    return sorted(wanted)


if __name__ == "__main__":
    written = write(all_cases())
    print(f"wrote {len(written)} files for {(len(written) - 1) // 3} cases in {HERE}")

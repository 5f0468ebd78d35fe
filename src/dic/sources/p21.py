"""The §21 KHEntgG billing export ("p21": FALL, FAB, ICD, OPS, ENTGELTE, KRANKENHAUS.csv) to FHIR R4.

    read_p21(folder, *, patient_system=None, case_system=None) -> Iterator[SourceResource | Rejection]
    is_p21_folder(path) -> bool      a folder holding FALL.csv (any case)

One export folder is one load unit. FALL.csv is read first (the other files name a case only by
its KH-internes-Kennzeichen, the patient is in FALL), then ICD.csv (the case Encounter lists its
diagnoses), and the resources come in this order: the hospital's Organization (KRANKENHAUS.csv);
per case one Patient (once per Patientennummer, from the patient's latest case, so a reload or a
re-sorted file gives the same Patient), the case Encounter (Einrichtungskontakt) and, for infants,
a body-weight Observation for Aufnahmegewicht; then the Conditions (ICD.csv), the department
Encounters (FAB.csv, Abteilungskontakt partOf the case), Procedures (OPS.csv) and ChargeItems
(ENTGELTE.csv). Ids are the source's own: Patient = Patientennummer, Encounter = case number (made
a valid FHIR id), the others a hash of the case and the row's content (not its line number).

Choices (MII Diagnose/Fall/Prozedur shapes): a Sekundär-Kode becomes a second Condition that points
to the row's primary one by the `condition-related` extension, both codings carrying the ICD-10-GM
Mehrfachcodierungs-Kennzeichen (†/* for dagger-asterisk, ! for an additional code); Beatmungsstunden
and Verweildauer Intensiv stay on Encounter.hospitalization as extensions; Aufnahmegrund is the
de.basisprofil `Aufnahmegrund` extension, Entlassungsgrund the 3-character coding plus the
`Entlassungsgrund` extension. Columns, value shapes and code tables are data: `p21.yaml`.

Bad rows never raise: a row with the wrong number of fields, an empty mandatory field, a value of
the wrong shape (date, ICD/OPS code, key) or a case not in FALL.csv becomes a Rejection at
"<file> line N" whose reason names the column (never the value of an identifying one). Each line is
decoded as UTF-8 (a BOM is dropped), else Windows-1252, else Latin-1: §21 exports are UTF-8 today and
Windows-1252 in older deliveries. A quoted value spanning lines is not supported (a broken row).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field

from dic.errors import InputError
from dic.sources.fhir_files import RAW_LIMIT_BYTES
from dic.sources.record import Rejection, SourceResource

RULES_PATH = Path(__file__).with_name("p21.yaml")
BERLIN = ZoneInfo("Europe/Berlin")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_KVNR = re.compile(r"[A-Z][0-9]{9}")
_ICD_MARKERS = {"!": "!", "*": "*", "†": "†", "+": "†"}  # "+" is the dagger in ASCII exports
_EXTENSION = "http://fhir.de/StructureDefinition/"


# ------------------------------------------------------------------ declarations (p21.yaml)
class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Shape(_Model):
    pattern: str
    kind: Literal["text", "moment", "day", "decimal", "integer", "icd", "ops"]


class Column(_Model):
    shape: str
    required: bool = False
    identifying: bool = False


class Names(_Model):
    aliases: dict[str, str]


class AdmissionKind(_Model):
    class_: str = Field(alias="class")
    kontaktart: str


class DiagnosisUse(_Model):
    role: str
    role_display: str
    contact: str


class Laterality(_Model):
    code: str
    display: str


class P21Rules(_Model):
    shapes: dict[str, Shape]
    names: Names
    files: dict[str, dict[str, Column]]
    sex: dict[str, str]
    admission_kind: dict[str, AdmissionKind]
    class_display: dict[str, str]
    diagnosis_use: dict[str, DiagnosisUse]
    certainty_status: dict[str, str]
    systems: dict[str, str]
    profiles: dict[str, str]
    laterality: dict[str, Laterality]
    hospitalization_extensions: dict[str, str]


@cache
def load_rules() -> P21Rules:
    """The declarations of `p21.yaml`, validated (a broken file fails at the first use)."""
    rules = P21Rules.model_validate(yaml.safe_load(RULES_PATH.read_text(encoding="utf-8")))
    unknown = [f"{f}/{c}: {col.shape}" for f, cols in rules.files.items() for c, col in cols.items()
               if col.shape not in rules.shapes]
    if unknown:
        raise ValueError(f"{RULES_PATH}: columns with an undeclared shape: {unknown}")
    return rules


@cache
def _patterns() -> dict[str, re.Pattern[str]]:
    return {name: re.compile(shape.pattern) for name, shape in load_rules().shapes.items()}


def _normalize(name: str) -> str:
    """A column name as compared: lower case, blanks and underscores as hyphens, aliases resolved."""
    key = re.sub(r"[\s_]+", "-", name.strip().casefold())
    return load_rules().names.aliases.get(key, key)


# ------------------------------------------------------------------ entry points
def is_p21_folder(path: Path) -> bool:
    """Whether `path` is a folder holding a FALL.csv (any case)."""
    path = Path(path)
    return path.is_dir() and any(p.name.upper() == "FALL.CSV" and p.is_file() for p in path.iterdir())


def read_p21(folder: Path, *, patient_system: str | None = None,
             case_system: str | None = None) -> Iterator[SourceResource | Rejection]:
    """The resources and rejections of one §21 export folder (see the module docstring).

    `patient_system` / `case_system`: the hospital's patient-number and case-number identifier
    systems (those of its HIS); by default URNs made from the delivering hospital's IK."""
    folder = Path(folder)
    if not is_p21_folder(folder):
        raise InputError(f"{folder}: not a §21 export folder (no FALL.csv in it)")
    files = {p.name.upper(): p for p in folder.iterdir() if p.is_file()}
    export = _Export(folder, patient_system, case_system)
    if "KRANKENHAUS.CSV" in files:
        yield from export.read_hospitals(files["KRANKENHAUS.CSV"])
    yield from export.read_cases(files["FALL.CSV"])
    icd = files.get("ICD.CSV")
    if icd is not None:
        yield from export.diagnosis_links(icd)
    yield from export.case_resources()
    if icd is not None:
        yield from export.conditions(icd)
    for name, make in (("FAB.CSV", export.department_stay), ("OPS.CSV", export.procedure),
                       ("ENTGELTE.CSV", export.charge_item)):
        if name in files:
            yield from export.case_rows(files[name], make)


# ------------------------------------------------------------------ reading a file
@dataclass(slots=True)
class _Row:
    line: int
    raw: bytes
    values: dict[str, Any]  # declared column (YAML name) -> converted value, None when empty


def _decode(line: bytes) -> str:
    for codec in ("utf-8", "cp1252"):
        try:
            return line.decode(codec)
        except UnicodeDecodeError:
            continue
    return line.decode("latin-1")


def _split(text: str) -> list[str]:
    if '"' not in text:  # the common case; csv only where a value is quoted
        return text.split(";")
    return next(csv.reader([text], delimiter=";"))


def _reject(position: str, reason: str, raw: bytes, source: str) -> Rejection:
    return Rejection(source, position, reason, raw[:RAW_LIMIT_BYTES], len(raw))


def _rows(path: Path, skip: frozenset[int] = frozenset()) -> Iterator[_Row | Rejection]:
    """The rows of one file, each checked against its declared columns and converted."""
    rules, patterns, source = load_rules(), _patterns(), str(path)
    name = path.name.upper().replace(".CSV", ".csv")
    declared = rules.files[name]
    with path.open("rb") as stream:
        first = stream.readline()
        header = [_normalize(h) for h in _split(_decode(first.removeprefix(b"\xef\xbb\xbf")).rstrip("\r\n"))]
        at = {column: header.index(_normalize(column)) for column in declared if _normalize(column) in header}
        missing = [c for c, col in declared.items() if col.required and c not in at]
        # per column once: (name, index, required, identifying, pattern, kind, shape name)
        plan = [(column, n, declared[column].required, declared[column].identifying,
                 patterns[declared[column].shape], rules.shapes[declared[column].shape].kind, declared[column].shape)
                for column, n in at.items()]
        if missing:
            yield _reject(f"{name} line 1", f"{name} line 1: the header lacks the mandatory column(s) "
                          f"{', '.join(missing)}; the file is not read", first, source)
            return
        for number, raw in enumerate(stream, start=2):
            text = _decode(raw).rstrip("\r\n")
            if not text.strip() or number in skip:
                continue
            position = f"{name} line {number}"
            fields = _split(text)
            if len(fields) != len(header):
                yield _reject(position, f"{position}: row has {len(fields)} fields, the header {len(header)}",
                              raw, source)
                continue
            values, problem = {}, None
            for column, n, required, identifying, pattern, kind, shape in plan:
                value = fields[n].strip()
                if not value:
                    if required:
                        problem = f"column {column}: empty mandatory field"
                        break
                    values[column] = None
                    continue
                converted = (value if kind == "text" else _convert(value, kind)) if pattern.fullmatch(value) else None
                if converted is None:
                    shown = "the value" if identifying else repr(value)
                    problem = f"column {column}: {shown} is not {_SHAPE_NAMES.get(shape, shape)}"
                    break
                values[column] = converted
            if problem is not None:
                yield _reject(position, f"{position}, {problem}", raw, source)
            else:
                yield _Row(number, raw, values)


_SHAPE_NAMES = {"moment": "a date and time yyyyMMddHHmm", "day": "a date yyyyMMdd",
                "icd": "an ICD-10-GM code shape", "ops": "an OPS code shape", "case_number": "a case number (\\w+)",
                "decimal": "a number with decimal comma", "amount": "an amount with decimal comma",
                "count": "a whole number"}


def _convert(value: str, kind: str) -> Any:
    """The value read as its kind, or None when it is impossible (a 31 February)."""
    if kind == "text":
        return value
    if kind == "moment":
        return _moment(value)
    if kind == "day":
        try:
            return datetime(int(value[:4]), int(value[4:6]), int(value[6:8])).date().isoformat()
        except ValueError:
            return None
    if kind == "decimal":
        return float(value.replace(",", "."))
    if kind == "integer":
        return int(value)
    if kind == "icd":
        return icd_code(value)
    return ops_code(value)


@lru_cache(maxsize=65536)
def _moment(value: str) -> str | None:
    """yyyyMMddHHmm (Europe/Berlin) as a FHIR dateTime with its offset, or None if impossible."""
    try:
        moment = datetime(int(value[:4]), int(value[4:6]), int(value[6:8]), int(value[8:10]), int(value[10:12]),
                          tzinfo=BERLIN)
    except ValueError:
        return None
    return moment.isoformat(timespec="seconds")


def icd_code(value: str) -> tuple[str, str | None]:
    """(official ICD-10-GM code, Mehrfachcodierungs-Kennzeichen or None): `S7188!` -> (`S71.88`, `!`)."""
    marker = _ICD_MARKERS.get(value[-1])
    bare = (value[:-1] if marker else value).replace(".", "")
    return (bare[:3] + "." + bare[3:] if len(bare) > 3 else bare), marker


def ops_code(value: str) -> str:
    """The official OPS code: `5378c0` -> `5-378.c0`, `8930` -> `8-930`."""
    bare = value.replace("-", "").replace(".", "")
    return bare[0] + "-" + bare[1:4] + ("." + bare[4:] if len(bare) > 4 else "")


# ------------------------------------------------------------------ ids and small shapes
def safe_id(value: str) -> str:
    """A source key as a FHIR id: itself when valid, else a stable hash of it."""
    if _FHIR_ID.fullmatch(value):
        return value
    return "h-" + hashlib.blake2b(value.encode(), digest_size=16).hexdigest()


def _content_id(prefix: str, *parts: Any) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return prefix + hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _before(end: str | None, start: str) -> bool:
    """Whether an end (FHIR date or dateTime) lies before its start; offsets count (DST)."""
    return end is not None and datetime.fromisoformat(end) < datetime.fromisoformat(start)


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    found = {"system": system, "code": code}
    if display:
        found["display"] = display
    return found


def _code_extension(url: str, system: str, code: str) -> dict[str, Any]:
    return {"url": url, "valueCoding": _coding(system, code)}


@dataclass(slots=True)
class _Case:
    encounter_id: str
    patient_id: str
    admission: str
    discharge: str | None
    values: dict[str, Any]
    line: int
    diagnoses: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ the export
class _Export:
    """The state of one export while it is read: its cases and patients."""

    def __init__(self, folder: Path, patient_system: str | None, case_system: str | None) -> None:
        self.rules = load_rules()
        self.folder = folder
        self.patient_system, self.case_system = patient_system, case_system
        self.cases: dict[tuple[str, ...], _Case] = {}
        self.latest: dict[str, _Case] = {}  # Patientennummer -> the patient's latest case
        self.hospital_ik: str | None = None
        self.organizations: set[str] = set()

    # ---------------------------------------------------------- KRANKENHAUS.csv
    def read_hospitals(self, path: Path) -> Iterator[SourceResource | Rejection]:
        for row in _rows(path):
            if isinstance(row, Rejection):
                yield row
                continue
            ik = row.values["IK"]
            self.organizations.add(ik)
            organization = {"resourceType": "Organization", "id": f"ik-{ik}",
                            "identifier": [{"system": self.rules.systems["ik"], "value": ik}], "active": True}
            if row.values.get("KH-Name"):
                organization["name"] = row.values["KH-Name"]
            yield SourceResource(organization, str(path), f"KRANKENHAUS.csv line {row.line}")

    # ---------------------------------------------------------- FALL.csv
    def read_cases(self, path: Path) -> Iterator[Rejection]:
        source = str(path)
        for row in _rows(path):
            if isinstance(row, Rejection):
                yield row
                continue
            v = row.values
            position = f"FALL.csv line {row.line}"
            if _before(v["Entlassungsdatum"], v["Aufnahmedatum"]):
                yield _reject(position, f"{position}, column Entlassungsdatum: before Aufnahmedatum", row.raw, source)
                continue
            key = self._case_key(v)
            if key in self.cases:
                yield _reject(position, f"{position}, column KH-internes-Kennzeichen: the case is already in "
                              f"line {self.cases[key].line}", row.raw, source)
                continue
            case = _Case(safe_id(v["KH-internes-Kennzeichen"]), safe_id(v["Patientennummer"]), v["Aufnahmedatum"],
                         v["Entlassungsdatum"], v, row.line)
            self.cases[key] = case
            self.hospital_ik = self.hospital_ik or v["IK"]
            known = self.latest.get(case.patient_id)
            # the latest admission describes the patient; ties by case number, so the row order never matters
            if known is None or (case.admission, case.encounter_id) > (known.admission, known.encounter_id):
                self.latest[case.patient_id] = case

    def _case_key(self, values: dict[str, Any]) -> tuple[str, ...]:
        return (values["KH-internes-Kennzeichen"],)

    def _case_of(self, row: _Row, position: str, source: str) -> _Case | Rejection:
        case = self.cases.get(self._case_key(row.values))
        if case is None:
            return _reject(position, f"{position}, column KH-internes-Kennzeichen: the case is not in FALL.csv "
                           "(or its FALL row was rejected)", row.raw, source)
        return case

    # ---------------------------------------------------------- ICD.csv, first pass
    def diagnosis_links(self, path: Path) -> Iterator[Rejection]:
        """Rejections of ICD.csv, and each good row's diagnosis link on its case Encounter."""
        source, uses = str(path), self.rules.diagnosis_use
        self.bad_icd_lines: set[int] = set()
        for row in _rows(path):
            if isinstance(row, Rejection):
                self.bad_icd_lines.add(int(row.position.rsplit(" ", 1)[1]))
                yield row
                continue
            case = self._case_of(row, f"ICD.csv line {row.line}", source)
            if isinstance(case, Rejection):
                self.bad_icd_lines.add(row.line)
                yield case
                continue
            kind = row.values["Diagnoseart"]
            use = uses[kind]
            link = {"condition": {"reference": "Condition/" + self._condition_id(case, row.values)},
                    "use": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/diagnosis-role", use.role,
                                               use.role_display),
                                       _coding("http://fhir.de/CodeSystem/KontaktDiagnoseProzedur", use.contact)]}}
            if kind == "HD":
                link["rank"] = 1
            case.diagnoses.append(link)

    def _condition_id(self, case: _Case, v: dict[str, Any]) -> str:
        return _content_id("icd-", case.encounter_id, v["Diagnoseart"], v["ICD-Version"], v["ICD-Kode"],
                           v.get("Lokalisation"), v.get("Diagnosensicherheit"), v.get("Sekundär-Kode"),
                           v.get("Lokalisation2"), v.get("Diagnosensicherheit2"))

    # ---------------------------------------------------------- Patients and case Encounters
    def case_resources(self) -> Iterator[SourceResource]:
        emitted: set[str] = set()
        fall = str(self.folder / "FALL.csv")
        for case in self.cases.values():
            position = f"FALL.csv line {case.line}"
            if case.patient_id not in emitted:
                emitted.add(case.patient_id)
                latest = self.latest[case.patient_id]
                yield SourceResource(self._patient(latest), fall, f"FALL.csv line {latest.line}")
            yield SourceResource(self._encounter(case), fall, position)
            if case.values.get("Aufnahmegewicht"):
                yield SourceResource(self._admission_weight(case), fall, position)

    def _patient(self, case: _Case) -> dict[str, Any]:
        v, systems = case.values, self.rules.systems
        identifiers = [{"use": "usual", "type": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v2-0203",
                                                                    "MR")]},
                        "system": self.patient_system or systems["patient_number"].format(ik=v["IK"]),
                        "value": v["Patientennummer"]}]
        insured = (v.get("Versicherten-ID") or "").upper()
        if _KVNR.fullmatch(insured):
            identifiers.append({"use": "official",
                                "type": {"coding": [_coding("http://fhir.de/CodeSystem/identifier-type-de-basis",
                                                            "KVZ10")]},
                                "system": systems["kvid"], "value": insured})
        patient: dict[str, Any] = {"resourceType": "Patient", "id": case.patient_id,
                                   "meta": {"profile": [self.rules.profiles["Patient"]]}, "identifier": identifiers}
        if v.get("Geschlecht"):
            patient["gender"] = self.rules.sex[v["Geschlecht"]]
        if v.get("Geburtsjahr"):
            month = v.get("Geburtsmonat")
            patient["birthDate"] = v["Geburtsjahr"] + (f"-{int(month):02d}" if month else "")
        if v.get("PLZ") or v.get("Wohnort"):
            address: dict[str, Any] = {"type": "both"}
            if v.get("PLZ"):
                address["postalCode"] = v["PLZ"]
            if v.get("Wohnort"):
                address["city"] = v["Wohnort"]
            address["country"] = "DE"
            patient["address"] = [address]
        return patient

    def _encounter(self, case: _Case) -> dict[str, Any]:
        v, rules, systems = case.values, self.rules, self.rules.systems
        reason = v["Aufnahmegrund"]
        kind = rules.admission_kind[reason[:2]]
        encounter: dict[str, Any] = {
            "resourceType": "Encounter", "id": case.encounter_id, "meta": {"profile": [rules.profiles["Encounter"]]},
            "extension": [{"url": _EXTENSION + "Aufnahmegrund", "extension": [
                _code_extension("ErsteUndZweiteStelle", "http://fhir.de/CodeSystem/dkgev/AufnahmegrundErsteUndZweiteStelle",
                                reason[:2]),
                _code_extension("DritteStelle", "http://fhir.de/CodeSystem/dkgev/AufnahmegrundDritteStelle", reason[2]),
                _code_extension("VierteStelle", "http://fhir.de/CodeSystem/dkgev/AufnahmegrundVierteStelle", reason[3])]}],
            "identifier": [{"type": {"coding": [_coding("http://terminology.hl7.org/CodeSystem/v2-0203", "VN")]},
                            "system": self.case_system or systems["case_number"].format(ik=v["IK"]),
                            "value": v["KH-internes-Kennzeichen"]}],
            "status": "finished" if case.discharge else "in-progress",
            "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", kind.class_,
                             rules.class_display.get(kind.class_)),
            "type": [{"coding": [_coding("http://fhir.de/CodeSystem/Kontaktebene", "einrichtungskontakt",
                                         "Einrichtungskontakt")]},
                     {"coding": [_coding("http://fhir.de/CodeSystem/kontaktart-de", kind.kontaktart)]}],
            "subject": {"reference": f"Patient/{case.patient_id}"},
            "period": {"start": case.admission, **({"end": case.discharge} if case.discharge else {})},
        }
        if case.diagnoses:
            encounter["diagnosis"] = case.diagnoses
        stay: dict[str, Any] = {"admitSource": {"coding": [_coding(systems["admit_source"], v["Aufnahmeanlass"])]}}
        if v.get("Entlassungsgrund"):
            code = v["Entlassungsgrund"]
            stay["dischargeDisposition"] = {
                "extension": [{"url": _EXTENSION + "Entlassungsgrund", "extension": [
                    _code_extension("ErsteUndZweiteStelle",
                                    "http://fhir.de/CodeSystem/dkgev/EntlassungsgrundErsteUndZweiteStelle", code[:2]),
                    _code_extension("DritteStelle", "http://fhir.de/CodeSystem/dkgev/EntlassungsgrundDritteStelle",
                                    code[2])]}],
                "coding": [_coding(systems["discharge"], code)]}
        extensions = [{"url": url, "valueDecimal": v[column]}
                      for column, url in rules.hospitalization_extensions.items() if v.get(column)]
        if extensions:
            stay["extension"] = extensions
        encounter["hospitalization"] = stay
        provider: dict[str, Any] = {"identifier": {"system": systems["ik"], "value": v["IK"]}}
        if v["IK"] in self.organizations:
            provider["reference"] = f"Organization/ik-{v['IK']}"
        encounter["serviceProvider"] = provider
        return encounter

    def _admission_weight(self, case: _Case) -> dict[str, Any]:
        grams = case.values["Aufnahmegewicht"]
        return {"resourceType": "Observation", "id": _content_id("weight-", case.encounter_id),
                "meta": {"profile": [self.rules.profiles["Observation"]]}, "status": "final",
                "category": [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/observation-category",
                                                 "vital-signs")]}],
                "code": {"coding": [_coding("http://loinc.org", "29463-7", "Body weight")]},
                "subject": {"reference": f"Patient/{case.patient_id}"},
                "encounter": {"reference": f"Encounter/{case.encounter_id}"},
                "effectiveDateTime": case.admission,
                "valueQuantity": {"value": grams, "unit": "g", "system": "http://unitsofmeasure.org", "code": "g"}}

    # ---------------------------------------------------------- ICD.csv, second pass
    def conditions(self, path: Path) -> Iterator[SourceResource]:
        source = str(path)
        for row in _rows(path, skip=frozenset(self.bad_icd_lines)):
            if isinstance(row, Rejection):  # cannot happen: the first pass saw the same rows
                continue
            case = self.cases[self._case_key(row.values)]
            yield from (SourceResource(c, source, f"ICD.csv line {row.line}") for c in self._conditions(case, row.values))

    def _conditions(self, case: _Case, v: dict[str, Any]) -> list[dict[str, Any]]:
        primary_id = self._condition_id(case, v)
        code, marker = v["ICD-Kode"]
        secondary = v.get("Sekundär-Kode")
        second_marker = None
        if secondary is not None:
            second_marker = secondary[1] or "*"
            if marker is None and second_marker == "*":
                marker = "†"
        primary = self._condition(primary_id, case, v, code, marker, v.get("Lokalisation"),
                                  v.get("Diagnosensicherheit"))
        if secondary is None:
            return [primary]
        other = self._condition(primary_id + "-s", case, v, secondary[0], second_marker, v.get("Lokalisation2"),
                                v.get("Diagnosensicherheit2"))
        other["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/condition-related",
                               "valueReference": {"reference": f"Condition/{primary_id}"}}]
        return [primary, other]

    def _condition(self, condition_id: str, case: _Case, v: dict[str, Any], code: str, marker: str | None,
                   side: str | None, certainty: str | None) -> dict[str, Any]:
        systems, use = self.rules.systems, self.rules.diagnosis_use[v["Diagnoseart"]]
        coding: dict[str, Any] = {"system": systems["icd"], "version": v["ICD-Version"], "code": code}
        extensions = []
        if marker:
            extensions.append(_code_extension(_EXTENSION + "icd-10-gm-mehrfachcodierungs-kennzeichen",
                                              systems["multiple_coding"], marker))
        if side:
            extensions.append(_code_extension(_EXTENSION + "seitenlokalisation", systems["side"], side))
        if certainty:
            extensions.append(_code_extension(_EXTENSION + "icd-10-gm-diagnosesicherheit", systems["certainty"],
                                              certainty))
        if extensions:
            coding["extension"] = extensions
        condition: dict[str, Any] = {
            "resourceType": "Condition", "id": condition_id, "meta": {"profile": [self.rules.profiles["Condition"]]},
            "category": [{"coding": [_coding("http://terminology.hl7.org/CodeSystem/condition-category",
                                             "encounter-diagnosis"),
                                     _coding("http://fhir.de/CodeSystem/KontaktDiagnoseProzedur", use.contact)]}],
            "code": {"coding": [coding]},
            "subject": {"reference": f"Patient/{case.patient_id}"},
            "encounter": {"reference": f"Encounter/{case.encounter_id}"}}
        if certainty:
            condition["verificationStatus"] = {"coding": [_coding(
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", self.rules.certainty_status[certainty])]}
        if case.discharge:
            condition["recordedDate"] = case.discharge
        return condition

    # ---------------------------------------------------------- FAB, OPS, ENTGELTE
    def case_rows(self, path: Path, make: Any) -> Iterator[SourceResource | Rejection]:
        source, name = str(path), path.name.upper().replace(".CSV", ".csv")
        for row in _rows(path):
            if isinstance(row, Rejection):
                yield row
                continue
            position = f"{name} line {row.line}"
            case = self._case_of(row, position, source)
            if isinstance(case, Rejection):
                yield case
                continue
            made = make(case, row.values)
            if isinstance(made, str):
                yield _reject(position, f"{position}, {made}", row.raw, source)
            else:
                yield SourceResource(made, source, position)

    def department_stay(self, case: _Case, v: dict[str, Any]) -> dict[str, Any] | str:
        start, end = v["FAB-Aufnahmedatum"], v.get("FAB-Entlassungsdatum")
        if _before(end, start):
            return "column FAB-Entlassungsdatum: before FAB-Aufnahmedatum"
        department, intensive = v["Fachabteilung"], v["Kennung-Intensivbett"] == "J"
        types = [{"coding": [_coding("http://fhir.de/CodeSystem/Kontaktebene", "abteilungskontakt",
                                     "Abteilungskontakt")]}]
        if intensive:
            types.append({"coding": [_coding("http://fhir.de/CodeSystem/kontaktart-de", "intensivstationaer")]})
        encounter = {
            "resourceType": "Encounter", "id": _content_id("fab-", case.encounter_id, department, start),
            "meta": {"profile": [self.rules.profiles["Encounter"]]},
            "status": "finished" if end else "in-progress",
            "class": _coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP", "inpatient encounter"),
            "type": types,
            "serviceType": {"coding": [_coding(self.rules.systems["department"], department[2:])]},
            "subject": {"reference": f"Patient/{case.patient_id}"},
            "period": {"start": start, **({"end": end} if end else {})},
            "partOf": {"reference": f"Encounter/{case.encounter_id}"}}
        return encounter

    def procedure(self, case: _Case, v: dict[str, Any]) -> dict[str, Any]:
        code = v["OPS-Kode"]
        procedure: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": _content_id("ops-", case.encounter_id, v["OPS-Version"], code, v["OPS-Datum"], v.get("Lokalisation")),
            "meta": {"profile": [self.rules.profiles["Procedure"]]}, "status": "completed",
            "code": {"coding": [{"system": self.rules.systems["ops"], "version": v["OPS-Version"], "code": code}]},
            "subject": {"reference": f"Patient/{case.patient_id}"},
            "encounter": {"reference": f"Encounter/{case.encounter_id}"},
            "performedDateTime": v["OPS-Datum"]}
        side = v.get("Lokalisation")
        if side:
            procedure["code"]["coding"][0]["extension"] = [
                _code_extension(_EXTENSION + "seitenlokalisation", self.rules.systems["side"], side)]
            lateral = self.rules.laterality[side]
            procedure["bodySite"] = [{"coding": [_coding(self.rules.systems["laterality"], lateral.code,
                                                         lateral.display)]}]
        return procedure

    def charge_item(self, case: _Case, v: dict[str, Any]) -> dict[str, Any] | str:
        start, end = v["Abrechnung-von"], v.get("Abrechnung-bis")
        if _before(end, start):
            return "column Abrechnung-bis: before Abrechnung-von"
        return {
            "resourceType": "ChargeItem",
            "id": _content_id("fee-", case.encounter_id, v["Entgeltart"], v["Entgeltbetrag"], start, end,
                              v["Entgeltanzahl"]),
            "status": "billable",
            "code": {"coding": [_coding(self.rules.systems["fee"], v["Entgeltart"])]},
            "subject": {"reference": f"Patient/{case.patient_id}"},
            "context": {"reference": f"Encounter/{case.encounter_id}"},
            "occurrencePeriod": {"start": start, **({"end": end} if end else {})},
            "quantity": {"value": v["Entgeltanzahl"]},
            "priceOverride": {"value": v["Entgeltbetrag"], "currency": "EUR"}}

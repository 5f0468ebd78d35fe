"""The laboratory system's HL7 v2.5 feed of one site, written from the HIS facts.

    LabFeedWriter(folder, context)   a SourceWriter: lab/messages.hl7
    escape(text)                     a field value with HL7's escape sequences (| ^ & ~ \\ CR LF)
    hl7_time(moment)                 FHIR date/dateTime -> HL7 DT/DTM (YYYYMMDD[HHMMSS+ZZZZ])

The file: UTF-8 (MSH-18 "UNICODE UTF-8"), messages one after another, every segment terminated
by CR as the standard prescribes, and one LF after each message's last CR. The LF is the common
file convention (hl7apy and python-hl7 strip it), lets line tools count messages, and makes the
file splittable on LF, because an escaped value never holds a raw CR or LF. Read it in binary or
with newline="" so CR is not translated.

Messages, per patient in the site's order, then by message time (MSH-7), ties A01, A08, ORU, A03:
- ADT^A01 (structure ADT_A01) at Encounter.period.start and ADT^A03 (ADT_A03) at period.end of
  every inpatient Encounter (class IMP): MSH, EVN, PID, PV1, and IN1 when the lab's record holds
  an insurance number. The HIS sends them (MSH-3 e.g. ORBIS) to the lab system (MSH-5 LAURIS).
- ADT^A08 (ADT_A01) during some stays: a ward transfer (EVN-4 02; the later messages of the stay
  carry the new location), or a correction of the patient's record (EVN-4 O): the messages before
  it carried a family name with two letters swapped, or no address; from the A08 on they carry
  the lab's spelling.
- ORU^R01 (ORU_R01) per Specimen with laboratory Observations: MSH, PID, PV1, ORC, OBR, one OBX
  per Observation (NM, LOINC, UCUM unit, range, flag, status F) with an occasional NTE comment,
  SPM. The lab system sends them back (MSH-7 = collection time plus a turnaround).

PID-3 is the HIS patient number (type MR, assigned by the facility); PID-5/7/8/11 come from
`patient.identity("lab")`, the lab's own spelling (missing fields stay empty). PV1-19 is the
Encounter's case number (VN), PV1-10 the department's §301 key, PV1-3 a ward/clinic location,
PV1-44/-45 admission and (A03) discharge, PV1-36 (A03) the discharge disposition's §301 key.
ORC-2/-3, OBR-2/-3 and SPM-2 carry the Specimen's accession number. Each patient with a message
is linked once by the patient number. Applications, wards, rates and comments: `lab_feed.yaml`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dic.errors import DefinitionError, Problem
from dic.synth.site_patient import Identity, SiteContext, SitePatient, accession, case_number

LAB_FEED_PATH = Path(__file__).with_name("lab_feed.yaml")
MESSAGES_FILE = "messages.hl7"
_BUFFER_BYTES = 1 << 20
_SEX = {"female": "F", "male": "M", "other": "O", "unknown": "U"}
_ESCAPES = str.maketrans({"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\",
                          "\r": "\\X0D\\", "\n": "\\X0A\\"})
_SPECIAL = re.compile(r"[\\|^&~\r\n]")
# message kinds in the order they take when their times are equal
_A01, _A08, _ORU, _A03 = range(4)


# ------------------------------------------------------------------ declarations
Pct = Annotated[float, Field(ge=0, le=100)]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Systems(_Entry):
    facility: str  # MSH-4/-6, assigning authority, location facility
    his: str  # sends ADT
    lis: str  # sends ORU


class Coded(_Entry):
    code: str
    display: str
    system: str = ""


class Updates(_Entry):
    transfer_pct: Pct
    name_correction_pct: Pct
    address_correction_pct: Pct
    transfer_reason: str
    correction_reason: str


class Insurer(_Entry):
    ik: str
    name: str


class LabFeedRules(_Entry):
    version: str
    processing_id: str
    accept_ack: str
    application_ack: str
    country: str
    character_set: str
    systems: dict[str, Systems]
    default_systems: Systems
    patient_classes: dict[str, str]
    adt_classes: list[str]
    wards: dict[str, str]
    default_ward: str
    stations_per_ward: int = Field(ge=2)  # a transfer needs another station
    rooms_per_station: int = Field(ge=1)
    beds_per_room: int = Field(ge=1)
    clinic_suffix: str
    emergency: Coded
    order: Coded
    specimen_types: dict[str, Coded]
    default_specimen_type: Coded
    turnaround_minutes: tuple[int, int]
    a08: Updates
    insurers: list[Insurer] = Field(min_length=1)
    insurance_plan: Coded
    comment_pct: Pct
    comments: list[str] = Field(min_length=1)

    def problems(self) -> list[Problem]:
        found = [Problem(f"/adt_classes/{n}", f"{c} has no patient class")
                 for n, c in enumerate(self.adt_classes) if c not in self.patient_classes]
        if self.a08.name_correction_pct + self.a08.address_correction_pct > 100:
            found.append(Problem("/a08", "name and address corrections exceed 100 %"))
        if not 0 <= self.turnaround_minutes[0] <= self.turnaround_minutes[1]:
            found.append(Problem("/turnaround_minutes", "must be [low, high] with 0 <= low <= high"))
        return found


def load_lab_feed_rules(path: Path = LAB_FEED_PATH) -> LabFeedRules:
    """The lab feed's declarations, validated; every problem is reported at once (DefinitionError)."""
    try:
        rules = LabFeedRules.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(path), problems) from error
    if problems := rules.problems():
        raise DefinitionError(str(path), problems)
    return rules


# ------------------------------------------------------------------ values
def escape(text: str) -> str:
    """`text` as an HL7 field value: delimiters become \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, CR/LF \\X0D\\ \\X0A\\."""
    return text.translate(_ESCAPES) if _SPECIAL.search(text) else text


def hl7_time(moment: str) -> str:
    """FHIR date or dateTime -> HL7 DT/DTM: 2024-12-03T11:03:00+01:00 -> 20241203110300+0100."""
    if len(moment) == 25:  # the HIS's form, seconds and an offset: drop the date's dashes, T and colons
        return moment.replace("-", "", 2).replace("T", "", 1).replace(":", "")
    if len(moment) <= 10:
        return moment.replace("-", "")
    return datetime.fromisoformat(moment).strftime("%Y%m%d%H%M%S%z")


@dataclass(slots=True)
class _Visit:
    """An Encounter as PV1 states it; an inpatient stay may move to another station."""

    klass: str  # PV1-2
    location: str  # PV1-3
    department: str  # PV1-10
    case: str  # PV1-19
    admit: str  # PV1-44, DTM
    discharge: str  # PV1-45, DTM
    disposition: str  # PV1-36
    ward: str
    description: str
    station: int = 0
    moved_to: str | None = None
    moved_at: datetime | None = None

    def pv1(self, facility: str, when: datetime, discharged: bool = False) -> str:
        location = self.moved_to if self.moved_at is not None and when >= self.moved_at else self.location
        head = f"PV1|1|{self.klass}|{location}|||||||{self.department}|||||||||{self.case}^^^{facility}^VN"
        if discharged:
            return f"{head}{'|' * 17}{self.disposition}{'|' * 8}{self.admit}|{self.discharge}"
        return f"{head}{'|' * 25}{self.admit}"


Event = tuple[datetime, int, int, str, Any]  # time, kind, sequence, MSH-7, payload


# ------------------------------------------------------------------ the writer
class LabFeedWriter:
    """The lab system's message file of one site: ADT events of inpatient stays, ORU results per specimen."""

    name = "lab"

    def __init__(self, folder: Path, context: SiteContext) -> None:
        self.rules = rules = load_lab_feed_rules()
        self.context = context
        self.rand = random.Random(f"{context.seed}:{context.site}:{self.name}")
        systems = rules.systems.get(context.site) or rules.default_systems.model_copy(
            update={"facility": "UK" + re.sub(r"[^A-Za-z0-9]", "", context.site.removeprefix("site-")).upper()[:8]})
        self.facility = fac = escape(systems.facility)
        self.his, self.lis = his, lis = escape(systems.his), escape(systems.lis)
        tail = (f"|{rules.processing_id}|{rules.version}|||{rules.accept_ack}|{rules.application_ack}"
                f"|{rules.country}|{rules.character_set}")
        self.msh = {kind: (f"MSH|^~\\&|{sender}|{fac}|{receiver}|{fac}|", f"||{message_type}|{fac[:8]}", tail)
                    for kind, sender, receiver, message_type in (
                        (_A01, his, lis, "ADT^A01^ADT_A01"), (_A08, his, lis, "ADT^A08^ADT_A01"),
                        (_A03, his, lis, "ADT^A03^ADT_A03"), (_ORU, lis, his, "ORU^R01^ORU_R01"))}
        self.adt_classes = set(rules.adt_classes)
        self.wards = {k: escape(v) for k, v in rules.wards.items()}
        self.panel = f"{rules.order.code}^{escape(rules.order.display)}^{rules.order.system}"
        self.specimen_kinds = {k: f"{v.code}^{escape(v.display)}^HL70487" for k, v in rules.specimen_types.items()}
        fallback, plan = rules.default_specimen_type, rules.insurance_plan
        self.default_specimen = f"{fallback.code}^{escape(fallback.display)}^HL70487"
        self.plan = f"{plan.code}^{escape(plan.display)}^L"
        self.comments = [escape(c) for c in rules.comments]
        self.comment_share = rules.comment_pct / 100
        self.until_comment = self._gap()
        self.shapes: dict[tuple[int, int, int, str], tuple[str, str, Any]] = {}  # see _shape
        self.care_units: dict[tuple[str, str, str], tuple[str, str, str, str, str]] = {}
        self.file = (folder / MESSAGES_FILE).open("w", encoding="utf-8", newline="", buffering=_BUFFER_BYTES)
        self.messages = 0

    # -------------------------------------------------------------- one patient
    def add(self, patient: SitePatient) -> None:
        encounters: dict[str, dict[str, Any]] = {}
        specimens: dict[str, dict[str, Any]] = {}
        results: dict[str, list[dict[str, Any]]] = {}  # Specimen reference -> its lab Observations
        for resource in patient.resources:
            kind = resource["resourceType"]
            if kind == "Observation":
                specimen = resource.get("specimen")
                if specimen is not None:
                    results.setdefault(specimen["reference"], []).append(resource)
            elif kind == "Encounter":
                encounters["Encounter/" + resource["id"]] = resource
            elif kind == "Specimen":
                specimens["Specimen/" + resource["id"]] = resource
        visits: dict[str, _Visit] = {}
        events: list[Event] = []
        rand, a08 = self.rand, self.rules.a08
        for reference, encounter in encounters.items():
            if encounter["class"]["code"] not in self.adt_classes:
                continue
            visit = visits[reference] = self._visit(encounter)
            period = encounter["period"]
            start, end = datetime.fromisoformat(period["start"]), datetime.fromisoformat(period["end"])
            events.append((start, _A01, len(events), visit.admit, visit))
            events.append((end, _A03, len(events), visit.discharge, visit))
            if rand.random() * 100 < a08.transfer_pct:
                visit.moved_at = moment = start + (end - start) * (0.1 + 0.8 * rand.random())
                visit.moved_to = self._bed(visit, avoid=visit.station)[1]
                events.append((moment, _A08, len(events), _dtm(moment), (visit, a08.transfer_reason)))
        stays, (low, high) = len(events), self.rules.turnaround_minutes
        for reference, observations in results.items():
            specimen = specimens.get(reference)
            if specimen is None:  # results filed without their specimen: no order to report them under
                continue
            encounter_reference = observations[0].get("encounter", {}).get("reference", "")
            visit = visits.get(encounter_reference)
            if visit is None and encounter_reference in encounters:
                visit = visits[encounter_reference] = self._visit(encounters[encounter_reference])
            collected = specimen.get("collection", {}).get("collectedDateTime") or observations[0]["effectiveDateTime"]
            moment = datetime.fromisoformat(collected) + timedelta(minutes=low + int(rand.random() * (high - low + 1)))
            events.append((moment, _ORU, len(events), _dtm(moment), (specimen, observations, visit, collected)))
        if not events:
            return
        identity = patient.identity(self.name)
        corrected_at, earlier = self._correction(identity, events)
        pid = self._pid(patient.patient_number, identity)
        pid_before = pid if corrected_at is None else self._pid(patient.patient_number, earlier)
        insurance = self._insurance(identity) if stays else ""  # IN1 goes with ADT messages only
        events.sort()  # the sequence numbers are unique: payloads are never compared
        write = self.file.write
        for when, kind, _, time, payload in events:
            before = corrected_at is not None and when < corrected_at
            write(self._message(kind, time, when, pid_before if before else pid, insurance, payload))
        self.context.link(self.name, patient.patient_number, patient.person_id)

    def _correction(self, identity: Identity, events: list[Event]) -> tuple[datetime | None, Identity]:
        """Maybe an A08 that corrects the record during the first stay: its time (the event is
        appended) and the record the messages before it carried."""
        admissions = [e for e in events if e[1] == _A01]
        if not admissions:
            return None, identity
        rand, a08 = self.rand, self.rules.a08
        u, share = rand.random() * 100, rand.random()
        family = identity.family or ""
        swaps = [i for i in range(1, len(family) - 1) if family[i] != family[i + 1] and " " not in family[i:i + 2]]
        if u < a08.name_correction_pct and swaps:
            i = swaps[int(share * len(swaps))]
            earlier = replace(identity, family=family[:i] + family[i + 1] + family[i] + family[i + 2:])
        elif (a08.name_correction_pct <= u < a08.name_correction_pct + a08.address_correction_pct
              and (identity.street or identity.postal_code or identity.city)):
            earlier = replace(identity, street=None, postal_code=None, city=None)
        else:
            return None, identity
        start, _, _, _, visit = min(admissions)
        end = next(e[0] for e in events if e[1] == _A03 and e[4] is visit)
        moment = start + (end - start) * (0.05 + 0.9 * share)
        events.append((moment, _A08, len(events), _dtm(moment), (visit, a08.correction_reason)))
        return moment, earlier

    # -------------------------------------------------------------- segments
    def _visit(self, encounter: dict[str, Any]) -> _Visit:
        code, period = encounter["class"]["code"], encounter["period"]
        service = encounter.get("serviceType", {}).get("coding", [{}])[0]
        key = (code, service.get("code", ""), service.get("display", ""))
        klass, department, ward, description, place = self.care_units.get(key) or self._care_unit(key)
        visit = _Visit(klass, place, department, escape(case_number(encounter)), hl7_time(period["start"]), "", "",
                       ward, description)
        if code in self.adt_classes:  # a stay: a bed, a discharge
            disposition = encounter.get("hospitalization", {}).get("dischargeDisposition", {}).get("coding", [{}])
            visit.discharge, visit.disposition = hl7_time(period["end"]), escape(disposition[0].get("code", ""))
            visit.station, visit.location = self._bed(visit)
        return visit

    def _care_unit(self, key: tuple[str, str, str]) -> tuple[str, str, str, str, str]:
        """Per class and department: PV1-2, PV1-10, ward, description, and the location off the wards
        (outpatients in the department's clinic, emergencies in the emergency department)."""
        code, department, display = key
        rules, fac = self.rules, self.facility
        klass, description = rules.patient_classes.get(code, "U"), escape(display)
        ward = self.wards.get(department) or escape(rules.default_ward)
        place = ("" if code in self.adt_classes
                 else f"{escape(rules.emergency.code)}^^^{fac}^^D^^^{escape(rules.emergency.display)}" if klass == "E"
                 else f"{ward}{escape(rules.clinic_suffix)}^^^{fac}^^C^^^{description}")
        found = self.care_units[key] = (klass, escape(department), ward, description, place)
        return found

    def _bed(self, visit: _Visit, avoid: int = 0) -> tuple[int, str]:
        """A bed on a station of the visit's ward (not on station `avoid`): (station, PV1-3)."""
        rules, r = self.rules, self.rand.random
        station = 1 + int(r() * rules.stations_per_ward)
        if station == avoid:
            station = station % rules.stations_per_ward + 1
        room, bed = 1 + int(r() * rules.rooms_per_station), 1 + int(r() * rules.beds_per_room)
        return station, f"{visit.ward}{station}^{station}{room:02d}^{bed}^{self.facility}^^N^^^{visit.description}"

    def _pid(self, number: str, who: Identity) -> str:
        if who.family or who.given:
            name = f"{escape(who.family or '')}^{escape(who.given or '')}^^^^^L"
            if who.birth_name and who.birth_name != who.family:
                name += f"~{escape(who.birth_name)}^{escape(who.given or '')}^^^^^B"
        else:
            name = '""'  # PID-5 is required: HL7's explicit null when the record holds no name
        address = ""
        if who.street or who.postal_code or who.city:
            address = (f"{escape(who.street or '')}^^{escape(who.city or '')}^^{escape(who.postal_code or '')}"
                       f"^{self.rules.country}^H")
        birth, sex = (who.birth_date or "").replace("-", ""), _SEX.get(who.sex or "", "")
        # PID-3 patient number, -5 name, -7 birth date, -8 sex, -11 address
        return f"PID|1||{escape(number)}^^^{self.facility}^MR||{name}||{birth}|{sex}|||{address}".rstrip("|")

    def _insurance(self, who: Identity) -> str:
        if not who.insurance_number:
            return ""
        insurer = self.rules.insurers[int(self.rand.random() * len(self.rules.insurers))]
        # IN1-2 plan, -3 insurer's IK, -4 insurer, -36 policy number: the KVNR
        return (f"IN1|1|{self.plan}|{insurer.ik}^^^^NIIP|{escape(insurer.name)}{'|' * 32}"
                f"{escape(who.insurance_number)}")

    def _message(self, kind: int, time: str, when: datetime, pid: str, insurance: str, payload: Any) -> str:
        self.messages += 1
        head, middle, tail = self.msh[kind]
        msh = f"{head}{time}{middle}{self.messages:010d}{tail}"  # MSH-7 time, -9 type, -10 control id
        if kind == _ORU:
            specimen, observations, visit, collected = payload
            segments = [msh, pid]
            if visit is not None:
                segments.append(visit.pv1(self.facility, when))
            self._order(segments, specimen, observations, collected, time)
            return "\r".join(segments) + "\r\n"
        visit, reason = payload if kind == _A08 else (payload, "")
        event = "A01" if kind == _A01 else "A03" if kind == _A03 else "A08"
        segments = [msh, f"EVN|{event}|{time}||{reason}||{time}", pid, visit.pv1(self.facility, when, kind == _A03)]
        if insurance:
            segments.append(insurance)
        return "\r".join(segments) + "\r\n"

    def _order(self, segments: list[str], specimen: dict[str, Any], observations: list[dict[str, Any]],
               collected: str, reported: str) -> None:
        """ORC, OBR, an OBX (and maybe an NTE) per result, SPM."""
        number = escape(accession(specimen))
        placer, filler, taken = f"{number}^{self.his}", f"{number}^{self.lis}", hl7_time(collected)
        segments.append(f"ORC|RE|{placer}|{filler}||CM||||{reported}")  # -5 status, -9 transaction time
        segments.append(f"OBR|1|{placer}|{filler}|{self.panel}|||{taken}{'|' * 15}{reported}|||F")  # -7, -22, -25
        shapes, until_comment = self.shapes, self.until_comment
        for n, observation in enumerate(observations, start=1):
            try:  # the HIS's lab Observations: the shared parts of the OBX are cached by their elements
                quantity = observation["valueQuantity"]
                elements = (observation["code"], observation["interpretation"], observation["referenceRange"])
                key = (id(elements[0]), id(elements[1]), id(elements[2]), quantity["code"])
                moment = observation["effectiveDateTime"]
            except KeyError:
                quantity, key, moment = observation.get("valueQuantity"), None, observation.get("effectiveDateTime")
            shape = shapes.get(key) if key is not None else None
            if shape is None:
                shape = self._shape(observation, key)
            if quantity is not None:
                value = str(quantity["value"])
                if "e" in value:  # NM is plain decimal notation
                    value = f"{quantity['value']:.12f}".rstrip("0").rstrip(".")
            else:
                value = escape(str(observation.get("valueString", "")))
            observed = taken if moment is None or moment == collected else hl7_time(moment)
            segments.append(f"OBX|{n}|{shape[0]}||{value}|{shape[1]}{observed}")
            until_comment -= 1
            if until_comment == 0:
                segments.append(f"NTE|1|L|{self.comments[int(self.rand.random() * len(self.comments))]}")
                until_comment = self._gap()
        self.until_comment = until_comment
        kind = self.specimen_kinds.get(specimen.get("type", {}).get("coding", [{}])[0].get("code", ""),
                                       self.default_specimen)
        segments.append(f"SPM|1|^{number}&{self.lis}||{kind}{'|' * 13}{taken}")  # -2 id, -4 type, -17 collected

    def _shape(self, observation: dict[str, Any], key: tuple[int, int, int, str] | None) -> tuple[str, str, Any]:
        """An OBX around its value and time: "<OBX-2>|<OBX-3>" and "<OBX-6>|-7|-8|||F|||" (-11 status).
        Cached per `key` (ids of the code, interpretation and range elements, which the generator shares
        between resources; the entry holds them, so no other object can take their ids)."""
        quantity, flag = observation.get("valueQuantity"), observation.get("interpretation")
        unit = (quantity or {}).get("code") or (quantity or {}).get("unit") or ""
        ranges = observation.get("referenceRange")
        tail = (f"{escape(unit) + '^^UCUM' if unit else ''}|{_limits(ranges) if ranges else ''}|"
                f"{flag[0]['coding'][0]['code'] if flag else ''}|||F|||")
        shape = (f"{'ST' if quantity is None else 'NM'}|{_test(observation['code'])}", tail,
                 (observation["code"], flag, ranges))
        if key is not None:
            if len(self.shapes) >= 100_000:  # bounded, should a generator not share its elements
                self.shapes.clear()
            self.shapes[key] = shape
        return shape

    def _gap(self) -> int:
        """Results until the next comment: geometric, as a draw per result would give, at one draw per comment."""
        share = self.comment_share
        if share <= 0:
            return 1 << 62
        return 1 if share >= 1 else 1 + int(math.log(1.0 - self.rand.random()) / math.log(1.0 - share))

    def close(self) -> dict[str, int]:
        self.file.close()
        return {MESSAGES_FILE: self.messages}


def _dtm(moment: datetime) -> str:
    return hl7_time(moment.isoformat(timespec="seconds"))  # several times faster than strftime


def _test(code: dict[str, Any]) -> str:
    """OBX-3: LOINC^display^LN."""
    coding = code["coding"][0]
    return f"{escape(coding['code'])}^{escape(coding.get('display', ''))}^LN"


def _limits(ranges: list[dict[str, Any]]) -> str:
    """OBX-7: "low-high", ">low" or "<high"."""
    low, high = ranges[0].get("low", {}).get("value"), ranges[0].get("high", {}).get("value")
    if low is not None and high is not None:
        return f"{low}-{high}"
    return f">{low}" if low is not None else f"<{high}" if high is not None else ""

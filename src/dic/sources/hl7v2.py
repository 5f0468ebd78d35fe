"""HL7 v2 messages (v2.3 to 2.6; 2.7 and 2.8 read leniently) as FHIR R4 resources shaped like the MII core data set.

    read_hl7v2(path)                          -> SourceResource | Rejection | PatientMerge, per message of a file
    message_records(text, source, position)   -> the records of one message (the MLLP listener's entry)
    parse_header(text)                        -> MessageHeader, or HL7Error when the message cannot be accepted
    is_hl7v2_file(path)                       -> bool, for auto-detection
    SUPPORTED                                 the (message type, trigger event) pairs mapped

Files: segments end with CR, LF or CRLF; a UTF-8 BOM, MLLP framing bytes (VT, FS) and batch envelopes
(FHS, BHS, BTS, FTS) are tolerated; every MSH starts a message. MSH-18 names the character set (UTF-8
when empty, falling back to latin-1). Messages are split into fields by python-hl7 (`hl7.parse`); values
are unescaped here (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X..\\ .br), because python-hl7 decodes \\Xhh\\ byte by byte
as latin-1 and logs an error for every \\Z..\\ sequence.

Mapping (code tables in hl7v2.yaml):
- PID -> Patient (MII Person): id = the patient number (PID-3 of type MR, else PI, else the first; PID-2
  before v2.5), names (PID-5, current and birth name), birth date, sex, addresses, death (PID-29/-30);
  the KVNR from IN1-36 or a PID-3 identifier of type KVZ10.
- ADT A01/A03/A04/A08/A11 -> Patient + Encounter (PV1; MII Kontakt Gesundheitseinrichtung), id = the
  visit number PV1-19, else a hash of the patient number and PV1-44. A40 -> Patient + PatientMerge (MRG-1).
- ORU^R01 -> Patient + an Observation (MII ObservationLab) per OBX + a Specimen per SPM.
Ids are the source's own values, made FHIR-safe by `fhir_id` (injective; over 64 characters: a hash).
A bad message is one Rejection; a bad OBX, SPM or PV1 rejects only its resource, naming segment and field
("OBX[3]-5: 'abc' is not a number (OBX-2 NM)"). Reasons never quote an identifying value.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cache, lru_cache
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import hl7
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dic.errors import DefinitionError, InputError, Problem
from dic.sources.record import PatientMerge, Rejection, SourceResource

SUPPORTED = frozenset({("ADT", "A01"), ("ADT", "A03"), ("ADT", "A04"), ("ADT", "A08"), ("ADT", "A11"),
                       ("ADT", "A40"), ("ORU", "R01")})
TABLES_PATH = Path(__file__).with_name("hl7v2.yaml")
FILE_SUFFIXES = (".hl7", ".hl7v2")
RAW_LIMIT_BYTES = 64 * 1024
BERLIN = ZoneInfo("Europe/Berlin")

PATIENT_PROFILE = "https://www.medizininformatik-initiative.de/fhir/core/modul-person/StructureDefinition/Patient"
ENCOUNTER_PROFILE = ("https://www.medizininformatik-initiative.de/fhir/core/modul-fall/StructureDefinition/"
                     "KontaktGesundheitseinrichtung")
LAB_PROFILE = "https://www.medizininformatik-initiative.de/fhir/core/modul-labor/StructureDefinition/ObservationLab"
SPECIMEN_PROFILE = "https://www.medizininformatik-initiative.de/fhir/ext/modul-biobank/StructureDefinition/Specimen"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
KVNR_SYSTEM = "http://fhir.de/sid/gkv/kvid-10"
LABORATORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory",
              "display": "Laboratory"}
CONTACT_LEVEL = {"coding": [{"system": "http://fhir.de/CodeSystem/Kontaktebene", "code": "einrichtungskontakt",
                             "display": "Einrichtungskontakt"}]}
DEPARTMENT_SYSTEM = "http://fhir.de/CodeSystem/dkgev/Fachabteilungsschluessel"
DISCHARGE_SYSTEM = "http://fhir.de/CodeSystem/dgkev/Entlassungsgrund"
_KVNR = re.compile(r"[A-Z][0-9]{9}")
_SAFE_ID = re.compile(r"[A-Za-z0-9\-]{1,64}")  # "." is this escape's own marker
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_TS = re.compile(r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?(\.[0-9]{1,4})?([+-][0-9]{4})?")
_RANGE = re.compile(r"\s*([+-]?[0-9.]+)\s*-\s*([+-]?[0-9.]+)\s*")
_LINE = re.compile(rb"([^\r\n]*)(\r\n|\r|\n)")
_BREAK = re.compile(rb"\r\n|\r|\n")
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_LEAD = b"\xef\xbb\xbf\x0b"  # BOM and MLLP start byte, before a segment
_CHUNK = 1 << 20
_NULL = '""'  # HL7's explicit null

Record = SourceResource | Rejection | PatientMerge


# ------------------------------------------------------------------ tables
class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatientClass(_Table):
    code: str
    display: str
    contact: str
    contact_display: str


class HL7Tables(_Table):
    """hl7v2.yaml: HL7 v2 table values and their FHIR codes."""

    versions: list[str]
    lenient_versions: list[str]
    charsets: dict[str, str]
    sexes: dict[str, str]
    name_uses: dict[str, str]
    current_name_types: list[str]
    birth_name_types: list[str]
    address_kinds: dict[str, dict[str, str]]
    countries: dict[str, str]
    patient_classes: dict[str, PatientClass]
    encounter_status: dict[str, str]
    result_status: dict[str, str]
    no_value_statuses: list[str]
    interpretations: dict[str, str]
    coding_systems: dict[str, str]
    ucum_systems: list[str]
    comparators: dict[str, str]


@cache
def hl7v2_tables(path: Path = TABLES_PATH) -> HL7Tables:
    """The adapter's code tables, validated (DefinitionError lists every problem)."""
    try:
        return HL7Tables.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except ValidationError as error:
        problems = [Problem("/" + "/".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        raise DefinitionError(str(path), problems) from error


# ------------------------------------------------------------------ header
class HL7Error(InputError):
    """A message that cannot be accepted, with the segment and field at fault and an HL7 error code
    (table 0357: 100 segment sequence, 101 required field missing, 102 data type, 103 table value,
    200 message type, 201 trigger event, 203 version, 207 application error) for the ACK's ERR segment."""

    def __init__(self, reason: str, segment: str | None = None, field: int | None = None, code: int = 207):
        self.reason, self.segment, self.field, self.code = reason, segment, field, code
        where = f"{segment}-{field}" if segment and field else segment or ""
        super().__init__(f"{where}: {reason}" if where else reason)


@dataclass(frozen=True, slots=True)
class MessageHeader:
    """What MSH says. Applications and facilities are the fields as sent (components joined by the
    component separator, escapes kept), so that an ACK can echo them."""

    control_id: str  # MSH-10
    message_type: tuple[str, str]  # MSH-9.1, MSH-9.2, e.g. ("ADT", "A01")
    structure: str  # MSH-9.3, may be empty
    version: str  # MSH-12.1
    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    receiving_application: str  # MSH-5
    receiving_facility: str  # MSH-6
    charset: str  # the Python codec MSH-18 names ("utf-8" when empty)
    declared_charset: str  # MSH-18 as sent
    time: str  # MSH-7 as sent
    processing_id: str  # MSH-11.1
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    field_separator: str  # MSH-1
    encoding_characters: str  # MSH-2


def parse_header(text: bytes | str) -> MessageHeader:
    """The header of one message (bytes or text; CR, LF or CRLF between segments); HL7Error when the
    message cannot be accepted: no MSH first, bad delimiters, no MSH-9/-10/-12, an unsupported version
    or character set, or bytes that are not in the declared character set."""
    segments = _segments(text)
    return _header(segments[0] if segments else b"", text)[0]


def _header(first: bytes | str, text: bytes | str) -> tuple[MessageHeader, str]:
    """The header, and the message decoded in its character set."""
    tables = hl7v2_tables()
    msh = first.decode("latin-1") if isinstance(first, bytes) else first  # MSH-1..-18 are ASCII
    if not msh.startswith("MSH") or len(msh) < 8:
        raise HL7Error("the message does not start with an MSH segment", "MSH", code=100)
    separator = msh[3]
    fields = msh.split(separator)
    encoding = fields[1]
    if separator.isalnum() or separator.isspace() or len(encoding) < 4 or len(set(encoding[:4]) | {separator}) != 5 \
            or any(c.isalnum() or c.isspace() for c in encoding[:4]):
        raise HL7Error("MSH-1/MSH-2 do not declare five distinct delimiters (e.g. |^~\\&)", "MSH", 2, code=102)
    component, repetition = encoding[0], encoding[1]

    def at(n: int) -> str:  # MSH-n; fields[0] is "MSH" and fields[1] MSH-2
        return fields[n - 1].strip() if n - 1 < len(fields) else ""

    kind = at(9).split(repetition)[0].split(component)
    if len(kind) < 2 or not kind[0].strip() or not kind[1].strip():
        raise HL7Error("no message type and trigger event (e.g. ADT^A01)", "MSH", 9, code=101)
    control_id = at(10).split(component)[0]
    if not control_id:
        raise HL7Error("no message control id", "MSH", 10, code=101)
    version = at(12).split(component)[0].strip()
    if not version:
        raise HL7Error("no version id", "MSH", 12, code=101)
    if version not in tables.versions and version not in tables.lenient_versions:
        raise HL7Error(f"version '{version}' is not supported (supported: "
                       f"{', '.join(tables.versions + tables.lenient_versions)})", "MSH", 12, code=203)
    declared = at(18)
    charset = tables.charsets.get(declared.split(repetition)[0].strip().upper())
    if charset is None:
        raise HL7Error(f"character set '{declared}' is not supported (supported: "
                       f"{', '.join(c for c in tables.charsets if c)})", "MSH", 18, code=103)
    if isinstance(text, str):
        decoded = text
    else:
        try:
            decoded = text.decode(charset)
        except UnicodeDecodeError as error:
            if declared:
                raise HL7Error(f"the message is not valid {charset} as MSH-18 declares (byte {error.start})",
                               "MSH", 18, code=102) from error
            decoded = text.decode("latin-1")  # undeclared and not UTF-8: the common western fallback
    header = MessageHeader(control_id, (kind[0].strip(), kind[1].strip()), kind[2].strip() if len(kind) > 2 else "",
                           version, at(3), at(4), at(5), at(6), charset, declared, at(7), at(11).split(component)[0],
                           at(15), at(16), separator, encoding)
    return header, decoded


def _segments(text: bytes | str) -> list[Any]:
    """The non-blank segments of one message, framing bytes removed, batch envelopes dropped."""
    if isinstance(text, str):
        parts = [p.lstrip("\ufeff\x0b").rstrip("\x1c") for p in re.split("\r\n|\r|\n", text)]
        return [p for p in parts if p.strip() and p[:3] not in ("FHS", "BHS", "BTS", "FTS")]
    pieces = [p.lstrip(_LEAD).rstrip(b"\x1c") for p in _BREAK.split(text)]
    return [p for p in pieces if p.strip() and p[:3] not in _BATCH_SEGMENTS]


# ------------------------------------------------------------------ files
def is_hl7v2_file(path: Path) -> bool:
    """An HL7 v2 file by name (.hl7, .hl7v2), or a .txt file whose first bytes are an MSH segment."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(FILE_SUFFIXES):
        return True
    if not name.endswith(".txt") or not path.is_file():
        return False
    with path.open("rb") as stream:
        head = stream.read(64)
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b"\x0b\r\n").startswith(b"MSH|")


def read_hl7v2(path: Path) -> Iterator[Record]:
    """The records of every message of an HL7 v2 file, in order; position "message N (line L)".

    A file's line is any CR, LF or CRLF. Segments before the first MSH are rejected; so is a last
    segment without terminator in a file whose segments otherwise end with CR (a truncated file)."""
    path, file = Path(path), str(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with path.open("rb") as stream:
        for message in _file_messages(stream):
            position = f"message {message.number} (line {message.line})"
            raw = b"\r".join(message.segments)
            if message.number == 0:
                yield _reject(file, f"line {message.line}", "segments before the first MSH segment", raw)
            elif message.truncated:
                yield _reject(file, position, f"truncated: the last segment ({message.segments[-1][:3].decode('latin-1')})"
                              " has no segment terminator (CR)", raw)
            else:
                yield from message_records(raw, file, position)


@dataclass(slots=True)
class _FileMessage:
    number: int  # 0: lines before the first MSH
    line: int
    segments: list[bytes] = field(default_factory=list)
    truncated: bool = False


def _file_messages(stream: IO[bytes]) -> Iterator[_FileMessage]:
    message, uses_cr = _FileMessage(0, 1), False
    for line_no, (segment, terminator) in enumerate(_file_lines(stream), start=1):
        uses_cr = uses_cr or terminator.startswith(b"\r")
        segment = segment.lstrip(_LEAD).rstrip(b"\x1c")
        if not segment.strip() or segment[:3] in _BATCH_SEGMENTS:
            continue
        if segment[:3] == b"MSH":
            if message.segments:
                yield message
            message = _FileMessage(message.number + 1, line_no)
        message.segments.append(segment)
        message.truncated = uses_cr and not terminator
    if message.segments:
        yield message


def _file_lines(stream: IO[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """(line, its terminator) of a binary stream, read in chunks; a CRLF split between chunks stays one."""
    carry = b""
    while True:
        chunk = stream.read(_CHUNK)
        data = carry + chunk
        end = len(data) - 1 if chunk and data.endswith(b"\r") else len(data)  # a CR may be half a CRLF
        done = 0
        for match in _LINE.finditer(data, 0, end):
            yield match.group(1), match.group(2)
            done = match.end()
        carry = data[done:]
        if not chunk:
            if carry:
                yield carry, b""
            return


# ------------------------------------------------------------------ one message
def message_records(text: bytes | str, source: str, position: str) -> list[Record]:
    """The records of one message: its resources, rejections and (A40) a PatientMerge.

    A message that cannot be read at all (see `parse_header`), of an unsupported type, without a
    usable PID or that python-hl7 cannot parse, is one Rejection."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    segments = _segments(text)

    def reject(reason: str) -> list[Record]:
        return [_reject(source, position, reason, raw)]

    try:
        header, decoded = _header(segments[0] if segments else b"", text)
    except HL7Error as error:
        return reject(str(error))
    if sum(1 for s in segments if s[:3] in ("MSH", b"MSH")) > 1:
        return reject("more than one MSH segment: one message expected")
    if header.message_type not in SUPPORTED:
        return reject(f"message type {'^'.join(header.message_type)} is not supported (supported: "
                      f"{', '.join('^'.join(t) for t in sorted(SUPPORTED))})")
    try:
        message = hl7.parse("\r".join(_segments(decoded)))
    except Exception as error:  # noqa: BLE001 -- python-hl7 raises ParseException, IndexError...: unparsable
        return reject(f"not parsable as HL7 v2 ({type(error).__name__}: {error})")
    mapping = _Mapping(header, _Values.of(header), source, position, raw)
    return mapping.run(message)


def _reject(source: str, position: str, reason: str, raw: bytes) -> Rejection:
    return Rejection(source, position, reason, raw[:RAW_LIMIT_BYTES], len(raw))


# ------------------------------------------------------------------ values
@dataclass(frozen=True, slots=True)
class _Values:
    """Reads unescaped values out of python-hl7's segments (Field > Repetition > Component > str)."""

    delimiters: dict[str, str]  # escape letter -> delimiter
    sequences: re.Pattern[str]
    escape: str
    charset: str

    @staticmethod
    def of(header: MessageHeader) -> _Values:
        return _values(header.field_separator, header.encoding_characters[:4], header.charset)

    def reps(self, segment: Any, n: int) -> list[Any]:
        """The repetitions of field n (segment[n] is field n, also for MSH)."""
        node = segment[n] if n < len(segment) else ""
        if isinstance(node, str):
            return [node] if node else []
        return list(node) if any(str(r) for r in node) else []

    def get(self, segment: Any, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """Field n, component `comp`, subcomponent `sub` (1-based, as HL7 counts) of repetition `rep`."""
        node = segment[n] if n < len(segment) else ""
        return self.part(node, rep, comp - 1, sub - 1)

    def part(self, node: Any, *path: int) -> str:
        for i in path:
            if isinstance(node, str):
                node = node if i == 0 else ""
            else:
                node = node[i] if i < len(node) else ""
        while not isinstance(node, str):
            node = node[0] if len(node) else ""
        return self.unescape(node).strip()

    def comp(self, rep: Any, comp: int, sub: int = 1) -> str:
        """Component `comp` (1-based) of one repetition."""
        return self.part(rep, comp - 1, sub - 1)

    def unescape(self, text: str) -> str:
        if text == _NULL:
            return ""
        if self.escape not in text:
            return text
        return self.sequences.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        sequence = match.group(1)
        if sequence in self.delimiters:
            return self.delimiters[sequence]
        if sequence == ".br":
            return "\n"
        if sequence[:1] == "X" and len(sequence) > 1:
            try:
                return bytes.fromhex(sequence[1:]).decode(self.charset, "replace")
            except ValueError:
                return ""
        return ""  # highlighting (H, N), character set switches (C, M), local (Z): no text


@lru_cache(maxsize=32)
def _values(field_separator: str, encoding: str, charset: str) -> _Values:
    component, repetition, escape, subcomponent = encoding
    delimiters = {"F": field_separator, "S": component, "T": subcomponent, "R": repetition, "E": escape}
    pattern = re.compile(f"{re.escape(escape)}([^{re.escape(escape)}]*){re.escape(escape)}")
    return _Values(delimiters, pattern, escape, charset)


def fhir_datetime(ts: str) -> str:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) -> FHIR date or dateTime; a time without
    offset is Europe/Berlin time. ValueError when it is no valid timestamp."""
    match = _TS.fullmatch(ts.strip())
    if match is None:
        raise ValueError("not an HL7 timestamp (YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ])")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    date(int(year), int(month or 1), int(day or 1))  # raises for 2024-02-30
    if hour is None:
        return "-".join(p for p in (year, month, day) if p)
    if day is None:
        raise ValueError("a time needs a full date")
    zone: Any = BERLIN
    if offset:
        hours, minutes = int(offset[1:3]), int(offset[3:])
        if hours > 14 or minutes > 59:
            raise ValueError("offset out of range")
        delta = timedelta(hours=hours, minutes=minutes)
        zone = timezone(-delta if offset[0] == "-" else delta)
    micro = round(float(fraction) * 1_000_000) if fraction else 0
    moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0),
                      min(micro, 999_999), tzinfo=zone)
    return moment.isoformat(timespec="milliseconds" if fraction else "seconds")


def fhir_id(value: str) -> str:
    """A source id as a FHIR id: kept when it is letters, digits and "-" (up to 64); other characters
    escaped as ".XX" (UTF-8 hex), so different values stay different; too long: "h-" + a SHA-256 prefix."""
    if _SAFE_ID.fullmatch(value):
        return value
    escaped = "".join(c if c.isascii() and (c.isalnum() or c == "-") else
                      "".join(f".{b:02X}" for b in c.encode("utf-8")) for c in value)
    if len(escaped) <= 64:
        return escaped
    return "h-" + hashlib.sha256(value.encode("utf-8")).hexdigest()[:40]


def _number(text: str) -> int | float:
    return int(text) if text.lstrip("+-").isdigit() else float(text)


def _urn(kind: str, name: str) -> str:
    return f"urn:dic:hl7v2:{kind}:{quote(name or 'unknown', safe='')}"


# ------------------------------------------------------------------ mapping
class _Problem(Exception):  # one resource cannot be made: becomes a Rejection
    pass


@dataclass
class _Mapping:
    """One parsed message -> records."""

    header: MessageHeader
    v: _Values
    source: str
    position: str
    raw: bytes
    records: list[Record] = field(default_factory=list)
    patient_id: str = ""
    facility: str = ""
    encounter: dict[str, str] | None = None  # ORU: the reference PV1-19 gives

    def reject(self, reason: str) -> None:
        self.records.append(_reject(self.source, self.position, reason, self.raw))

    def emit(self, resource: dict[str, Any]) -> None:
        self.records.append(SourceResource(resource, self.source, self.position))

    def run(self, message: Any) -> list[Record]:
        kind, trigger = self.header.message_type
        self.facility = self.header.sending_facility.split(self.header.encoding_characters[0])[0]
        segments = list(message)
        pids = [s for s in segments if str(s[0]) == "PID"]
        if not pids:
            self.reject("PID: segment missing")
            return self.records
        pid = pids[0]
        number = self._patient_number(pid)
        if number is None:
            self.reject("PID-3: no patient identifier (nor PID-2)")
            return self.records
        self.patient_id = fhir_id(number[0])
        try:
            self.emit(self._patient(pid, number, [s for s in segments if str(s[0]) == "IN1"]))
        except _Problem as problem:
            self.reject(str(problem))
        if kind == "ORU":
            self._results(segments)
        elif trigger == "A40":
            self._merge(segments)
        else:
            self._encounter(segments, trigger)
        return self.records

    # -------------------------------------------------------------- Patient
    def _patient_number(self, pid: Any) -> tuple[str, str, str] | None:
        """(patient number, assigning authority, type code) from PID-3 (MR, else PI, else the first), else PID-2."""
        for n in (3, 2):
            ids = [self._cx(rep) for rep in self.v.reps(pid, n)]
            ids = [i for i in ids if i[0] and i[2] != "KVZ10"]
            for wanted in ("MR", "PI", None):
                found = next((i for i in ids if wanted is None or i[2] == wanted), None)
                if found is not None:
                    return found
        return None

    def _cx(self, rep: Any) -> tuple[str, str, str]:
        """CX: (id, assigning authority namespace or universal id, identifier type code)."""
        v = self.v
        return v.comp(rep, 1), v.comp(rep, 4) or v.comp(rep, 4, 2), v.comp(rep, 5).upper()

    def _patient(self, pid: Any, number: tuple[str, str, str], insurances: list[Any]) -> dict[str, Any]:
        v, tables = self.v, hl7v2_tables()
        value, authority, _ = number
        identifiers = [{"use": "usual", "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                        "system": _urn("patient-number", authority or self.facility), "value": value}]
        kvnr = self._kvnr(pid, insurances)
        if kvnr:
            identifiers.append({"use": "official", "type": {"coding": [
                {"system": "http://fhir.de/CodeSystem/identifier-type-de-basis", "code": "KVZ10"}]},
                "system": KVNR_SYSTEM, "value": kvnr})
        patient: dict[str, Any] = {"resourceType": "Patient", "id": self.patient_id,
                                   "meta": {"profile": [PATIENT_PROFILE]}, "identifier": identifiers}
        names = self._names(pid)
        if names:
            patient["name"] = names
        sex = v.get(pid, 8).upper()
        if sex:
            if sex not in tables.sexes:
                raise _Problem(f"PID-8: sex code is not one of {', '.join(tables.sexes)} (table 0001)")
            patient["gender"] = tables.sexes[sex]
        born = v.get(pid, 7)
        if born:
            try:
                patient["birthDate"] = fhir_datetime(born[:8])
            except ValueError as error:
                raise _Problem("PID-7: birth date is not a valid HL7 date (YYYY[MM[DD]])") from error
        addresses = [a for rep in v.reps(pid, 11) if (a := self._address(rep))]
        if addresses:
            patient["address"] = addresses
        died, dead = v.get(pid, 29), v.get(pid, 30).upper()
        if died:
            try:
                patient["deceasedDateTime"] = fhir_datetime(died)
            except ValueError as error:
                raise _Problem(f"PID-29: death date/time is not a valid HL7 timestamp ({error})") from error
        elif dead in ("Y", "N"):
            patient["deceasedBoolean"] = dead == "Y"
        return patient

    def _kvnr(self, pid: Any, insurances: list[Any]) -> str | None:
        """The KVNR: a PID-3 identifier of type KVZ10, else IN1-36 (policy number) in KVNR shape."""
        v = self.v
        for rep in v.reps(pid, 3):
            value, _, kind = self._cx(rep)
            if kind == "KVZ10" and _KVNR.fullmatch(value.upper()):
                return value.upper()
        for in1 in insurances:
            policy = v.get(in1, 36).upper()
            if _KVNR.fullmatch(policy):  # a private insurer's number is not a KVNR
                return policy
        return None

    def _names(self, pid: Any) -> list[dict[str, Any]]:
        """The current name (use official) and the birth name (use maiden)."""
        v, tables = self.v, hl7v2_tables()
        reps = [r for r in v.reps(pid, 5) if v.comp(r, 1) or v.comp(r, 2)]
        kinds = [v.comp(r, 7).upper() for r in reps]
        current = next((reps[kinds.index(k)] for k in tables.current_name_types if k in kinds), None)
        if current is None:
            current = next((r for r, k in zip(reps, kinds, strict=True) if k not in tables.birth_name_types), None)
        names = []
        if current is not None:
            names.append(self._name(current, "official"))
        birth = next((r for r, k in zip(reps, kinds, strict=True) if k in tables.birth_name_types), None)
        if birth is not None and v.comp(birth, 1):
            names.append({"use": "maiden", "family": v.comp(birth, 1)})
        return names

    def _name(self, rep: Any, use: str) -> dict[str, Any]:
        v = self.v
        name: dict[str, Any] = {"use": use}
        if family := v.comp(rep, 1):
            name["family"] = family
        if given := [g for g in (v.comp(rep, 2), v.comp(rep, 3)) if g]:
            name["given"] = given
        if prefix := v.comp(rep, 5):
            name["prefix"] = [prefix]
        if suffix := v.comp(rep, 4):
            name["suffix"] = [suffix]
        return name

    def _address(self, rep: Any) -> dict[str, Any] | None:
        v, tables = self.v, hl7v2_tables()
        street = v.comp(rep, 1) or f"{v.comp(rep, 1, 2)} {v.comp(rep, 1, 3)}".strip()
        lines = [x for x in (street, v.comp(rep, 2)) if x]
        content: dict[str, Any] = {"line": lines} if lines else {}
        for key, n in (("city", 3), ("state", 4), ("postalCode", 5)):
            if value := v.comp(rep, n):
                content[key] = value
        if country := v.comp(rep, 6):
            content["country"] = tables.countries.get(country.upper(), country)
        if not content:
            return None
        return {**tables.address_kinds.get(v.comp(rep, 7).upper(), {"type": "both"}), **content}

    # -------------------------------------------------------------- Encounter
    def _encounter(self, segments: list[Any], trigger: str) -> None:
        v, tables = self.v, hl7v2_tables()
        pv1 = next((s for s in segments if str(s[0]) == "PV1"), None)
        if pv1 is None:
            self.reject(f"PV1: segment missing (required in ADT^{trigger}); no Encounter")
            return
        try:
            start = self._time(pv1, 44, "PV1", "admit date/time")
            end = self._time(pv1, 45, "PV1", "discharge date/time")
            if trigger == "A03" and end is None:  # the discharge is the event itself
                evn = next((s for s in segments if str(s[0]) == "EVN"), None)
                end = (self._time(evn, 6, "EVN", "event occurred") or self._time(evn, 2, "EVN", "recorded time")
                       if evn is not None else None)
        except _Problem as problem:
            self.reject(f"{problem}; no Encounter")
            return
        visit, authority = v.get(pv1, 19), v.get(pv1, 19, 4) or v.get(pv1, 19, 4, 2)
        if visit:
            encounter_id = fhir_id(visit)
        elif start is not None:
            key = f"{self.patient_id}|{v.get(pv1, 44)}".encode()
            encounter_id = "h-" + hashlib.sha256(key).hexdigest()[:40]
        else:
            self.reject("PV1-19 and PV1-44: neither a visit number nor an admit time identifies the Encounter")
            return
        status = tables.encounter_status.get(trigger) or ("finished" if end else "in-progress")
        klass = tables.patient_classes.get(v.get(pv1, 2).upper())
        encounter: dict[str, Any] = {"resourceType": "Encounter", "id": encounter_id,
                                     "meta": {"profile": [ENCOUNTER_PROFILE]}}
        if visit:
            encounter["identifier"] = [{"type": {"coding": [{"system": V2_0203, "code": "VN"}]},
                                        "system": _urn("case-number", authority or self.facility), "value": visit}]
        encounter["status"] = status
        if klass is None:
            encounter["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK",
                                  "display": "unknown"}
            encounter["type"] = [CONTACT_LEVEL]
        else:
            encounter["class"] = {"system": V3_ACT_CODE, "code": klass.code, "display": klass.display}
            encounter["type"] = [CONTACT_LEVEL, {"coding": [{"system": "http://fhir.de/CodeSystem/kontaktart-de",
                                                             "code": klass.contact,
                                                             "display": klass.contact_display}]}]
        if service := v.get(pv1, 10):
            system = DEPARTMENT_SYSTEM if re.fullmatch(r"[0-9]{4}", service) else \
                "http://terminology.hl7.org/CodeSystem/v2-0069"
            encounter["serviceType"] = {"coding": [{"system": system, "code": service}]}
        encounter["subject"] = {"reference": f"Patient/{self.patient_id}"}
        if start or end:
            encounter["period"] = {k: t for k, t in (("start", start), ("end", end)) if t}
        location = self._location(pv1)
        if location:
            encounter["location"] = [{"location": {"display": location}}]
        if disposition := v.get(pv1, 36):
            system = DISCHARGE_SYSTEM if re.fullmatch(r"[0-9]{3}", disposition) else \
                "http://terminology.hl7.org/CodeSystem/v2-0112"
            encounter["hospitalization"] = {"dischargeDisposition": {"coding": [{"system": system,
                                                                                 "code": disposition}]}}
        self.emit(encounter)

    def _location(self, pv1: Any) -> str:
        """PV1-3 as text: point of care / room / bed (description). No person is named in PL."""
        v = self.v
        place = " / ".join(p for p in (v.get(pv1, 3, 1), v.get(pv1, 3, 2), v.get(pv1, 3, 3)) if p)
        description = v.get(pv1, 3, 9)
        return f"{place} ({description})" if place and description else place or description

    def _time(self, segment: Any, n: int, name: str, what: str) -> str | None:
        value = self.v.get(segment, n)
        if not value:
            return None
        try:
            return fhir_datetime(value)
        except ValueError as error:
            raise _Problem(f"{name}-{n}: {what} '{value}' is not a valid HL7 timestamp ({error})") from error

    # -------------------------------------------------------------- A40
    def _merge(self, segments: list[Any]) -> None:
        mrg = next((s for s in segments if str(s[0]) == "MRG"), None)
        if mrg is None:
            self.reject("MRG: segment missing (required in ADT^A40)")
            return
        ids = [i for rep in self.v.reps(mrg, 1) if (i := self._cx(rep))[0]]
        prior = next((i for i in ids if i[2] == "MR"), ids[0] if ids else None)
        if prior is None:
            self.reject("MRG-1: no prior patient identifier")
            return
        self.records.append(PatientMerge(fhir_id(prior[0]), self.patient_id, self.source, self.position))

    # -------------------------------------------------------------- ORU
    def _results(self, segments: list[Any]) -> None:
        """OBR groups: an OBR, its OBX (each with the NTEs after it) and SPMs; OBXs before any OBR
        form a group of their own."""
        v = self.v
        pv1 = next((s for s in segments if str(s[0]) == "PV1"), None)
        visit = v.get(pv1, 19) if pv1 is not None else ""
        self.encounter = {"reference": f"Encounter/{fhir_id(visit)}"} if visit else None
        groups: list[_Order] = []
        counts: dict[str, int] = {}
        for segment in segments:
            name = str(segment[0])
            counts[name] = counts.get(name, 0) + 1
            if name == "OBR" or (name in ("OBX", "SPM") and not groups):
                groups.append(_Order(segment if name == "OBR" else None))
            if name == "OBX":
                groups[-1].results.append((counts[name], segment, []))
            elif name == "NTE" and groups and groups[-1].results:
                groups[-1].results[-1][2].append(segment)
            elif name == "SPM":
                groups[-1].specimens.append((counts[name], segment))
        used: set[str] = set()
        for group in groups:
            specimen = None
            for n, spm in group.specimens:
                try:
                    resource = self._specimen(n, spm)
                except _Problem as problem:
                    self.reject(str(problem))
                    continue
                self.emit(resource)
                specimen = specimen or {"reference": f"Specimen/{resource['id']}"}
            for n, obx, notes in group.results:
                try:
                    self.emit(self._observation(group.obr, n, obx, notes, specimen, used))
                except _Problem as problem:
                    self.reject(str(problem))

    def _specimen(self, n: int, spm: Any) -> dict[str, Any]:
        v = self.v
        filler, placer = v.get(spm, 2, 2), v.get(spm, 2, 1)
        number = filler or placer
        if not number:
            raise _Problem(f"SPM[{n}]-2: no specimen id")
        authority = v.get(spm, 2, 2, 2) if filler else v.get(spm, 2, 1, 2)
        specimen: dict[str, Any] = {
            "resourceType": "Specimen", "id": fhir_id(number), "meta": {"profile": [SPECIMEN_PROFILE]},
            "accessionIdentifier": {"system": _urn("specimen", authority or self.facility), "value": number}}
        kind = v.reps(spm, 4)
        if kind and (coding := self._codings(kind[0])):
            specimen["type"] = {"coding": coding}
        specimen["subject"] = {"reference": f"Patient/{self.patient_id}"}
        collected = self._time(spm, 17, f"SPM[{n}]", "collection date/time")
        if collected:
            specimen["collection"] = {"collectedDateTime": collected}
        return specimen

    def _observation(self, obr: Any, n: int, obx: Any, notes: list[Any], specimen: dict[str, str] | None,
                     used: set[str]) -> dict[str, Any]:
        v, tables = self.v, hl7v2_tables()
        where = f"OBX[{n}]"
        code = v.get(obx, 3)
        if not code:
            raise _Problem(f"{where}-3: no observation identifier (code)")
        order = (v.get(obr, 3) or v.get(obr, 2)) if obr is not None else ""
        base = order or self.header.control_id
        sub_id = v.get(obx, 4)
        key = f"{base}-{code}" + (f"-{sub_id}" if sub_id else "")
        observation_id = fhir_id(key)
        if observation_id in used:  # the same test twice without OBX-4: tell them apart by OBX-1
            observation_id = fhir_id(f"{key}-{v.get(obx, 1) or n}")
        if observation_id in used:
            raise _Problem(f"{where}-4: the same observation (OBX-3, OBX-4) twice in one order")
        used.add(observation_id)
        status_code = v.get(obx, 11).upper()
        status = tables.result_status.get(status_code)
        if status is None:
            raise _Problem(f"{where}-11: result status '{status_code}' is not one of "
                           f"{', '.join(s for s in tables.result_status if s)} (table 0085)")
        observation: dict[str, Any] = {"resourceType": "Observation", "id": observation_id,
                                       "meta": {"profile": [LAB_PROFILE]}}
        if order:
            observation["identifier"] = [{
                "type": {"coding": [{"system": V2_0203, "code": "OBI"}]},
                "system": _urn("lab-result", v.get(obr, 3, 2) or self.facility), "value": f"{order}-{code}"}]
        observation["status"] = status
        category = [LABORATORY]
        if obr is not None and v.get(obr, 4) and v.get(obr, 4, 3).upper() in ("LN", "LOINC"):
            category.append({"system": "http://loinc.org", "code": v.get(obr, 4), "display": v.get(obr, 4, 2)}
                            if v.get(obr, 4, 2) else {"system": "http://loinc.org", "code": v.get(obr, 4)})
        observation["category"] = [{"coding": category}]
        observation["code"] = {"coding": self._codings(v.reps(obx, 3)[0])}
        observation["subject"] = {"reference": f"Patient/{self.patient_id}"}
        if self.encounter:
            observation["encounter"] = self.encounter
        effective = self._time(obx, 14, where, "observation date/time")
        if effective is None and obr is not None:
            effective = self._time(obr, 7, "OBR", "observation date/time")
        if effective:
            observation["effectiveDateTime"] = effective
        issued = self._time(obr, 22, "OBR", "results report date/time") if obr is not None else None
        if issued and "T" in issued:  # an instant needs a time
            observation["issued"] = issued
        unit = self._unit(obx)
        observation.update(self._value(where, obx, unit, status_code))
        if interpretations := [self._interpretation(r) for r in v.reps(obx, 8) if v.comp(r, 1)]:
            observation["interpretation"] = interpretations
        if reference_range := self._range(v.get(obx, 7), unit):
            observation["referenceRange"] = [reference_range]
        if texts := ["\n".join(v.part(r) for r in v.reps(nte, 3)) for nte in notes]:
            observation["note"] = [{"text": t} for t in texts if t]
            if not observation["note"]:
                del observation["note"]
        if specimen:
            observation["specimen"] = specimen
        return observation

    def _codings(self, rep: Any) -> list[dict[str, str]]:
        """CE/CWE: the identifier and the alternate identifier as Codings."""
        v, tables = self.v, hl7v2_tables()
        codings = []
        for first in (1, 4):
            code = v.comp(rep, first)
            if not code:
                continue
            name = v.comp(rep, first + 2)
            system = tables.coding_systems.get(name.upper()) or _urn(
                "local-code", name or self.header.sending_application.split(self.header.encoding_characters[0])[0])
            coding = {"system": system, "code": code}
            if display := v.comp(rep, first + 1):
                coding["display"] = display
            codings.append(coding)
        return codings

    def _unit(self, obx: Any) -> dict[str, str]:
        v = self.v
        code, text, system = v.get(obx, 6), v.get(obx, 6, 2), v.get(obx, 6, 3).upper()
        if not code:
            return {}
        if system in hl7v2_tables().ucum_systems:
            return {"unit": text or code, "system": UCUM, "code": code}
        return {"unit": text or code}

    def _value(self, where: str, obx: Any, unit: dict[str, str], status: str) -> dict[str, Any]:
        v, tables = self.v, hl7v2_tables()
        kind = v.get(obx, 2).upper()
        reps = v.reps(obx, 5)
        if not reps:
            if status not in tables.no_value_statuses:
                raise _Problem(f"{where}-5: no value, though OBX-11 status '{status}' reports a result")
            return {}
        if kind in ("TX", "FT", "ST"):
            return {"valueString": "\n".join(v.part(r) for r in reps)}
        if len(reps) > 1:
            raise _Problem(f"{where}-5: {len(reps)} repetitions; one {kind or 'value'} expected")
        rep = reps[0]
        if kind == "NM":
            return {"valueQuantity": {"value": self._decimal(where, v.part(rep), "NM"), **unit}}
        if kind == "SN":
            return self._structured(where, rep, unit)
        if kind in ("CE", "CWE", "CNE"):
            concept: dict[str, Any] = {"coding": self._codings(rep)}
            if text := v.comp(rep, 9) or v.comp(rep, 2):
                concept["text"] = text
            return {"valueCodeableConcept": concept}
        if kind in ("DT", "TS", "DTM"):
            try:
                return {"valueDateTime": fhir_datetime(v.comp(rep, 1))}
            except ValueError as error:
                raise _Problem(f"{where}-5: '{v.comp(rep, 1)}' is not a valid HL7 timestamp (OBX-2 {kind})") from error
        if not kind:
            raise _Problem(f"{where}-2: no value type, though OBX-5 holds a value")
        raise _Problem(f"{where}-2: value type '{kind}' is not supported (supported: NM, SN, ST, TX, FT, CE, "
                       "CWE, CNE, DT, TS, DTM)")

    def _decimal(self, where: str, text: str, kind: str) -> int | float:
        if not _NUMBER.fullmatch(text):
            raise _Problem(f"{where}-5: '{text}' is not a number (OBX-2 {kind})")
        return _number(text)

    def _structured(self, where: str, rep: Any, unit: dict[str, str]) -> dict[str, Any]:
        """SN: <comparator>^<num1>^<separator/suffix>^<num2>."""
        v, tables = self.v, hl7v2_tables()
        comparator, first, separator, second = (v.comp(rep, i) for i in (1, 2, 3, 4))
        if comparator not in tables.comparators:
            raise _Problem(f"{where}-5: SN comparator '{comparator}' is not one of "
                           f"{', '.join(c for c in tables.comparators if c)}")
        if not second:
            if separator:  # an ordinal like "2+"
                return {"valueString": f"{comparator}{first}{separator}"}
            quantity: dict[str, Any] = {"value": self._decimal(where, first, "SN"), **unit}
            if tables.comparators[comparator]:
                quantity["comparator"] = tables.comparators[comparator]
            return {"valueQuantity": quantity}
        low, high = self._decimal(where, first, "SN"), self._decimal(where, second, "SN")
        if separator == "-":
            return {"valueRange": {"low": {"value": low, **unit}, "high": {"value": high, **unit}}}
        if separator in (":", "/"):
            return {"valueRatio": {"numerator": {"value": low}, "denominator": {"value": high}}}
        raise _Problem(f"{where}-5: SN separator '{separator}' is not one of -, :, /")

    def _interpretation(self, rep: Any) -> dict[str, Any]:
        code = self.v.comp(rep, 1)
        display = hl7v2_tables().interpretations.get(code.upper())
        if display is None:
            return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0078", "code": code}]}
        return {"coding": [{"system": INTERPRETATION, "code": code.upper(), "display": display}]}

    @staticmethod
    def _range(text: str, unit: dict[str, str]) -> dict[str, Any] | None:
        """OBX-7: "low-high", ">low", "<high"; anything else as text."""
        if not text:
            return None
        match = _RANGE.fullmatch(text)
        try:
            if match:
                return {"low": {"value": _number(match.group(1)), **unit},
                        "high": {"value": _number(match.group(2)), **unit}}
            if text[0] in "<>" and _NUMBER.fullmatch(text[1:].strip().lstrip("=")):
                bound = "low" if text[0] == ">" else "high"
                return {bound: {"value": _number(text[1:].strip().lstrip("=")), **unit}}
        except ValueError:
            pass  # "1.2.3-4": not numbers after all; kept as text
        return {"text": text}


@dataclass(slots=True)
class _Order:
    obr: Any
    results: list[tuple[int, Any, list[Any]]] = field(default_factory=list)  # (OBX number, OBX, NTEs)
    specimens: list[tuple[int, Any]] = field(default_factory=list)

"""Identifying data (IDAT) of every record of a source, as the trust center receives it.

    read_identity_records(path)  -> IdentityRecord | Rejection, per record of a site folder or file
    patient_idat(resource)       -> dict   the IDAT of one FHIR Patient

An IDAT dict holds exactly the field names of `dic.trust.identity.Idat` (a higher layer, so not
imported here): given_names, family_name, birth_name, birth_date (ISO), sex (male, female, other,
unknown), street, postal_code, city, insurance_number. Missing values are omitted; values are passed
on as the source spells them, stripped (the trust center validates and normalizes them).

The sources, found by file name (in a folder, recursively):
- `Patient.ndjson[.gz]` ("his"): FHIR R4 Patients; record id = the MR identifier, else Patient.id.
- `*.hl7` ("lab"): HL7 v2 messages (see `_read_hl7`); one record per patient number (PID-3, MR)
  with the values of the patient's LAST message, so that A08 corrections win.
- `patients.csv` ("ms-registry", id registry_id) and `donors.csv` ("biobank", id donor_id):
  `;`-separated with a header, sex as a German word or letter.
Billing (§ 21 KHEntgG) carries no IDAT and is not read. Bad content never raises: an unreadable
record, a row with the wrong number of fields or an impossible date becomes a `Rejection`; reasons
name the field, never its value.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from dic.errors import InputError
from dic.sources.fhir_files import RAW_LIMIT_BYTES, _ndjson_lines
from dic.sources.record import Rejection

KVNR_SYSTEMS = frozenset({"http://fhir.de/sid/gkv/kvid-10", "http://fhir.de/NamingSystem/gkv/kvid-10"})
SEXES = frozenset({"male", "female", "other", "unknown"})
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Which HumanName is the person's current one: the official, else the usual, else one without use.
_NAME_USES = ("official", "usual", None)
# Which Address is where the person lives: home first; "old" only if there is nothing else.
_ADDRESS_USES = ("home", None, "temp", "work", "billing", "old")


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """One source record's IDAT with the source's own patient id."""

    source: str  # the source system kind: "his", "lab", "ms-registry", "biobank"
    record_id: str  # HIS/lab: patient number (MR); registry: registry_id; biobank: donor_id
    idat: dict[str, str]
    file: str
    position: str  # "line 12", "message 7", "row 3"


@dataclass(frozen=True, slots=True)
class _CsvSource:
    source: str
    id_column: str


# The CSV sources: IDAT columns by header name (so a reordered file still reads), and sex codes.
CSV_SOURCES = {"patients.csv": _CsvSource("ms-registry", "registry_id"),
               "donors.csv": _CsvSource("biobank", "donor_id")}
CSV_COLUMNS = {"given_name": "given_names", "given_names": "given_names", "family_name": "family_name",
               "birth_name": "birth_name", "birth_date": "birth_date", "sex": "sex", "street": "street",
               "postal_code": "postal_code", "city": "city", "insurance_number": "insurance_number"}
CSV_SEX_CODES = {"weiblich": "female", "w": "female", "männlich": "male", "maennlich": "male", "m": "male",
                 "divers": "other", "d": "other", "unbekannt": "unknown", "x": "unknown", "u": "unknown"}


# ------------------------------------------------------------------ entry point
def read_identity_records(path: Path) -> Iterator[IdentityRecord | Rejection]:
    """The IDAT of every record of one source file, or of every source file under a folder (a
    `dic synth` site folder, say), in the order his, lab, then the CSV sources."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        files = sorted((p for p in path.rglob("*") if p.is_file() and _reader(p) is not None),
                       key=lambda p: (_ORDER.index(_reader(p)), str(p)))  # type: ignore[arg-type]
        if not files:
            raise InputError(f"{path}: no source file with identifying data (Patient.ndjson, *.hl7, "
                             "patients.csv, donors.csv) in this folder")
    else:
        if _reader(path) is None:
            raise InputError(f"{path}: not a source with identifying data; expected Patient.ndjson[.gz], "
                             "*.hl7, patients.csv or donors.csv")
        files = [path]
    for file in files:
        yield from _reader(file)(file)  # type: ignore[misc]


Reader = Callable[[Path], Iterator[IdentityRecord | Rejection]]


def _reader(path: Path) -> Reader | None:
    name = path.name
    if name in ("Patient.ndjson", "Patient.ndjson.gz"):
        return _read_patients
    if name.lower().endswith(".hl7"):
        return _read_hl7
    if name in CSV_SOURCES:
        return _read_csv
    return None


# ------------------------------------------------------------------ FHIR Patient
def patient_idat(resource: dict[str, Any]) -> dict[str, str]:
    """The IDAT of one FHIR R4 Patient (Idat field names; missing or malformed elements omitted).

    Names: the official name's family and given names (joined by one space); the birth name is
    the family of the name with use "maiden". Address: the home address's lines (joined) as
    street, postalCode, city. Insurance number: the identifier of system kvid-10; patient number: the
    identifier of type MR (the hospital's, shared by its HIS, lab and billing). A partial
    birthDate (year or year-month) is omitted: Idat needs a whole date.
    """
    idat: dict[str, str] = {}
    names = [n for n in _list(resource.get("name")) if isinstance(n, dict)]
    name = _first_by_use(names, _NAME_USES)
    if name is not None:
        _put(idat, "given_names", " ".join(g.strip() for g in _list(name.get("given")) if isinstance(g, str)))
        _put(idat, "family_name", name.get("family"))
    maiden = next((n for n in names if n.get("use") == "maiden"), None)
    if maiden is not None:
        _put(idat, "birth_name", maiden.get("family"))
    born = resource.get("birthDate")
    if isinstance(born, str) and len(born) == 10 and _is_date(born):
        idat["birth_date"] = born
    if resource.get("gender") in SEXES:
        idat["sex"] = resource["gender"]
    addresses = [a for a in _list(resource.get("address")) if isinstance(a, dict)]
    # a postal address (a PO box) says least about where someone lives
    address = _first_by_use(sorted(addresses, key=lambda a: a.get("type") == "postal"), _ADDRESS_USES)
    if address is not None:
        _put(idat, "street", " ".join(x.strip() for x in _list(address.get("line")) if isinstance(x, str)))
        _put(idat, "postal_code", address.get("postalCode"))
        _put(idat, "city", address.get("city"))
    for identifier in _list(resource.get("identifier")):
        if (isinstance(identifier, dict) and identifier.get("system") in KVNR_SYSTEMS
                and _put(idat, "insurance_number", identifier.get("value"))):
            break
    _put(idat, "patient_number", medical_record_number(resource))
    return idat


def patient_number(resource: dict[str, Any]) -> str | None:
    """The Patient's local patient number: the identifier of type MR (v2-0203), else its id."""
    found = medical_record_number(resource)
    if found is not None:
        return found
    own = resource.get("id")
    return own if isinstance(own, str) and own else None


def medical_record_number(resource: dict[str, Any]) -> str | None:
    """The value of the Patient's identifier of type MR (v2-0203): the hospital's patient number."""
    for identifier in _list(resource.get("identifier")):
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        kind = identifier.get("type")
        codings = _list(kind.get("coding")) if isinstance(kind, dict) else []
        if any(isinstance(c, dict) and c.get("code") == "MR" for c in codings) and identifier["value"].strip():
            return identifier["value"].strip()
    return None


def _patient_problem(resource: Any) -> str | None:
    """Why a line is no Patient whose IDAT can be read, or None."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
        return "not a FHIR Patient resource"
    born = resource.get("birthDate")
    if born is not None and not (isinstance(born, str) and _is_fhir_date(born)):
        return "Patient.birthDate is not a valid date"
    gender = resource.get("gender")
    if gender is not None and gender not in SEXES:
        return f"Patient.gender is not one of {', '.join(sorted(SEXES))}"
    return None


def _read_patients(path: Path) -> Iterator[IdentityRecord | Rejection]:
    file = str(path)
    for item in _ndjson_lines(path):
        if isinstance(item, Rejection):
            yield item
            continue
        line_no, text = item
        position = f"line {line_no}"
        try:
            resource = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            yield _reject(file, position, f"invalid JSON: {error}", text)
            continue
        problem = _patient_problem(resource)
        number = patient_number(resource) if problem is None else None
        if number is None:
            yield _reject(file, position, problem or "Patient has neither an MR identifier nor an id", text)
        else:
            yield IdentityRecord("his", number, patient_idat(resource), file, position)


# ------------------------------------------------------------------ HL7 v2
# Fields are split here rather than by python-hl7 (the maintained parser; hl7apy is stricter and far
# slower). Measured on a `dic synth` lab feed (2 busy cores): python-hl7 0.4.5 1.8 ms per message
# (0.3 ms for an MSH+PID+IN1 excerpt), hl7apy 1.3.5 44 ms, this reader 40 us (25,000 messages/s).
# A feed holds ~5 messages per patient: python-hl7 would take 2.5 hours for a 1M-patient world, this
# reader 3.5 minutes. Only what identifies a person is read (MSH-1/-2/-18, PID-2/-3/-5/-7/-8/-11,
# IN1-36), the values only from each patient's last message; tests check it against python-hl7.
HL7_SEX_CODES = {"F": "female", "M": "male", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
HL7_CHARSETS = {"": "utf-8", "ASCII": "utf-8", "UNICODE UTF-8": "utf-8", "UNICODE": "utf-8", "UTF-8": "utf-8",
                "8859/1": "latin-1", "8859/15": "iso8859-15"}  # MSH-18 (table 0211) -> Python codec
# Which repetition is the current name (PID-5, table 0200) and the home address (PID-11, table 0190)
_NAME_TYPES = ("L", "", "D", "U", "R")
_BIRTH_NAME_TYPES = ("B", "M")
_ADDRESS_TYPES = ("H", "L", "P", "C", "")
_HL7_NULL = '""'  # HL7's explicit null
_BOM = b"\xef\xbb\xbf"
_KVNR_SHAPE = re.compile(r"[A-Z][0-9]{9}")


@dataclass(frozen=True, slots=True)
class _Delimiters:
    """A message's delimiters (MSH-1, MSH-2) and its escape sequences as a pattern."""

    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str
    sequences: re.Pattern[str]
    pid_marker: bytes  # CR + "PID" + field separator: where the PID segment starts
    in1_marker: bytes
    field_bytes: bytes
    component_bytes: bytes
    repetition_bytes: bytes
    subcomponent_bytes: bytes

    def unescape(self, text: str, charset: str) -> str:
        if self.escape not in text:
            return text
        return self.sequences.sub(lambda m: self._replace(m.group(1), charset), text)

    def _replace(self, sequence: str, charset: str) -> str:
        fixed = {"F": self.field, "S": self.component, "T": self.subcomponent, "R": self.repetition,
                 "E": self.escape, ".br": " "}
        if sequence in fixed:
            return fixed[sequence]
        if sequence[:1] == "X":
            try:
                return bytes.fromhex(sequence[1:]).decode(charset)
            except ValueError:  # also UnicodeDecodeError
                return ""
        return ""  # highlighting (H, N), character set switches (C, M), local (Z): no text


@lru_cache(maxsize=64)
def _delimiters(field: str, encoding_characters: str) -> _Delimiters | None:
    """The delimiters, or None when MSH-1/-2 do not declare five distinct ones (v2.7 may add a sixth,
    the truncation character, which needs nothing here)."""
    chars = encoding_characters[:4]
    if len(chars) < 4 or len({field, *chars}) != 5 or any(c.isalnum() or c.isspace() for c in field + chars):
        return None
    component, repetition, escape, subcomponent = chars
    sequences = re.compile(f"{re.escape(escape)}([^{re.escape(escape)}]*){re.escape(escape)}")
    return _Delimiters(field, component, repetition, escape, subcomponent, sequences, f"\rPID{field}".encode(),
                       f"\rIN1{field}".encode(), *(c.encode("latin-1") for c in (field, component, repetition, subcomponent)))


@dataclass(slots=True)
class _Message:
    number: int
    parts: list[bytes]  # its segments, in pieces that are joined by CR
    terminated: bool = True  # its last segment ends with CR

    @property
    def text(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"\r".join(self.parts)


def _hl7_messages(path: Path) -> Iterator[_Message]:
    """The messages of a file in order, each as its segments joined by CR. Segments end with CR (the
    standard; `dic synth` adds an LF after each message) or with LF (common in sample files); a
    message starts with an MSH segment. Segments before the first MSH come as message 0."""
    message = _Message(0, [])
    with path.open("rb") as stream:
        for line in stream:
            if line[:3] == _BOM:
                line = line[3:]
            body = line.rstrip(b"\r\n")
            if not body or body.isspace():
                continue
            # every piece after the first starts a message
            pieces = body.split(b"\rMSH") if b"\rMSH" in body else [body]
            if pieces[0][:3] == b"MSH":
                if message.parts:
                    yield message
                message = _Message(message.number + 1, [pieces[0]])
            else:
                message.parts.append(pieces[0])
            for piece in pieces[1:]:
                message.terminated = True
                yield message
                message = _Message(message.number + 1, [b"MSH" + piece])
            message.terminated = line.endswith((b"\r", b"\r\n"))
    if message.parts:
        yield message


def _read_hl7(path: Path) -> Iterator[IdentityRecord | Rejection]:
    """One record per patient number, with the PID of the patient's last message (an A08 correction
    replaces what came before) and the policy number (IN1-36) of the last message that had an IN1
    (a result message carries none). Broken messages are rejected as they come; the records follow
    at the end of the file, in the order the patients first appeared. Only the last PID of each
    patient is decoded and read: a bad value there rejects the patient's record."""
    file = str(path)
    latest: dict[bytes, tuple[int, bytes, _Delimiters, str]] = {}  # raw PID-3 -> message, PID, ...
    policies: dict[bytes, tuple[bytes, _Delimiters, str]] = {}  # raw PID-3 -> IN1-36, ...
    uses_cr = False  # CR-terminated segments seen: then an unterminated last segment means truncation
    for message in _hl7_messages(path):
        position, text = f"message {message.number}", message.text
        uses_cr = uses_cr or message.terminated
        if message.number == 0:
            yield _reject(file, "before message 1", "segments before the first MSH segment", text)
            continue
        if uses_cr and not message.terminated:
            yield _reject(file, position, "truncated: the last segment has no CR terminator", text)
            continue
        read = _read_message(text)
        if isinstance(read, str):
            yield _reject(file, position, read, text)
            continue
        key, pid, in1, delimiters, charset = read
        latest[key] = (message.number, pid, delimiters, charset)
        if in1 is not None:
            policies[key] = (in1, delimiters, charset)
    for key, (number, pid, d, charset) in latest.items():
        position = f"message {number}"
        try:
            fields = pid.decode(charset).split(d.field)
        except UnicodeDecodeError:
            yield _reject(file, position, f"PID is not valid {charset}", pid)
            continue
        record_id, idat = _patient_id(fields, d, charset), _pid_idat(fields, d, charset)
        if isinstance(idat, str) or record_id is None:
            yield _reject(file, position, idat if isinstance(idat, str) else "no patient id in PID-3", pid)
            continue
        if key in policies and (policy := _policy_number(*policies[key])) is not None:
            idat["insurance_number"] = policy
        yield IdentityRecord("lab", record_id, idat, file, position)


def _read_message(text: bytes) -> tuple[bytes, bytes, bytes | None, _Delimiters, str] | str:
    """(raw patient number, PID segment, raw IN1-36 or None, delimiters, charset), or why not.

    Only MSH and the PID's identifier are split here, for every message; values are read later."""
    end = text.find(b"\r")
    msh = text if end < 0 else text[:end]
    separator = msh[3:4]
    header = msh.split(separator, 18) if separator else []
    d = _delimiters(separator.decode("latin-1"), header[1].decode("latin-1")) if len(header) > 1 else None
    if d is None:
        return "MSH-1/MSH-2 do not declare the delimiters"
    charset = _charset(header[17] if len(header) > 17 else b"", d.repetition)
    if charset is None:
        return f"MSH-18 character set is not one of {', '.join(c for c in HL7_CHARSETS if c)}"
    at = text.find(d.pid_marker)
    if at < 0:
        return "no PID segment"
    end = text.find(b"\r", at + 1)
    pid = text[at + 1:] if end < 0 else text[at + 1:end]
    key = _patient_key(pid, d)
    if key is None:
        return "no patient id in PID-3 (or PID-2)"
    in1 = None
    at = text.find(d.in1_marker)
    if at >= 0:
        end = text.find(b"\r", at + 1)
        fields = (text[at + 1:] if end < 0 else text[at + 1:end]).split(d.field_bytes, 37)
        in1 = fields[36] if len(fields) > 36 else None
    return key, pid, in1, d, charset


@lru_cache(maxsize=64)
def _charset(declared: bytes, repetition: str) -> str | None:
    """MSH-18's Python codec (its first repetition), or None when not supported."""
    name = declared.decode("latin-1").split(repetition)[0].strip().upper()
    return HL7_CHARSETS.get(name)


def _patient_key(pid: bytes, d: _Delimiters) -> bytes | None:
    """PID-3's identifier of type MR, else its first, else PID-2's: raw (escaped) bytes, the key that
    groups a patient's messages."""
    fields = pid.split(d.field_bytes, 4)
    if len(fields) > 3:  # the common case first: one identifier, of type MR
        first = fields[3].split(d.component_bytes, 5)
        if (len(first) > 4 and first[4] == b"MR" and first[0] and first[0] != b'""'
                and d.repetition_bytes not in fields[3] and d.subcomponent_bytes not in first[0]):
            return first[0]
    for n in (3, 2):
        reps = [r.split(d.component_bytes, 5) for r in fields[n].split(d.repetition_bytes)] if len(fields) > n else []
        ids = [r for r in reps if r[0].strip() and r[0] != b'""']
        if ids:
            chosen = next((r for r in ids if len(r) > 4 and r[4] == b"MR"), ids[0])
            return chosen[0].split(d.subcomponent_bytes)[0]
    return None


def _policy_number(field: bytes, d: _Delimiters, charset: str) -> str | None:
    """IN1-36, the policy number, if it is a KVNR (a private insurer's number is not)."""
    value = d.unescape(_component(field.decode(charset, "replace"), d, 0), charset).strip().upper()
    return value if _KVNR_SHAPE.fullmatch(value) else None


def _patient_id(pid: list[str], d: _Delimiters, charset: str) -> str | None:
    """`_patient_key` decoded: PID-3's identifier of type MR, else its first, else PID-2's (before v2.5)."""
    for n in (3, 2):
        ids = [r.split(d.component) for r in _field(pid, n).split(d.repetition)]
        ids = [r for r in ids if r[0].strip() and r[0] != _HL7_NULL]
        if ids:
            chosen = next((r for r in ids if len(r) > 4 and r[4] == "MR"), ids[0])
            return d.unescape(chosen[0].split(d.subcomponent)[0], charset).strip() or None
    return None


def _pid_idat(pid: list[str], d: _Delimiters, charset: str) -> dict[str, str] | str:
    """The IDAT of a PID segment's fields, or why it cannot be read."""
    idat: dict[str, str] = {}

    def put(field: str, value: str) -> None:
        value = d.unescape(value, charset).strip() if value != _HL7_NULL else ""
        if value:
            idat[field] = value

    names = [rep.split(d.component) for rep in _field(pid, 5).split(d.repetition)]
    name = _by_type(names, 6, _NAME_TYPES, exclude=_BIRTH_NAME_TYPES)
    if name is not None:
        put("given_names", " ".join(g for g in (_sub(name, 1, d), _sub(name, 2, d)) if g and g != _HL7_NULL))
        put("family_name", _sub(name, 0, d))
    birth = next((n for n in names if len(n) > 6 and n[6] in _BIRTH_NAME_TYPES), None)
    if birth is not None:
        put("birth_name", _sub(birth, 0, d))
    born = _component(_field(pid, 7), d, 0).strip()
    if born and born != _HL7_NULL:
        digits = born[:8]
        if not (len(born) >= 4 and born[:4].isdigit()):
            return "PID-7 birth date is not an HL7 date (YYYY[MM[DD...]])"
        if len(born) >= 8:
            iso = f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}"
            if not _is_date(iso):
                return "PID-7 birth date is not a valid date"
            idat["birth_date"] = iso  # a year or month alone is no whole date: omitted
    sex = _field(pid, 8).strip().upper()
    if sex and sex != _HL7_NULL:
        if sex not in HL7_SEX_CODES:
            return f"PID-8 sex not one of {', '.join(HL7_SEX_CODES)} (table 0001)"
        idat["sex"] = HL7_SEX_CODES[sex]
    addresses = [rep.split(d.component) for rep in _field(pid, 11).split(d.repetition)]
    address = _by_type(addresses, 6, _ADDRESS_TYPES)
    if address is not None:
        street = address[0].split(d.subcomponent)
        # XAD-1 is the street address; some systems fill only its street name and dwelling number
        put("street", street[0] if street[0].strip() or len(street) < 3 else f"{street[1]} {street[2]}")
        put("city", _sub(address, 2, d))
        put("postal_code", _sub(address, 4, d))
    return idat


def _field(fields: list[str], n: int) -> str:
    return fields[n] if n < len(fields) else ""


def _component(field: str, d: _Delimiters, n: int) -> str:
    parts = field.split(d.repetition)[0].split(d.component)
    return parts[n] if n < len(parts) else ""


def _sub(components: list[str], n: int, d: _Delimiters) -> str:
    """The first subcomponent of component n (e.g. XPN-1's surname without its prefix)."""
    return components[n].split(d.subcomponent)[0] if n < len(components) else ""


def _by_type(reps: list[list[str]], at: int, preferred: tuple[str, ...],
             exclude: tuple[str, ...] = ()) -> list[str] | None:
    """The repetition whose type (component `at`) comes first in `preferred`, else the first not
    excluded; only repetitions with some content count."""
    reps = [r for r in reps if any(c.strip() and c != _HL7_NULL for c in r[:at])]
    kinds = [r[at] if len(r) > at else "" for r in reps]
    for kind in preferred:
        if kind in kinds:
            return reps[kinds.index(kind)]
    return next((r for r, k in zip(reps, kinds, strict=True) if k not in exclude), None)


# ------------------------------------------------------------------ CSV
def _read_csv(path: Path) -> Iterator[IdentityRecord | Rejection]:
    spec, file = CSV_SOURCES[path.name], str(path)
    lines = _RawLines(path)
    rows = csv.reader(lines, delimiter=";")
    header = next(rows, None)
    if header is None:
        return
    header = [h.strip().lower() for h in header]
    if spec.id_column not in header:
        yield _reject(file, "header", f"no column {spec.id_column!r} (the {spec.source} record id)", lines.take())
        return
    lines.take()
    id_at = header.index(spec.id_column)
    columns = [(n, CSV_COLUMNS[h]) for n, h in enumerate(header) if h in CSV_COLUMNS]
    for number, row in enumerate(rows, start=1):
        raw, position = lines.take(), f"row {number}"
        if not row:  # an empty line
            continue
        problem = lines.error or _row_problem(row, header, id_at)
        if problem is not None:
            yield _reject(file, position, problem, raw)
            continue
        idat = {field: value for n, field in columns if (value := row[n].strip())}
        problem = _csv_value_problem(idat)
        if problem is not None:
            yield _reject(file, position, problem, raw)
            continue
        if "sex" in idat:
            idat["sex"] = CSV_SEX_CODES[idat["sex"].casefold()]
        yield IdentityRecord(spec.source, row[id_at].strip(), idat, file, position)


def _row_problem(row: list[str], header: list[str], id_at: int) -> str | None:
    if len(row) != len(header):
        return f"row has {len(row)} fields, the header {len(header)}"
    if not row[id_at].strip():
        return f"no {header[id_at]}"
    return None


def _csv_value_problem(idat: dict[str, str]) -> str | None:
    born = idat.get("birth_date")
    if born is not None and not (len(born) == 10 and _is_date(born)):
        return "birth_date is not a valid date (YYYY-MM-DD)"
    sex = idat.get("sex")
    if sex is not None and sex.casefold() not in CSV_SEX_CODES:
        return f"sex code not one of {', '.join(CSV_SEX_CODES)}"
    return None


class _RawLines:
    """A CSV file's lines for `csv.reader`, remembering the bytes of the row being read (a quoted
    value may span lines) for the rejection, and whether they were valid UTF-8."""

    def __init__(self, path: Path):
        self.path = path
        self.pending: list[bytes] = []
        self.error: str | None = None

    def __iter__(self) -> Iterator[str]:
        with self.path.open("rb") as stream:
            for number, line in enumerate(stream):
                if number == 0:
                    line = line.removeprefix(b"\xef\xbb\xbf")
                self.pending.append(line)
                try:
                    yield line.decode("utf-8")
                except UnicodeDecodeError:
                    self.error = "not valid UTF-8"
                    yield line.decode("utf-8", errors="replace")

    def take(self) -> bytes:
        """The bytes read since the last call; resets the UTF-8 error."""
        raw, self.pending, self.error = b"".join(self.pending), [], None
        return raw


# ------------------------------------------------------------------ values
def _reject(file: str, position: str, reason: str, raw: bytes) -> Rejection:
    return Rejection(file, position, reason, raw[:RAW_LIMIT_BYTES], len(raw))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _put(idat: dict[str, str], field: str, value: Any) -> bool:
    """Set `field` to a non-blank string value; anything else is missing."""
    if isinstance(value, str) and value.strip():
        idat[field] = value.strip()
        return True
    return False


def _first_by_use(items: list[dict[str, Any]], uses: tuple[str | None, ...]) -> dict[str, Any] | None:
    for use in uses:
        for item in items:
            if item.get("use") == use:
                return item
    return None


def _is_date(text: str) -> bool:
    """A valid calendar date written YYYY-MM-DD (fromisoformat alone also takes 2020-W01-1)."""
    if not _ISO_DATE.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_fhir_date(text: str) -> bool:
    """A FHIR date: YYYY, YYYY-MM or a valid YYYY-MM-DD."""
    if len(text) == 4:
        return text.isdigit()
    if len(text) == 7:
        return text[:4].isdigit() and text[4] == "-" and text[5:].isdigit() and 1 <= int(text[5:]) <= 12
    return len(text) == 10 and _is_date(text)


_ORDER = [_read_patients, _read_hl7, _read_csv]

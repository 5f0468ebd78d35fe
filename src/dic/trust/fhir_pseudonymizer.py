"""Pseudonymize a FHIR load on its way into the repository, through the trust center.

    read_pseudonymized(path, registry, resource_key, source_system=...) -> Iterator[Entry | Rejection]
    pseudonymize(records, registry, resource_key, source_system=...)    -> Iterator[Entry | Rejection]
    patients_first(paths)                                               -> list[Path]
    resource_pseudonym(resource_key, source_system, resource_type, source_id) -> str

Between reading and `load_records`: each Patient's IDAT goes to the trust center
(`PatientRegistry.register`, in chunks) and is removed; the Patient's id becomes the person's DIC
pseudonym, and it carries its source record's pseudonym as a `meta.tag` (system `SOURCE_RECORD_TAG`)
so that a later split finds the record's data. Every other resource id, and every reference to one,
becomes a keyed hash of (source system, type, source id) under the DIC's own secret: stable, so a
reload changes nothing, and no source id survives (a HIS encounter id contains the patient id). A
reference to a Patient the trust center does not know makes a Rejection. A resource about a patient
carries that patient's record tag too.

Nothing identifying reaches the quarantine either: a rejected record's raw text is stored after the
same treatment (IDAT removed, ids replaced), or not at all if it cannot be parsed.

Cost (synth HIS export, 63,545 resources, DuckDB, 2 cores shared with other jobs, so +-30%):
reading alone ~35k resources/s; read and pseudonymize ~6.4k/s (5.0k/s when every Entry was parsed
a second time, hence `read_fhir(prepare=SourceResource)`); a whole load 4.1-3.8k/s pseudonymized
against 8.4-4.9k/s plain. Patients are registered per window of records, not one by one (a round
trip each would dominate), which a per-resource hook alone could not do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from dic.errors import ConfigError
from dic.fhir import remove_identifying, resource_types
from dic.repository import SOURCE_RECORD_TAG
from dic.sources import Entry, PatientMerge, Rejection, SourceResource, patient_idat, read_fhir
from dic.trust.pseudonym import MIN_KEY_BYTES
from dic.trust.registry import PatientRegistry, Registration

REGISTER_CHUNK = 1_000  # the registry protocol's chunk limit
WINDOW = 1_000  # records read ahead, so Patients are registered in chunks and references looked up in one call
DIRECTORY_ENTRIES = 200_000  # registrations kept in memory (~40 MB); older ones are looked up again
# Elements of a Reference a source fills with identifying data: the target's identifier (a KVNR, a case
# number) and its display text (a patient's or doctor's name). Research needs the target, not its label.
REFERENCE_IDAT = ("identifier", "display")
_REFERENCE = re.compile(
    r"(?:https?://[^?#]*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?"
)
_UNCHANGED_REFERENCE = ("#", "urn:uuid:", "urn:oid:")  # contained resources; bundle urns read_fhir left open
_REMOVED = "[removed]"


def resource_pseudonym(resource_key: bytes, source_system: str, resource_type: str, source_id: str) -> str:
    """The stored id of a source resource: HMAC-SHA-256 of (source system, type, id), 128 bits as
    32 hex digits (a valid FHIR id). The source system is part of it because two systems may use the
    same id for different things. (Hex, not base 32: `base64.b32encode` is pure Python, 20 us a call.)"""
    message = f"{source_system}\x1f{resource_type}\x1f{source_id}".encode()
    return hmac.new(resource_key, message, hashlib.sha256).hexdigest()[:32]


def patients_first(paths: Iterable[Path | str]) -> list[Path]:
    """The paths with Patient files (`Patient.ndjson`, `Patient-2.ndjson.gz`, ...) first, otherwise
    in the given order: references to a patient resolve only after its Patient is registered."""
    paths = [Path(p) for p in paths]
    return sorted(paths, key=lambda p: not re.match(r"Patient(?![A-Za-z])", p.name))


def read_pseudonymized(path: Path, registry: PatientRegistry, resource_key: bytes, *, source_system: str,
                       ) -> Iterator[Entry | Rejection]:
    """The records of one FHIR file (see `dic.sources.read_fhir`), pseudonymized, ready for `load_records`."""
    return pseudonymize(read_fhir(path, prepare=SourceResource), registry, resource_key,
                        source_system=source_system)


def pseudonymize(
    records: Iterable[Entry | Rejection | SourceResource | PatientMerge],
    registry: PatientRegistry,
    resource_key: bytes,
    *,
    source_system: str,
    window: int = WINDOW,
) -> Iterator[Entry | Rejection]:
    """The records of one source system, pseudonymized, in their order (see the module docstring).

    `records` come from `read_fhir(path, prepare=SourceResource)` (or, parsed once more, from
    `read_fhir(path, keep_identifying=True)`) or a source adapter: the IDAT is needed here. A
    `PatientMerge` (HL7 ADT^A40) is passed to the trust center after the window's Patients are
    registered; it yields no record (the trust center's change feed moves the stored data). Patients are registered `window` records ahead, so within a window (a Bundle, a chunk of an
    NDJSON file) a reference may come before its Patient; across files, load Patient files first.
    """
    if len(resource_key) < MIN_KEY_BYTES:
        raise ConfigError(f"the resource key needs at least {MIN_KEY_BYTES} bytes (got {len(resource_key)})")
    if not source_system:
        raise ConfigError("source_system must name the source system (it scopes the resource ids)")
    state = _Pseudonymizer(registry, resource_key, source_system)
    batch: list[Entry | Rejection | SourceResource | PatientMerge] = []
    for record in records:
        batch.append(record)
        if len(batch) >= window:
            yield from state.window(batch)
            batch = []
    yield from state.window(batch)


@dataclass
class _Parsed:
    """One record of a window: the resource (IDAT removed) and its literal references."""

    record: Entry | Rejection | SourceResource
    resource_type: str = ""
    source_id: str = ""
    resource: dict[str, Any] | None = None
    references: list[dict[str, Any]] = field(default_factory=list)  # the Reference objects


@dataclass
class _Pseudonymizer:
    registry: PatientRegistry
    key: bytes
    source_system: str
    directory: dict[str, Registration | str] = field(default_factory=dict)  # source patient id -> answer
    ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (type, source id) -> stored id

    def window(self, records: Sequence[Entry | Rejection | SourceResource | PatientMerge],
               ) -> Iterator[Entry | Rejection]:
        parsed, idat, merges = [], {}, []
        for record in records:
            if isinstance(record, PatientMerge):
                merges.append(record)
                continue
            if isinstance(record, Entry) and not record.delete:
                assert record.content is not None
                record = SourceResource(orjson.loads(record.content), record.source, record.position)
            if isinstance(record, SourceResource):
                resource = record.resource
                item = _Parsed(record, resource["resourceType"], resource["id"])
                if item.resource_type == "Patient":
                    idat[item.source_id] = patient_idat(resource)  # the last version in the window wins
                item.resource, item.references = _without_idat(resource)
                parsed.append(item)
            else:
                parsed.append(_Parsed(record))
        self._register(idat)
        for merge in merges:
            surviving = self.registry.merge_records(merge.prior_id, merge.surviving_id)
            self.directory.pop(merge.prior_id, None)  # its pseudonym may have changed: ask again
            if surviving is not None:
                self.directory[merge.surviving_id] = surviving
        self._look_up({id for p in parsed for node in p.references if (id := _patient_id(node)) is not None})
        for item in parsed:
            yield self._finish(item)

    def _register(self, idat: dict[str, dict[str, str]]) -> None:
        pending = list(idat.items())
        for start in range(0, len(pending), REGISTER_CHUNK):
            chunk = pending[start:start + REGISTER_CHUNK]
            answers = self.registry.register(chunk)
            if len(answers) != len(chunk):
                raise RuntimeError(f"the trust center answered {len(answers)} of {len(chunk)} registrations")
            self._remember(dict(zip((source_id for source_id, _ in chunk), answers)))

    def _look_up(self, source_ids: set[str]) -> None:
        unknown = sorted(source_ids - self.directory.keys())
        if unknown:
            self._remember(dict(self.registry.lookup(unknown)))

    def _remember(self, answers: dict[str, Registration | str]) -> None:
        self.directory.update(answers)
        if len(self.directory) > DIRECTORY_ENTRIES:  # forget the oldest half (dicts keep insertion order)
            for source_id in list(islice(self.directory, len(self.directory) // 2)):
                del self.directory[source_id]

    def _id(self, resource_type: str, source_id: str) -> str:
        key = (resource_type, source_id)
        found = self.ids.get(key)
        if found is None:
            if len(self.ids) > DIRECTORY_ENTRIES:
                self.ids.clear()
            found = self.ids[key] = resource_pseudonym(self.key, self.source_system, resource_type, source_id)
        return found

    def _finish(self, item: _Parsed) -> Entry | Rejection:
        record = item.record
        if isinstance(record, Rejection):
            return self._scrubbed(record)
        if isinstance(record, Entry):  # a deletion
            if record.resource_type == "Patient":
                return Rejection(record.source, record.position, "a Patient deletion is not applied: the "
                                 "pseudonymized Patient may hold other records of the person; ask the trust "
                                 "center to remove the source record", b"", 0)
            return Entry.deletion(record.resource_type, self._id(record.resource_type, record.id),
                                  record.source, record.position)
        resource = item.resource
        assert resource is not None
        problems, records = self._rewrite_references(resource, item.references)
        if item.resource_type == "Patient":
            answer = self.directory.get(item.source_id)
            if isinstance(answer, Registration):
                resource["id"] = answer.pseudonym
                records.add(answer.record)
            else:
                resource["id"] = self._id("Patient", item.source_id)
                problems.insert(0, f"the trust center refused its identifying data: {answer}")
        else:
            resource["id"] = self._id(item.resource_type, item.source_id)
        _tag(resource, records)
        if problems:
            raw = orjson.dumps(resource)
            reason = f"{item.resource_type}/{resource['id']}: {'; '.join(problems)}"
            return Rejection(record.source, record.position, reason, raw, len(raw))
        return Entry.of(resource, record.source, record.position)

    def _rewrite_references(self, resource: dict[str, Any], references: list[dict[str, Any]],
                            ) -> tuple[list[str], set[str]]:
        """Point every reference at the stored ids; (problems, record pseudonyms of the patients)."""
        problems, records = [], set()
        for node in references:
            text = node["reference"]
            if text.startswith(_UNCHANGED_REFERENCE):
                continue
            match = _REFERENCE.fullmatch(text)
            if match is None or match["type"] not in resource_types():
                node["reference"] = _REMOVED
                problems.append(f"{_path_of(resource, node)}: not a literal reference to a resource (conditional "
                                "or malformed); it cannot be pseudonymized")
                continue
            target_type, source_id = match["type"], match["id"]
            if target_type == "Patient":
                answer = self.directory.get(source_id)
                if isinstance(answer, Registration):
                    node["reference"] = f"Patient/{answer.pseudonym}"
                    records.add(answer.record)
                    continue
                problems.append(f"{_path_of(resource, node)}: Patient/{self._id('Patient', source_id)} is not "
                                "registered; load its Patient first")
            node["reference"] = f"{target_type}/{self._id(target_type, source_id)}"
        return problems, records

    def _scrubbed(self, rejection: Rejection) -> Rejection:
        """The reader's rejection with a raw text that holds no IDAT and no source id."""
        try:
            resource = orjson.loads(rejection.raw)
        except orjson.JSONDecodeError:
            resource = None
        if isinstance(resource, dict) and isinstance(resource.get("resource"), dict):
            resource = resource["resource"]  # a Bundle entry
        if not (isinstance(resource, dict) and isinstance(resource.get("resourceType"), str)
                and resource.get("resourceType") != "Bundle"):
            return Rejection(rejection.source, rejection.position,
                             f"{rejection.reason} (raw text withheld: it may hold identifying data)", b"",
                             rejection.raw_bytes)
        resource_type = resource["resourceType"]
        source_id = resource.get("id")
        resource, references = _without_idat(resource)
        self._rewrite_references(resource, references)
        if isinstance(source_id, str):
            resource["id"] = self._id(resource_type, source_id)
        else:
            resource.pop("id", None)
        return Rejection(rejection.source, rejection.position, rejection.reason, orjson.dumps(resource),
                         rejection.raw_bytes)


def _without_idat(resource: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The resource without IDAT (contained resources too, and identifier and display of each
    Reference), and its Reference objects. Changes nested objects in place: the caller owns them."""
    resource = remove_identifying(resource)
    contained = resource.get("contained")
    if isinstance(contained, list):
        resource["contained"] = [remove_identifying(c) if isinstance(c, dict) else c for c in contained]
    found: list[dict[str, Any]] = []
    _typed_references(resource, resource["resourceType"], found)
    # The R4 model leaves out References inside extensions of skipped elements (an extension on a
    # Coding, say): if the text holds more "reference" keys than were found, search everything.
    if orjson.dumps(resource).count(b'"reference":') != len(found):
        found = []
        _any_references([v for k, v in resource.items() if k != "meta"], found)
    return resource, found


@cache
def _reference_elements() -> tuple[dict[str, dict[str, str]], dict[str, frozenset[str]]]:
    """Per type path (a resource or data type name, or a backbone element's path): the elements that
    are or may hold a Reference, with their own type path; and all its element names.

    Read from the R4 tables fhirpathpy ships (as `dic.fhir.check_resource` does). Looking at every
    object of a synth Observation or Encounter took 37 us; along the model only the few elements that
    can hold a Reference are visited (the codings, quantities and periods are not).
    """
    root = files("fhirpathpy") / "models" / "r4"
    children: dict[str, dict[str, str]] = {}
    for path, fhir_type in json.loads((root / "path2Type.json").read_text()).items():
        parent, _, name = path.rpartition(".")
        if parent:
            children.setdefault(parent, {})[name] = path if fhir_type in {"BackboneElement", "Element"} else fhir_type
    holds = {"Reference", "Resource"}  # extensions are searched wherever they are, so they do not count here
    grown = True
    while grown:
        grown = False
        for parent, elements in children.items():
            if parent not in holds and any(t in holds for n, t in elements.items() if n not in _EXTENSIONS):
                holds.add(parent)
                grown = True
    holders = {p: {n: t for n, t in e.items() if t in holds and n not in _EXTENSIONS} for p, e in children.items()}
    return holders, {p: frozenset(e) | {"resourceType"} for p, e in children.items()}


_EXTENSIONS = frozenset({"extension", "modifierExtension"})


def _typed_references(node: dict[str, Any], type_path: str, found: list[dict[str, Any]]) -> None:
    """The References in `node` (of FHIR type `type_path`), searched along the R4 model."""
    holders, known = _reference_elements()
    if type_path == "Reference":
        _take_reference(node, found)
    names = known.get(type_path)
    if names is None:  # a type the tables do not describe: search everything
        _any_references(list(node.values()), found)
        return
    inside = holders[type_path]
    for key, value in node.items():
        child_type = inside.get(key)
        if child_type is not None:
            for item in value if value.__class__ is list else (value,):
                if item.__class__ is dict:
                    resource_type = item.get("resourceType") if child_type == "Resource" else None
                    _typed_references(item, resource_type if isinstance(resource_type, str) else child_type, found)
        elif key in _EXTENSIONS or key not in names:  # extensions, and elements R4 does not have
            _any_references([value], found)


def _any_references(stack: list[Any], found: list[dict[str, Any]]) -> None:
    """Every Reference (by its shape) in the values on `stack`."""
    while stack:
        node = stack.pop()
        if node.__class__ is dict:
            if node.get("reference").__class__ is str or node.get("identifier").__class__ is dict:
                _take_reference(node, found)
            values = node.values()
        elif node.__class__ is list:
            values = node
        else:
            continue
        stack.extend(v for v in values if v.__class__ is dict or v.__class__ is list)


def _take_reference(node: dict[str, Any], found: list[dict[str, Any]]) -> None:
    for key in REFERENCE_IDAT:
        node.pop(key, None)
    if node.get("reference").__class__ is str:
        found.append(node)


def _path_of(value: Any, target: dict[str, Any], path: str = "") -> str | None:
    """The element path (`encounter.diagnosis[0].condition`) of the object `target` inside `value`."""
    if value is target:
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        where = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
        if isinstance(child, dict | list) and (found := _path_of(child, target, where)) is not None:
            return found
    return None


def _patient_id(node: dict[str, Any]) -> str | None:
    match = _REFERENCE.fullmatch(node["reference"])
    return match["id"] if match is not None and match["type"] == "Patient" else None


def _tag(resource: dict[str, Any], records: set[str]) -> None:
    """Tag the resource with the source records it is about (and with no others)."""
    meta = dict(resource["meta"]) if isinstance(resource.get("meta"), dict) else {}
    tags = [t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") == SOURCE_RECORD_TAG)]
    tags += [{"system": SOURCE_RECORD_TAG, "code": record} for record in sorted(records)]
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    if meta:
        resource["meta"] = meta

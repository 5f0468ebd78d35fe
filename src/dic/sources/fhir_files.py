"""Read FHIR R4 files: NDJSON (also .gz, the Bulk Data format), Bundles and single resources.

Every record becomes an `Entry` or a `Rejection`; nothing raises for bad content, so a
load always carries on and every line is accounted for. NDJSON is read line by line with
bounded memory: a line longer than `MAX_RECORD_BYTES` is skipped in chunks and rejected.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from dic.errors import InputError
from dic.fhir import check_resource, remove_identifying
from dic.sources.record import Entry, Rejection

MAX_RECORD_BYTES = 32 * 1024 * 1024
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
RAW_LIMIT_BYTES = 64 * 1024
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
DOCUMENT_SUFFIXES = (".json", ".json.gz")
_CHUNK = 1024 * 1024
BUNDLES_OF_RESOURCES = frozenset({"collection", "transaction", "batch", "searchset", "history"})


def is_fhir_file(path: Path) -> bool:
    return path.name.lower().endswith(NDJSON_SUFFIXES + DOCUMENT_SUFFIXES)


def find_fhir_files(paths: Iterable[Path | str]) -> list[Path]:
    """The FHIR files among `paths`, folders searched recursively, in a stable order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_fhir_file(p)))
        else:
            found.append(path)
    for path in found:
        try:
            with path.open("rb"):
                pass
        except PermissionError as error:
            raise InputError(f"{path}: cannot be read (permission denied)") from error
    return found


# A step that must see each checked resource as parsed, identifying elements included, before it is
# stored (the trust center's pseudonymization): it gets (resource, source, position) and what it returns
# is yielded instead of the Entry. It saves parsing every resource twice (parsing is about half of the
# cost of reading; measured 12-26 us of ~30-50 us a synth Observation on 2 cores).
Prepare = Callable[[dict[str, Any], str, str], Any]
_Make = Callable[[dict[str, Any], str, str, "bytes | None"], Any]


def read_fhir(path: Path, *, keep_identifying: bool = False, prepare: Prepare | None = None,
              ) -> Iterator[Entry | Rejection | Any]:
    """Every record of one FHIR file, in file order, without identifying elements (see
    `dic.fhir.remove_identifying`) unless `keep_identifying` (for test data only). With `prepare`,
    each checked resource goes to `prepare` as parsed (see `Prepare`) instead of becoming an Entry.

    Parsing runs in this process: measured on 2 cores, handing lines to worker processes
    (forkserver, bounded queue) loaded 200k Observations no faster (10.3 s vs 9.5 s), since
    the engine's merge needs the second core.
    """
    name = path.name.lower()
    make = _maker(keep_identifying, prepare)
    if name.endswith(NDJSON_SUFFIXES):
        source = str(path)
        for item in _ndjson_lines(path):
            if isinstance(item, Rejection):
                yield item
            else:
                yield from _parse_line(source, *item, make)
    elif name.endswith(DOCUMENT_SUFFIXES):
        yield from _read_document(path, make)
    else:
        raise InputError(f"{path}: not a FHIR file (expected {', '.join(NDJSON_SUFFIXES + DOCUMENT_SUFFIXES)})")


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _reject(source: str, position: str, reason: str, raw: bytes, size: int | None = None) -> Rejection:
    return Rejection(source, position, reason, raw[:RAW_LIMIT_BYTES], len(raw) if size is None else size)


def _maker(keep_identifying: bool, prepare: Prepare | None) -> _Make:
    """What becomes of a checked resource: (resource, source, position, its text if unchanged) -> record."""
    if prepare is not None:
        return lambda resource, source, position, _text: prepare(resource, source, position)

    def make(resource: dict[str, Any], source: str, position: str, text: bytes | None) -> Entry:
        if not keep_identifying:
            stored = remove_identifying(resource)
            text = text if stored is resource else None
            resource = stored
        return Entry.of(resource, source, position, text)

    return make


def _entry(resource: Any, source: str, position: str, raw: bytes, make: _Make,
           unchanged: bool = False) -> Entry | Rejection | Any:
    reason = check_resource(resource)
    if reason is not None:
        return _reject(source, position, reason, raw)
    return make(resource, source, position, raw if unchanged else None)


def parse_line(source: str, line_no: int, text: bytes, *, keep_identifying: bool = False,
               prepare: Prepare | None = None) -> Iterator[Entry | Rejection | Any]:
    """One NDJSON line (stripped, not empty): a resource, or the entries of a Bundle that
    carries resources (the Bulk Data `deleted` file holds transaction Bundles of DELETEs)."""
    return _parse_line(source, line_no, text, _maker(keep_identifying, prepare))


def _parse_line(source: str, line_no: int, text: bytes, make: _Make) -> Iterator[Entry | Rejection | Any]:
    position = f"line {line_no}"
    try:
        resource = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        yield _reject(source, position, f"invalid JSON: {error}", text)
        return
    if _carries_resources(resource):
        yield from _read_bundle(resource, source, make, f"{position} ")
    else:
        yield _entry(resource, source, position, text, make, unchanged=True)


def _carries_resources(document: Any) -> bool:
    """A Bundle whose entries are resources to store; a document or message Bundle is itself one."""
    return (
        isinstance(document, dict)
        and document.get("resourceType") == "Bundle"
        and document.get("type") in BUNDLES_OF_RESOURCES
    )


def _ndjson_lines(path: Path) -> Iterator[tuple[int, bytes] | Rejection]:
    """(line number, text) of every non-empty line, or a rejection for a line that cannot be read."""
    source = str(path)
    line_no = 0
    try:
        with _open(path) as stream:
            while True:
                line = stream.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    break
                line_no += 1
                if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                    head, size = line[:RAW_LIMIT_BYTES], len(line)
                    while line and not line.endswith(b"\n"):  # skip the rest, chunk by chunk
                        line = stream.readline(_CHUNK)
                        size += len(line)
                    yield _reject(source, f"line {line_no}", f"record larger than {MAX_RECORD_BYTES} bytes", head, size)
                    continue
                text = line.strip()
                if text:
                    yield line_no, text
    except (OSError, EOFError, zlib.error) as error:  # corrupt or truncated gzip member
        yield _reject(source, f"line {line_no + 1}", f"unreadable compressed data, rest of file skipped: {error}", b"", 0)


def _read_document(path: Path, make: _Make) -> Iterator[Entry | Rejection | Any]:
    source = str(path)
    try:
        with _open(path) as stream:
            data = stream.read(MAX_DOCUMENT_BYTES + 1)
    except (OSError, EOFError, zlib.error) as error:
        yield _reject(source, "file", f"unreadable compressed data: {error}", b"", 0)
        return
    if len(data) > MAX_DOCUMENT_BYTES:
        yield _reject(source, "file", f"JSON document larger than {MAX_DOCUMENT_BYTES} bytes; use NDJSON", data, path.stat().st_size)
        return
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        yield _reject(source, "file", f"invalid JSON: {error}", data)
        return
    if _carries_resources(document):
        yield from _read_bundle(document, source, make)
    else:
        yield _entry(document, source, "resource", data, make)


def _read_bundle(bundle: dict[str, Any], source: str, make: _Make,
                 prefix: str = "") -> Iterator[Entry | Rejection | Any]:
    """Entries of a collection, searchset, transaction or batch Bundle.

    Transaction/batch entries follow `request`: PUT/POST store, DELETE retires.
    POSTed resources without an id take the uuid of their `urn:uuid:` fullUrl, and
    references to that urn inside the bundle are rewritten to `Type/id`.
    """
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        yield _reject(source, prefix.strip() or "file", "Bundle.entry is not an array", orjson.dumps(bundle))
        return
    urn_targets = _urn_targets(entries)
    for index, item in enumerate(entries):
        position = f"{prefix}entry {index}"
        raw = orjson.dumps(item)
        if not isinstance(item, dict):
            yield _reject(source, position, "Bundle entry is not an object", raw)
            continue
        request = item.get("request") if isinstance(item.get("request"), dict) else {}
        if request.get("method") == "DELETE":
            parts = str(request.get("url", "")).split("?")[0].strip("/").split("/")
            if len(parts) != 2:
                yield _reject(source, position, "DELETE entry needs request.url 'Type/id'", raw)
            else:
                yield Entry.deletion(parts[0], parts[1], source, position)
            continue
        resource = item.get("resource")
        if isinstance(resource, dict) and "id" not in resource:
            full_url = item.get("fullUrl")
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
                resource = {**resource, "id": full_url.removeprefix("urn:uuid:")}
        if urn_targets and isinstance(resource, dict):
            resource = _rewrite_urns(resource, urn_targets)
        yield _entry(resource, source, position, raw, make)


def _urn_targets(entries: list[Any]) -> dict[str, str]:
    targets = {}
    for item in entries:
        if isinstance(item, dict) and isinstance(item.get("resource"), dict):
            full_url, resource = item.get("fullUrl"), item["resource"]
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:") and "resourceType" in resource:
                targets[full_url] = f"{resource['resourceType']}/{resource.get('id') or full_url[9:]}"
    return targets


def _rewrite_urns(value: Any, targets: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (targets.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite_urns(v, targets))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite_urns(v, targets) for v in value]
    return value

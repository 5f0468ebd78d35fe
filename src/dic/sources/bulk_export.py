"""FHIR Bulk Data `$export` client: kick-off, status polling, resumable download.

Follows https://hl7.org/fhir/uv/bulkdata/export.html (Bulk Data Access IG, STU 2):

1. Kick-off: `GET [base]/$export` (or `Patient/$export`, `Group/[id]/$export`) with
   `Accept: application/fhir+json` and `Prefer: respond-async` answers `202 Accepted`
   and a `Content-Location` status URL.
2. Status: `GET` the status URL; `202` (optionally `X-Progress`, `Retry-After`) means
   in progress, `200` carries the manifest (`transactionTime`, `requiresAccessToken`,
   `output`, `error`), `4xx/5xx` an OperationOutcome. `429` is a request to slow down.
3. Files: `GET` each `output[].url` with `Accept: application/fhir+ndjson`, with the
   bearer token only when `requiresAccessToken` is true.
4. Optionally `DELETE` the status URL once everything is downloaded.

Everything the next run needs to carry on lives in a state file in `dest/`: the status URL,
the manifest and which files are complete. Files are written as `<name>.part` and renamed
when complete; a cut download resumes with an HTTP `Range` request when the server
supports it. Error files (OperationOutcomes) go to `dest/error/` and the `deleted` files (Bundles of
DELETE requests, for exports with `_since`) to `dest/deleted/`: load `BulkExportResult.files`
and then `deleted_files`, not the whole folder. The bearer token is never written to disk.
"""

from __future__ import annotations

import email.utils
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import orjson

from dic.errors import InputError, SiteError

STATE_FILE = ".bulk-export-state"  # JSON; no FHIR file suffix, so folder loading skips it
ERROR_FOLDER = "error"
DELETED_FOLDER = "deleted"
PART_SUFFIX = ".part"
OUTPUT_FORMAT = "application/fhir+ndjson"
STATUS_ACCEPT = "application/json, application/fhir+json"  # manifest, or an OperationOutcome
TRANSIENT_STATUSES = frozenset({429, 503, 504})
# IssueType `transient` and its children: a 5xx carrying one of these means "try again later"
TRANSIENT_ISSUE_CODES = frozenset(
    {"transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled"}
)
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
CHUNK_BYTES = 1 << 16
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class ExportedFile:
    """One downloaded NDJSON file of the export."""

    resource_type: str
    path: Path
    url: str
    size_bytes: int
    line_count: int


@dataclass(frozen=True)
class ExportProgress:
    """What the `progress` callback receives: a phase and what is known about it."""

    phase: str  # "kick-off", "in-progress", "download", "done"
    detail: str = ""  # the server's X-Progress text while in progress
    path: Path | None = None
    bytes_done: int = 0
    bytes_total: int | None = None


@dataclass(frozen=True)
class BulkExportResult:
    """The outcome of one export: data files, error files and their messages."""

    transaction_time: str
    status_url: str
    files: list[ExportedFile]
    error_files: list[ExportedFile]
    deleted_files: list[ExportedFile]  # Bundles of DELETE requests (exports with _since); load after `files`
    error_messages: list[str]  # OperationOutcome diagnostics from the error files
    reused_files: int = 0  # complete files found from an earlier run, not downloaded again
    status_deleted: bool = False


@dataclass
class _Session:
    """What every request of one export shares."""

    client: httpx.Client
    site: str
    token: str | None
    backoff_s: float
    backoff_cap_s: float
    max_retries: int
    progress: Callable[[ExportProgress], None] | None
    state_path: Path
    state: dict[str, Any] = field(default_factory=dict)

    def report(self, event: ExportProgress) -> None:
        if self.progress is not None:
            self.progress(event)

    def headers(self, accept: str, *, with_token: bool = True) -> dict[str, str]:
        headers = {"Accept": accept}
        if with_token and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, capped."""
        return min(self.backoff_cap_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)

    def save(self) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self.state, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.state_path)

    def send(self, method: str, url: str, headers: dict[str, str]) -> httpx.Response:
        """One request, retried on 429/503/504 and transport errors within the retry budget."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.client.request(method, url, headers=headers)
            except httpx.TransportError as error:
                if last:
                    raise SiteError(
                        self.site, None, f"{method} {url} failed after {attempt + 1} attempts: {error!r}"
                    ) from error
                time.sleep(self.backoff(attempt))
                continue
            if _is_transient(response) and not last:
                time.sleep(_retry_after_s(response) or self.backoff(attempt))
                continue
            return response
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt


def export_to_folder(
    base_url: str,
    dest: Path,
    *,
    token: str | None = None,
    resource_types: list[str] | None = None,
    since: str | None = None,
    timeout_s: float = 60.0,
    max_wait_s: float = 6 * 3600.0,
    progress: Callable[[ExportProgress], None] | None = None,
    backoff_s: float = 1.0,
    backoff_cap_s: float = 120.0,
    max_retries: int = 5,
    delete_when_done: bool = True,
) -> BulkExportResult:
    """Run (or resume) a Bulk Data export from `base_url` into the folder `dest`.

    `base_url` is a FHIR base (system-level export) or ends in `Patient/$export` or
    `Group/[id]/$export`. Calling again with the same `dest` after a crash reuses the
    status URL and manifest, skips complete files and resumes partial ones.
    Raises `SiteError` (site = `base_url`, with the HTTP status) when the server refuses,
    fails, or does not finish within `max_wait_s`.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kickoff_url = _kickoff_url(base_url)
    params: dict[str, str] = {"_outputFormat": OUTPUT_FORMAT}
    if resource_types:
        params["_type"] = ",".join(resource_types)
    if since:
        params["_since"] = since
    request = {"url": kickoff_url, "params": params}

    state_path = dest / STATE_FILE
    state: dict[str, Any] = {"request": request, "files": {}}
    if state_path.exists():
        state = orjson.loads(state_path.read_bytes())
        if state.get("request") != request:
            raise InputError(
                f"{dest}: holds a different export ({state.get('request')}); "
                "use an empty folder for a new export"
            )

    with httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=True) as client:
        session = _Session(
            client, base_url, token, backoff_s, backoff_cap_s, max_retries, progress, state_path, state
        )
        if not state.get("manifest"):
            if not state.get("status_url"):
                state["status_url"] = _kick_off(session, kickoff_url, params)
                session.save()
            state["manifest"] = _wait_for_manifest(session, state["status_url"], max_wait_s)
            session.save()
        result = _download_all(session, dest)
        if delete_when_done and not state.get("status_deleted"):
            response = session.send("DELETE", state["status_url"], session.headers("application/fhir+json"))
            state["status_deleted"] = response.status_code < 300
            session.save()
    session.report(ExportProgress("done"))
    return BulkExportResult(**{**result.__dict__, "status_deleted": bool(state.get("status_deleted"))})


# ---------------------------------------------------------------- kick-off and status
def _kickoff_url(base_url: str) -> str:
    if base_url.rstrip("/").endswith("$export"):
        return base_url.rstrip("/")
    return base_url.rstrip("/") + "/$export"


def _kick_off(session: _Session, kickoff_url: str, params: dict[str, str]) -> str:
    session.report(ExportProgress("kick-off"))
    url = str(httpx.URL(kickoff_url, params=params))
    headers = session.headers("application/fhir+json") | {"Prefer": "respond-async"}
    response = session.send("GET", url, headers)
    if response.status_code != 202:
        raise _site_error(session.site, response, f"kick-off {kickoff_url}")
    location = response.headers.get("Content-Location")
    if not location:
        raise SiteError(session.site, 202, f"kick-off {kickoff_url}: answer has no Content-Location header")
    return urljoin(kickoff_url, location)


def _wait_for_manifest(session: _Session, status_url: str, max_wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + max_wait_s
    attempt = 0
    while True:
        response = session.send("GET", status_url, session.headers(STATUS_ACCEPT))
        if response.status_code == 200:
            try:
                manifest = response.json()
            except ValueError as error:
                raise SiteError(session.site, 200, f"{status_url}: manifest is not JSON") from error
            if not isinstance(manifest, dict) or "output" not in manifest:
                raise SiteError(session.site, 200, f"{status_url}: manifest has no 'output'")
            return manifest
        if response.status_code in (404, 410):
            raise _site_error(
                session.site,
                response,
                f"export status {status_url} (expired or deleted: start again in an empty folder)",
            )
        if response.status_code != 202:
            raise _site_error(session.site, response, f"export status {status_url}")
        session.report(ExportProgress("in-progress", detail=response.headers.get("X-Progress", "")))
        delay = _retry_after_s(response)
        if delay is None:
            delay = session.backoff(attempt)
            attempt += 1
        if time.monotonic() + delay > deadline:
            raise SiteError(
                session.site,
                202,
                f"export at {status_url} not complete after {max_wait_s:g} s; "
                "run again with the same folder to keep waiting",
            )
        time.sleep(delay)


def _retry_after_s(response: httpx.Response) -> float | None:
    """Seconds to wait from `Retry-After` (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _is_transient(response: httpx.Response) -> bool:
    if response.status_code in TRANSIENT_STATUSES:
        return True
    if response.status_code < 500:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    issues = body.get("issue") if isinstance(body, dict) else None
    return bool(issues) and all(issue.get("code") in TRANSIENT_ISSUE_CODES for issue in issues)


def _site_error(site: str, response: httpx.Response, what: str) -> SiteError:
    return SiteError(site, response.status_code, f"{what}: {_outcome_text(response)}")


def _outcome_text(response: httpx.Response) -> str:
    """The messages of an OperationOutcome body, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(_issue_texts(body)) or "OperationOutcome without diagnostics"
    return response.text[:500]


def _issue_texts(outcome: dict[str, Any]) -> list[str]:
    texts = []
    for issue in outcome.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        if text:
            texts.append(f"{issue.get('severity', 'error')}: {text}")
    return texts


# ---------------------------------------------------------------- downloads
def _download_all(session: _Session, dest: Path) -> BulkExportResult:
    manifest = session.state["manifest"]
    with_token = bool(manifest.get("requiresAccessToken"))
    base = session.state["status_url"]
    files: list[ExportedFile] = []
    error_files: list[ExportedFile] = []
    deleted_files: list[ExportedFile] = []
    reused = 0
    kinds = (
        ("output", dest, files),
        ("error", dest / ERROR_FOLDER, error_files),
        ("deleted", dest / DELETED_FOLDER, deleted_files),
    )
    for kind, folder, out in kinds:
        numbers: dict[str, int] = {}
        for item in manifest.get(kind) or []:
            resource_type = item.get("type", "")
            if not _RESOURCE_TYPE.fullmatch(resource_type) or not item.get("url"):
                raise SiteError(session.site, 200, f"manifest {kind} entry {item!r}: no valid type and url")
            numbers[resource_type] = numbers.get(resource_type, 0) + 1
            url = urljoin(base, item["url"])
            path = folder / f"{resource_type}.{numbers[resource_type]:03d}.ndjson"
            done = session.state["files"].get(url)
            if done and done.get("complete") and path.exists() and path.stat().st_size == done["size_bytes"]:
                reused += 1
            else:
                folder.mkdir(parents=True, exist_ok=True)
                size_bytes, line_count = _download(session, url, path, with_token)
                if item.get("count") is not None and item["count"] != line_count:
                    path.unlink()
                    raise SiteError(
                        session.site,
                        None,
                        f"{url}: manifest says {item['count']} resources, file has {line_count} lines",
                    )
                done = {"complete": True, "size_bytes": size_bytes, "line_count": line_count}
                session.state["files"][url] = done
                session.save()
            out.append(ExportedFile(resource_type, path, url, done["size_bytes"], done["line_count"]))
    messages = [text for f in error_files for text in _error_messages(f.path)]
    return BulkExportResult(
        transaction_time=manifest.get("transactionTime", ""),
        status_url=base,
        files=files,
        error_files=error_files,
        deleted_files=deleted_files,
        error_messages=messages,
        reused_files=reused,
    )


def _download(session: _Session, url: str, path: Path, with_token: bool) -> tuple[int, int]:
    """Stream `url` to `path` via `path.part`, resuming a partial file; (bytes, lines)."""
    part = path.with_name(path.name + PART_SUFFIX)
    for attempt in range(session.max_retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        headers = session.headers(OUTPUT_FORMAT, with_token=with_token)
        if offset:
            # byte ranges of the identity encoding are byte ranges of what is on disk
            headers |= {"Range": f"bytes={offset}-", "Accept-Encoding": "identity"}
        try:
            with session.client.stream("GET", url, headers=headers) as response:
                if response.status_code in TRANSIENT_STATUSES and attempt < session.max_retries:
                    time.sleep(_retry_after_s(response) or session.backoff(attempt))
                    continue
                if response.status_code == 416 and offset:
                    if _range_total(response) == offset:  # the part file was already whole
                        break
                    part.unlink()  # the part does not fit the file: start again
                    continue
                encoded = response.headers.get("Content-Encoding", "identity") != "identity"
                if (
                    response.status_code == 206
                    and offset
                    and _range_start(response) == offset
                    and not encoded
                ):
                    mode = "ab"
                elif response.status_code == 200:
                    mode, offset = "wb", 0
                else:
                    response.read()
                    raise _site_error(session.site, response, f"download {url}")
                total = response.headers.get("Content-Length")
                total_bytes = offset + int(total) if total and total.isdigit() else None
                with part.open(mode) as out:
                    for chunk in response.iter_bytes():  # as they arrive
                        out.write(chunk)
                        out.flush()  # what is reported is on disk, for a resume after a kill
                        offset += len(chunk)
                        session.report(
                            ExportProgress("download", path=path, bytes_done=offset, bytes_total=total_bytes)
                        )
            break
        except httpx.TransportError as error:
            if attempt == session.max_retries:
                raise SiteError(
                    session.site, None, f"download {url} failed after {attempt + 1} attempts: {error!r}"
                ) from error
            time.sleep(session.backoff(attempt))
    else:
        raise SiteError(
            session.site, None, f"download {url}: no complete answer after {attempt + 1} attempts"
        )
    line_count = _count_lines(part)
    os.replace(part, path)
    return path.stat().st_size, line_count


def _range_start(response: httpx.Response) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    return int(match.group(1)) if match else None


def _range_total(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Range", "").strip()
    match = re.fullmatch(r"bytes \*/(\d+)", value)
    return int(match.group(1)) if match else None


def _count_lines(path: Path) -> int:
    """NDJSON lines (newlines, plus a last line without one), read in chunks (bounded memory)."""
    count, last = 0, b"\n"
    with path.open("rb") as data:
        while chunk := data.read(CHUNK_BYTES):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (0 if last == b"\n" else 1)


def _error_messages(path: Path) -> list[str]:
    messages = []
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                outcome = orjson.loads(line)
            except orjson.JSONDecodeError:
                messages.append(f"{path.name} line {number}: not JSON")
                continue
            messages.extend(_issue_texts(outcome) if isinstance(outcome, dict) else [])
    return messages

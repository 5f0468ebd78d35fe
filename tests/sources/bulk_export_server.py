"""A small FHIR Bulk Data `$export` server for tests, following the published protocol.

https://hl7.org/fhir/uv/bulkdata/export.html: kick-off (`[base]/$export`, `Patient/$export`,
`Group/[id]/$export`, each needing `Prefer: respond-async`) answers 202 + Content-Location;
the status URL answers 202 (X-Progress, Retry-After) until the manifest (200), 404 after
DELETE; file URLs serve NDJSON, with byte ranges when enabled. Failures are answered with
OperationOutcomes. A real HTTP server on 127.0.0.1 (a free port), run in a thread.

Behaviour is set with `ExportBehaviour`; every request is kept in `server.requests`.
"""

from __future__ import annotations

import re
import socket
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import orjson

OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
_KICKOFF = re.compile(r"/fhir(?:/Patient|/Group/([^/]+))?/\$export")


@dataclass
class ExportBehaviour:
    token: str | None = None  # bearer token required on every request when set
    requires_access_token: bool = True  # the manifest's requiresAccessToken (file downloads)
    polls_in_progress: int = 0  # status answers 202 this many times before the manifest
    retry_after: str | None = None  # Retry-After value sent with each 202
    status_429_once: bool = False
    file_429_once: bool = False
    kickoff_error: tuple[int, str] | None = None  # (status, diagnostics) answered at kick-off
    status_error: tuple[int, str] | None = None  # (status, diagnostics) answered by the status URL
    status_transient_once: bool = False  # one 500 whose OperationOutcome has issue code `transient`
    error_outcomes: list[dict[str, Any]] = field(default_factory=list)  # served as an error file
    deleted_bundles: list[dict[str, Any]] = field(default_factory=list)  # served as the `deleted` file
    range_support: bool = True
    cut_after_bytes: dict[str, int] = field(default_factory=dict)  # file name -> cut once after K bytes
    give_count: bool = True  # put `count` into the manifest's output entries
    groups: tuple[str, ...] = ("g1",)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names


def operation_outcome(diagnostics: str, code: str = "processing") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


class BulkExportServer:
    """Serve `outputs` — (resource type, resources) pairs, one NDJSON file each."""

    def __init__(self, outputs: list[tuple[str, list[dict[str, Any]]]], behaviour: ExportBehaviour):
        self.behaviour = behaviour
        self.outputs = [(rtype, f"{rtype}-{n}.ndjson", ndjson(res)) for n, (rtype, res) in enumerate(outputs)]
        self.file_bytes = {name: data for _, name, data in self.outputs}
        if behaviour.error_outcomes:
            self.file_bytes["errors.ndjson"] = ndjson(behaviour.error_outcomes)
        if behaviour.deleted_bundles:
            self.file_bytes["deleted.ndjson"] = ndjson(behaviour.deleted_bundles)
        self.requests: list[SeenRequest] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self._once_done: set[str] = set()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.base_url = self.origin + "/fhir"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def once(self, key: str) -> bool:
        """True the first time `key` is asked for (a behaviour that happens once)."""
        with self.lock:
            if key in self._once_done:
                return False
            self._once_done.add(key)
            return True

    def seen(self, method: str, path_prefix: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    def manifest(self, job: dict[str, Any]) -> dict[str, Any]:
        types = job["types"]
        output = []
        for rtype, name, data in self.outputs:
            if types and rtype not in types:
                continue
            entry: dict[str, Any] = {"type": rtype, "url": f"{self.origin}/files/{name}"}
            if self.behaviour.give_count:
                entry["count"] = data.count(b"\n")
            output.append(entry)
        error = []
        if self.behaviour.error_outcomes:
            error.append({"type": "OperationOutcome", "url": f"{self.origin}/files/errors.ndjson"})
        manifest: dict[str, Any] = {
            "transactionTime": job["transaction_time"],
            "request": job["request"],
            "requiresAccessToken": self.behaviour.requires_access_token,
            "output": output,
            "error": error,
        }
        if self.behaviour.deleted_bundles:
            manifest["deleted"] = [{"type": "Bundle", "url": f"{self.origin}/files/deleted.ndjson"}]
        return manifest


def _handler(server: BulkExportServer) -> type[BaseHTTPRequestHandler]:
    behaviour = server.behaviour

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are separate writes

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # ------------------------------------------------ plumbing
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _outcome(self, status: int, diagnostics: str, code: str = "processing") -> None:
            body = orjson.dumps(operation_outcome(diagnostics, code))
            self._send(status, body, {"Content-Type": "application/fhir+json"})

        def _record(self) -> SeenRequest:
            split = urlsplit(self.path)
            seen = SeenRequest(
                self.command,
                split.path,
                parse_qs(split.query),
                {k.lower(): v for k, v in self.headers.items()},
            )
            with server.lock:
                server.requests.append(seen)
            return seen

        def _authorized(self, seen: SeenRequest, required: bool = True) -> bool:
            if not behaviour.token or not required:
                return True
            if seen.headers.get("authorization") == f"Bearer {behaviour.token}":
                return True
            self._outcome(401, "missing or invalid bearer token", "login")
            return False

        # ------------------------------------------------ routes
        def do_GET(self) -> None:
            seen = self._record()
            if match := _KICKOFF.fullmatch(seen.path):
                self._kick_off(seen, match.group(1))
            elif seen.path.startswith("/status/"):
                self._status(seen, seen.path.removeprefix("/status/"))
            elif seen.path.startswith("/files/"):
                self._file(seen, seen.path.removeprefix("/files/"))
            else:
                self._outcome(404, f"unknown path {seen.path}", "not-found")

        def do_DELETE(self) -> None:
            seen = self._record()
            job_id = seen.path.removeprefix("/status/")
            if not self._authorized(seen):
                return
            with server.lock:
                job = server.jobs.pop(job_id, None)
            if job is None:
                self._outcome(404, f"no export {job_id}", "not-found")
            else:
                self._send(202)

        def _kick_off(self, seen: SeenRequest, group: str | None) -> None:
            if not self._authorized(seen):
                return
            if behaviour.kickoff_error:
                self._outcome(*behaviour.kickoff_error)
                return
            if seen.headers.get("prefer") != "respond-async":
                self._outcome(400, "Prefer: respond-async is required", "invalid")
                return
            if seen.headers.get("accept") != "application/fhir+json":
                self._outcome(400, "Accept must be application/fhir+json", "invalid")
                return
            fmt = seen.query.get("_outputFormat", ["application/fhir+ndjson"])[0]
            if fmt not in OUTPUT_FORMATS:
                self._outcome(400, f"unsupported _outputFormat {fmt}", "not-supported")
                return
            if group is not None and group not in behaviour.groups:
                self._outcome(404, f"Group/{group} not found", "not-found")
                return
            types = [t for v in seen.query.get("_type", []) for t in v.split(",") if t]
            job_id = uuid.uuid4().hex
            with server.lock:
                server.jobs[job_id] = {
                    "types": types,
                    "polls_left": behaviour.polls_in_progress,
                    "transaction_time": "2026-11-29T03:00:00.000Z",
                    "request": server.origin + self.path,
                }
            self._send(202, headers={"Content-Location": f"{server.origin}/status/{job_id}"})

        def _status(self, seen: SeenRequest, job_id: str) -> None:
            if not self._authorized(seen):
                return
            if behaviour.status_429_once and server.once("status-429"):
                self._outcome(429, "too many requests", "throttled")
                return
            if behaviour.status_transient_once and server.once("status-transient"):
                self._outcome(500, "status store briefly unavailable, retry later", "transient")
                return
            if behaviour.status_error:
                self._outcome(*behaviour.status_error)
                return
            with server.lock:
                job = server.jobs.get(job_id)
                if job is not None and job["polls_left"] > 0:
                    job["polls_left"] -= 1
                    done = behaviour.polls_in_progress - job["polls_left"]
                    polling = True
                else:
                    polling = False
            if job is None:
                self._outcome(404, f"no export {job_id} (deleted or expired)", "not-found")
            elif polling:
                headers = {"X-Progress": f"step {done} of {behaviour.polls_in_progress + 1}"}
                if behaviour.retry_after is not None:
                    headers["Retry-After"] = behaviour.retry_after
                self._send(202, headers=headers)
            else:
                body = orjson.dumps(server.manifest(job))
                expires = formatdate(usegmt=True)
                self._send(200, body, {"Content-Type": "application/json", "Expires": expires})

        def _file(self, seen: SeenRequest, name: str) -> None:
            if not self._authorized(seen, behaviour.requires_access_token):
                return
            data = server.file_bytes.get(name)
            if data is None:
                self._outcome(404, f"no file {name}", "not-found")
                return
            if behaviour.file_429_once and server.once(f"file-429-{name}"):
                self._outcome(429, "too many requests", "throttled")
                return
            start, status, headers = 0, 200, {"Content-Type": "application/fhir+ndjson"}
            if behaviour.range_support:
                headers["Accept-Ranges"] = "bytes"
                if match := re.fullmatch(r"bytes=(\d+)-", seen.headers.get("range", "")):
                    start = int(match.group(1))
                    if start >= len(data):
                        self._send(416, headers={"Content-Range": f"bytes */{len(data)}"})
                        return
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = behaviour.cut_after_bytes.get(name)
            if cut is not None and cut < len(body) and server.once(f"cut-{name}"):
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send(status, body, headers)

    return Handler

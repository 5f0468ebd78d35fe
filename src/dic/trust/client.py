"""The two ways to reach the trust center, with the same methods:

    LocalTrust(center, caller)   in-process (the embedded set-up: `dic demo`, tests)
    HttpTrust(url, api_key)      the service started by `dic trust serve`
    connect(where, system, role, api_key)   either, from a repository's trust setting (folder or URL)

Both validate IDAT before sending (so one malformed record is refused on its own and the
others still register) and both end in the same `TrustCenter` methods, which authorize and
audit every call. Both satisfy `PatientRegistry`, the loaders' view of the trust center.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from dic.errors import ConfigError, InputError, NotAuthenticated, NotAuthorized, SiteError
from dic.trust.access import Caller
from dic.trust.center import Change, TrustCenter, Withdrawal, check_idat
from dic.trust.registry import Registration


class _Registry(ABC):
    def register(self, records: Sequence[tuple[str, dict[str, Any]]]) -> list[Registration | str]:
        """A Registration per record, or the reason its IDAT was refused."""
        checked, problems = check_idat(records)
        refused = {p["index"]: p["message"] for p in problems}
        valid = [(source_id, idat.model_dump(mode="json", exclude_none=True)) for source_id, idat in checked]
        found = iter(self._register(valid) if valid else [])
        return [refused[i] if i in refused else next(found) for i in range(len(records))]

    @abstractmethod
    def _register(self, records: list[tuple[str, dict[str, Any]]]) -> list[Registration]:
        """Register records whose IDAT already validated."""


class LocalTrust(_Registry):
    """The trust center in this process, called as `caller`."""

    def __init__(self, center: TrustCenter, caller: Caller):
        self.center = center
        self.caller = caller

    def _register(self, records: list[tuple[str, dict[str, Any]]]) -> list[Registration]:
        return self.center.register(self.caller, records)

    def lookup(self, source_ids: Sequence[str]) -> dict[str, Registration]:
        return self.center.lookup(self.caller, source_ids)

    def merge_records(self, prior_id: str, surviving_id: str) -> Registration | None:
        return self.center.merge_records(self.caller, prior_id, surviving_id)

    def record_consents(self, consents: Sequence[dict[str, Any]]) -> int:
        return self.center.record_consents(self.caller, consents)

    def may_use(self, pseudonym: str, purpose: str, data_date: date, as_of: date | None = None) -> bool:
        return self.center.may_use(self.caller, pseudonym, purpose, data_date, as_of)

    def withdrawals(self, as_of: date | None = None) -> list[Withdrawal]:
        return self.center.withdrawals(self.caller, as_of)

    def project_pseudonyms(self, project: str, pseudonyms: Sequence[str]) -> dict[str, str]:
        return self.center.project_pseudonyms(self.caller, project, pseudonyms)

    def project_members(self, project: str, members: Sequence[tuple[str, date]]) -> dict[str, str]:
        return self.center.project_members(self.caller, project, members)

    def changes(self, since: int = 0) -> list[Change]:
        return self.center.changes(self.caller, since)


class HttpTrust(_Registry):
    """The trust-center service at `url`, called with `api_key`."""

    def __init__(self, url: str, api_key: str, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise SiteError(self.url, None, f"trust center unreachable: {error}") from error
        if response.status_code == 401:
            raise NotAuthenticated(response.json().get("detail", "not authenticated"))
        if response.status_code == 403:
            raise NotAuthorized(response.json().get("detail", "not authorized"))
        if response.status_code == 422:
            raise InputError(str(response.json().get("detail")))
        if response.status_code != 200:
            raise SiteError(self.url, response.status_code, response.text[:500])
        return response.json()

    def _register(self, records: list[tuple[str, dict[str, Any]]]) -> list[Registration]:
        body = {"records": [{"source_id": s, "idat": i} for s, i in records]}
        found = self._call("POST", "/v1/patients", json=body)["registrations"]
        return [Registration(r["pseudonym"], r["record"], r["outcome"]) for r in found]

    def lookup(self, source_ids: Sequence[str]) -> dict[str, Registration]:
        found = self._call("POST", "/v1/patients/lookup", json={"source_ids": list(source_ids)})["found"]
        return {k: Registration(**v) for k, v in found.items()}

    def merge_records(self, prior_id: str, surviving_id: str) -> Registration | None:
        found = self._call("POST", "/v1/patients/merge", json={"prior_id": prior_id, "surviving_id": surviving_id})
        return Registration(**found["surviving"]) if found["surviving"] else None

    def record_consents(self, consents: Sequence[dict[str, Any]]) -> int:
        return self._call("POST", "/v1/consents", json={"consents": list(consents)})["recorded"]

    def may_use(self, pseudonym: str, purpose: str, data_date: date, as_of: date | None = None) -> bool:
        params = {"pseudonym": pseudonym, "purpose": purpose, "data_date": data_date.isoformat()}
        if as_of:
            params["as_of"] = as_of.isoformat()
        return self._call("GET", "/v1/may-use", params=params)["allowed"]

    def withdrawals(self, as_of: date | None = None) -> list[Withdrawal]:
        params = {"as_of": as_of.isoformat()} if as_of else {}
        found = self._call("GET", "/v1/withdrawals", params=params)["withdrawals"]
        return [Withdrawal(w["pseudonym"], date.fromisoformat(w["since"])) for w in found]

    def project_pseudonyms(self, project: str, pseudonyms: Sequence[str]) -> dict[str, str]:
        return self._call("POST", f"/v1/projects/{project}/pseudonyms", json={"pseudonyms": list(pseudonyms)})["pseudonyms"]

    def project_members(self, project: str, members: Sequence[tuple[str, date]]) -> dict[str, str]:
        body = {"members": [{"pseudonym": p, "data_date": d.isoformat()} for p, d in members]}
        return self._call("POST", f"/v1/projects/{project}/members", json=body)["members"]

    def changes(self, since: int = 0) -> list[Change]:
        return [Change(**c) for c in self._call("GET", "/v1/changes", params={"since": since})["changes"]]


@contextmanager
def connect(where: str, system: str, role: str, api_key: str | None = None) -> Iterator[LocalTrust | HttpTrust]:
    """The trust center named by a repository's setting: a URL (`dic trust serve`, with `api_key`) or a
    folder (opened in-process; the caller is `system` with `role`)."""
    if where.startswith(("http://", "https://")):
        if not api_key:
            raise ConfigError(f"the trust center at {where} needs an API key for {system}")
        client = HttpTrust(where, api_key)
        try:
            yield client
        finally:
            client.close()
        return
    center = TrustCenter.open(Path(where))
    try:
        yield LocalTrust(center, Caller(system, role))
    finally:
        center.close()

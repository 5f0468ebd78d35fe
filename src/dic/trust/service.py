"""`dic trust serve`: the trust center over HTTP (FastAPI). A thin layer: it authenticates the
API key, turns JSON into arguments of `TrustCenter` and its errors into 401/403/422.

    Authorization: Bearer dic_<id>_<secret>
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from dic.errors import InputError, NotAuthenticated, NotAuthorized
from dic.trust.access import Caller
from dic.trust.center import InvalidIdat, TrustCenter

MAX_RECORDS = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceRecord(_Body):
    source_id: str = Field(min_length=1, max_length=200, description="the source system's own patient id")
    idat: dict[str, Any] = Field(description="identifying data with the Idat field names")


class RegisterRequest(_Body):
    records: list[SourceRecord] = Field(min_length=1, max_length=MAX_RECORDS)


class LookupRequest(_Body):
    source_ids: list[str] = Field(max_length=MAX_RECORDS)


class ConsentsRequest(_Body):
    consents: list[dict[str, Any]] = Field(max_length=MAX_RECORDS)


class ProjectRequest(_Body):
    name: str = Field(min_length=1, max_length=100)
    purpose: str


class PseudonymsRequest(_Body):
    pseudonyms: list[str] = Field(max_length=MAX_RECORDS)


class Member(_Body):
    pseudonym: str
    data_date: date


class MembersRequest(_Body):
    members: list[Member] = Field(max_length=MAX_RECORDS)


class DecisionRequest(_Body):
    same: bool


class RecordMergeRequest(_Body):
    prior_id: str = Field(min_length=1)
    surviving_id: str = Field(min_length=1)


class MergeRequest(_Body):
    from_pseudonym: str
    into_pseudonym: str


class SplitRequest(_Body):
    pseudonym: str
    records: list[str] = Field(min_length=1)


def create_app(center: TrustCenter) -> FastAPI:
    app = FastAPI(title="DIC trust center", version="1",
                  description="Patient list, record linkage, pseudonyms and consent, apart from the research data.")
    bearer = HTTPBearer(auto_error=False)

    def caller(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
        return center.authenticate(credentials.credentials if credentials else None)

    @app.exception_handler(NotAuthenticated)
    def _unauthenticated(_: Request, error: NotAuthenticated) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotAuthorized)
    def _forbidden(_: Request, error: NotAuthorized) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(InvalidIdat)
    def _invalid_idat(_: Request, error: InvalidIdat) -> JSONResponse:
        return JSONResponse({"detail": str(error), "problems": error.problems}, status_code=422)

    @app.exception_handler(InputError)
    def _invalid(_: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    me = Depends(caller)

    @app.post("/v1/patients", summary="Register source records (IDAT) and get DIC pseudonyms")
    def register(body: RegisterRequest, who: Caller = me) -> dict[str, Any]:
        found = center.register(who, [(r.source_id, r.idat) for r in body.records])
        return {"registrations": [{"source_id": r.source_id, **vars(g)} for r, g in zip(body.records, found, strict=True)]}

    @app.post("/v1/patients/lookup", summary="Pseudonyms of already registered source records")
    def lookup(body: LookupRequest, who: Caller = me) -> dict[str, Any]:
        return {"found": {k: vars(v) for k, v in center.lookup(who, body.source_ids).items()}}

    @app.post("/v1/patients/merge", summary="The source system merged two of its patient records (ADT^A40)")
    def merge_records(body: RecordMergeRequest, who: Caller = me) -> dict[str, Any]:
        found = center.merge_records(who, body.prior_id, body.surviving_id)
        return {"surviving": vars(found) if found else None}

    @app.post("/v1/consents", summary="Record MII Broad Consent resources (patient = DIC pseudonym)")
    def consents(body: ConsentsRequest, who: Caller = me) -> dict[str, Any]:
        return {"recorded": center.record_consents(who, body.consents)}

    @app.get("/v1/may-use", summary="May this person's data of this date be used for this purpose?")
    def may_use(pseudonym: str, purpose: str, data_date: date, as_of: date | None = None, who: Caller = me) -> dict[str, Any]:
        return {"allowed": center.may_use(who, pseudonym, purpose, data_date, as_of)}

    @app.get("/v1/withdrawals", summary="Persons who withdrew consent, with the date from which")
    def withdrawals(as_of: date | None = None, who: Caller = me) -> dict[str, Any]:
        return {"withdrawals": [{"pseudonym": w.pseudonym, "since": w.since.isoformat()}
                                for w in center.withdrawals(who, as_of)]}

    @app.post("/v1/projects", summary="Approve a research project (its own pseudonym domain)")
    def add_project(body: ProjectRequest, who: Caller = me) -> dict[str, Any]:
        return {"domain": center.add_project(who, body.name, body.purpose)}

    @app.post("/v1/projects/{project}/pseudonyms", summary="DIC pseudonyms -> project pseudonyms")
    def project_pseudonyms(project: str, body: PseudonymsRequest, who: Caller = me) -> dict[str, Any]:
        return {"pseudonyms": center.project_pseudonyms(who, project, body.pseudonyms)}

    @app.post("/v1/projects/{project}/members", summary="A cohort's members -> project pseudonyms, consent-filtered")
    def project_members(project: str, body: MembersRequest, who: Caller = me) -> dict[str, Any]:
        members = [(m.pseudonym, m.data_date) for m in body.members]
        return {"members": center.project_members(who, project, members)}

    @app.get("/v1/changes", summary="Merges and splits since a sequence number (the DIC re-attributes data)")
    def changes(since: int = 0, who: Caller = me) -> dict[str, Any]:
        return {"changes": [vars(c) for c in center.changes(who, since)]}

    @app.get("/v1/review", summary="Possible matches for clerical review (staff only)")
    def review(status: str = "open", who: Caller = me) -> dict[str, Any]:
        return {"items": center.review_items(who, status)}

    @app.post("/v1/review/{review_id}", summary="Decide a possible match (staff only)")
    def resolve(review_id: int, body: DecisionRequest, who: Caller = me) -> dict[str, Any]:
        change = center.resolve_review(who, review_id, body.same)
        return {"change": vars(change) if change else None}

    @app.post("/v1/persons/merge", summary="Merge two persons (staff only)")
    def merge(body: MergeRequest, who: Caller = me) -> dict[str, Any]:
        change = center.merge(who, body.from_pseudonym, body.into_pseudonym)
        return {"change": vars(change) if change else None}

    @app.post("/v1/persons/split", summary="Move some source records of a person to a new person (staff only)")
    def split(body: SplitRequest, who: Caller = me) -> dict[str, Any]:
        return {"change": vars(center.split(who, body.pseudonym, body.records))}

    @app.get("/v1/reidentify/{pseudonym}", summary="Pseudonym -> IDAT (staff only, audited)")
    def reidentify(pseudonym: str, who: Caller = me) -> dict[str, Any]:
        return center.reidentify(who, pseudonym)

    @app.get("/v1/audit/verify", summary="Check the audit log's hash chain (staff only)")
    def verify(who: Caller = me) -> dict[str, Any]:
        return vars(center.verify_audit(who))

    @app.post("/v1/keys/rotate", summary="Rotate the pseudonym key; issued pseudonyms stay valid (staff only)")
    def rotate(who: Caller = me) -> dict[str, Any]:
        return {"key_version": center.rotate_key(who)}

    return app

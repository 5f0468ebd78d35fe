"""`dic serve`: the DIC's research API (FastAPI) for feasibility portals, coordinators and projects.

    POST /v1/cohort/count?breakdown=age&reference_date=…        body: a CCDL query
    POST /v1/cohort/characterize?reference_date=…              body: a CCDL query
    POST /v1/cohort/members?project=P&reference_date=…         body: a CCDL query
    POST /v1/cohort/explain                                    body: a CCDL query (validation + code lists)

`from_environment()` is the factory `dic api serve` hands to uvicorn (repository in DIC_API_REPO; a
trust center behind a URL needs DIC_TRUST_DIC_KEY). A thin layer over `dic.cohort`: it authenticates the key (Authorization: Bearer dic_<id>_<secret>),
checks the role (roles.yaml), and turns errors into 401/403/422 — an invalid query gets every
problem with its JSON path. Requests are served one at a time (the embedded DuckDB has one writer:
the query log).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import date
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dic.errors import (
    ConfigError,
    DefinitionError,
    DisclosureError,
    InputError,
    NotAuthenticated,
    NotAuthorized,
)
from dic.privacy import Client, authenticate, require

CCDL = Body(..., description="A CCDL query (MII Clinical Cohort Definition Language, version 2 or 3).")


def create_app(repo: Path, dic_trust: Callable[[], AbstractContextManager[Any]]) -> FastAPI:
    """`dic_trust()` opens the DIC's trust-center client (for member lists)."""
    from dic.cohort import characterize, cohort_members, compile_query, count_cohort, parse_ccdl
    from dic.privacy import site_rules, site_secret
    from dic.repository import open_repository

    app = FastAPI(title="DIC research API", version="1",
                  description="Feasibility counts, table 1 and member lists from CCDL queries, disclosure-controlled.")
    bearer = HTTPBearer(auto_error=False)
    one_at_a_time = threading.Lock()
    rules, secret = site_rules(repo), site_secret(repo)

    def client(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Client:
        return authenticate(repo, credentials.credentials if credentials else None)

    @app.exception_handler(NotAuthenticated)
    def _unauthenticated(_: Request, error: NotAuthenticated) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotAuthorized)
    def _forbidden(_: Request, error: NotAuthorized) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(DisclosureError)
    def _too_disclosive(_: Request, error: DisclosureError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=403)

    @app.exception_handler(DefinitionError)
    def _invalid_query(_: Request, error: DefinitionError) -> JSONResponse:
        problems = [{"path": p.path, "message": p.message} for p in error.problems]
        return JSONResponse({"detail": f"invalid CCDL query: {len(problems)} problem(s)", "problems": problems},
                            status_code=422)

    @app.exception_handler(InputError)
    def _invalid(_: Request, error: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)

    me = Depends(client)

    def run(action: Callable[[Any], Any]) -> Any:
        with one_at_a_time:
            db = open_repository(repo)
            try:
                return action(db)
            finally:
                db.close()

    def day(text: str | None) -> date:
        try:
            return date.fromisoformat(text) if text else date.today()
        except ValueError:
            raise InputError(f"reference_date {text!r} is not a date (YYYY-MM-DD)") from None

    @app.post("/v1/cohort/count", summary="How many patients match (disclosure-controlled)")
    def count(ccdl: dict[str, Any] = CCDL, breakdown: list[str] = Query([]), reference_date: str | None = None,
              who: Client = me) -> dict[str, Any]:
        require(who, "count")
        query, ref = parse_ccdl(ccdl), day(reference_date)
        answer = run(lambda db: count_cohort(db, query, ref, rules=rules, secret=secret, actor=f"api:{who.name}",
                                             breakdowns=breakdown))
        return answer.as_dict()

    @app.post("/v1/cohort/characterize", summary="The cohort's table 1 (disclosure-controlled)")
    def table_one(ccdl: dict[str, Any] = CCDL, reference_date: str | None = None, who: Client = me) -> dict[str, Any]:
        require(who, "characterize")
        query, ref = parse_ccdl(ccdl), day(reference_date)
        return run(lambda db: characterize(db, query, ref, rules=rules, secret=secret,
                                           actor=f"api:{who.name}")).as_dict()

    @app.post("/v1/cohort/members", summary="The members as project pseudonyms (approved project, consent-filtered)")
    def members(ccdl: dict[str, Any] = CCDL, project: str = Query(...), reference_date: str | None = None,
                who: Client = me) -> dict[str, Any]:
        require(who, "members", project)
        query, ref = parse_ccdl(ccdl), day(reference_date)

        def answer(db: Any) -> Any:
            with dic_trust() as trust:
                return cohort_members(db, trust, query, ref, project, actor=f"api:{who.name}")

        return run(answer).as_dict()

    @app.post("/v1/cohort/explain", summary="Validate a query and show its expanded code lists (no data)")
    def explain(ccdl: dict[str, Any] = CCDL, reference_date: str | None = None, who: Client = me) -> dict[str, Any]:
        require(who, "count")
        query = parse_ccdl(ccdl)
        compiled = compile_query(query, day(reference_date))
        return {"code_lists": compiled.code_lists, "warnings": list(query.warnings)}

    return app


def from_environment() -> FastAPI:
    """The app for the repository in DIC_API_REPO (set by `dic api serve`)."""
    from dic.repository import read_config
    from dic.trust import connect

    folder = os.environ.get("DIC_API_REPO")
    if not folder:
        raise ConfigError("DIC_API_REPO names no repository")
    repo = Path(folder)
    where = read_config(repo).trust or ""
    return create_app(repo, lambda: connect(where, "dic", "dic", os.environ.get("DIC_TRUST_DIC_KEY")))

"""A simulated partner system as a real HTTP service (FastAPI) over its own database.

One generic app, parametrised by a partner profile (``connectors.profiles``). Routes:

- ``POST /holder/v1/query``    records in the asked categories, or a refusal with a reason
- ``POST /holder/v1/discover`` hit/no-hit: record types per subject, no content; or a refusal with a reason
- ``GET /health``              liveness, no authentication

``/holder/*`` requires the gateway's bearer JWT (see ``holder_auth``) unless ``require_auth`` is off (tests of
the simulator alone). Every error is problem+json (RFC 9457). Logs carry the system, request ids and counts,
never subjects' data. Run it with ``wgs-partner serve`` or ``python -m connectors.simulator serve``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from connectors.dedup import REPLAY_IDS, RequestIdReused
from connectors.holder import Holder
from connectors.holder_auth import JwksSource, TokenRefused, make_decision_verifier, make_verifier
from connectors.logs import TraceContextMiddleware
from connectors.profiles import PROFILES
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery
from connectors.store import PartnerStore, store_path
from connectors.world import World, build_world

log = structlog.get_logger("connectors.simulator")

_PROBLEM = {"application/problem+json": {"schema": {"type": "object", "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, forged, expired or wrongly addressed gateway token.", "content": _PROBLEM},
    409: {"description": "The request id was already used for a different request.", "content": _PROBLEM},
    422: {"description": "The request does not match the holder protocol.", "content": _PROBLEM},
}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json", headers=headers)


def _route_of(app: FastAPI, scope: Scope) -> str | None:
    """The template of the route ``scope`` is for (``/holder/v1/query``), None when none matches. Logged in
    place of the path: the middleware runs before routing, and a path is whatever the caller sent — an
    identifier put in it would reach the log as it came."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", None)
    return None


def create_partner_app(system: str, data_dir: Path, *, seed: int = 2025, jwks: JwksSource | None = None,
                       require_auth: bool = True, over_share: bool = False, now: Callable[[], float] = time.time,
                       world: World | None = None, issuer: str | None = None,
                       replay_ids: int = REPLAY_IDS) -> FastAPI:
    """The HTTP service of partner ``system``; its database is ``data_dir/partner-<system>.sqlite``, seeded
    from ``world`` (default: ``build_world(seed)``) on first start. ``issuer``: the gateway's ``iss``, which
    its tokens and decisions must then carry. ``replay_ids``: how many answered request ids it remembers."""
    profile = PROFILES[system]
    if require_auth and jwks is None:
        raise ValueError("require_auth needs the gateway's JWKS (a URL, a file or the keys)")
    store = PartnerStore(store_path(data_dir, system))
    store.seed_from(world or build_world(seed), system)
    holder = Holder(profile, store, over_share=over_share, replay_ids=replay_ids)
    verify = make_verifier(system, jwks, now, issuer) if (require_auth and jwks is not None) else None
    verify_decision = make_decision_verifier(system, jwks, now, issuer) if jwks is not None else None

    app = FastAPI(title=profile.title, version="1.0",
                  description=f"Simulated holder `{system}` ({profile.organisation}) speaking the WGS gateway's "
                              "holder protocol v1. Synthetic data only.")
    app.state.store = store
    app.state.holder = holder
    _install_error_handlers(app, system)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if verify is None or not request.url.path.startswith("/holder/"):
            return await call_next(request)
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            log.info("token_missing", system=system, route=_route_of(app, request.scope))
            return problem(401, "Unauthorized", "a gateway bearer token is required", {"WWW-Authenticate": "Bearer"})
        try:
            await verify(token.strip())
        except TokenRefused as exc:
            log.info("token_refused", system=system, route=_route_of(app, request.scope), reason=str(exc))
            return problem(401, "Unauthorized", str(exc), {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return await call_next(request)

    app.add_middleware(TraceContextMiddleware)  # added last, so outermost: token refusals carry the trace id too

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "system": system, "records": store.count()}

    async def bound_by_decision(body: HolderQuery | HolderDiscovery) -> bool | JSONResponse:
        """Whether ``body`` carries a binding escalation decision — honoured only when the gateway signed it
        for this system, this request id and (at least) the categories asked, which must be named — or the
        problem refusing the request for the decision it cites."""
        if body.escalation_decision is None:
            return False
        if verify_decision is None:
            return problem(422, "Unprocessable Entity", "this holder cannot check escalation decisions")
        try:
            claims = await verify_decision(body.escalation_decision)
        except TokenRefused as exc:
            log.info("decision_refused", system=system, request_id=body.request_id, reason=str(exc))
            return problem(422, "Unprocessable Entity", str(exc))
        if (claims["request_id"] != body.request_id or not body.categories
                or not set(body.categories) <= set(claims["categories"])):
            log.info("decision_mismatch", system=system, request_id=body.request_id)
            return problem(422, "Unprocessable Entity", "the escalation decision is for another request")
        return True

    @app.post("/holder/v1/query", response_model=HolderAnswer, responses=_ERRORS, tags=["holder"])
    async def query(body: HolderQuery) -> HolderAnswer | JSONResponse:
        """Records about the subjects in the asked categories only, or a refusal with a reason. A repeated
        ``request_id`` gets the first answer again (safe retries); every answer echoes the request id. A binding
        escalation decision is honoured only when the gateway signed it for this system, this request id and (at
        least) these categories."""
        bound = await bound_by_decision(body)
        if isinstance(bound, JSONResponse):
            return bound
        answer, replayed = await run_in_threadpool(holder.query, body, bound=bound)
        log.info("query_answered", system=system, request_id=body.request_id, status=answer.status,
                 subjects=len(body.subjects), records=len(answer.records), replayed=replayed, bound=bound)
        return answer

    @app.post("/holder/v1/discover", response_model=DiscoveryAnswer, responses=_ERRORS, tags=["holder"])
    async def discover(body: HolderDiscovery) -> DiscoveryAnswer | JSONResponse:
        """Hit/no-hit per subject (the record types held), never content; or a refusal with a reason for all
        of them (a subject the holder keeps confidential, a minor the purpose does not allow), no hits; the
        answer echoes the request id. A binding escalation decision is honoured as for a query."""
        bound = await bound_by_decision(body)
        if isinstance(bound, JSONResponse):
            return bound
        answer = await run_in_threadpool(holder.discover, body, bound=bound)
        log.info("discovery_answered", system=system, request_id=body.request_id, subjects=len(body.subjects),
                 status=answer.status, hits=len(answer.hits), bound=bound)
        return answer

    return app


def _install_error_handlers(app: FastAPI, system: str) -> None:
    """Map every failure to problem+json; never a stack trace, never the request's content."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, "Request refused", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()[:10])
        return problem(422, "Invalid request", where)

    @app.exception_handler(RequestIdReused)
    async def reused(_request: Request, exc: RequestIdReused) -> JSONResponse:
        log.warning("request_id_reused", system=system, request_id=str(exc))
        return problem(409, "Request id reused", "this request id was already used for a different request")

    @app.exception_handler(TimeoutError)
    async def busy(_request: Request, _exc: TimeoutError) -> JSONResponse:
        return problem(503, "Busy", "the first attempt of this request is still being answered")

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        log.error("holder_failed", system=system, error_type=type(exc).__name__)
        return problem(500, "Internal error", "the holder could not answer")


if __name__ == "__main__":  # python -m connectors.simulator serve --partner ...
    import importlib

    importlib.import_module("connectors.cli").app()  # the CLI imports this module: resolve it at run time

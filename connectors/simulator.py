"""A simulated partner system: a real HTTP service over its own database.

It behaves like a cautious holder: answers only in the categories asked, refuses for subjects whose
disclosure would harm an investigation, deduplicates retried queries by ``request_id``, and logs only
request ids and counts — never subjects' data. ``over_share`` deliberately adds an unasked category so the
gateway's defence-in-depth filter can be tested.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from connectors.holder_auth import JwksSource, TokenRefused, make_verifier
from connectors.profiles import PROFILES, PartnerProfile
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery, HolderRecord
from connectors.store import PartnerStore
from connectors.world import build_world

log = structlog.get_logger("connectors.simulator")
_DEDUP_SIZE = 2048


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": "Request refused", "status": status, "detail": detail},
                        status_code=status, media_type="application/problem+json")


def create_partner_app(system: str, data_dir: Path, *, seed: int = 2025, jwks: JwksSource | None = None,
                       require_auth: bool = True, over_share: bool = False,
                       now: Callable[[], float] = time.time) -> FastAPI:
    profile: PartnerProfile = PROFILES[system]
    store = PartnerStore(data_dir / f"partner-{system}.sqlite")
    store.seed_from(build_world(seed), system)
    verify: Callable[[str], None] | None = make_verifier(system, jwks, now) if (require_auth and jwks) else None
    if require_auth and verify is None:
        raise ValueError("require_auth needs a JWKS source (URL or keys)")
    answered: OrderedDict[str, dict[str, Any]] = OrderedDict()
    lock = threading.Lock()
    app = FastAPI(title=profile.title, version="1.0", description=f"Simulated holder `{system}` (WGS gateway demo).")
    app.state.store = store

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Any) -> Any:
        if verify is not None and request.url.path.startswith("/holder/"):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return _problem(401, "a gateway bearer token is required")
            try:
                verify(token)
            except TokenRefused as exc:
                log.info("token_refused", system=system, reason=str(exc))
                return _problem(401, str(exc))
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail))

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "system": system, "records": store.count()}

    @app.post("/holder/v1/query", response_model=HolderAnswer)
    def query(body: HolderQuery) -> HolderAnswer:
        with lock:
            previous = answered.get(body.request_id)
        if previous is not None:
            log.info("query_replayed", system=system, request_id=body.request_id)
            return HolderAnswer.model_validate(previous)
        received = store.receive(body.request_id, [r.model_dump() for r in body.provided]) if body.provided else 0
        if profile.refusal_reason and store.is_confidential(body.subjects):
            answer = HolderAnswer(status="refused", refusal_reason=profile.refusal_reason, received=received)
        else:
            asked = list(body.categories)
            records = store.records(body.subjects, None if over_share else asked)
            if over_share:
                extra = next((r for r in records if r.category not in asked), None)
                records = [r for r in records if r.category in asked] + ([extra] if extra else [])
            answer = HolderAnswer(status="answered", received=received, records=[
                HolderRecord(record_id=r.record_id, record_type=r.record_type, subject=r.subject,
                             category=r.category, fields=r.fields) for r in records])
        with lock:
            answered[body.request_id] = answer.model_dump()
            while len(answered) > _DEDUP_SIZE:
                answered.popitem(last=False)
        log.info("query_answered", system=system, request_id=body.request_id, status=answer.status,
                 records=len(answer.records))
        return answer

    @app.post("/holder/v1/discover", response_model=DiscoveryAnswer)
    def discover(body: HolderDiscovery) -> DiscoveryAnswer:
        records = store.records(body.subjects, body.categories or None)
        hits: dict[str, list[str]] = {}
        for record in records:
            types = hits.setdefault(record.subject, [])
            if record.record_type not in types:
                types.append(record.record_type)
        log.info("discovery_answered", system=system, request_id=body.request_id, hits=len(hits))
        return DiscoveryAnswer(hits=hits)

    return app

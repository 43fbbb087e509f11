"""HTTP surface of the exchange: ``POST /v1/exchanges``, ``GET /v1/exchanges/{id}``, ``POST /v1/discovery``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Request, Response

from gateway.auth.dependencies import require_any_scope, require_scope
from gateway.auth.principal import Principal, Scope
from gateway.client.models import DiscoveryRequest, DiscoveryResult, ExchangeRequest, ExchangeResult
from gateway.container import Container
from gateway.deps import container_of, get_container
from gateway.exchange.examples import (
    DISCOVERY_REQUESTS,
    DISCOVERY_RESULT,
    EXCHANGE_PROBLEMS,
    EXCHANGE_REQUESTS,
    EXCHANGE_RESULTS,
    EXCHANGE_SEEN_AGAIN,
    IDEMPOTENT_REPLAYED,
    shared_problems,
)
from gateway.exchange.service import Trace
from gateway.exchange.setup import exchange_service
from gateway.openapi import problem, problem_examples

router = APIRouter(prefix="/v1", tags=["exchange"])
_JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or forged access token"},
    403: {"description": "The token lacks the scope"},
    413: {"description": "Body too large"},
    422: {"description": "Malformed request (unknown fields, bad references, unknown holder or partnership)"},
    503: {"description": "Policy engine or audit log unavailable: the request is denied (fail closed)"},
}
_EXCHANGE_RESPONSES = _PROBLEMS | {
    422: EXCHANGE_PROBLEMS[422] | _PROBLEMS[422],
    503: EXCHANGE_PROBLEMS[503] | {"description": _PROBLEMS[503]["description"] + "; or outcome-not-stored when "
                                                  "no holder was asked: the outcome could not be stored, nothing "
                                                  "was disclosed, retry it"},
    200: {"headers": IDEMPOTENT_REPLAYED, "content": {_JSON: {"examples": EXCHANGE_RESULTS}}},
    409: EXCHANGE_PROBLEMS[409] | {"description": "Idempotency-Key reused for a different request; or, with "
                                                  "Retry-After, another attempt with the key is still being "
                                                  "answered or was answered meanwhile (retry to get its answer); "
                                                  "or the key's first attempt logged its holders' answers but "
                                                  "never stored its outcome (not run again: do not retry)"},
    500: EXCHANGE_PROBLEMS[500] | {"description": "outcome-not-stored: holders were asked and their answers "
                                                  "logged, but the outcome could not be stored; nothing is "
                                                  "answered; do not retry it (the holders would be asked again)"},
}
_GET_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {_JSON: {"examples": EXCHANGE_SEEN_AGAIN}}},
    401: _PROBLEMS[401], 403: {"description": "The token has neither scope `exchange` nor `audit:read`"},
    404: {"description": "No such exchange (also when it belongs to someone else)", "content": problem_examples(
        unknown=problem(404, "not-found", "Not found", "no exchange `01a23787-4c30-778c-8ded-6a98c57e0ea3`",
                        instance="/v1/exchanges/01a23787-4c30-778c-8ded-6a98c57e0ea3"))},
}
_DISCOVERY_RESPONSES = _PROBLEMS | {200: {"content": {_JSON: {"example": DISCOVERY_RESULT}}}} | {
    status: response | _PROBLEMS[status] for status, response in shared_problems("/v1/discovery").items()}


def trace_of(request: Request) -> Trace:
    state = request.state
    return Trace(state.trace_id, state.span_id, getattr(state, "parent_span_id", None))


@router.post("/exchanges", response_model=ExchangeResult, responses=_EXCHANGE_RESPONSES,
             summary="Ask the partnership's holders for data about subjects, for one purpose")
async def create_exchange(request: Request, response: Response,
                          body: ExchangeRequest = Body(openapi_examples=EXCHANGE_REQUESTS),
                          idempotency_key: str | None = Header(
                              default=None, max_length=128, pattern=r"^[A-Za-z0-9._:-]{8,128}$",
                              description="Makes a retry safe: the same key for the same request returns the "
                                          "first answer (for 24 hours) without asking or logging again.",
                              examples=["gemeente-amsterdam-vth:5f0c2b7e-7d1a"]),
                          principal: Principal = Depends(require_scope(Scope.EXCHANGE))) -> ExchangeResult:
    """Per target holder the answer says: allowed / allowed-narrowed / denied / escalated /
    refused-by-holder / holder-unavailable, with reasons, permitted categories, records (only permitted
    categories), obligations and an audit receipt. A retry with the same ``Idempotency-Key`` returns the
    first answer without a second disclosure or log entry, marked ``Idempotent-Replayed: true`` (its targets
    say ``records_withheld`` once the records are no longer kept)."""
    # the container read here, not as a dependency: each dependency FastAPI solves costs the event loop more
    # than the attribute read it stands for, on every request
    answer = await exchange_service(container_of(request)).exchange(principal, body, trace_of(request),
                                                                    idempotency_key)
    if answer.replayed:  # a retry must be able to tell the first answer given again from a new exchange
        response.headers["Idempotent-Replayed"] = "true"
    return answer.result


@router.get("/exchanges/{exchange_id}", response_model=ExchangeResult, responses=_GET_RESPONSES,
    summary="See an exchange's outcome again (requester system, or its privacy officer)")
async def get_exchange(exchange_id: str,
                       principal: Principal = Depends(require_any_scope(Scope.EXCHANGE, Scope.AUDIT_READ)),
                       container: Container = Depends(get_container)) -> ExchangeResult:
    return await asyncio.to_thread(exchange_service(container).get, principal, exchange_id)


@router.post("/discovery", response_model=DiscoveryResult, responses=_DISCOVERY_RESPONSES,
             summary="Hit/no-hit per holder for subjects, purpose-bound; never data")
async def discovery(request: Request, body: DiscoveryRequest = Body(openapi_examples=DISCOVERY_REQUESTS),
                    principal: Principal = Depends(require_scope(Scope.DISCOVERY))) -> DiscoveryResult:
    return await exchange_service(container_of(request)).discovery(principal, body, trace_of(request))

"""HTTP surface of fuzzy discovery: enrolling match filters (``POST /v1/enrolments/filters``, scope ``enrol``)
and asking hit/no-hit with them (``POST /v1/discovery/fuzzy``, scope ``discovery``). See
:mod:`gateway.client.fuzzy` for the contract and :mod:`gateway.exchange.fuzzy` for the order of work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal, Scope
from gateway.client.fuzzy import FilterEnrolment, FilterEnrolmentAnswer, FuzzyDiscoveryRequest, FuzzyDiscoveryResult
from gateway.deps import container_of
from gateway.enrolment.endpoints import entry_trace
from gateway.enrolment.setup import filter_service, fuzzy_discovery
from gateway.exchange.endpoints import trace_of

router = APIRouter(prefix="/v1")
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or forged access token"},
    403: {"description": "Not a participant of the partnership, or the token lacks the scope"},
    413: {"description": "Body too large"},
    422: {"description": "Malformed: a filter not of the schema's length, blocking keys not one per signature, "
                         "another schema version, unknown categories, a reference that looks like personal data, "
                         "too many records or subjects, two subjects that match each other (one person asked "
                         "twice); or implausible filters (type `.../implausible-filter`: empty, or so dense they "
                         "would match almost anyone, as very long names can encode), each named in `refused` by "
                         "`position`, `reason` (`empty`, `too-dense`) and, for a record, its `ref`"},
}
_ENROL_PROBLEMS = _PROBLEMS | {
    409: {"description": "Other enrolments of the same records kept changing the index: nothing enrolled, retry; "
                         "or the last batch of a `replacement` declares another `total` than the replacement holds "
                         "(a batch missing, or the replacement abandoned): nothing changed"},
    422: {"description": _PROBLEMS[422]["description"] + "; more records than a participant may have enrolled "
                         "(the problem's `limit`: nothing enrolled); a `replacement` batch without `replace`, "
                         "with `remove`, or `total` without `replacement`"},
    500: {"description": "A defect in the gateway while writing the index: nothing was enrolled (logged and "
                         "audited)"},
    503: {"description": "The audit log could not be written: nothing was enrolled"},
}
_DISCOVERY_PROBLEMS = _PROBLEMS | {
    403: {"description": "The token lacks the scope `discovery`"},
    503: {"description": "Policy engine, audit log or the filter index unavailable: the request is denied (fail "
                         "closed)"},
}


@router.post("/enrolments/filters", response_model=FilterEnrolmentAnswer, responses=_ENROL_PROBLEMS,
             tags=["pseudonyms"],
             summary="Enrol the match filters (CLKs) of records you hold without a shared number")
async def enrol_filters(body: FilterEnrolment, request: Request,
                        principal: Principal = Depends(require_scope(Scope.ENROL))) -> FilterEnrolmentAnswer:
    """Adds or updates records under your references, withdraws references, or (``replace``) starts afresh for
    the record type; all of a batch or nothing. A replacement larger than one batch (``replacement``, ``total``
    on its last batch) is kept aside and takes effect whole with its last batch. Other participants' fuzzy
    discoveries then find your records (hit/no-hit only: never your reference, never a score). The batch is one
    audit entry (counts only), written in the transaction that changes the index: when the log cannot be
    written, 503 and nothing changed."""
    return await filter_service(container_of(request)).enrol(principal, body, entry_trace(request))


@router.post("/discovery/fuzzy", response_model=FuzzyDiscoveryResult, responses=_DISCOVERY_PROBLEMS,
             tags=["exchange"], summary="Hit/no-hit per holder and subject by match filters, purpose-bound")
async def discover_fuzzy(body: FuzzyDiscoveryRequest, request: Request,
                         principal: Principal = Depends(require_scope(Scope.DISCOVERY))) -> FuzzyDiscoveryResult:
    """As ``POST /v1/discovery`` for subjects without a shared number: the same policy decides per holder; each
    allowed holder's enrolled records are compared with the subjects' filters (the schema's threshold, each
    subject answered as if asked alone)."""
    return await fuzzy_discovery(container_of(request)).discover(principal, body, trace_of(request))

"""HTTP surface of fuzzy discovery: enrolling match filters (``POST /v1/enrolments/filters``, scope ``enrol``)
and asking hit/no-hit with them (``POST /v1/discovery/fuzzy``, scope ``discovery``). See
:mod:`gateway.client.fuzzy` for the contract and :mod:`gateway.exchange.fuzzy` for the order of work."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Depends, Request

from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal, Scope
from gateway.client.fuzzy import (
    FilterEnrolment,
    FilterEnrolmentAnswer,
    FilterRecord,
    FuzzyDiscoveryRequest,
    FuzzyDiscoveryResult,
)
from gateway.deps import container_of
from gateway.enrolment.clk_keys import ClkKeyMismatch, addition_mismatch, none_comparable
from gateway.enrolment.endpoints import entry_trace
from gateway.enrolment.filters import ImplausibleFilters
from gateway.enrolment.setup import filter_service, fuzzy_discovery
from gateway.exchange.endpoints import trace_of
from gateway.matching.plausibility import Implausibility
from gateway.openapi import problem_examples, problem_of

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
_KEY_ID_A, _KEY_ID_B = "5d2f8a0c41b9e7736a1c0e9f24d8b5a3", "c07e19b4a2d35f8e6b0a9c4d1e7f2a58"


def _refusals(path: str, what: str, items: Sequence[Any], described: str,
              mismatch: ClkKeyMismatch) -> dict[str, Any]:
    """The 422 of a fuzzy route: ``_PROBLEMS``' description and ``described``, and as examples the refusals
    themselves (an implausible ``what`` at position 3 of ``items``; ``mismatch``), not a copy of their texts."""
    implausible = ImplausibleFilters.of(what, items, {3: Implausibility.TOO_DENSE})
    return {"description": _PROBLEMS[422]["description"] + described,
            "content": problem_examples(implausible=problem_of(implausible, path),
                                        clk_key_mismatch=problem_of(mismatch, path))}


_ENROL_PROBLEMS = _PROBLEMS | {
    409: {"description": "Other enrolments of the same records kept changing the index: nothing enrolled, retry; "
                         "or the last batch of a `replacement` declares another `total` than the replacement holds "
                         "(a batch missing, or the replacement abandoned): nothing changed"},
    422: _refusals("/v1/enrolments/filters", "records",
                   [FilterRecord.model_construct(clk="", ref=f"dossier/2026/{n:05d}", categories=["police_incidents"])
                    for n in range(4)],
                   "; more records than a participant may have enrolled (the problem's `limit`: nothing enrolled); a "
                   "`replacement` batch without `replace`, with `remove`, or `total` without `replacement`; "
                   "`clk-key-mismatch`: filters encoded with another CLK secret (`clk_key_id`) than the ones you "
                   "have enrolled, nothing enrolled (a rotation re-enrols everything with `replace`), or a "
                   "replacement's batches of two", addition_mismatch(_KEY_ID_A, _KEY_ID_B)),
    500: {"description": "A defect in the gateway while writing the index: nothing was enrolled (logged and "
                         "audited)"},
    503: {"description": "The audit log could not be written: nothing was enrolled"},
}
_FUZZY_RESULT: dict[str, Any] = {
    "discovery_id": "01a24463-a548-7bdf-a60e-a8d285523849", "partnership": "riec-amsterdam-amstelland",
    "purpose": "bibob-integrity-check", "record_type": "person", "policy_version": "wgs-policy-2026.12.9",
    "register_version": "2026.11.1",
    "targets": [
        {"holder": "politie", "outcome": "hit", "subjects": ["hit", "no-hit"],
         "match_handles": ["match:q5Tb2Jm0oXw8c3Vn1yFZk9Lr7aSdPe4GuHi6Cj0KvQs", None], "reasons": []},
        {"holder": "belastingdienst", "outcome": "not-comparable", "subjects": [], "match_handles": [],
         "reasons": [{"code": "clk-key-mismatch", "category": None, "message": "this holder's filters were encoded "
                      "with another CLK secret: nothing was compared"}]},
    ],
    "receipt": {"exchange_id": "01a24463-a548-7bdf-a60e-a8d285523849", "audit_indices": [812, 813, 814, 815, 816],
                "checkpoint": "gateway.wgs.local/audit-log\n816\n..."},
}
"""One holder compared, one whose filters are of another CLK secret (a rotated or mistyped one, on either side)."""

_DISCOVERY_PROBLEMS = _PROBLEMS | {
    200: {"content": {"application/json": {"example": _FUZZY_RESULT}}},
    422: _refusals("/v1/discovery/fuzzy", "subjects", [None] * 4,
                   "; `clk-key-mismatch`: no holder the policy lets you ask has filters encoded with the CLK secret "
                   "of the request's `clk_key_id` (nothing logged, nothing compared; a holder of another secret among "
                   "others is answered `not-comparable`)", none_comparable(_KEY_ID_B)),
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
    written, 503 and nothing changed. Records of another CLK secret (``clk_key_id``) than those you have enrolled
    are refused (422 ``clk-key-mismatch``) unless the batch replaces them all."""
    return await filter_service(container_of(request)).enrol(principal, body, entry_trace(request))


@router.post("/discovery/fuzzy", response_model=FuzzyDiscoveryResult, responses=_DISCOVERY_PROBLEMS,
             tags=["exchange"], summary="Hit/no-hit per holder and subject by match filters, purpose-bound")
async def discover_fuzzy(body: FuzzyDiscoveryRequest, request: Request,
                         principal: Principal = Depends(require_scope(Scope.DISCOVERY))) -> FuzzyDiscoveryResult:
    """As ``POST /v1/discovery`` for subjects without a shared number: the same policy decides per holder; each
    allowed holder's enrolled records are compared with the subjects' filters (the schema's threshold, each
    subject answered as if asked alone). A holder whose filters were encoded with another CLK secret than the
    request's (``clk_key_id``) is answered ``not-comparable``, never ``no-hit``."""
    return await fuzzy_discovery(container_of(request)).discover(principal, body, trace_of(request))

"""HTTP surface of the escalation workflow: ``/v1/escalations`` and ``/v1/legal-gaps``.

People with the ``escalation`` scope (privacy officers, administrators) work cases; partner systems with
the ``exchange`` scope may object to an outcome of their own requests and read their cases (to learn a
decision and re-run). Who may see or decide a case comes from the register (``gateway.escalations.access``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import JsonValue

from escalation.queries import CaseFilter
from escalation.states import State, Trigger
from gateway.auditing.actions import record_api_action
from gateway.auth.dependencies import TokenRequired, require_scope
from gateway.auth.principal import Principal, Scope
from gateway.container import Container
from gateway.deps import get_container
from gateway.errors import Forbidden
from gateway.escalations.gap_export import gaps_csv
from gateway.escalations.models import (
    CaseDetail,
    CasePage,
    Comment,
    Decide,
    FeedItem,
    FlagLegalGap,
    GapStatusChange,
    LegalGapView,
    OpenCase,
    Review,
    Withdraw,
)
from gateway.escalations.setup import escalation_service
from gateway.exchange.endpoints import trace_of
from gateway.query_filters import cursor_query, id_query
from gateway.spreadsheets import csv_download

router = APIRouter(tags=["escalations"])
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, expired or forged access token"},
    403: {"description": "Not allowed: wrong scope, not a decider at this tier, or four eyes"},
    404: {"description": "No such case (also when you may not see it)"},
    409: {"description": "Stale `expected_version` (someone acted first) or a step the state does not allow"},
    422: {"description": "Malformed request (e.g. no motivation, categories not requested)"},
    503: {"description": "The audit log could not be written: nothing was changed"},
}
_GAP_STATUS = Literal["identified", "on-agenda", "resolved"]


def _case_caller(principal: Principal) -> None:
    """People need ``escalation``; partner systems ``exchange`` (for their own requests' cases)."""
    needed = Scope.EXCHANGE if principal.kind == "system" else Scope.ESCALATION
    if not principal.has_scope(needed.value):
        raise Forbidden(f"the access token lacks the scope `{needed.value}`")


case_caller = TokenRequired(_case_caller)


@router.post("/v1/escalations", response_model=CaseDetail, status_code=201, responses=_PROBLEMS,
             summary="Object to an exchange outcome: open a case")
async def open_case(body: OpenCase, request: Request, principal: Principal = Depends(case_caller),
                    container: Container = Depends(get_container)) -> CaseDetail:
    """The requester against a denial or narrowing, or the holder's privacy officer against a disclosure.
    Cases for escalated and refused requests are opened by the gateway itself."""
    return await escalation_service(container).open_objection(principal, body, trace_of(request))


@router.get("/v1/escalations", response_model=CasePage, responses=_PROBLEMS,
            summary="Cases you may see, filtered, oldest first")
async def list_cases(partnership: str | None = id_query("Only cases of this partnership (id)."),
                     state: State | None = None,
                     tier: int | None = Query(None, ge=1, le=3),
                     trigger: Trigger | None = None,
                     organisation: str | None = id_query("Only cases about this organisation (id)."),
                     overdue: bool = False, legal_gap: bool | None = None,
                     cursor: str | None = cursor_query("`next_cursor` of the page before."),
                     limit: int = Query(50, ge=1, le=200),
                     principal: Principal = Depends(case_caller),
                     container: Container = Depends(get_container)) -> CasePage:
    service = escalation_service(container)
    filters = CaseFilter(partnership=partnership, state=state, tier=tier, trigger=trigger,
                         organisation=organisation, legal_gap=legal_gap,
                         overdue_on=service.today() if overdue else None)
    return await service.cases(principal, filters, limit=limit, after=cursor)


@router.get("/v1/escalations/feed", response_model=list[FeedItem], responses=_PROBLEMS,
            summary="Cases awaiting your organisation, most urgent first")
async def feed(principal: Principal = Depends(case_caller),
               container: Container = Depends(get_container)) -> list[FeedItem]:
    return await escalation_service(container).feed(principal)


@router.get("/v1/escalations/metrics", responses=_PROBLEMS,
            summary="Time to decision per tier and open cases past their deadline")
async def case_metrics(principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                       container: Container = Depends(get_container)) -> dict[str, Any]:
    return await escalation_service(container).metrics(principal)


@router.get("/v1/escalations/{case_id}", response_model=CaseDetail, responses=_PROBLEMS,
            summary="A case with its history and comments")
async def case_detail(case_id: str, principal: Principal = Depends(case_caller),
                      container: Container = Depends(get_container)) -> CaseDetail:
    return await escalation_service(container).detail(principal, case_id)


@router.post("/v1/escalations/{case_id}/comments", response_model=CaseDetail, responses=_PROBLEMS,
             summary="Comment, with attachments by reference")
async def comment(case_id: str, body: Comment, request: Request,
                  principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                  container: Container = Depends(get_container)) -> CaseDetail:
    return await escalation_service(container).comment(principal, case_id, body, trace_of(request))


@router.post("/v1/escalations/{case_id}/review", response_model=CaseDetail, responses=_PROBLEMS,
             summary="Take the case into review at its current tier")
async def review(case_id: str, body: Review, request: Request,
                 principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                 container: Container = Depends(get_container)) -> CaseDetail:
    return await escalation_service(container).review(principal, case_id, body, trace_of(request))


@router.post("/v1/escalations/{case_id}/decision", response_model=CaseDetail, responses=_PROBLEMS,
             summary="Allow (possibly narrowed), deny, or refer up — with a written motivation")
async def decide(case_id: str, body: Decide, request: Request,
                 principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                 container: Container = Depends(get_container)) -> CaseDetail:
    """Four eyes: the decider is outside the requesting organisation; where the register asks for more
    deciders (tier 3: at least two) each votes separately and the decision is taken when enough agree.
    An allow gives a decision id that the requester's system cites to re-run the request."""
    return await escalation_service(container).decide(principal, case_id, body, trace_of(request))


@router.post("/v1/escalations/{case_id}/withdraw", response_model=CaseDetail, responses=_PROBLEMS,
             summary="Withdraw the case (the organisation that asked)")
async def withdraw(case_id: str, body: Withdraw, request: Request, principal: Principal = Depends(case_caller),
                   container: Container = Depends(get_container)) -> CaseDetail:
    return await escalation_service(container).withdraw(principal, case_id, body, trace_of(request))


@router.post("/v1/escalations/{case_id}/legal-gap", response_model=LegalGapView, responses=_PROBLEMS,
             summary="Flag the case as showing a legal gap (new, or linked to an existing one)")
async def flag_gap(case_id: str, body: FlagLegalGap, request: Request,
                   principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                   container: Container = Depends(get_container)) -> LegalGapView:
    return await escalation_service(container).flag_gap(principal, case_id, body, trace_of(request))


@router.get("/v1/legal-gaps", response_model=list[LegalGapView], responses=_PROBLEMS,
            summary="The register of legal gaps of your partnerships")
async def list_gaps(partnership: str | None = id_query("Only gaps of this partnership (id)."),
                    status: _GAP_STATUS | None = None,
                    principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                    container: Container = Depends(get_container)) -> list[LegalGapView]:
    return await escalation_service(container).gaps(principal, partnership=partnership, status=status)


@router.get("/v1/legal-gaps/export", response_class=Response,
            responses=_PROBLEMS | {200: {"description": "The register of legal gaps (CSV, one row per gap)",
                                         "content": {"text/csv": {"schema": {"type": "string"}}}}},
            summary="The register of legal gaps as CSV, for the steering group's agenda")
async def export_gaps(request: Request, partnership: str | None = id_query("Only gaps of this partnership (id)."),
                      status: _GAP_STATUS | None = None,
                      principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                      container: Container = Depends(get_container)) -> Response:
    """An export, and itself an audit entry (``console.action``, ``export``, channel ``api``: the account, the
    filters and the number of rows — never a gap's text), written before the file is sent, as the console's
    download is: the register leaves with whoever takes it, however it was asked for."""
    service = escalation_service(container)
    gaps = await service.gaps(principal, partnership=partnership, status=status)
    details: dict[str, JsonValue] = {"export": "legal-gaps.csv", "rows": len(gaps)}
    details.update({name: value for name, value in (("partnership", partnership), ("status", status)) if value})
    await record_api_action(container, request, principal, "export", details=details)
    name = f"legal-gaps-{service.today().isoformat()}.csv"
    return csv_download(gaps_csv(gaps), name)


@router.get("/v1/legal-gaps/{gap_id}", response_model=LegalGapView, responses=_PROBLEMS,
            summary="One legal gap with its linked cases")
async def gap_detail(gap_id: str, principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                     container: Container = Depends(get_container)) -> LegalGapView:
    return await escalation_service(container).gap(principal, gap_id)


@router.post("/v1/legal-gaps/{gap_id}/status", response_model=LegalGapView, responses=_PROBLEMS,
             summary="Move a gap forward: identified → on-agenda → resolved")
async def change_gap(gap_id: str, body: GapStatusChange, request: Request,
                     principal: Principal = Depends(require_scope(Scope.ESCALATION)),
                     container: Container = Depends(get_container)) -> LegalGapView:
    return await escalation_service(container).change_gap(principal, gap_id, body, trace_of(request))

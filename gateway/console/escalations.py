"""The escalation pages of the console: the queue per tier (with the metrics: time to decision per tier, open
cases past deadline), the case page (summary, history, comments, decision, review, withdraw, legal-gap flag)
and the register of legal gaps with status changes and export.

Every handler calls :class:`gateway.escalations.service.EscalationService` with the signed-in person's
:class:`Principal`, so the pages show and allow exactly what ``/v1/escalations`` and ``/v1/legal-gaps``
would: scoping, the four-eyes rule, optimistic locking (``expected_version``) and the write-ahead
``escalation.step`` audit entries are the service's. The console adds no second entry for a case action; it
logs only what is its own (the CSV download of the legal gaps, as ``console.action``).

The service's refusals of a form (403 four eyes or not a decider, 409 someone acted first, 422 incomplete)
are shown on the page next to the form, with what was typed kept, in the page's language: worded by the
refusal's code (:meth:`gateway.console.pages.Page.reason`), the service's English only for a code without
words, marked as English. A case the person may not see is a 404 page, as in the API.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import JsonValue, ValidationError

from escalation.comments import ENDED as ENDED_STATES
from escalation.queries import CaseFilter
from escalation.states import MAX_TIER
from gateway.auth.principal import Principal, Scope
from gateway.console import views
from gateway.console.actions import record_action
from gateway.console.notices import notice_query, shown_notice
from gateway.console.pages import ConsoleRoute, Page, blank, flag, need_scope, signed_in, writes_on_opening
from gateway.errors import Conflict, Forbidden, GatewayError, Unprocessable
from gateway.escalations import access
from gateway.escalations.models import (
    Attachment,
    CaseDetail,
    CaseView,
    Comment,
    Decide,
    ExtraObligations,
    FlagLegalGap,
    GapStatusChange,
    LegalGapView,
    Review,
    Withdraw,
)
from gateway.escalations.service import EscalationService
from gateway.escalations.setup import escalation_service
from gateway.exchange.service import Trace
from gateway.query_filters import form_cursor_query, form_id_query
from gateway.spreadsheets import csv_download

router = APIRouter(route_class=ConsoleRoute)

STATES = ("open", "in_review", "escalated", "decided", "closed", "withdrawn", "expired")
ACTIVE = frozenset({"open", "in_review", "escalated"})
ENDED = frozenset(state.value for state in ENDED_STATES)  # no comment form: the file ended with the case
TIERS = (1, 2, 3)
OUTCOMES = ("allow", "deny", "refer-up")
GAP_STATUSES = ("identified", "on-agenda", "resolved")
NEXT_GAP_STATUSES = {"identified": ("on-agenda", "resolved"), "on-agenda": ("resolved",), "resolved": ()}
ATTACHMENT_ROWS = 2
DONE = frozenset({"decision", "vote", "refer", "review", "comment", "withdraw", "gap"})  # a case page's notices
GAP_DONE = frozenset({"status"})  # the legal-gap pages' notice
_REFUSALS = {403: "refused_403", 409: "refused_409", 422: "refused_422"}
_TYPED_TEXT = {"decision": "motivation", "withdraw": "withdraw_motivation", "comment": "comment"}  # form: its text


@dataclass(frozen=True)
class FormError:
    """A refused form: which form, the message, and the field to mark (``aria-invalid``) if one is to blame.

    ``english`` is a reason the page has no words for (a refusal without a code in the catalogue: a newer
    service's): the service's English, which the page marks ``lang="en"`` after the message."""

    form: str
    message: str
    field: str | None = None
    key: str | None = None  # the gap a status form was about
    english: str = ""


def _trace(page: Page) -> Trace:
    """The request's trace (set by the gateway's middleware), so the service's entries join the request's."""
    state = page.request.state
    return Trace(getattr(state, "trace_id", None) or secrets.token_hex(16),
                 getattr(state, "span_id", None) or secrets.token_hex(8), getattr(state, "parent_span_id", None))


def _worker(page: Page) -> tuple[Principal, EscalationService]:
    return need_scope(page.me, Scope.ESCALATION), escalation_service(page.container)


def _today(service: EscalationService) -> date:
    """The register's day (Europe/Amsterdam), as the service judges deadlines — not the UTC clock's date."""
    return service.today()


def _countdown(case: CaseView, today: date) -> views.Countdown:
    return views.countdown(case.deadline, today, active=case.state in ACTIVE)


def _refusal(page: Page, form: str, exc: GatewayError) -> FormError:
    """A service refusal of ``form`` in words: what kind, and why — by the refusal's code, in the page's
    language; else in the service's own English (:meth:`Page.reason`)."""
    kind = page.t(_REFUSALS.get(exc.status, "refused_422"))
    reason = page.reason(exc)
    if reason.lang is None:
        return FormError(form, f"{kind} {reason.text}".strip())
    return FormError(form, kind, english=reason.text)


def _obligations(page: Page, decision: dict[str, Any] | None) -> list[str]:
    """A decision's extra obligations in the page's words. They are stored as the API takes them
    (``retain_until``, ``results_only: true``), which the panel showed as they were: the API's field names and
    Python's ``True``, in Dutch as in English. An obligation without words here (a newer version's) keeps its
    name and value."""
    texts = []
    for name, value in ((decision or {}).get("obligations") or {}).items():
        if name == "retain_until" and value:
            texts.append(page.t("obligation_retain_until", date=value))
        elif name == "results_only" and value is True:
            texts.append(page.t("results_only"))
        elif value not in (None, False):
            texts.append(f"{name}: {value}")
    return texts


_FIELD_MESSAGES = {
    "motivation": "motivation_required", "outcome": "outcome_required", "expected_version": "stale_form",
    "text": "comment_required", "reference": "attachment_invalid", "title": "attachment_invalid",
    "sha256": "attachment_invalid", "permitted_categories": "categories_required", "retain_until": "invalid_date",
    "description": "gap_description_required", "note": "note_too_long", "status": "status_invalid",
}


_FORM_FIELD_MESSAGES = {("gap", "title"): "gap_title_invalid", ("gap", "description"): "gap_description_invalid"}
"""Where one field name means another thing in another form: a gap's ``title`` is no attachment's (whose
message, about references and SHA-256, a too-long gap title used to get), and a gap's ``description`` the
model refused (too long, a NUL) is no missing one (it was told "needs a title and a description", which it had;
a blank one is caught by ``flag_gap`` itself)."""


def _message(form: str, field: str) -> str | None:
    return _FORM_FIELD_MESSAGES.get((form, field)) or _FIELD_MESSAGES.get(field)


def _invalid(page: Page, form: str, exc: ValidationError) -> FormError:
    """Pydantic's complaints about a form, in the page's language (the first field named is marked invalid; the
    message, which describes it, takes the focus: templates/_cases.html)."""
    errors = [(str(next((part for part in error["loc"] if isinstance(part, str)), "")), error)
              for error in exc.errors()]
    fields = [f for f, _error in errors]
    messages = list(dict.fromkeys(page.t(key) if (key := _message(form, f)) else
                                  page.validation(f, error["type"], error.get("ctx")) for f, error in errors))
    return FormError(form, " ".join(messages), fields[0] if fields else None)


_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only; a case's version never needs more than nine


def _version(value: str) -> int:
    """The hidden ``expected_version``; a missing or mangled one counts as stale (the model refuses 0).

    Not ``str.isdigit``: it accepts "²" and other digits ``int`` refuses, and ``int`` refuses more than 4300
    digits too — either would be a 500 instead of the form's "someone changed this" answer."""
    return int(value) if _VERSION.fullmatch(value) else 0


def _redirect(page: Page, target: str) -> Response:
    return page.finish(RedirectResponse(target, status_code=303))


def _done(page: Page, path: str, done: str, *, filters: dict[str, str] | None = None, fragment: str = "") -> Response:
    """The redirect after a form did ``done``: back to ``path`` (with the list's ``filters``), whose page then
    says so (gateway.console.notices: only to this session)."""
    query = "&".join(part for part in (urlencode(filters or {}), notice_query(page, path, done)) if part)
    return _redirect(page, f"{path}?{query}" + (f"#{fragment}" if fragment else ""))


# -- the queue -------------------------------------------------------------------------------------------


@router.get("/escalations", response_class=HTMLResponse)
async def queue(page: Page = Depends(signed_in), state: str | None = None, tier: str | None = None,
                overdue: str | None = None, partnership: str | None = form_id_query(),
                after: str | None = form_cursor_query()) -> Response:
    principal, service = _worker(page)
    today = _today(service)
    filters = {"state": blank(state), "tier": blank(tier), "overdue": "1" if flag(overdue, "overdue") else None,
               "partnership": blank(partnership)}
    if filters["state"] and filters["state"] not in STATES:
        raise Unprocessable(f"state: one of {', '.join(STATES)}", code="filter-state")
    if filters["tier"] and filters["tier"] not in {str(t) for t in TIERS}:
        raise Unprocessable("tier: 1, 2 or 3", code="filter-tier")
    wanted = CaseFilter(partnership=filters["partnership"], state=filters["state"],
                        tier=int(filters["tier"]) if filters["tier"] else None,
                        overdue_on=today if filters["overdue"] else None)
    found = await service.cases(principal, wanted, limit=page.sessions.settings.page_size, after=blank(after))
    awaiting = await service.feed(principal)
    figures = await service.metrics(principal)
    rows = sorted(((case, _countdown(case, today)) for case in found.cases),
                  key=lambda row: (not row[1].active, row[0].deadline, row[0].id))
    per_tier = [(t, [row for row in rows if row[0].tier == t]) for t in TIERS
                if not filters["tier"] or str(t) == filters["tier"]]
    active = {k: v for k, v in filters.items() if v}
    next_href = (f"/console/escalations?{urlencode({**active, 'after': found.next_cursor})}"
                 if found.next_cursor else None)
    return page.render("escalations.html", per_tier=per_tier, filters=filters, states=STATES, tiers=TIERS,
                       partnerships=sorted(service.register.partnerships), today=today, next_href=next_href,
                       first_href=f"/console/escalations?{urlencode(active)}" if after else None,
                       awaiting=[(item, _countdown(item.case, today)) for item in awaiting],
                       metrics=_metrics(figures))


@dataclass(frozen=True)
class TierMetrics:
    """One row of the metrics panel: time to decision at a tier (hours) and its open cases past deadline."""

    tier: int
    decided: int
    mean: float | None
    median: float | None
    max: float | None
    past_deadline: int


def _metrics(figures: dict[str, Any]) -> dict[str, Any]:
    """The service's metrics (``/v1/escalations/metrics``) as rows per tier, every tier shown."""
    decisions: dict[str, dict[str, Any]] = figures.get("time_to_decision_hours", {})
    overdue: dict[str, int] = figures.get("open_past_deadline_by_tier", {})
    tiers = sorted({*TIERS, *(int(t) for t in decisions), *(int(t) for t in overdue)})
    rows = []
    for tier in tiers:
        found = decisions.get(str(tier), {})
        rows.append(TierMetrics(tier, int(found.get("decided", 0)), found.get("mean"), found.get("median"),
                                found.get("max"), int(overdue.get(str(tier), 0))))
    return {"rows": rows, "cases": int(figures.get("cases", 0)),
            "past_deadline": int(figures.get("open_past_deadline", 0))}


# -- a case ----------------------------------------------------------------------------------------------


async def _case_page(page: Page, case_id: str, *, status: int = 200, error: FormError | None = None,
                     typed: dict[str, Any] | None = None, done: str | None = None) -> Response:
    principal, service = _worker(page)
    case: CaseDetail = await service.detail(principal, case_id)  # 404 when the person may not see it
    me = page.me
    found = service.register.partnerships.get(case.partnership)
    tier_names = {t.tier: t.name for t in found.escalation.tiers} if found else {}
    gaps = await service.gaps(principal, partnership=case.partnership, status=None)
    is_active = case.state in ACTIVE
    decider = (is_active and me.organisation in case.deciders  # the requester's officer too: it may refer up
               and found is not None and access.has_tier_role(principal, found, case.tier))
    owners = {case.holder_org if case.trigger == "holder-objection" else case.requester_org}  # who opened it
    # Requested, but no allow may permit them (never disclosed, or not this holder's to give this requester)
    disclosable = service.register.disclosable(case.partnership, case.purpose, case.requester_org, case.holder_org)
    values: dict[str, Any] = {"outcome": "", "motivation": "",
                              "categories": [c for c in case.requested_categories if c in disclosable],
                              "retain_until": "", "results_only": False, "comment": "", "attachments": [],
                              "withdraw_motivation": "", "gap_id": "", "gap_title": "", "gap_description": ""}
    values |= typed or {}
    attachments = list(values["attachments"]) + [("", "", "")] * ATTACHMENT_ROWS
    lapsed = is_active and service.tier_lapsed(case.tier, case.deadline)  # its tier may only refer it up now
    may_review = decider and case.state in {"open", "escalated"} and not lapsed
    may_withdraw = is_active and me.organisation in owners
    may_comment = case.state not in ENDED  # the service refuses the rest (409): the file ended with the case
    # Four eyes (``escalation.cases.may_vote``): the requester never allows or denies its own request; on a
    # holder's objection it is a party that votes. The service refuses an allow/deny (403), so none is offered.
    own_request = me.organisation == case.requester_org and case.trigger != "holder-objection"
    # The last tier has none above it to refer to (the service refuses a referral there, 409): it is not offered,
    # and the requester, which may do nothing else about its own request (four eyes), gets no form at all.
    offered = ("refer-up",) if lapsed or own_request else OUTCOMES
    outcomes = tuple(o for o in offered if o != "refer-up" or case.tier < MAX_TIER)
    shown = {"decision": decider and bool(outcomes), "review": may_review, "withdraw": may_withdraw,
             "comment": may_comment, "gap": True}
    error_on_top = error is not None and not shown[error.form]
    # The text of a refused form the page no longer shows (the case ended or moved on meanwhile), to copy
    unsaved = values.get(_TYPED_TEXT.get(error.form, ""), "") if error is not None and error_on_top else ""
    return page.render(
        "case.html", status=status, case=case, countdown=_countdown(case, _today(service)), error=error,
        values=values, attachments=attachments[:max(ATTACHMENT_ROWS, len(values["attachments"]))],
        tier_name=tier_names.get(case.tier, ""), decider=decider,
        own_request=own_request,
        both_parties=case.trigger == "holder-objection" and case.tier == 1,
        may_review=may_review, may_withdraw=may_withdraw, may_comment=may_comment,
        error_on_top=error_on_top, unsaved=unsaved,
        is_active=is_active, outcomes=outcomes, lapsed=lapsed,
        gaps=[g for g in gaps if case.id not in g.case_ids and g.status != "resolved"],  # a resolved gap takes none
        linked_gaps=[g for g in gaps if case.id in g.case_ids], done=done,
        obligations=_obligations(page, case.decision))


async def _refused(page: Page, case_id: str, form: str, exc: ValidationError | GatewayError,
                   typed: dict[str, Any] | None = None) -> Response:
    """The case page again, with the form's error next to it: the model's validation (422) or the service's
    refusal (its 403/409/422), and what was typed kept."""
    if isinstance(exc, ValidationError):
        return await _case_page(page, case_id, status=422, error=_invalid(page, form, exc), typed=typed)
    return await _case_page(page, case_id, status=exc.status, error=_refusal(page, form, exc), typed=typed)


@router.get("/escalations/{case_id}", response_class=HTMLResponse)
async def case_page(case_id: str, page: Page = Depends(signed_in), done: str | None = None,
                    notice: str | None = Query(None, max_length=64)) -> Response:
    return await _case_page(page, case_id, done=shown_notice(page, done, notice, DONE))


@router.post("/escalations/{case_id}/decision", response_class=HTMLResponse)
async def decide(case_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""),
                 expected_version: str = Form(""), outcome: str = Form(""), motivation: str = Form(""),
                 permitted_categories: list[str] = Form(default_factory=list), retain_until: str = Form(""),
                 results_only: str = Form("")) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    typed = {"outcome": outcome, "motivation": motivation, "categories": permitted_categories,
             "retain_until": retain_until, "results_only": bool(results_only)}
    try:
        obligations = (ExtraObligations(retain_until=blank(retain_until), results_only=True if results_only else None)
                       if outcome == "allow" and (blank(retain_until) or results_only) else None)
        body = Decide(expected_version=_version(expected_version), outcome=outcome,
                      motivation=motivation.strip(),
                      permitted_categories=permitted_categories if outcome == "allow" else [], obligations=obligations)
    except ValidationError as exc:
        return await _refused(page, case_id, "decision", exc, typed)
    if body.outcome == "allow" and not body.permitted_categories:
        return await _case_page(page, case_id, status=422, typed=typed, error=FormError(
            "decision", page.t("categories_required"), "permitted_categories"))
    try:
        after = await service.decide(principal, case_id, body, _trace(page))
    except (Forbidden, Conflict, Unprocessable) as exc:
        return await _refused(page, case_id, "decision", exc, typed)
    done = "refer" if body.outcome == "refer-up" else "decision" if after.decision else "vote"  # tier 3: two votes
    return _done(page, f"/console/escalations/{case_id}", done)


@router.post("/escalations/{case_id}/review", response_class=HTMLResponse)
async def review(case_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""),
                 expected_version: str = Form("")) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    try:
        body = Review(expected_version=_version(expected_version))
    except ValidationError as exc:
        return await _refused(page, case_id, "review", exc)
    try:
        await service.review(principal, case_id, body, _trace(page))
    except (Forbidden, Conflict, Unprocessable) as exc:
        return await _refused(page, case_id, "review", exc)
    return _done(page, f"/console/escalations/{case_id}", "review")


@router.post("/escalations/{case_id}/withdraw", response_class=HTMLResponse)
async def withdraw(case_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""),
                   expected_version: str = Form(""), motivation: str = Form("")) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    typed = {"withdraw_motivation": motivation}
    try:
        body = Withdraw(expected_version=_version(expected_version), motivation=motivation.strip())
    except ValidationError as exc:
        return await _refused(page, case_id, "withdraw", exc, typed)
    try:
        await service.withdraw(principal, case_id, body, _trace(page))
    except (Forbidden, Conflict, Unprocessable) as exc:
        return await _refused(page, case_id, "withdraw", exc, typed)
    return _done(page, f"/console/escalations/{case_id}", "withdraw")


@router.post("/escalations/{case_id}/comments", response_class=HTMLResponse)
async def comment(case_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""), text: str = Form(""),
                  attachment_reference: list[str] = Form(default_factory=list),
                  attachment_title: list[str] = Form(default_factory=list),
                  attachment_sha256: list[str] = Form(default_factory=list)) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    hashes = attachment_sha256 or [""] * len(attachment_reference)  # optional: no SHA-256 fields at all is none
    if not len(attachment_reference) == len(attachment_title) == len(hashes):
        # Every row of the form sends all three fields (the SHA-256 empty when not given); other numbers are a
        # hand-built POST, and pairing them up would drop or misplace attachments without a word.
        return await _case_page(page, case_id, status=422, typed={"comment": text}, error=FormError(
            "comment", page.t("attachments_mismatched")))
    rows = [(r.strip(), t.strip(), h.strip().lower()) for r, t, h in
            zip(attachment_reference, attachment_title, hashes, strict=True)]
    rows = [row for row in rows if any(row)]
    typed = {"comment": text, "attachments": rows}
    try:
        body = Comment(text=text.strip(), attachments=[Attachment(reference=r, title=t, sha256=h or None)
                                                       for r, t, h in rows])
    except ValidationError as exc:
        return await _refused(page, case_id, "comment", exc, typed)
    try:
        await service.comment(principal, case_id, body, _trace(page))
    except (Forbidden, Conflict, Unprocessable) as exc:
        return await _refused(page, case_id, "comment", exc, typed)
    return _done(page, f"/console/escalations/{case_id}", "comment", fragment="comments")


@router.post("/escalations/{case_id}/legal-gap", response_class=HTMLResponse)
async def flag_gap(case_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""),
                   gap_id: str = Form(""), title: str = Form(""), description: str = Form("")) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    typed = {"gap_id": gap_id, "gap_title": title, "gap_description": description}
    try:
        body = (FlagLegalGap(gap_id=gap_id) if blank(gap_id) else
                FlagLegalGap(title=blank(title), description=blank(description)))
    except ValidationError as exc:
        return await _refused(page, case_id, "gap", exc, typed)
    if body.gap_id is None and not (body.title and body.description):
        return await _case_page(page, case_id, status=422, typed=typed, error=FormError(
            "gap", page.t("gap_description_required"), "title" if not body.title else "description"))
    try:
        await service.flag_gap(principal, case_id, body, _trace(page))
    except (Forbidden, Conflict, Unprocessable) as exc:
        return await _refused(page, case_id, "gap", exc, typed)
    return _done(page, f"/console/escalations/{case_id}", "gap")


# -- legal gaps ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GapRow:
    gap: LegalGapView
    may_manage: bool
    next_statuses: tuple[str, ...]


def _gap_rows(principal: Principal, service: EscalationService, gaps: list[LegalGapView]) -> list[GapRow]:
    return [GapRow(gap, access.may_manage_gaps(principal, gap.partnership, service.register),
                   NEXT_GAP_STATUSES.get(gap.status, ())) for gap in gaps]


def _gap_filters(status: str | None, partnership: str | None) -> dict[str, str | None]:
    filters = {"status": blank(status), "partnership": blank(partnership)}
    if filters["status"] and filters["status"] not in GAP_STATUSES:
        raise Unprocessable(f"status: one of {', '.join(GAP_STATUSES)}", code="filter-gap-status")
    return filters


async def _gaps_page(page: Page, *, status: str | None = None, partnership: str | None = None, code: int = 200,
                     error: FormError | None = None, done: str | None = None, typed_note: str = "") -> Response:
    principal, service = _worker(page)
    filters = _gap_filters(status, partnership)
    gaps = await service.gaps(principal, partnership=filters["partnership"], status=filters["status"])
    active = {k: v for k, v in filters.items() if v}
    rows = _gap_rows(principal, service, gaps)
    return page.render("legal_gaps.html", status=code, rows=rows, filters=filters,
                       statuses=GAP_STATUSES, error=error, done=done, typed_note=typed_note,
                       error_on_top=error is not None and all(row.gap.id != error.key for row in rows),
                       partnerships=sorted(access.gap_partnerships(principal, service.register)),
                       csv_href="/console/legal-gaps.csv" + (f"?{urlencode(active)}" if active else ""))


@router.get("/legal-gaps", response_class=HTMLResponse)
async def legal_gaps(page: Page = Depends(signed_in), status: str | None = None,
                     partnership: str | None = form_id_query(), done: str | None = None,
                     notice: str | None = Query(None, max_length=64)) -> Response:
    return await _gaps_page(page, status=status, partnership=partnership,
                            done=shown_notice(page, done, notice, GAP_DONE))


@router.get("/legal-gaps.csv")
@writes_on_opening
async def legal_gaps_csv(page: Page = Depends(signed_in), status: str | None = None,
                         partnership: str | None = form_id_query()) -> Response:
    page.from_own_page()
    principal, service = _worker(page)
    filters = _gap_filters(status, partnership)
    body = await service.gaps_csv(principal, partnership=filters["partnership"], status=filters["status"])
    rows = max(0, len(list(csv.reader(io.StringIO(body)))) - 1)
    details: dict[str, JsonValue] = {"export": "legal-gaps.csv", "rows": rows}
    details.update({k: v for k, v in filters.items() if v})
    person = page.me
    await record_action(page.container, page.request, "export", organisation=person.organisation,
                        account_id=person.account_id, details=details)
    name = f"legal-gaps-{_today(service).isoformat()}.csv"
    return page.finish(csv_download(body, name))


async def _gap_page(page: Page, gap_id: str, *, code: int = 200, error: FormError | None = None,
                    done: str | None = None, typed_note: str = "") -> Response:
    principal, service = _worker(page)
    gap = await service.gap(principal, gap_id)  # 404 outside the person's partnerships
    row = _gap_rows(principal, service, [gap])[0]
    return page.render("legal_gap.html", status=code, row=row, error=error, done=done, typed_note=typed_note)


@router.get("/legal-gaps/{gap_id}", response_class=HTMLResponse)
async def legal_gap(gap_id: str, page: Page = Depends(signed_in), done: str | None = None,
                    notice: str | None = Query(None, max_length=64)) -> Response:
    return await _gap_page(page, gap_id, done=shown_notice(page, done, notice, GAP_DONE))


def _list_filters(principal: Principal, service: EscalationService, status: str, partnership: str) -> dict[str, str]:
    """The filters of the list a status form was on (its hidden ``list_*`` fields), to go back to that list:
    only a choice the list offers is kept, anything else is dropped (it never reaches an address or a page)."""
    kept = {"status": status if status in GAP_STATUSES else "",
            "partnership": partnership if partnership in access.gap_partnerships(principal, service.register) else ""}
    return {name: value for name, value in kept.items() if value}


@router.post("/legal-gaps/{gap_id}/status", response_class=HTMLResponse)
async def change_gap(gap_id: str, page: Page = Depends(signed_in), csrf_token: str = Form(""),
                     expected_version: str = Form(""), status: str = Form(""), note: str = Form(""),
                     back: str = Form("list"), list_status: str = Form(""),
                     list_partnership: str = Form("")) -> Response:
    page.csrf(csrf_token)
    principal, service = _worker(page)
    listed = _list_filters(principal, service, list_status, list_partnership)
    error: FormError | None = None
    code = 200
    try:
        body = GapStatusChange(expected_version=_version(expected_version), status=status,
                               note=blank(note))
    except ValidationError as exc:
        error, code = _invalid(page, "status", exc), 422
    else:
        try:
            await service.change_gap(principal, gap_id, body, _trace(page))
        except (Forbidden, Conflict, Unprocessable) as exc:
            error, code = _refusal(page, "status", exc), exc.status
    if error is not None:  # the form again, with the note as typed: it was written for the steering group
        error = FormError(error.form, error.message, error.field, gap_id, error.english)
        if back == "detail":
            return await _gap_page(page, gap_id, code=code, error=error, typed_note=note)
        return await _gaps_page(page, **listed, code=code, error=error, typed_note=note)
    if back == "detail":
        return _done(page, f"/console/legal-gaps/{gap_id}", "status")
    return _done(page, "/console/legal-gaps", "status", filters=listed, fragment=f"gap-{gap_id}")

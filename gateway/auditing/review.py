"""Review of the audit log: entries, accountability statistics, data-subject requests.

A privacy officer sees entries where their organisation is requester or holder; a coordinating privacy
officer also sees every entry of the partnerships their organisation coordinates (from the register).
Other roles and partner systems see nothing here.

Entries that name no organisation and no partnership would reach nobody that way; who sees which kind:

* ``register.changed`` — every privacy officer of an organisation that takes part in a partnership: the
  participants are joint controllers, and the register (partnerships, purposes, categories, retention) is
  what all their processing rests on. It says only the version and digest, which they can read anyway.
* ``console.action`` naming nobody — a failed sign-in on a username that is no account, the log's own
  checkpoint failing verification (:mod:`gateway.auditing.checkpoints`) and an operator exporting the whole
  log (``wgs-gateway audit export``, :func:`gateway.auditing.actions.export_event`): signals about the gateway itself,
  not about any organisation's people. Active monitoring of misuse across the partnership is the
  coordinating privacy officer's (the FG appointed from the participants' officers), so those who
  coordinate a partnership see them; an ordinary officer's view stays their own organisation.

Any other entry without a party stays unseen (:class:`audit.review.EntryScope` keeps that exact).
"""

from __future__ import annotations

import asyncio
import io
import secrets
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from sqlalchemy.exc import SQLAlchemyError

from audit import AuditEvent, AuditWriteError, EventType
from audit.anomaly import (
    Flag,
    FlagKey,
    FlagLoggedAlready,
    flag_companion,
    flag_key,
    flag_logged,
    flags_for_day,
    logged_flags,
)
from audit.events import Requester as AuditRequester
from audit.review import MAX_PAGE, EntryFilter, EntryScope, list_entries, statistics, subject_disclosures, utc_bound
from gateway.auditing.actions import record_api_action
from gateway.auditing.setup import audit_services
from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal, Role, Scope
from gateway.clock import as_utc
from gateway.container import Container
from gateway.deprecation import announce, documented_headers
from gateway.deps import get_container
from gateway.enrolment.setup import pseudonym_service
from gateway.errors import Forbidden
from gateway.query_filters import id_member, id_query, word_member, word_query
from gateway.register.setup import register_service
from gateway.spreadsheets import SpreadsheetWriter, csv_download

router = APIRouter(prefix="/v1/audit", tags=["audit"])

SEARCH_PATH = "/v1/audit/entries/search"
DISCLOSURES_PATH = "/v1/audit/subjects/disclosures"
SUBJECT_IN_ADDRESS_DEPRECATED = datetime(2026, 12, 5, tzinfo=UTC)
"""When a pseudonym in an address (``GET /v1/audit/entries?subject=``, ``GET /v1/audit/subjects/{pseudonym}/
disclosures``) was deprecated: reverse proxies log addresses and browsers keep them, so a privacy officer's or
the contact point's searches about one subject could be read back from them. The bodies of ``POST``
:data:`SEARCH_PATH` and :data:`DISCLOSURES_PATH` carry it instead (:mod:`gateway.deprecation`)."""
MAX_SUBJECT = 1024
"""The longest pseudonym a filter or look-up takes (the longest any key version writes is far shorter)."""
MAX_CURSOR = 2**53
"""The largest ``cursor`` (the largest integer JSON readers keep exact), as the proofs' indices."""
_REVIEW_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not a privacy officer"},
    422: {"description": "A filter out of bounds or malformed (the value is never repeated)"}}

SINCE = "Only entries recorded at or after this moment (inclusive; no offset: UTC)."
UNTIL = ("Only entries recorded before this moment (exclusive, so that consecutive windows neither overlap nor "
         "leave a gap; no offset: UTC).")


def id_filter(what: str) -> Any:
    """An optional filter on an id of the register: an over-long or malformed value is a 422 (which never
    repeats it) instead of a query on it (:mod:`gateway.query_filters`)."""
    return id_query(f"Only entries of this {what} (id).")


def word_filter(what: str) -> Any:
    """An optional filter on a value of one of the log's vocabularies."""
    return word_query(f"Only entries with this {what}.")


class EntryView(BaseModel):
    index: int
    recorded_at: datetime
    entry: dict[str, Any]


class EntryPage(BaseModel):
    entries: list[EntryView]
    next_cursor: int | None


def scope_of(principal: Principal, container: Container) -> EntryScope:
    if principal.kind != "person" or not principal.roles & {Role.PRIVACY_OFFICER, Role.COORDINATING_PRIVACY_OFFICER}:
        raise Forbidden("only privacy officers review audit entries", code="officers-only")
    register = register_service(container).current()
    partnerships: frozenset[str] = frozenset()
    if Role.COORDINATING_PRIVACY_OFFICER in principal.roles:
        partnerships = frozenset(pid for pid, p in register.partnerships.items()
                                 if p.coordinating_privacy_officer == principal.organisation)
    unattributed: set[str] = set()
    if any(p.participant_of_organisation(principal.organisation) is not None
           for p in register.partnerships.values()):
        unattributed.add(EventType.REGISTER_CHANGED.value)
    if partnerships:
        unattributed.add(EventType.CONSOLE_ACTION.value)
        unattributed.add(EventType.INDEX_REKEYED.value)  # a key rotation of its own: every partnership's key
    return EntryScope(organisations=frozenset({principal.organisation}), partnerships=partnerships,
                      unattributed=frozenset(unattributed))


class EntrySearch(BaseModel):
    """The filters of ``GET /v1/audit/entries``, the data subject's included, as a body: a pseudonym in a body
    is not in any proxy's access log or browser history. Every member is optional; together they narrow (AND).
    Unknown members are refused (422), not ignored: a misspelt filter would otherwise widen the answer."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    partnership: str | None = id_member("Only entries of this partnership (id).")
    purpose: str | None = id_member("Only entries of this purpose (id).")
    organisation: str | None = id_member("Only entries with this organisation as requester or holder (id).")
    event_type: str | None = word_member("Only entries with this event type.")
    decision: str | None = word_member("Only entries with this decision.")
    since: datetime | None = Field(None, description=SINCE)
    until: datetime | None = Field(None, description=UNTIL)
    subject: str | None = Field(None, min_length=1, max_length=MAX_SUBJECT, description=(
        "Only entries about this data subject: the partnership-domain pseudonym the entries hold "
        "(`data_subject.pseudonym`), of any key version the key ring still holds; it finds the subject's entries "
        "under every one of them. Empty is refused (422), never read as \"every subject\"."))
    cursor: int = Field(-1, ge=-1, le=MAX_CURSOR, description="Return entries after this index: the previous "
                                                               "answer's `next_cursor`.")
    limit: int = Field(100, ge=1, le=MAX_PAGE, description=f"At most this many entries (at most {MAX_PAGE}).")


EXAMPLE_PSEUDONYM = "bsn.v1.8Wq3yHJv2cFq0u9HkX4aZp1mT6rLs0bN3eYdQ7kWc2A"
"""A partnership-domain pseudonym as the log holds one (made up: no subject's), for the OpenAPI examples."""
_RIEC = "riec-amsterdam-amstelland"
SEARCH_EXAMPLES: dict[str, Any] = {
    "subject": {"summary": "A subject's entries in one partnership", "value": {
        "subject": EXAMPLE_PSEUDONYM, "partnership": _RIEC, "limit": 100}},
    "next_page": {"summary": "The next page: the same filters, the previous answer's next_cursor", "value": {
        "subject": EXAMPLE_PSEUDONYM, "partnership": _RIEC, "cursor": 4711, "limit": 100}},
    "denials": {"summary": "Denials in a time window (without a subject GET /v1/audit/entries is the same)",
                "value": {"event_type": "policy.decided", "decision": "deny", "since": "2026-11-01T00:00:00Z",
                          "until": "2026-12-01T00:00:00Z"}},
}
DISCLOSURE_EXAMPLE: dict[str, Any] = {"index": 4712, "recorded_at": "2026-11-25T10:00:00Z", "entry": {
    "entry_id": "01937b6e-0000-7000-8000-000000004712", "index": 4712, "recorded_at": "2026-11-25T10:00:00.000000Z",
    "v": 1, "event": {"event_type": "disclosure", "data_subject": {"pseudonym": EXAMPLE_PSEUDONYM},
                      "holder": "kvk", "categories": ["company_registration"]}}}
"""An entry as the review answers it (abridged: a real entry has every field of its event)."""
_ENTRIES_EXAMPLE = {"entries": [DISCLOSURE_EXAMPLE], "next_cursor": 4712}  # more after it (null: the last page)


@router.get("/entries", response_model=EntryPage, summary="Audit entries you may see, filtered, oldest first",
            responses={200: {"headers": documented_headers(SEARCH_PATH, "Only with `subject`")}, **_REVIEW_ERRORS})
async def entries(request: Request, response: Response, partnership: str | None = id_filter("partnership"),
                  purpose: str | None = id_filter("purpose"), organisation: str | None = id_filter("organisation"),
                  event_type: str | None = word_filter("event type"), decision: str | None = word_filter("decision"),
                  since: datetime | None = Query(None, description=SINCE),
                  until: datetime | None = Query(None, description=UNTIL),
                  subject: str | None = Query(None, min_length=1, max_length=MAX_SUBJECT, deprecated=True, description=(
                      "Deprecated: a pseudonym in the address reaches proxies' access logs and browser histories. "
                      f"Send the filters as the body of `POST {SEARCH_PATH}` instead (the same answer); with "
                      "`subject` this form answers with `Deprecation` and a `Link` to it. Empty is refused (422), "
                      "never read as \"every subject\".")),
                  cursor: int = Query(-1, ge=-1, le=MAX_CURSOR, description="Return entries after this index."),
                  limit: int = Query(100, ge=1, le=MAX_PAGE),
                  principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                  container: Container = Depends(get_container)) -> EntryPage:
    """Every filter but the data subject's is at home in the address (bookmarkable, nothing personal); with
    ``subject`` the form still works but is deprecated for ``POST /v1/audit/entries/search``."""
    page = await entry_page(EntrySearch.model_construct(
        partnership=partnership, purpose=purpose, organisation=organisation, event_type=event_type,
        decision=decision, since=since, until=until, subject=subject, cursor=cursor, limit=limit), principal, container)
    if subject is not None:
        announce(request, response, SUBJECT_IN_ADDRESS_DEPRECATED, SEARCH_PATH)
    return page


@router.post("/entries/search", response_model=EntryPage, responses={
                 200: {"content": {"application/json": {"example": _ENTRIES_EXAMPLE}}}, **_REVIEW_ERRORS},
             summary="Audit entries you may see, filtered by a body (the data subject's filter stays out of "
                     "addresses), oldest first")
async def search_entries(body: Annotated[EntrySearch, Body(openapi_examples=SEARCH_EXAMPLES)],
                         principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                         container: Container = Depends(get_container)) -> EntryPage:
    """``GET /v1/audit/entries`` with the filters in the body, for the data subject's (a pseudonym) above all:
    the same filters, paging (``cursor``: the previous answer's ``next_cursor``), scope and answer. Like the
    GET, a read that writes no audit entry of its own (the officer reads entries of their own scope)."""
    return await entry_page(body, principal, container)


async def entry_page(wanted: EntrySearch, principal: Principal, container: Container) -> EntryPage:
    """One page of the entries ``principal`` may see that match ``wanted`` — both forms of the listing. The
    reviewer's scope is settled (403 for anyone but an officer) before the subject filter puts the pseudonym
    keys to work."""
    scope = scope_of(principal, container)
    forms = await subject_forms(wanted.subject, principal, container) if wanted.subject else None
    found = EntryFilter(wanted.partnership, wanted.purpose, wanted.organisation, wanted.event_type, wanted.decision,
                        wanted.since, wanted.until, forms)
    page = await run_in_threadpool(list_entries, container.engine, scope, found, after=wanted.cursor,
                                   limit=wanted.limit)
    return EntryPage(entries=[EntryView(index=e.index, recorded_at=as_utc(e.recorded_at), entry=e.entry)
                              for e in page.entries], next_cursor=page.next_cursor)


async def subject_forms(subject: str, principal: Principal, container: Container) -> tuple[str, ...]:
    """The ``subject`` filter as every form the subject takes in the log: its pseudonym under each key version
    the ring holds, in each partnership the reviewer's organisation takes part in or coordinates (a rotation
    never rewrites the log, so one subject's entries carry the pseudonym of the version they were written
    under). Only widens the filter, never the reviewer's scope."""
    register = register_service(container).current()
    partnerships = [pid for pid, p in register.partnerships.items()
                    if p.participant_of_organisation(principal.organisation) is not None
                    or p.coordinating_privacy_officer == principal.organisation]
    return tuple(await run_in_threadpool(pseudonym_service(container).in_every_key_version, subject, partnerships))


class StatisticView(BaseModel):
    partnership: str
    purpose: str
    participant: str
    month: str
    requests: int
    allows: int
    narrowings: int
    denials: int
    escalations: int
    refusals: int


@router.get("/statistics", summary="Accountability figures per partnership, purpose, participant and month",
            response_model=list[StatisticView],
            responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with ?format=csv"}})
async def statistics_report(request: Request, partnership: str | None = id_filter("partnership"),
                            purpose: str | None = id_filter("purpose"),
                            since: datetime | None = Query(None, description=SINCE),
                            until: datetime | None = Query(None, description=UNTIL),
                            format: str = Query("json", pattern="^(json|csv)$"),
                            principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                            container: Container = Depends(get_container)) -> Any:
    """The CSV is an export, and itself an audit entry (``console.action``, ``export``, channel ``api``: the
    account, the filters and the number of rows), written before the file is sent, as the console's download
    is: who took the figures is accountable however they were asked for. The JSON answer is a view."""
    views = await statistics_views(partnership, purpose, since, until, principal, container)
    if format == "json":
        return views
    details: dict[str, JsonValue] = {"export": "statistics.csv", "rows": len(views)}
    details.update({name: value for name, value in (("partnership", partnership), ("purpose", purpose)) if value})
    details.update({name: utc_bound(moment).isoformat() for name, moment in (("since", since), ("until", until))
                    if moment})
    await record_api_action(container, request, principal, "export", details=details)
    return statistics_csv(views)


async def statistics_views(partnership: str | None, purpose: str | None, since: datetime | None,
                           until: datetime | None, principal: Principal, container: Container) -> list[StatisticView]:
    """The figures the reader may see. Records nothing: each channel records its export itself (the API above,
    the console as its own action)."""
    scope = scope_of(principal, container)
    rows = await run_in_threadpool(statistics, container.engine, scope,
                                   EntryFilter(partnership=partnership, purpose=purpose, since=since, until=until))
    return [StatisticView(**asdict(row)) for row in rows]


def statistics_csv(views: list[StatisticView]) -> Response:
    """The figures as the CSV download a spreadsheet opens (no formulas from partnership or purpose names)."""
    buffer = io.StringIO()
    fields = list(StatisticView.model_fields)
    writer = SpreadsheetWriter(buffer)
    writer.writerow(fields)
    writer.writerows([view.model_dump()[f] for f in fields] for view in views)
    return csv_download(buffer.getvalue(), "wgs-statistics.csv")


@router.get("/subjects/{pseudonym}/disclosures", response_model=list[EntryView], deprecated=True,
            summary="Data-subject request by the log's pseudonym, in the address (deprecated: "
                    "POST /v1/audit/subjects/disclosures)",
            responses={200: {"headers": documented_headers(DISCLOSURES_PATH, "Always")},
                       403: {"description": "Not the contact point"}})
async def subject_report(pseudonym: str, request: Request, response: Response,
                         principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                         container: Container = Depends(get_container)) -> list[EntryView]:
    """Deprecated: the pseudonym in the path reaches proxies' access logs and browser histories. ``POST
    /v1/audit/subjects/disclosures`` with ``{"pseudonym": ...}`` answers the same; this form still works and
    says so in ``Deprecation`` and ``Link``."""
    found = await report_disclosures(pseudonym, request, principal, container)
    announce(request, response, SUBJECT_IN_ADDRESS_DEPRECATED, DISCLOSURES_PATH)
    return found


async def report_disclosures(pseudonym: str, request: Request, principal: Principal,
                             container: Container) -> list[EntryView]:
    """The API's data-subject request by the log's pseudonym, however the pseudonym came. The lookup is itself an
    audit entry (``console.action``, ``subject-lookup``, channel ``api``: the account and the count found, never
    the subject), written before the answer, as the console's is."""
    found = await lookup_disclosures(pseudonym, principal, container)
    await record_api_action(container, request, principal, "subject-lookup", details={"disclosures": len(found)})
    return found


def require_contact_point(principal: Principal) -> None:
    """403 unless ``principal`` is a person with the contact point's role: checked before anything of the
    request is decoded or computed (a look-up by identifier puts the pseudonymisation keys to work)."""
    if principal.kind != "person" or Role.CONTACT_POINT not in principal.roles:
        raise Forbidden("only the contact point answers data-subject requests", code="contact-point-only")


async def lookup_disclosures(pseudonym: str, principal: Principal, container: Container) -> list[EntryView]:
    """Every disclosure about one subject in the partnerships the contact point's organisation takes part in,
    under whichever pseudonym key version the ring still holds it was logged (a rotation never rewrites the log).
    Records nothing: each channel records the lookup itself (the API here, the console as its own action)."""
    require_contact_point(principal)
    register = register_service(container).current()
    partnerships = frozenset(pid for pid, p in register.partnerships.items()
                             if p.participant_of_organisation(principal.organisation) is not None)
    forms = await run_in_threadpool(pseudonym_service(container).in_every_key_version, pseudonym, partnerships)
    found = await run_in_threadpool(subject_disclosures, container.engine, partnerships, forms)
    return [EntryView(index=e.index, recorded_at=as_utc(e.recorded_at), entry=e.entry) for e in found]


class AnomalyView(BaseModel):
    actor: str
    organisation: str
    day: date
    metric: str
    observed: str
    baseline: str


@router.get("/anomalies", response_model=list[AnomalyView],
            summary="Systems or users whose volume, denial rate or out-of-hours share departs from their baseline",
            responses={403: {"description": "Not a privacy officer"}})
async def anomalies(day: date | None = None, principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                    container: Container = Depends(get_container)) -> list[AnomalyView]:
    """Flags computed only from decisions the officer may review (the entries' own scope: their
    organisation's actors, or the partnerships they coordinate). Each new flag is also written to the log as
    an ``anomaly.flagged`` entry (once per actor, day, metric)."""
    scope = scope_of(principal, container)
    the_day = day or container.clock.now().date()
    flags = await run_in_threadpool(flags_for_day, container.engine, the_day, scope)
    await _record_new_flags(container, flags)
    return [AnomalyView(**asdict(flag)) for flag in flags]


async def _record_new_flags(container: Container, flags: list[Flag]) -> None:
    """Log each flag once per actor, organisation, day and metric: this process remembers what it logged, and
    what it has not seen yet is looked up in the log, which another process (or this one before a restart)
    may have written it to already.

    The look-up only spares the write: two processes may both look before either writes. What keeps the entry
    unique is its row in ``audit_anomaly_flags``, committed with it (:func:`audit.anomaly.flag_companion`):
    each flag is its own caller of the group commit, so a flag another process logged first fails alone and is
    simply not logged again here, while the other flags, and the entries of other requests in the same batch,
    are written."""
    services = audit_services(container)
    recorded: set[FlagKey] = container.services.setdefault("recorded_anomaly_flags", set())
    unseen = [flag for flag in flags if flag_key(flag) not in recorded]
    if not unseen:
        return
    recorded.update(await run_in_threadpool(logged_flags, container.engine, unseen))
    new: list[Flag] = []
    for flag in unseen:
        if flag_key(flag) not in recorded:
            recorded.add(flag_key(flag))
            new.append(flag)
    if not new:
        return
    try:
        outcomes = await asyncio.gather(*(services.writer.record([_flag_event(flag)], flag_companion(flag))
                                          for flag in new), return_exceptions=True)
    except BaseException:  # cancelled: whatever was handed over may still be written; a later listing sees
        recorded.difference_update(flag_key(flag) for flag in new)
        raise
    failure: BaseException | None = None
    for flag, outcome in zip(new, outcomes, strict=True):
        if isinstance(outcome, BaseException) and not await _logged_by_another(container, outcome, flag):
            recorded.discard(flag_key(flag))  # not logged after all: a later listing tries again
            failure = failure or outcome
    if failure is not None:
        raise failure


def _flag_event(flag: Flag) -> AuditEvent:
    return AuditEvent(event_type=EventType.ANOMALY_FLAGGED, trace_id=secrets.token_hex(16),
                      span_id=secrets.token_hex(8), requester=AuditRequester(org=flag.organisation),
                      reasons=(flag.metric,),
                      extra={"actor": flag.actor, "day": flag.day.isoformat(), "observed": flag.observed,
                             "baseline": flag.baseline})


async def _logged_by_another(container: Container, failure: BaseException, flag: Flag) -> bool:
    """Whether ``flag``'s entry failed only because another listing committed it first: refused by its row's
    precondition, or (two of one batch) by the row's key, which the look-up then finds taken."""
    if not isinstance(failure, AuditWriteError):
        return False
    if isinstance(failure.__cause__, FlagLoggedAlready):
        return True
    try:
        return await run_in_threadpool(flag_logged, container.engine, flag)
    except SQLAlchemyError:  # the database is failing: the write's own failure is the answer
        return False

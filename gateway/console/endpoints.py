"""The console's routes (``/console``): thin handlers that check the session, call the same service functions
as the JSON API with the signed-in person's :class:`Principal`, and render a template.

Scoping is never re-implemented here: the audit pages go through :func:`gateway.auditing.review.scope_of`
and :mod:`audit.review`; anomaly flags and data-subject look-ups call the API's own route functions (which
also check the role and record new flags); the register pages call the register API's functions. Errors of
those functions (403, 404, 422, ...) become HTML error pages instead of problem+json (see
:class:`gateway.console.pages.ConsoleRoute`).

The escalation and legal-gap pages are in :mod:`gateway.console.escalations`, included at the end.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from audit import (
    Decision,
    EventType,
    MalformedRow,
    ProofUnavailable,
    StoreUnavailable,
    VerificationError,
)
from audit.review import EntryFilter, list_entries, statistics
from gateway import query_filters
from gateway.auditing import review
from gateway.auditing.checkpoints import served_checkpoint
from gateway.auditing.setup import audit_services, current_key
from gateway.auth import repository as accounts
from gateway.auth.accounts import UnknownRole, authenticate_person
from gateway.auth.principal import Principal, Role, Scope
from gateway.auth.setup import auth_services
from gateway.console import escalations, signins, verification, views
from gateway.console.actions import record_action
from gateway.console.notices import notice_query, shown_notice
from gateway.console.pages import (
    NAV,
    PRIVACY_OFFICERS,
    ConsoleRoute,
    Page,
    Person,
    blank,
    current_page,
    day_start,
    flag,
    home_of,
    local_path,
    need_scope,
    return_to,
    signed_in,
    writes_on_opening,
)
from gateway.console.sessions import SessionData
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import (
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from gateway.register import endpoints as register_api
from gateway.register.setup import register_service

__all__ = ["NAV", "router"]

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"console.css": "text/css; charset=utf-8", "proof.js": "text/javascript; charset=utf-8",
                "drafts.js": "text/javascript; charset=utf-8"}
_PSEUDONYM = re.compile(r"^[A-Za-z0-9+/=_:.\-]{1,1024}$")  # as audit.events.Pseudonym
WRITES_ON_OPENING = "page-elsewhere"
"""The refusal of a page that writes as it opens (:meth:`Page.from_own_page`) when another origin's page opened
it: such a GET is an action, as a download is, and carries no CSRF token."""
MAX_SUBJECT = review.MAX_SUBJECT
"""The longest ``subject`` filter: the API's (a pseudonym is at most that long)."""
MAX_DAY = len("YYYY-MM-DD")
"""The longest ``since``/``until`` a POSTed filter form sends (a day)."""
MAX_INDEX = review.MAX_CURSOR
"""The largest log index a page accepts: the API's ``cursor`` bound (the largest integer JSON readers keep exact),
far beyond any log, and below the 64-bit integers of the database, which a larger one overflowed into a 500."""
_VERIFIED = frozenset({"verified"})  # the explorer's notice after the officer's own verification run


id_filter = query_filters.form_id_query  # bounded as the API's filters (gateway.query_filters)
word_filter = query_filters.form_word_query
id_field = query_filters.form_id_field  # the same, POSTed
word_field = query_filters.form_word_field


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)

# -- sign-in and sign-out --------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home(page: Page = Depends(signed_in)) -> Response:
    return page.finish(RedirectResponse(home_of(page.me), status_code=303))


@router.get("/login", response_class=HTMLResponse)
async def login_form(page: Page = Depends(current_page), next: str | None = None, expired: str | None = None,
                     signed_out: str | None = None) -> Response:
    if page.person is not None:
        return page.finish(RedirectResponse(home_of(page.person), status_code=303))
    if not page.sessions.login_fresh(page.session, page.now()):  # none yet, or half its lifetime gone
        page.session = page.sessions.anonymous(page.now())
    message = (page.t("session_expired") if flag(expired, "expired") else
               page.t("signed_out") if flag(signed_out, "signed_out") else "")
    return page.render("login.html", next=return_to(page.request, next), message=message, error="")


@router.post("/login", response_class=HTMLResponse)
async def login(page: Page = Depends(current_page), username: str = Form("", max_length=64),
                password: str = Form("", max_length=256), csrf_token: str = Form(""),
                next: str = Form("/console")) -> Response:
    container = page.container
    refusal = _stale_form(page, csrf_token)
    if refusal is not None:  # a fresh form with it: signing in again is all it takes
        page.session = page.sessions.anonymous(page.now())
        return page.render("login.html", status=403, next=local_path(next), message="", error=page.t(refusal))
    auth = auth_services(container)
    throttle = auth.login_throttle

    def check() -> accounts.AccountRecord:
        with transaction(container.sessions) as session:
            return authenticate_person(session, username, password, throttle,
                                       page.request.client.host if page.request.client else None)

    try:
        account = await auth.password_checks.run(check)  # a slot of a few: a flood cannot take every thread
    except (Unauthorized, TooManyRequests, UnknownRole) as exc:
        reason = (signins.THROTTLED if isinstance(exc, TooManyRequests) else signins.UNKNOWN_ROLE
                  if isinstance(exc, UnknownRole) else signins.WRONG_CREDENTIALS)
        tried = await run_in_threadpool(signins.target_of, container, username)
        await signins.record_failed_sign_in(container, page.request, reason, tried)
        response = page.render("login.html", status=exc.status, next=local_path(next), message="",
                               error=page.t({signins.THROTTLED: "throttled", signins.UNKNOWN_ROLE: "unknown_role"}
                                            .get(reason, "wrong_credentials")))
        response.headers.update({k: v for k, v in exc.headers.items() if k.lower() == "retry-after"})
        return response
    before = page.session
    if before is not None and before.username is not None:  # signed in already (as anyone): end that session
        await run_in_threadpool(_sign_out, page, before)
    await record_action(container, page.request, "sign-in", organisation=account.organisation,
                        account_id=account.id)
    credential = page.sessions.credential_of(account.password_hash, account.access_generation)
    page.session = page.sessions.signed_in(account.username, credential, page.now())
    person = Person(account.id, account.username, account.organisation, frozenset(account.roles))
    target = return_to(page.request, next)  # a page, never a form's action (that would be a GET of a POST)
    if target == "/console":
        target = home_of(person)
    return page.finish(RedirectResponse(target, status_code=303))


def _stale_form(page: Page, token: str) -> str | None:
    """Why the sign-in form's token is refused (a message key), or None when it is good.

    A form whose token outlived its lifetime (:meth:`Sessions.login_expired`), or whose cookie the browser has
    dropped meanwhile (it expires with the token), is "expired, sign in again" — not the forgery message,
    which sent people to reload a page that was merely old; any other mismatch is the forgery's."""
    session, now = page.session, page.now()
    anonymous = session is None or session.username is None
    if anonymous and token and (session is None or page.sessions.login_expired(session, now)):
        return "sign_in_form_expired"
    return None if page.sessions.csrf_ok(session, token) else "refusal.csrf-failed"


def _sign_out(page: Page, session: SessionData) -> None:
    page.sessions.sign_out(page.container.sessions, session, page.now())


@router.post("/logout", response_class=HTMLResponse)
async def logout(page: Page = Depends(signed_in), csrf_token: str = Form("")) -> Response:
    person = page.me
    page.csrf(csrf_token)
    session = page.session
    # The browser forgets the session whatever happens next: an error page (the database or the audit log
    # failing below) deletes the cookie too, and shows nobody signed in.
    page.signing_out, page.session, page.person = True, None, None
    if session is not None:  # first: should the audit entry fail, the session is ended all the same
        await run_in_threadpool(_sign_out, page, session)
    await record_action(page.container, page.request, "sign-out", organisation=person.organisation,
                        account_id=person.account_id)
    return page.finish(RedirectResponse("/console/login?signed_out=1", status_code=303))


# -- audit explorer --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Integrity:
    log_size: int
    checkpoint_size: int | None = None
    issued_at: datetime | None = None
    age: str = ""
    signature_ok: bool = False
    vkey: str = ""


def _integrity(container: Container) -> Integrity:
    """The panel's figures, read only. It signed a due checkpoint first, a write on a GET that any origin of the
    site could start; the audit writer signs a due checkpoint anyway (with the append that makes it due, and in
    its idle round every second), so the panel's checkpoint is as fresh without."""
    services = audit_services(container)
    log = services.log
    size = log.size()
    vkey = current_key(services).vkey
    try:
        latest = log.checkpoint()
    except ProofUnavailable:
        return Integrity(size, vkey=vkey)
    try:
        log.key_history().open(latest.note)  # by the key of its size's era (audit.keys)
        signature_ok = True
    except (VerificationError, MalformedRow):
        signature_ok = False
    return Integrity(size, latest.tree_size, latest.issued_at,
                     views.age_text(container.clock.now() - latest.issued_at), signature_ok, vkey)


def _choices(container: Container) -> dict[str, list[str]]:
    register = register_service(container).current()
    return {
        "partnership": sorted(register.partnerships),
        "purpose": sorted({p for partnership in register.partnerships.values() for p in partnership.purposes}),
        "organisation": sorted(register.organisations),
        "event_type": [e.value for e in EventType],
        "decision": [d.value for d in Decision],
    }


SUBJECT_IN_ADDRESS = ("the subject filter is taken from the explorer's form only, never from the address "
                      "(proxies log addresses; a pseudonym is personal data)")
"""The refusal of ``GET /console/audit?subject=...`` (an old bookmark or a hand-made link): refused, not ignored,
so the officer is not shown every entry as if they were the subject's; the value is not shown back."""


@router.get("/audit", response_class=HTMLResponse)
async def audit_explorer(page: Page = Depends(signed_in), partnership: str | None = id_filter(),
                         purpose: str | None = id_filter(), organisation: str | None = id_filter(),
                         event_type: str | None = word_filter(), decision: str | None = word_filter(),
                         since: str | None = None, until: str | None = None,
                         after: int = Query(-1, le=MAX_INDEX), done: str | None = None,
                         notice: str | None = Query(None, max_length=64)) -> Response:
    """The log, filtered and paged, and the integrity panel. Only reads (:func:`_integrity`), so it opens from
    anywhere: it is the home page, which a link on another page (an intranet) may well open. Every filter but
    the data subject's is in the address (bookmarkable); that one is POSTed (:func:`audit_explorer_posted`)."""
    if "subject" in page.request.query_params:
        raise Unprocessable(SUBJECT_IN_ADDRESS, code="subject-in-address")
    filters = {"partnership": blank(partnership), "purpose": blank(purpose), "organisation": blank(organisation),
               "event_type": blank(event_type), "decision": blank(decision), "since": blank(since),
               "until": blank(until), "subject": None}
    just_verified = shown_notice(page, done, notice, _VERIFIED) is not None
    return await _explorer(page, filters, after, just_verified=just_verified)


@router.post("/audit", response_class=HTMLResponse)
async def audit_explorer_posted(page: Page = Depends(signed_in), partnership: str | None = id_field(),
                                purpose: str | None = id_field(), organisation: str | None = id_field(),
                                event_type: str | None = word_field(), decision: str | None = word_field(),
                                since: str | None = Form(None, max_length=MAX_DAY),
                                until: str | None = Form(None, max_length=MAX_DAY),
                                subject: str | None = Form(None, max_length=MAX_SUBJECT),
                                after: int = Form(-1, le=MAX_INDEX), csrf_token: str = Form("")) -> Response:
    """The filter form, POSTed (with the CSRF token, as every console form) so that the data-subject filter, a
    pseudonym, never travels in an address: reverse proxies and browsers' histories keep addresses. With a
    subject the page is the answer to the POST, and its paging buttons POST again with the filters in hidden
    fields (no server-side state to keep or expire); without one the filters go back to the address (303 to
    the GET page, bookmarkable as before)."""
    page.csrf(csrf_token)
    need_scope(page.me, Scope.AUDIT_READ)
    filters = {"partnership": blank(partnership), "purpose": blank(purpose), "organisation": blank(organisation),
               "event_type": blank(event_type), "decision": blank(decision), "since": blank(since),
               "until": blank(until), "subject": blank(subject)}
    if filters["subject"] is None:
        query = {**{k: v for k, v in filters.items() if v}, **({"after": after} if after >= 0 else {})}
        return page.finish(RedirectResponse(f"/console/audit?{urlencode(query)}" if query else "/console/audit",
                                            status_code=303))
    return await _explorer(page, filters, after, just_verified=False)


async def _explorer(page: Page, filters: dict[str, str | None], after: int, *, just_verified: bool) -> Response:
    """The explorer's page for ``filters``, from entry ``after`` on. Paging is by link (a GET with the filters
    in the address) or, when the subject is among them, by a POSTed form carrying them (``pager_post``)."""
    person = page.me
    container = page.container
    person_principal = need_scope(person, Scope.AUDIT_READ)
    scope = review.scope_of(person_principal, container)
    forms = await review.subject_forms(filters["subject"], person_principal, container) if filters["subject"] else None
    wanted = EntryFilter(filters["partnership"], filters["purpose"], filters["organisation"], filters["event_type"],
                         filters["decision"], day_start(filters["since"], "since"),
                         day_start(filters["until"], "until"), forms)
    found = await run_in_threadpool(list_entries, container.engine, scope, wanted, after=max(after, -1),
                                    limit=page.sessions.settings.page_size)
    integrity = await run_in_threadpool(_integrity, container)
    last_run = await run_in_threadpool(verification.last, container)
    active = {k: v for k, v in filters.items() if v}
    next_fields = {**active, "after": str(found.next_cursor)} if found.next_cursor is not None else None
    first_fields = active if after >= 0 else None
    if filters["subject"] is not None:  # never in an address: the pager POSTs these
        return page.render("audit.html", entries=found.entries, filters=filters, choices=_choices(container),
                           integrity=integrity, last_run=last_run, may_verify=_may_verify(person),
                           verified=just_verified, next_fields=next_fields, first_fields=first_fields)
    return page.render("audit.html", entries=found.entries, filters=filters, choices=_choices(container),
                       integrity=integrity, last_run=last_run, may_verify=_may_verify(person),
                       verified=just_verified, next_href=_explorer_href(next_fields),
                       first_href=_explorer_href(first_fields))


def _explorer_href(fields: dict[str, str] | None) -> str | None:
    return f"/console/audit?{urlencode(fields)}" if fields is not None else None


def _may_verify(person: Person) -> bool:
    return bool(person.roles & PRIVACY_OFFICERS)


@router.post("/audit/verify", response_class=HTMLResponse)
async def verify_log(page: Page = Depends(signed_in), csrf_token: str = Form("")) -> Response:
    """Verify the whole log now (tree, signatures, consistency); the run is itself an audit entry, which the
    integrity panel then shows as the last verification."""
    person = page.me
    page.csrf(csrf_token)
    need_scope(person, Scope.AUDIT_READ)
    if not _may_verify(person):
        raise Forbidden("only privacy officers verify the log from the console", code="verifiers-only")
    try:
        result = await verification.run_shared(page.container)
    except StoreUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    await record_action(page.container, page.request, verification.ACTION, organisation=person.organisation,
                        account_id=person.account_id, ok=result.ok, details=verification.details(result))
    query = notice_query(page, "/console/audit", "verified")
    return page.finish(RedirectResponse(f"/console/audit?{query}#integrity", status_code=303))


@router.get("/audit/entries/{index}", response_class=HTMLResponse)
@writes_on_opening
async def audit_entry(index: int, page: Page = Depends(signed_in)) -> Response:
    """An entry with its inclusion proof; a checkpoint covering it is signed now if none does yet (a write:
    opened from the console's own pages only, or another origin's page could keep the gateway signing)."""
    page.from_own_page(WRITES_ON_OPENING)
    person = page.me
    container = page.container
    scope = review.scope_of(need_scope(person, Scope.AUDIT_READ), container)
    if not 0 <= index <= MAX_INDEX:
        raise NotFound("no such entry")
    found = await run_in_threadpool(list_entries, container.engine, scope, EntryFilter(), after=index - 1, limit=1)
    if not found.entries or found.entries[0].index != index:
        raise NotFound(f"no entry {index} that you may see")  # unseen and absent look the same
    services = audit_services(container)
    log = services.log

    # Not covered yet: signed now rather than make the officer wait, as through the API (rate-limited, verified).
    checkpoint = await served_checkpoint(container, page.request, covering=index + 1, channel="console")

    def proof_material() -> dict[str, Any]:
        stored = log.entries(index, index + 1)[0]
        proof = log.inclusion_proof(index, checkpoint.tree_size)
        return {"canonical_b64": base64.b64encode(stored.canonical).decode("ascii"),
                "leaf_hash": proof.leaf_hash.hex(), "tree_size": proof.tree_size,
                "proof_hashes": [h.hex() for h in proof.hashes], "note": checkpoint.note,
                "note_b64": base64.b64encode(checkpoint.note.encode("utf-8")).decode("ascii"),
                "root_hash": checkpoint.root_hash.hex(), "issued_at": checkpoint.issued_at}

    material = await run_in_threadpool(proof_material)
    vkey = (await run_in_threadpool(current_key, services)).vkey
    entry = found.entries[0]
    return page.render("entry.html", entry=entry, pretty=json.dumps(entry.entry, indent=2, ensure_ascii=False),
                       vkey=vkey, **material)


# -- statistics ------------------------------------------------------------------------------------------


@router.get("/statistics", response_class=HTMLResponse)
@writes_on_opening
async def statistics_page(page: Page = Depends(signed_in), partnership: str | None = id_filter(),
                          purpose: str | None = id_filter(), since: str | None = None, until: str | None = None
                          ) -> Response:
    """Figures, charts and anomaly flags; each new flag is written to the log as it is shown (``anomaly.flagged``,
    as through the API): opened from the console's own pages only."""
    page.from_own_page(WRITES_ON_OPENING)
    person = page.me
    container = page.container
    principal = need_scope(person, Scope.AUDIT_READ)
    scope = review.scope_of(principal, container)
    filters = {"partnership": blank(partnership), "purpose": blank(purpose), "since": blank(since),
               "until": blank(until)}
    wanted = EntryFilter(partnership=filters["partnership"], purpose=filters["purpose"],
                         since=day_start(filters["since"], "since"), until=day_start(filters["until"], "until"))
    rows = await run_in_threadpool(statistics, container.engine, scope, wanted)
    flags = await review.anomalies(day=None, principal=principal, container=container)
    active = {k: v for k, v in filters.items() if v}
    drill = [(flag, "/console/audit?" + urlencode({
        "organisation": flag.organisation, "event_type": EventType.POLICY_DECIDED.value,
        "since": flag.day.isoformat(), "until": (flag.day + timedelta(days=1)).isoformat()})) for flag in flags]
    return page.render("statistics.html", rows=rows, charts=views.charts(rows), outcomes=views.OUTCOMES,
                       flags=drill, filters=filters, choices=_choices(container),
                       csv_href="/console/statistics.csv" + (f"?{urlencode(active)}" if active else ""))


@router.get("/statistics.csv")
@writes_on_opening
async def statistics_csv(page: Page = Depends(signed_in), partnership: str | None = id_filter(),
                         purpose: str | None = id_filter(), since: str | None = None, until: str | None = None
                         ) -> Response:
    person = page.me
    page.from_own_page()
    principal = need_scope(person, Scope.AUDIT_READ)
    since_at, until_at = day_start(blank(since), "since"), day_start(blank(until), "until")
    views = await review.statistics_views(blank(partnership), blank(purpose), since_at, until_at, principal,
                                          page.container)
    response = review.statistics_csv(views)
    rows = len(views)
    details: dict[str, Any] = {"export": "statistics.csv", "rows": rows}
    details.update({k: v for k, v in (("partnership", blank(partnership)), ("purpose", blank(purpose))) if v})
    details.update({k: v.date().isoformat() for k, v in (("since", since_at), ("until", until_at)) if v})
    await record_action(page.container, page.request, "export", organisation=person.organisation,
                        account_id=person.account_id, details=details)
    return page.finish(response)


# -- register --------------------------------------------------------------------------------------------


@router.get("/register", response_class=HTMLResponse)
async def register_page(page: Page = Depends(signed_in)) -> Response:
    person = page.me
    principal = need_scope(person, Scope.REGISTER_READ)
    container = page.container
    current = register_api.current_register(container=container, _principal=principal)

    def history() -> list[Any]:
        with transaction(container.sessions) as session:
            return register_api.versions(session=session, _principal=principal)

    versions = await run_in_threadpool(history)
    return page.render("register.html", register=current, versions=versions)


# -- data-subject requests -------------------------------------------------------------------------------


def _contact_point(person: Person) -> Principal:
    principal = need_scope(person, Scope.AUDIT_READ)
    if Role.CONTACT_POINT.value not in person.roles:
        raise Forbidden("only the contact point answers data-subject requests", code="contact-point-only")
    return principal


@router.get("/subjects", response_class=HTMLResponse)
async def subjects_form(page: Page = Depends(signed_in)) -> Response:
    person = page.me
    _contact_point(person)
    return page.render("subjects.html", results=None, error="")


@router.post("/subjects", response_class=HTMLResponse)
async def subjects_lookup(page: Page = Depends(signed_in), pseudonym: str = Form("", max_length=1024),
                          csrf_token: str = Form("")) -> Response:
    person = page.me
    page.csrf(csrf_token)
    principal = _contact_point(person)
    pseudonym = pseudonym.strip()
    if not _PSEUDONYM.match(pseudonym):
        return page.render("subjects.html", status=422, results=None, error=page.t("invalid_pseudonym"))
    found = await review.lookup_disclosures(pseudonym, principal, page.container)
    await record_action(page.container, page.request, "subject-lookup", organisation=person.organisation,
                        account_id=person.account_id, details={"disclosures": len(found)})
    return page.render("subjects.html", results=found, error="")


# -- static files ----------------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise NotFound("no such file")
    content = await run_in_threadpool((STATIC_DIR / name).read_bytes)
    return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=3600"})


router.include_router(escalations.router)

"""The console's routes (``/console``): thin handlers that check the session, call the same service functions
as the JSON API with the signed-in person's :class:`Principal`, and render a template.

Scoping is never re-implemented here: the audit pages go through :func:`gateway.auditing.review.scope_of`
and :mod:`audit.review`; anomaly flags and data-subject look-ups call the API's own route functions (which
also check the role and record new flags); the register pages call the register API's functions. Errors of
those functions (403, 404, 422, ...) become HTML error pages instead of problem+json (see
:class:`ConsoleRoute`).

Pages for escalations and legal gaps are announced in :data:`NAV`; their routes belong in their own module
next to this one, included from here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from audit import AuditWriteError, Decision, EventType, ProofUnavailable, VerificationError, open_checkpoint
from audit.review import EntryFilter, list_entries, statistics
from gateway.auditing import review
from gateway.auditing.setup import audit_services
from gateway.auth import repository as accounts
from gateway.auth.accounts import authenticate_person, scopes_for_roles
from gateway.auth.principal import Principal, Role, Scope
from gateway.auth.setup import auth_services
from gateway.console import views
from gateway.console.actions import record_action
from gateway.console.i18n import LANGUAGE_COOKIE, choose_language, translate
from gateway.console.sessions import SessionData, Sessions, console_sessions
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.deps import get_container
from gateway.errors import Forbidden, GatewayError, NotFound, TooManyRequests, Unauthorized, Unprocessable
from gateway.register import endpoints as register_api
from gateway.register.setup import register_service

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"console.css": "text/css; charset=utf-8", "proof.js": "text/javascript; charset=utf-8"}
_PSEUDONYM = re.compile(r"^[A-Za-z0-9+/=_:.\-]{1,1024}$")  # as audit.events.Pseudonym
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
PRIVACY_OFFICERS = frozenset({Role.PRIVACY_OFFICER.value, Role.COORDINATING_PRIVACY_OFFICER.value})
EVERYONE = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class NavItem:
    key: str  # message key of the label
    href: str | None  # None: announced, not built yet
    roles: frozenset[str]


NAV = (
    NavItem("nav_audit", "/console/audit", PRIVACY_OFFICERS),
    NavItem("nav_statistics", "/console/statistics", PRIVACY_OFFICERS),
    # Escalations and legal gaps: set href when their pages land (routes in their own module, included here).
    NavItem("nav_escalations", None, PRIVACY_OFFICERS | {Role.ADMINISTRATOR.value}),
    NavItem("nav_legal_gaps", None, PRIVACY_OFFICERS | {Role.ADMINISTRATOR.value}),
    NavItem("nav_register", "/console/register", EVERYONE),
    NavItem("nav_subjects", "/console/subjects", frozenset({Role.CONTACT_POINT.value})),
)

_templates = Environment(loader=PackageLoader("gateway.console", "templates"),
                         autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)
_templates.filters["utc"] = views.utc_text


class LoginRequired(Exception):
    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Person:
    """The signed-in account, as loaded from the database on this request."""

    account_id: str
    username: str
    organisation: str
    roles: frozenset[str]

    @property
    def principal(self) -> Principal:
        """The same Principal a bearer token of this account would give the API."""
        return Principal(kind="person", subject=self.username, organisation=self.organisation,
                         scopes=frozenset(scopes_for_roles(sorted(self.roles))), roles=self.roles)

    def may(self, item: NavItem) -> bool:
        return bool(self.roles & item.roles)


@dataclass
class Page:
    """Everything a handler needs to answer: who, in which language, and how to render."""

    request: Request
    container: Container
    sessions: Sessions
    language: str
    remember_language: bool
    session: SessionData | None = None
    person: Person | None = None
    session_state: str = "anonymous"
    cookies_to_clear: list[str] = field(default_factory=list)

    @property
    def me(self) -> Person:
        """The signed-in person (routes that depend on :func:`signed_in` always have one)."""
        if self.person is None:
            raise LoginRequired(self.session_state)
        return self.person

    def t(self, key: str, **values: object) -> str:
        return translate(self.language, key, **values)

    def render(self, template: str, *, status: int = 200, **values: Any) -> Response:
        nav = [item for item in NAV if self.person and self.person.may(item)]
        html = _templates.get_template(template).render(
            t=self.t, lang=self.language, person=self.person, nav=nav, path=self.request.url.path,
            csrf=self.session.csrf if self.session else "", **values)
        return self.finish(HTMLResponse(html, status_code=status))

    def finish(self, response: Response) -> Response:
        if self.session is not None:
            self.sessions.write(response, self.request, self.session)
        if self.remember_language:
            response.set_cookie(LANGUAGE_COOKIE, self.language, max_age=365 * 86400, httponly=True,
                                samesite="strict", secure=self.sessions.secure_cookie(self.request), path="/console")
        return response

    def now(self) -> float:
        return self.container.clock.now().timestamp()

    def csrf(self, token: str) -> None:
        if not self.sessions.csrf_ok(self.session, token):
            raise Forbidden(self.t("csrf_failed"))


class ConsoleRoute(APIRoute):
    """Turns the errors of a console handler (and of its dependencies) into pages, and sets security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except LoginRequired as exc:
                wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                target = "/console/login?" + urlencode({"next": _local(wanted), **(
                    {"expired": "1"} if exc.reason in {"idle", "expired", "signed-out"} else {})})
                response = RedirectResponse(target, status_code=303)
            except (GatewayError, RequestValidationError, AuditWriteError) as exc:
                response = _error_page(request, exc)
            for name, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return handler


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def _local(target: str | None) -> str:
    """Only paths inside the console are followed after sign-in (no open redirect)."""
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return "/console"


def _error_page(request: Request, exc: Exception) -> Response:
    page: Page | None = getattr(request.state, "console_page", None)
    if page is None:
        container = get_container(request)
        sessions = console_sessions(container)
        language, _ = choose_language(request, sessions.settings.default_language)
        page = Page(request, container, sessions, language, False)
    if isinstance(exc, GatewayError):
        status, detail = exc.status, exc.detail
    elif isinstance(exc, AuditWriteError):
        status, detail = 503, page.t("audit_unavailable")
    else:
        status, detail = 422, page.t("error_422")
    summary = {403: "error_403", 404: "error_404", 422: "error_422"}.get(status, "error_other")
    response = page.render("error.html", status=status, summary=page.t(summary),
                           detail=detail if status in {403, 422} else "")
    for name, value in (exc.headers.items() if isinstance(exc, GatewayError) else ()):
        if name.lower() == "retry-after":
            response.headers[name] = value
    return response


# -- dependencies ----------------------------------------------------------------------------------------


async def current_page(request: Request, container: Container = Depends(get_container)) -> Page:
    """The request's page context; loads the account when the session is signed in and still valid."""
    sessions = console_sessions(container)
    language, remember = choose_language(request, sessions.settings.default_language)
    page = Page(request, container, sessions, language, remember)
    request.state.console_page = page
    data = sessions.read(request)
    state = sessions.state(data, page.now())
    page.session_state = state
    if state == "active" and data is not None and data.username is not None:
        username = data.username

        def load() -> accounts.AccountRecord | None:
            with transaction(container.sessions) as session:
                return accounts.get_account(session, username)

        account = await run_in_threadpool(load)
        if account is not None and account.active:
            page.person = Person(account.id, account.username, account.organisation, frozenset(account.roles))
            page.session = sessions.touched(data, page.now())
        else:
            page.session_state = "signed-out"
    elif state == "anonymous" and data is not None:
        page.session = data  # keeps the sign-in form's CSRF token
    return page


async def signed_in(page: Page = Depends(current_page)) -> Page:
    if page.person is None:
        raise LoginRequired(page.session_state)
    return page


def _need_scope(person: Person, scope: Scope) -> Principal:
    """The scope check the API's ``require_scope`` makes, for a person signed in to the console."""
    principal = person.principal
    if not principal.has_scope(scope.value):
        raise Forbidden(f"your roles lack the scope `{scope.value}`")
    return principal


def _home(person: Person) -> str:
    return next((item.href for item in NAV if item.href and person.may(item)), "/console/register")


def _day(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise Unprocessable(f"{name}: not a date (YYYY-MM-DD)") from None


def _blank(value: str | None) -> str | None:
    return value.strip() or None if value else None


# -- sign-in and sign-out --------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def home(page: Page = Depends(signed_in)) -> Response:
    return page.finish(RedirectResponse(_home(page.me), status_code=303))


@router.get("/login", response_class=HTMLResponse)
async def login_form(page: Page = Depends(current_page), next: str | None = None, expired: str | None = None,
                     signed_out: str | None = None) -> Response:
    if page.person is not None:
        return page.finish(RedirectResponse(_home(page.person), status_code=303))
    if page.session is None:
        page.session = page.sessions.anonymous(page.now())
    message = page.t("session_expired") if expired else page.t("signed_out") if signed_out else ""
    return page.render("login.html", next=_local(next), message=message, error="")


@router.post("/login", response_class=HTMLResponse)
async def login(page: Page = Depends(current_page), username: str = Form("", max_length=64),
                password: str = Form("", max_length=256), csrf_token: str = Form(""),
                next: str = Form("/console")) -> Response:
    container = page.container
    if not page.sessions.csrf_ok(page.session, csrf_token):
        page.session = page.sessions.anonymous(page.now())
        return page.render("login.html", status=403, next=_local(next), message="", error=page.t("csrf_failed"))
    throttle = auth_services(container).login_throttle

    def check() -> accounts.AccountRecord:
        with transaction(container.sessions) as session:
            return authenticate_person(session, username, password, throttle)

    try:
        account = await run_in_threadpool(check)
    except (Unauthorized, TooManyRequests) as exc:
        throttled = isinstance(exc, TooManyRequests)
        await record_action(container, page.request, "sign-in", organisation=None, account_id=None, ok=False,
                            details={"reason": "throttled" if throttled else "wrong-credentials"})
        response = page.render("login.html", status=exc.status, next=_local(next), message="",
                               error=page.t("throttled" if throttled else "wrong_credentials"))
        response.headers.update({k: v for k, v in exc.headers.items() if k.lower() == "retry-after"})
        return response
    await record_action(container, page.request, "sign-in", organisation=account.organisation,
                        account_id=account.id)
    page.session = page.sessions.signed_in(account.username, page.now())
    person = Person(account.id, account.username, account.organisation, frozenset(account.roles))
    target = _local(next) if next and _local(next) != "/console" else _home(person)
    return page.finish(RedirectResponse(target, status_code=303))


@router.post("/logout", response_class=HTMLResponse)
async def logout(page: Page = Depends(signed_in), csrf_token: str = Form("")) -> Response:
    person = page.me
    page.csrf(csrf_token)
    await record_action(page.container, page.request, "sign-out", organisation=person.organisation,
                        account_id=person.account_id)
    if page.session is not None:
        page.sessions.sign_out(page.session, page.now())
    response = RedirectResponse("/console/login?signed_out=1", status_code=303)
    page.sessions.clear(response, page.request)
    page.session = None
    return page.finish(response)


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
    services = audit_services(container)
    log = services.log
    log.maybe_issue_checkpoint()
    size = log.size()
    try:
        latest = log.checkpoint()
    except ProofUnavailable:
        return Integrity(size, vkey=services.signer.verifier.vkey)
    try:
        open_checkpoint(latest.note, services.signer.verifier)
        signature_ok = True
    except VerificationError:
        signature_ok = False
    return Integrity(size, latest.tree_size, latest.issued_at,
                     views.age_text(container.clock.now() - latest.issued_at), signature_ok,
                     services.signer.verifier.vkey)


def _choices(container: Container) -> dict[str, list[str]]:
    register = register_service(container).current()
    return {
        "partnership": sorted(register.partnerships),
        "purpose": sorted({p for partnership in register.partnerships.values() for p in partnership.purposes}),
        "organisation": sorted(register.organisations),
        "event_type": [e.value for e in EventType],
        "decision": [d.value for d in Decision],
    }


@router.get("/audit", response_class=HTMLResponse)
async def audit_explorer(page: Page = Depends(signed_in), partnership: str | None = None,
                         purpose: str | None = None, organisation: str | None = None, event_type: str | None = None,
                         decision: str | None = None, since: str | None = None, until: str | None = None,
                         subject: str | None = None, after: int = -1) -> Response:
    person = page.me
    container = page.container
    scope = review.scope_of(_need_scope(person, Scope.AUDIT_READ), container)
    filters = {"partnership": _blank(partnership), "purpose": _blank(purpose), "organisation": _blank(organisation),
               "event_type": _blank(event_type), "decision": _blank(decision), "since": _blank(since),
               "until": _blank(until), "subject": _blank(subject)}
    wanted = EntryFilter(filters["partnership"], filters["purpose"], filters["organisation"], filters["event_type"],
                         filters["decision"], _day(filters["since"], "since"), _day(filters["until"], "until"),
                         filters["subject"])
    found = await run_in_threadpool(list_entries, container.engine, scope, wanted, after=max(after, -1),
                                    limit=page.sessions.settings.page_size)
    integrity = await run_in_threadpool(_integrity, container)
    active = {k: v for k, v in filters.items() if v}
    next_href = (f"/console/audit?{urlencode({**active, 'after': found.next_cursor})}"
                 if found.next_cursor is not None else None)
    first_href = f"/console/audit?{urlencode(active)}" if after >= 0 else None
    return page.render("audit.html", entries=found.entries, filters=filters, choices=_choices(container),
                       integrity=integrity, next_href=next_href, first_href=first_href)


@router.get("/audit/entries/{index}", response_class=HTMLResponse)
async def audit_entry(index: int, page: Page = Depends(signed_in)) -> Response:
    person = page.me
    container = page.container
    scope = review.scope_of(_need_scope(person, Scope.AUDIT_READ), container)
    if index < 0:
        raise NotFound("no such entry")
    found = await run_in_threadpool(list_entries, container.engine, scope, EntryFilter(), after=index - 1, limit=1)
    if not found.entries or found.entries[0].index != index:
        raise NotFound(f"no entry {index} that you may see")  # unseen and absent look the same
    services = audit_services(container)
    log = services.log

    def proof_material() -> dict[str, Any]:
        stored = log.entries(index, index + 1)[0]
        log.maybe_issue_checkpoint()
        try:
            checkpoint = log.checkpoint()
        except ProofUnavailable:
            checkpoint = log.issue_checkpoint()
        if checkpoint.tree_size <= index:  # not covered yet: sign the tree now rather than make the officer wait
            checkpoint = log.issue_checkpoint()
        proof = log.inclusion_proof(index, checkpoint.tree_size)
        return {"canonical_b64": base64.b64encode(stored.canonical).decode("ascii"),
                "leaf_hash": proof.leaf_hash.hex(), "tree_size": proof.tree_size,
                "proof_hashes": [h.hex() for h in proof.hashes], "note": checkpoint.note,
                "note_b64": base64.b64encode(checkpoint.note.encode("utf-8")).decode("ascii"),
                "root_hash": checkpoint.root_hash.hex(), "issued_at": checkpoint.issued_at}

    material = await run_in_threadpool(proof_material)
    entry = found.entries[0]
    return page.render("entry.html", entry=entry, pretty=json.dumps(entry.entry, indent=2, ensure_ascii=False),
                       vkey=services.signer.verifier.vkey, **material)


# -- statistics ------------------------------------------------------------------------------------------


@router.get("/statistics", response_class=HTMLResponse)
async def statistics_page(page: Page = Depends(signed_in), partnership: str | None = None,
                          purpose: str | None = None, since: str | None = None, until: str | None = None
                          ) -> Response:
    person = page.me
    container = page.container
    principal = _need_scope(person, Scope.AUDIT_READ)
    scope = review.scope_of(principal, container)
    filters = {"partnership": _blank(partnership), "purpose": _blank(purpose), "since": _blank(since),
               "until": _blank(until)}
    wanted = EntryFilter(partnership=filters["partnership"], purpose=filters["purpose"],
                         since=_day(filters["since"], "since"), until=_day(filters["until"], "until"))
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
async def statistics_csv(page: Page = Depends(signed_in), partnership: str | None = None,
                         purpose: str | None = None, since: str | None = None, until: str | None = None
                         ) -> Response:
    person = page.me
    principal = _need_scope(person, Scope.AUDIT_READ)
    since_at, until_at = _day(_blank(since), "since"), _day(_blank(until), "until")
    response: Response = await review.statistics_report(
        partnership=_blank(partnership), purpose=_blank(purpose), since=since_at, until=until_at, format="csv",
        principal=principal, container=page.container)
    rows = max(0, bytes(response.body).count(b"\n") - 1)
    details: dict[str, Any] = {"export": "statistics.csv", "rows": rows}
    details.update({k: v for k, v in (("partnership", _blank(partnership)), ("purpose", _blank(purpose))) if v})
    await record_action(page.container, page.request, "export", organisation=person.organisation,
                        account_id=person.account_id, details=details)
    return page.finish(response)


# -- register --------------------------------------------------------------------------------------------


@router.get("/register", response_class=HTMLResponse)
async def register_page(page: Page = Depends(signed_in)) -> Response:
    person = page.me
    principal = _need_scope(person, Scope.REGISTER_READ)
    container = page.container
    current = register_api.current_register(container=container, _principal=principal)

    def history() -> list[Any]:
        with transaction(container.sessions) as session:
            return register_api.versions(session=session, _principal=principal)

    versions = await run_in_threadpool(history)
    return page.render("register.html", register=current, versions=versions)


# -- data-subject requests -------------------------------------------------------------------------------


def _contact_point(person: Person) -> Principal:
    principal = _need_scope(person, Scope.AUDIT_READ)
    if Role.CONTACT_POINT.value not in person.roles:
        raise Forbidden("only the contact point answers data-subject requests")
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
    found = await review.subject_report(pseudonym, principal=principal, container=page.container)
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

"""The console's page machinery, shared by the route modules: the signed-in :class:`Person` and its
:class:`Principal`, the per-request :class:`Page` (language, session, rendering), the navigation, and
:class:`ConsoleRoute`, which turns the errors of a handler (403, 404, 422, ...) into HTML pages instead of
problem+json and sets the security headers.

Route modules (``endpoints`` for sign-in, audit, statistics, register and subjects; ``escalations`` for
cases and legal gaps) build their routers with ``route_class=ConsoleRoute`` and depend on :func:`signed_in`.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute, iter_route_contexts
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.routing import Match

from audit import AuditWriteError
from gateway.auth import repository as accounts
from gateway.auth.accounts import roles_known, scopes_for_roles
from gateway.auth.principal import Principal, Role, Scope
from gateway.console import views
from gateway.console.i18n import (
    LANGUAGE_COOKIE,
    LANGUAGES,
    choose_language,
    refusal_text,
    translate,
    translate_value,
    validation_text,
)
from gateway.console.sessions import SessionData, Sessions, console_sessions, record_pending_sign_outs
from gateway.console.signouts import is_signed_out
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.deps import container_of, get_container
from gateway.errors import Forbidden, GatewayError, Unprocessable
from gateway.logging import scrub_text
from gateway.problems import validation_errors

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
}
"""What every answer under ``/console`` carries (a route may set its own ``Cache-Control``: the static files).

``Strict-Transport-Security``: once a browser has had one answer over HTTPS it asks this host name over HTTPS
only, for a year. Without it, a visit by plain HTTP (an address typed without ``https://``, an old bookmark) let
anyone on the network answer with a sign-in form of their own and read the password typed in it; ``Secure``
cookies keep the session from that visit, not the password. A browser ignores the header over plain HTTP (RFC
6797 §8.1), so the loopback demo is unaffected; no ``includeSubDomains``, the console knows nothing of its
neighbours.
Set by :class:`ConsoleRoute` and, for answers no console route gave (an unknown path, a wrong method, a
refusal of a middleware), by :mod:`gateway.console.boundary`."""
LANGUAGE_MAX_AGE = 365 * 86400
"""How long the language chosen with ``?lang=`` is remembered. Its cookie is a ``__Host-`` cookie when Secure
(:mod:`gateway.console.cookies`), like the session's: it only picks Dutch or English and decides no access,
but which language the console speaks to an officer is the console's to remember, not a sibling subdomain's
to choose."""
_WRITES_ON_OPENING = "console_writes_on_opening"  # the mark of writes_on_opening, on the handler
_OWN_PAGES = frozenset({"same-origin", "none"})  # Sec-Fetch-Site: the console's own page, or typed by the person
PRIVACY_OFFICERS = frozenset({Role.PRIVACY_OFFICER.value, Role.COORDINATING_PRIVACY_OFFICER.value})
EVERYONE = frozenset(role.value for role in Role)
CASE_WORKERS = PRIVACY_OFFICERS | {Role.ADMINISTRATOR.value}  # who works escalation cases (the `escalation` scope)


@dataclass(frozen=True)
class NavItem:
    key: str  # message key of the label
    href: str | None  # None: announced, not built yet
    roles: frozenset[str]


NAV = (
    NavItem("nav_audit", "/console/audit", PRIVACY_OFFICERS),
    NavItem("nav_statistics", "/console/statistics", PRIVACY_OFFICERS),
    NavItem("nav_escalations", "/console/escalations", CASE_WORKERS),
    NavItem("nav_legal_gaps", "/console/legal-gaps", CASE_WORKERS),
    NavItem("nav_register", "/console/register", EVERYONE),
    NavItem("nav_subjects", "/console/subjects", frozenset({Role.CONTACT_POINT.value})),
)

_templates = Environment(loader=PackageLoader("gateway.console", "templates"),
                         autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                         trim_blocks=True, lstrip_blocks=True)
_templates.filters["utc"] = views.utc_text
_templates.filters["short_id"] = views.short_id


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


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
                         scopes=frozenset(scopes_for_roles(sorted(self.roles))), roles=self.roles,
                         account_id=self.account_id)  # read on this request: its audit entries need no re-read

    def may(self, item: NavItem) -> bool:
        return bool(self.roles & item.roles)


@dataclass(frozen=True)
class Reason:
    """Why something was refused, as a page shows it: in the page's language when the refusal's code has words
    in the catalogue (``lang`` None), else the refuser's own English ``detail`` — free text from elsewhere,
    which the page marks ``lang="en"`` so that a screen reader on a Dutch page reads it as English."""

    text: str
    lang: str | None = None


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
    signing_out: bool = False
    """Every answer from now on deletes the session cookie, an error page too: a sign-out that fails midway
    (the database, the audit log) still leaves no session behind in the browser (a shared workstation)."""

    @property
    def me(self) -> Person:
        """The signed-in person (routes that depend on :func:`signed_in` always have one)."""
        if self.person is None:
            raise LoginRequired(self.session_state)
        return self.person

    def t(self, key: str, **values: object) -> str:
        return translate(self.language, key, **values)

    def reason(self, refusal: GatewayError) -> Reason:
        """``refusal``'s reason in the page's words (:func:`gateway.console.i18n.refusal_text`), or its English
        ``detail`` marked as English."""
        words = refusal_text(self.language, refusal.code, refusal.values)
        if words is not None:
            return Reason(words)
        return Reason(refusal.detail, "en" if refusal.detail else None)

    def validation(self, field: str, kind: str, context: dict[str, object] | None = None) -> str:
        """What pydantic found wrong with ``field`` (its error type ``kind``), in the page's words."""
        return validation_text(self.language, field, kind, context)

    def tv(self, group: str, value: object) -> str:
        """The label of a value (a state, a trigger, ...), or the value itself when it has none."""
        return translate_value(self.language, group, value)

    def render(self, template: str, *, status: int = 200, **values: Any) -> Response:
        nav = [item for item in NAV if self.person and self.person.may(item)]
        context = {"t": self.t, "tv": self.tv, "lang": self.language, "person": self.person, "nav": nav,
                   "path": self.request.url.path, "csrf": self.session.csrf if self.session else "",
                   "languages": {code: language_href(self.request, code) for code in LANGUAGES}} | values
        html = _templates.get_template(template).render(**context)
        return self.finish(HTMLResponse(html, status_code=status))

    def finish(self, response: Response) -> Response:
        if self.signing_out:
            self.sessions.clear(response, self.request)
        elif self.session is not None:
            self.sessions.write(response, self.request, self.session)
        if self.remember_language:
            self.sessions.cookies(self.request).set(response, LANGUAGE_COOKIE, self.language,
                                                    max_age=LANGUAGE_MAX_AGE)
        return response

    def now(self) -> float:
        return self.container.clock.now().timestamp()

    def csrf(self, token: str) -> None:
        if not self.sessions.csrf_ok(self.session, token):
            raise refused("csrf-failed")

    def from_own_page(self, refusal: str = "download-elsewhere") -> None:
        """Refuse a GET that writes (a download: an ``export`` entry in the person's name; a page that records
        anomaly flags or signs a checkpoint) when another origin's page made it, with the refusal ``refusal``.
        SameSite=Strict keeps the cookie from other sites, not from other origins of the same site (an
        application on a sibling subdomain), and a GET carries no CSRF token; the browser's Fetch Metadata says
        where the request came from. A browser without it sends no header. Called before anything is written."""
        if not own_page_started(self.request):
            raise refused(refusal)


def refused(code: str) -> Forbidden:
    """A 403 of the console's own with reason ``code``: its English words as ``detail``, and the code, which the
    error page words in the person's language (:meth:`Page.reason`)."""
    return Forbidden(translate("en", f"refusal.{code}"), code=code)


def own_page_started(request: Request) -> bool:
    """Whether the console's own page (or the person, typing the address) started ``request``, as the browser's
    Fetch Metadata says; a browser without it sends no header, and is believed."""
    return request.headers.get("sec-fetch-site", "same-origin") in _OWN_PAGES


class ConsoleRoute(APIRoute):
    """Turns the errors of a console handler (and of its dependencies) into pages, and sets security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await original(request)
            except LoginRequired as exc:
                target = "/console/login?" + urlencode({"next": return_to(request, _asked_for(request)), **(
                    {"expired": "1"} if exc.reason in {"idle", "expired", "signed-out"} else {})})
                response = RedirectResponse(target, status_code=303)
            except (GatewayError, RequestValidationError, AuditWriteError) as exc:
                response = _error_page(request, exc)
            return secure(response)

        return handler


def secure(response: Response) -> Response:
    """``response`` with the console's security headers (those it sets itself are kept)."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


MAX_NEXT = 2048
"""The longest page to return to after sign-in (a console address with its filters is far shorter): a longer
``next`` is ignored, not refused — the person still signs in, and lands on the home page."""


def local_path(target: str | None) -> str:
    """Only paths inside the console are followed after sign-in (no open redirect), and only up to
    :data:`MAX_NEXT` characters (a longer one would be carried in every form and redirect of the sign-in)."""
    if (target and len(target) <= MAX_NEXT and target.startswith("/console") and "//" not in target
            and "\\" not in target):
        return target
    return "/console"


def _asked_for(request: Request) -> str:
    """What a person whose session ended was asking for: the page itself for a GET; for a form's POST only
    its address (the form's fields are not kept), which :func:`return_to` turns into the form's page."""
    if request.method in {"GET", "HEAD"} and request.url.query:
        return f"{request.url.path}?{request.url.query}"
    return request.url.path


def return_to(request: Request, target: str | None) -> str:
    """Where to send a person after sign-in: ``target`` if it is a console page one can GET that only reads
    (never one that writes as it opens: :func:`writes_on_opening`), else the page a form posting to ``target``
    is on, else the console's home (``/console``).

    A session that ended while a form was submitted asked for the form's action (``POST`` only): going there
    after sign-in would be a GET of it, a 405. The page is found by the app's own routes: ``target`` when a
    GET route matches it, else its parent paths in turn (``/console/escalations/{id}/comments`` is posted
    from ``/console/escalations/{id}``, ``/console/audit/verify`` from ``/console/audit``); the query of a
    POST address is dropped with it. Only console paths are considered (:func:`local_path`), and a path no
    route knows (``/console/../v1``) ends at the home page too.
    """
    path, _, query = without_subject(local_path(target)).partition("?")
    while path.startswith("/console/"):
        if _reads_only(request, path):
            return f"{path}?{query}" if query else path
        path, query = path.rsplit("/", 1)[0], ""
    return "/console"


SUBJECT_FILTER = "subject"
"""The audit explorer's data-subject filter: a pseudonym, personal data, which no address the console makes may
carry (docs/console.md)."""


def without_subject(target: str) -> str:
    """``target`` with the value of a ``subject`` in its query dropped (the name kept, empty).

    Why: an old bookmark ``/console/audit?subject=<pseudonym>`` opened while signed out was sent to
    ``/console/login?next=...subject%3D<pseudonym>``, the sign-in form carried it in its ``next`` field and its
    language links, and the sign-in redirected to it again: the console itself put the pseudonym into three more
    addresses (proxies' logs, the browser's history). The empty ``subject`` still lands on the explorer's refusal
    of a subject in the address (422), so the filter is refused, not silently dropped."""
    path, mark, query = target.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name == SUBJECT_FILTER for name, _value in pairs):
        return target
    return f"{path}{mark}{urlencode([(name, '' if name == SUBJECT_FILTER else value) for name, value in pairs])}"


def _reads_only(request: Request, path: str) -> bool:
    """Whether ``path`` is a page a GET opens (the app's first route that takes it) that only reads."""
    probe = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    for route in iter_route_contexts(request.app.routes):
        if route.matches(probe)[0] is Match.FULL:
            return not getattr(route.endpoint, _WRITES_ON_OPENING, False)
    return False


def writes_on_opening(endpoint: Endpoint) -> Endpoint:
    """Mark a console GET handler that writes as it opens (it calls :meth:`Page.from_own_page`): the sign-in form
    never sends the browser on to it (:func:`return_to`).

    Why: the refusal of another origin rests on the browser's ``Sec-Fetch-Site``, and a detour through the
    sign-in form launders it. Another origin's link to such a page, followed by someone signed out (or a link
    to ``/console/login?next=`` that page), reached it after the sign-in as a redirect of the console's own
    form — ``same-origin`` — and it wrote: an ``export`` entry in the person's name for a CSV they never asked
    for. The sign-in lands on the nearest page above it that only reads (the audit explorer for an entry's
    page), else the person's home page."""
    setattr(endpoint, _WRITES_ON_OPENING, True)
    return endpoint


def language_href(request: Request, language: str) -> str:
    """The address of the page shown, in ``language``: a page opened by GET with the query its route reads
    (filters, the page to return to after sign-in; anything else is not echoed) and ``lang`` replaced; after
    a form's POST the page the form is on (:func:`return_to`) — not the form's action, a GET of which is the
    405 page, what the page said lost."""
    if request.method not in {"GET", "HEAD"}:
        return f"{return_to(request, request.url.path)}?{urlencode({'lang': language})}"
    route = request.scope.get("route")
    read = {field.alias for field in route.dependant.query_params} if isinstance(route, APIRoute) else set()
    query = [(name, without_subject(value) if name == "next" else value)  # the sign-in form's page to return to
             for name, value in request.query_params.multi_items() if name in read - {"lang"}]
    return f"{request.url.path}?{urlencode([*query, ('lang', language)])}"


def _error_links(request: Request) -> dict[str, str]:
    """The language switch of an error page, which echoes nothing of the address asked for: the same address
    again (a relative ``?lang=``) for a GET, the console's home for a refused POST (a GET of its action is a
    405)."""
    if request.method in {"GET", "HEAD"}:
        return {code: f"?lang={code}" for code in LANGUAGES}
    return {code: f"/console?lang={code}" for code in LANGUAGES}


def _error_page(request: Request, exc: GatewayError | RequestValidationError | AuditWriteError) -> Response:
    if isinstance(exc, GatewayError):
        response = error_page(request, exc.status, exc)
        for name, value in exc.headers.items():
            if name.lower() == "retry-after":
                response.headers[name] = value
        return response
    if isinstance(exc, AuditWriteError):
        return error_page(request, 503)
    return error_page(request, 422, exc)


def _invalid_fields(page: Page, exc: RequestValidationError) -> Reason:
    """What is wrong with a request's fields, in the page's words (pydantic's own are English only): the first
    five complaints of the API's validation problem — the field as it names it (no made-up names: it is
    :func:`validation_errors`'s), and what is wrong by the complaint's type (no input values)."""
    found = zip(validation_errors(exc)[:5], exc.errors(), strict=False)
    texts = (page.validation(scrub_text(".".join(cleaned["loc"])), cleaned["type"], raw.get("ctx"))
             for cleaned, raw in found)
    return Reason(" ".join(dict.fromkeys(texts)))


def _page_of(request: Request) -> Page:
    page: Page | None = getattr(request.state, "console_page", None)
    if page is None:
        container = container_of(request)
        sessions = console_sessions(container)
        language, _ = language_of(request, sessions)
        page = Page(request, container, sessions, language, False)
    return page


def error_page(request: Request, status: int, refusal: GatewayError | RequestValidationError | None = None
               ) -> Response:
    """The console's error page for ``status``, in the person's language, with the security headers; the
    reason of a ``refusal`` (free of personal data) is shown for 403 and 422 only (:meth:`Page.reason`)."""
    page = _page_of(request)
    summary = {403: "error_403", 404: "error_404", 405: "error_405", 413: "error_413", 422: "error_422",
               429: "error_429"}.get(status, "error_other")
    reason = Reason("")
    if status in {403, 422}:
        reason = (_invalid_fields(page, refusal) if isinstance(refusal, RequestValidationError) else
                  page.reason(refusal) if refusal is not None else reason)
    return secure(page.render("error.html", status=status, summary=page.t(summary), reason=reason,
                              languages=_error_links(request)))


def language_of(request: Request, sessions: Sessions) -> tuple[str, bool]:
    """The request's language (:func:`choose_language`), remembered only under the cookie name the console
    reads for this request: a plain-named cookie tossed in by a sibling subdomain chooses nothing. Nor does a
    link of its (or any site's: a top-level navigation takes a Strict cookie) with ``?lang=``: the page it opens
    speaks that language, but only a ``?lang=`` the console's own pages or the person started is remembered."""
    language, chosen = choose_language(request, sessions.settings.default_language,
                                       sessions.cookies(request).read(request, LANGUAGE_COOKIE))
    return language, chosen and own_page_started(request)


# -- dependencies ----------------------------------------------------------------------------------------


async def current_page(request: Request, container: Container = Depends(get_container)) -> Page:
    """The request's page context; loads the account when the session is signed in and still valid."""
    sessions = console_sessions(container)
    language, remember = language_of(request, sessions)
    page = Page(request, container, sessions, language, remember)
    request.state.console_page = page
    data = sessions.read(request)
    state = sessions.state(data, page.now())
    page.session_state = state
    await record_pending_sign_outs(container)  # those the database could not take before: nothing, mostly
    if state == "active" and data is not None and data.username is not None:
        username, sid = data.username, data.sid

        def load() -> accounts.AccountRecord | None:
            with transaction(container.sessions) as session:
                return None if is_signed_out(session, sid) else accounts.get_account(session, username)

        # Signed out in this process, the database not told yet: refused all the same (Sessions.sign_out)
        account = None if sessions.pending.refuses(sid) else await run_in_threadpool(load)
        # A role this gateway does not know (SQL, another version) ends the session: no scopes to give it
        if (account is not None and account.active and roles_known(account.roles)
                and sessions.credential_matches(data, account.password_hash, account.access_generation)):
            page.person = Person(account.id, account.username, account.organisation, frozenset(account.roles))
            # Only the person's own use keeps the session from going idle: a page of another origin of the site
            # (it gets the cookie) asking every few minutes kept a forgotten session alive on a shared workstation.
            page.session = sessions.touched(data, page.now()) if own_page_started(request) else data
        else:
            page.session_state = "signed-out"
    if page.session is None:
        page.session = sessions.read_login(request)  # keeps the sign-in form's CSRF token
    return page


async def signed_in(page: Page = Depends(current_page)) -> Page:
    if page.person is None:
        raise LoginRequired(page.session_state)
    return page


def need_scope(person: Person, scope: Scope) -> Principal:
    """The scope check the API's ``require_scope`` makes, for a person signed in to the console."""
    principal = person.principal
    if not principal.has_scope(scope.value):
        raise Forbidden(f"your roles lack the scope `{scope.value}`", code="missing-scope",
                        values={"scope": scope.value})
    return principal


def home_of(person: Person) -> str:
    return next((item.href for item in NAV if item.href and person.may(item)), "/console/register")


def day_start(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise Unprocessable(f"{name}: not a date (YYYY-MM-DD)", code="not-a-date", values={"field": name}) from None


def blank(value: str | None) -> str | None:
    return value.strip() or None if value else None


_YES = frozenset({"1", "true", "on", "yes"})
_NO = frozenset({"", "0", "false", "off", "no"})


def flag(value: str | None, name: str) -> bool:
    """A yes/no query parameter (a checkbox's ``1``, a notice's ``?verified=1``). Its presence is not a yes:
    ``?overdue=0`` — typed, or kept in a link — means "not only overdue", not the opposite. Anything that is
    neither a yes nor a no is refused (422), as the other filters refuse an unknown value."""
    if value is None:
        return False
    word = value.strip().lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise Unprocessable(f"{name}: 1 or 0", code="not-a-flag", values={"field": name})

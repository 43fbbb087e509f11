"""The console's cookies against cookie tossing: an application on a sibling subdomain (``x.example.nl`` next
to ``gateway.example.nl``) can set a cookie for the parent domain, and the browser sends it to the console
under the same name as the console's own. Over HTTPS the console's cookies are ``__Host-`` cookies (which
only the console's own origin can set: ``Secure``, ``Path=/``, no ``Domain``) and only those names are read,
so a tossed plain-named cookie — a session, a sign-in form's CSRF token, a language — counts for nothing.

``Path=/`` sends the session cookie to the API too: the API authenticates by bearer token only, which the
last tests check over every ``/v1`` route.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from gateway.console.i18n import LANGUAGE_COOKIE
from gateway.console.sessions import COOKIE, LOGIN_COOKIE, console_sessions, install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from tests.auth_helpers import bearer
from tests.console.support import PASSWORD, csrf_of, seed_entries
from tests.console.test_console import account, sign_in

HTTPS = "https://gateway.example.nl"
LOOPBACK = "http://127.0.0.1:8000"
HOST = "__Host-"  # the browser's rule, spelled out: not the constant of the code under test
SESSION, SIGN_IN_FORM, LANGUAGE = HOST + COOKIE, HOST + LOGIN_COOKIE, HOST + LANGUAGE_COOKIE
PUBLIC_API = {("POST", "/v1/auth/login")}
"""The only ``/v1`` route without a bearer token (it checks a password and issues one)."""


@pytest.fixture
def browser(app: FastAPI, container: Container) -> Iterator[TestClient]:
    """A browser on the console over HTTPS, with ``cookie_secure`` unset (decided by the request: Secure)."""
    install_console(container, ConsoleSettings(default_language="en"))
    with TestClient(app, base_url=HTTPS) as client:
        seed_entries(container)
        client.app_state["accounts"] = set()
        yield client


def another_browser(browser: TestClient, base_url: str = HTTPS) -> TestClient:
    """Another person's browser (the attacker's), sharing the accounts made so far."""
    other = TestClient(browser.app, base_url=base_url)
    other.app_state["accounts"] = browser.app_state["accounts"]
    return other


def set_cookie(response: httpx.Response, name: str) -> tuple[str, dict[str, str]]:
    """The value and attributes (lower-case names; a flag's value is "") of the answer's cookie ``name``."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = header.split(";")
        found, _, value = first.partition("=")
        if found.strip() == name:
            return value, {k.strip().lower(): v.strip() for k, _, v in (a.partition("=") for a in attributes)}
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")


def cookie_names(response: httpx.Response) -> set[str]:
    return {header.split("=", 1)[0].strip() for header in response.headers.get_list("set-cookie")}


def assert_host_cookie(response: httpx.Response, name: str) -> str:
    """What a browser accepts as a ``__Host-`` cookie: Secure, Path=/, no Domain; the console's flags too."""
    value, attributes = set_cookie(response, name)
    assert "secure" in attributes, name
    assert attributes.get("path") == "/", name
    assert "domain" not in attributes, name
    assert "httponly" in attributes, name
    assert attributes.get("samesite", "").lower() == "strict", name
    return value


def toss(client: TestClient, name: str, value: str) -> None:
    """What a sibling subdomain's ``Set-Cookie: name=value; Domain=example.nl; Path=/console`` leaves in the
    browser: a cookie the console's host is sent too."""
    client.cookies.set(name, value, path="/console")


def payload(container: Container, value: str) -> dict[str, Any]:
    loaded = console_sessions(container).serializer.loads(value)
    assert isinstance(loaded, dict)
    return loaded


# -- names, paths and flags ---------------------------------------------------------------------------------


def test_secure_console_cookies_are_host_cookies_and_sign_out_deletes_them(browser: TestClient) -> None:
    form = browser.get("/console/login?lang=en")
    assert_host_cookie(form, SIGN_IN_FORM)
    assert_host_cookie(form, LANGUAGE)
    assert not cookie_names(form) & {COOKIE, LOGIN_COOKIE, LANGUAGE_COOKIE}, "no plain-named cookie over HTTPS"
    account(browser, "po-gemeente")
    signed = browser.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD,
                                                  "csrf_token": csrf_of(form.text)}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    assert_host_cookie(signed, SESSION)
    _, dropped = set_cookie(signed, SIGN_IN_FORM)
    assert dropped.get("max-age") == "0", "the sign-in form's cookie is dropped"
    assert dropped.get("path") == "/"
    page = browser.get("/console/audit")
    assert "Signed in as po-gemeente" in page.text
    out = browser.post("/console/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    _, deleted = set_cookie(out, SESSION)
    assert deleted.get("max-age") == "0"
    assert deleted.get("path") == "/", "deleted where it was set, or the browser keeps it"
    assert "secure" in deleted
    assert browser.cookies.get(SESSION) is None, "the browser deleted its session cookie"
    assert browser.get("/console/audit", follow_redirects=False).status_code == 303


@pytest.mark.parametrize(("base_url", "cookie_secure", "prefixed"), [
    (HTTPS, None, True),                      # unset: Secure over HTTPS
    ("http://gateway.internal", True, True),  # behind a proxy that terminates TLS
    ("http://gateway.internal", None, True),  # unset: Secure unless plain HTTP on a loopback address
    (LOOPBACK, None, False),                  # the local demo: plain names, Path=/console, as before
    ("http://localhost:8000", False, False),
])
def test_the_prefix_follows_the_secure_flag(app: FastAPI, container: Container, base_url: str,
                                            cookie_secure: bool | None, prefixed: bool) -> None:
    install_console(container, ConsoleSettings(cookie_secure=cookie_secure, default_language="en"))
    with TestClient(app, base_url=base_url) as client:
        form = client.get("/console/login?lang=nl")
    if prefixed:
        assert_host_cookie(form, SIGN_IN_FORM)
        assert_host_cookie(form, LANGUAGE)
        assert not cookie_names(form) & {LOGIN_COOKIE, LANGUAGE_COOKIE}
    else:
        for name in (LOGIN_COOKIE, LANGUAGE_COOKIE):
            _, attributes = set_cookie(form, name)
            assert attributes.get("path") == "/console", name
            assert "secure" not in attributes, name
        assert not cookie_names(form) & {SIGN_IN_FORM, LANGUAGE}


# -- tossed cookies ---------------------------------------------------------------------------------------


def test_a_cookie_set_without_the_prefix_over_https_gives_no_session(browser: TestClient) -> None:
    """A valid signed session under the plain name (as a sibling subdomain could set it) is no session."""
    sign_in(browser, "po-gemeente")
    value = browser.cookies.get(SESSION)
    assert value
    browser.cookies.clear()
    toss(browser, COOKIE, value)
    refused = browser.get("/console/audit", follow_redirects=False)
    assert refused.status_code == 303
    assert refused.headers["location"].startswith("/console/login")
    assert "Signed in as" not in browser.get("/console/login").text


def test_a_tossed_plain_named_session_cookie_is_ignored_when_secure(browser: TestClient) -> None:
    """The attacker signs in with an account of their own and tosses that session into an officer's browser:
    whatever the officer then does would be done (and seen) as the attacker. Ignored, signed in or not."""
    attacker = another_browser(browser)
    sign_in(attacker, "po-bank")
    theirs = attacker.cookies.get(SESSION)
    assert theirs
    toss(browser, COOKIE, theirs)
    assert browser.get("/console/audit", follow_redirects=False).status_code == 303, "no session from the toss"
    sign_in(browser, "po-gemeente")
    toss(browser, COOKIE, theirs)  # again, after the officer signed in
    page = browser.get("/console/audit")
    assert "Signed in as po-gemeente" in page.text
    assert "po-bank" not in page.text


def test_a_tossed_sign_in_form_cookie_cannot_sign_the_browser_in(browser: TestClient) -> None:
    """Login CSRF by cookie tossing: a sibling subdomain is the same *site*, so SameSite=Strict lets its
    forged form post to the console with the browser's cookies. Tossing a sign-in form cookie whose CSRF token
    it knows (it opened the form itself) used to let that form sign the officer in as the attacker."""
    attacker = another_browser(browser)
    account(attacker, "po-bank")
    form = attacker.get("/console/login")
    known_token, known_cookie = csrf_of(form.text), attacker.cookies.get(SIGN_IN_FORM)
    assert known_cookie
    toss(browser, LOGIN_COOKIE, known_cookie)
    for opened_the_form in (False, True):  # then the officer has a form cookie of their own, its token unknown
        if opened_the_form:
            browser.get("/console/login")
        forged = browser.post("/console/login", data={"username": "po-bank", "password": PASSWORD,
                                                      "csrf_token": known_token}, follow_redirects=False)
        assert forged.status_code == 403
        assert not cookie_names(forged) & {SESSION, COOKIE}, "no session was made"
        assert browser.get("/console/audit", follow_redirects=False).status_code == 303, "not signed in"


def test_a_tossed_language_cookie_is_ignored_when_secure(browser: TestClient) -> None:
    """The language decides no access, but it is the console's to remember, not a sibling's to choose."""
    toss(browser, LANGUAGE_COOKIE, "nl")
    assert "Sign in" in browser.get("/console/login").text
    assert "Aanmelden" in browser.get("/console/login?lang=nl").text
    assert "Aanmelden" in browser.get("/console/login").text, "the console's own choice is remembered"


def test_a_link_from_elsewhere_shows_its_language_without_choosing_it(browser: TestClient) -> None:
    """``?lang=`` in a link from a sibling subdomain (or any site: a top-level navigation takes a Strict cookie)
    set the remembered language as well as the console's own switch did, so the ``__Host-`` name kept the
    sibling from a choice it could still make with a link. The page asked for speaks that language; only the
    console's own pages (and an address typed by the person) make it the one remembered."""
    for site in ("same-site", "cross-site"):
        linked = browser.get("/console/login?lang=nl", headers={"Sec-Fetch-Site": site})
        assert "Aanmelden" in linked.text
        assert LANGUAGE not in cookie_names(linked), site
        assert "Sign in" in browser.get("/console/login").text, site
    for started in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        chosen = browser.get("/console/login?lang=nl", headers=started)
        assert LANGUAGE in cookie_names(chosen), started
        browser.cookies.clear()


# -- session fixation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", [HTTPS, LOOPBACK])
def test_sign_in_mints_a_new_session_id_and_csrf_value(app: FastAPI, container: Container, base_url: str
                                                       ) -> None:
    """Whoever knows the sign-in form's cookie (they tossed it, or saw it) learns nothing about the session
    signed in from it: a new session id and CSRF value are minted, the form's token no longer counts, and the
    form's cookie itself is never a signed-in session."""
    install_console(container, ConsoleSettings(default_language="en"))
    session_name, form_name = (SESSION, SIGN_IN_FORM) if base_url == HTTPS else (COOKIE, LOGIN_COOKIE)
    with TestClient(app, base_url=base_url) as client:
        client.app_state["accounts"] = set()
        account(client, "po-gemeente")
        form = client.get("/console/login")
        form_cookie = client.cookies.get(form_name)
        assert form_cookie
        before = payload(container, form_cookie)
        assert before["csrf"] == csrf_of(form.text)
        signed = client.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD,
                                                     "csrf_token": before["csrf"]}, follow_redirects=False)
        assert signed.status_code == 303
        session_cookie = client.cookies.get(session_name)
        assert session_cookie
        after = payload(container, session_cookie)
        assert after["u"] == "po-gemeente"
        assert after["sid"] != before["sid"], "a new session id at sign-in"
        assert after["csrf"] != before["csrf"], "a new CSRF value at sign-in"
        page = client.get("/console/audit")
        assert csrf_of(page.text) == after["csrf"]
        stale = client.post("/console/logout", data={"csrf_token": before["csrf"]}, follow_redirects=False)
        assert stale.status_code == 403, "the sign-in form's token does not act for the session"
        assert "Signed in as po-gemeente" in client.get("/console/audit").text
    with TestClient(app, base_url=base_url, cookies={session_name: form_cookie}) as holder:
        refused = holder.get("/console/audit", follow_redirects=False)
        assert refused.status_code == 303, "the form's cookie is no session, even under the session's name"


# -- the API ignores the console's cookie ---------------------------------------------------------------------


def _api_routes(app: FastAPI) -> list[tuple[str, str]]:
    return sorted({(method, path) for route in iter_route_contexts(app.routes) if (path := route.path or "")
                   .startswith("/v1/") for method in (route.methods or ()) if method != "HEAD"})


def test_a_console_session_cookie_gives_no_access_to_the_api(browser: TestClient) -> None:
    """``Path=/`` sends the session cookie with every request to the gateway's host: each ``/v1`` route
    answers a request carrying only that cookie with 401 (a bearer token is required), as without it."""
    sign_in(browser, "po-gemeente")
    routes = _api_routes(browser.app)  # type: ignore[arg-type]
    assert ("GET", "/v1/audit/entries") in routes
    checked = 0
    for method, template in routes:
        if (method, template) in PUBLIC_API:
            continue
        path = re.sub(r"\{[^}]+\}", "1", template)
        answer = browser.request(method, path, follow_redirects=False)
        assert f"{SESSION}=" in answer.request.headers.get("cookie", ""), f"{path}: the cookie was sent"
        assert answer.status_code == 401, f"{method} {template}: {answer.status_code} {answer.text[:200]}"
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.headers["www-authenticate"].startswith("Bearer")
        checked += 1
    assert checked >= 30
    login = browser.post("/v1/auth/login", json={})
    assert login.status_code == 422, "no token for a console cookie"
    assert "access_token" not in login.text
    # The same person with a bearer token gets in: the 401s above are about the cookie, not the routes.
    token = browser.post("/v1/auth/login", json={"username": "po-gemeente", "password": PASSWORD})
    assert token.status_code == 200, token.text
    browser.cookies.clear()
    assert browser.get("/v1/audit/entries", headers=bearer(token.json()["access_token"])).status_code == 200

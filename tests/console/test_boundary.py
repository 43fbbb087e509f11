"""The console's edges: every answer under ``/console`` — also for an unknown path, a wrong method, a refusal
of the middleware or a bug — carries the console's security headers, and a person gets the console's HTML
error page in their language where the JSON API keeps problem+json; and signing in again after a session
ended during a form's POST returns to the form's page, never to the POST-only action (a 405)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.console import endpoints, escalations
from gateway.console.pages import SECURITY_HEADERS
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container, build_container
from gateway.problems import PROBLEM_MEDIA_TYPE
from gateway.register import endpoints as register_api
from gateway.settings import Settings
from tests.console.support import IDLE, PASSWORD, csrf_of, landing_after_sign_in, running_console
from tests.console.test_console import account, sign_in
from tests.console.test_escalations import open_riec_case
from tests.limiter_clock import limiter_clock
from tests.migrated import migrated_sqlite

METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
UNKNOWN = ("/console/nope", "/console/audit/nope", "/console/audit/entries/1/more", "/console/escalations/x/nope",
           "/console/static/nope/deeper", "/console/login/", "/console/%2e%2e/v1/audit", "/console/")


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=False) as client:
        yield client


def assert_secured(response: httpx.Response, what: str) -> None:
    headers = response.headers
    csp = headers.get("content-security-policy", "")
    assert "default-src 'none'" in csp, what
    assert "frame-ancestors 'none'" in csp, what
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("referrer-policy") == "no-referrer", what
    # HTTPS only for this host name from the first answer on: a later plain-HTTP visit (a typed address, an
    # old bookmark) is no chance to strip TLS from the sign-in form (browsers ignore it over plain HTTP)
    assert headers.get("strict-transport-security") == "max-age=31536000", what
    static = what.startswith("GET /console/static/") and response.status_code == 200
    assert headers.get("cache-control") == ("public, max-age=3600" if static else "no-store"), what


def console_paths() -> list[str]:
    """Every console route, with made-up path parameters (the escalation pages' router is included into the
    console's, under its prefix)."""
    routes = [(route, "") for route in endpoints.router.routes] + [(r, "/console") for r in escalations.router.routes]
    paths = {re.sub(r"\{[^}]+\}", "x", prefix + route.path) for route, prefix in routes if isinstance(route, APIRoute)}
    return sorted(paths | {"/console/static/console.css"})


# -- 1. nothing under /console answers without the security headers ---------------------------------------

def test_every_answer_under_the_console_carries_the_security_headers(console: TestClient) -> None:
    paths = console_paths()
    assert len(paths) >= 20
    for signed_in in (False, True):
        if signed_in:
            sign_in(console, "po-gemeente")
        for path in (*paths, *UNKNOWN):
            for method in METHODS:
                response = console.request(method, path, follow_redirects=False)
                assert response.status_code < 500, f"{method} {path}"
                assert_secured(response, f"{method} {path} (signed in: {signed_in})")


def test_an_unknown_console_path_is_the_consoles_404_page_in_the_persons_language(console: TestClient
                                                                               ) -> None:
    english = console.get("/console/nope", headers={"Accept-Language": "en"})
    assert english.status_code == 404
    assert english.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in english.text
    assert "Not found." in english.text
    assert_secured(english, "GET /console/nope")
    dutch = console.get("/console/audit/nope?lang=nl")
    assert dutch.status_code == 404
    assert '<html lang="nl">' in dutch.text
    assert "Niet gevonden." in dutch.text
    assert "/console/audit/nope" not in dutch.text  # the path asked for is not echoed


def test_a_wrong_method_is_the_consoles_405_page_and_says_what_is_allowed(console: TestClient
                                                                       ) -> None:
    sign_in(console, "po-gemeente")
    for path, allowed in (("/console/logout", "POST"), ("/console/audit/verify", "POST"),
                          ("/console/audit", "GET, HEAD")):
        method = "GET" if allowed == "POST" else "DELETE"
        response = console.request(method, path, headers={"Accept-Language": "nl"}, follow_redirects=False)
        assert response.status_code == 405, path
        assert response.headers["allow"] == allowed, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Dit adres accepteert dit soort verzoek niet." in response.text, path
        assert_secured(response, f"{method} {path}")


def test_the_json_api_keeps_its_problem_documents(console: TestClient) -> None:
    for method, path, status in (("GET", "/v1/nope", 404), ("GET", "/oauth/token", 405),
                                 ("GET", "/consolex", 404), ("GET", "/v1/audit/entries", 401)):
        response = console.request(method, path)
        assert response.status_code == status, path
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, path
        assert response.json()["status"] == status
        assert "content-security-policy" not in response.headers, path


def test_a_body_too_large_for_the_console_is_the_console_page_with_the_security_headers(console: TestClient
                                                                                       ) -> None:
    """The middleware refuses it before any handler runs (problem+json); under /console it is the page."""
    settings = console.app.state.container.settings  # type: ignore[attr-defined]
    response = console.post("/console/login", content=b"x" * (settings.max_body_bytes + 1),
                            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept-Language": "nl"})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "Wat werd verstuurd is te groot; er is niets van opgeslagen." in response.text
    assert_secured(response, "/console/login (413)")
    api = console.post("/v1/exchanges", content=b"x" * (settings.max_body_bytes + 1),
                       headers={"Content-Type": "application/json"})
    assert api.status_code == 413
    assert api.headers["content-type"] == PROBLEM_MEDIA_TYPE  # the API keeps its problem document


def test_the_rate_limit_under_the_console_is_the_console_page_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=migrated_sqlite(tmp_path), log_json=True,
                        rate_limit_per_second=0.5, rate_limit_burst=2)
    container = build_container(settings, FixedClock(datetime(2026, 11, 25, 10, tzinfo=UTC)))
    try:
        install_console(container, ConsoleSettings(cookie_secure=False, default_language="en"))
        app = create_app(container=container)
        limiter_clock(app)  # nothing refills while the requests run, however long they take
        with TestClient(app) as client:
            statuses = [client.get("/console/login").status_code for _ in range(3)]
            assert statuses == [200, 200, 429]
            refused = client.get("/console/login")
            assert refused.status_code == 429
            assert refused.headers["content-type"].startswith("text/html")
            assert refused.headers["retry-after"] == "2"  # a token is back in 1 / 0.5 s
            assert "Too many requests in a short time" in refused.text
            assert_secured(refused, "/console/login (429)")
            api = client.get("/v1/register/versions")
            assert api.status_code == 429
            assert api.headers["content-type"] == PROBLEM_MEDIA_TYPE
    finally:
        container.close()


def test_a_database_outage_or_a_bug_is_a_console_page_that_discloses_nothing(
        console: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    sign_in(console, "po-gemeente")

    def outage(**_: object) -> None:
        raise OperationalError("SELECT secret", {}, Exception("connection lost"))

    def bug(**_: object) -> None:
        raise RuntimeError("subj-3f9a0c1d2e4b5a6978c0d1e2 in a message")

    quiet = TestClient(console.app, raise_server_exceptions=False, cookies=console.cookies)
    for failure, status in ((outage, 503), (bug, 500)):
        monkeypatch.setattr(register_api, "current_register", failure)  # what the register page calls
        response = quiet.get("/console/register")
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert "Something went wrong; nothing was disclosed." in response.text
        for secret in ("SELECT", "connection lost", "subj-", "RuntimeError", "Traceback"):
            assert secret not in response.text
        assert_secured(response, f"/console/register ({status})")


def test_the_static_files_keep_their_own_caching(console: TestClient) -> None:
    response = console.get("/console/static/console.css")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]


# -- 2. after a session ended during a form's POST, sign-in returns to the form's page ---------------------

def _sign_in_again(client: TestClient, location: str, who: str = "po-gemeente") -> str:
    """Follow the sign-in page a refused request was sent to; return where signing in then leads."""
    assert location.startswith("/console/login?"), location
    form = client.get(location)
    next_field = re.search(r'name="next" value="([^"]*)"', form.text)
    assert next_field, "the sign-in form carries where to go next"
    response = client.post("/console/login", data={"username": who, "password": PASSWORD,
                                                   "csrf_token": csrf_of(form.text),
                                                   "next": next_field.group(1).replace("&amp;", "&")},
                           follow_redirects=False)
    assert response.status_code == 303
    return str(response.headers["location"])


@pytest.mark.parametrize(("who", "action", "then", "page"), [
    ("po-gemeente", "/console/escalations/{case}/comments", "/console/escalations/{case}", None),
    ("po-gemeente", "/console/escalations/{case}/decision", "/console/escalations/{case}", None),
    ("po-gemeente", "/console/audit/verify", "/console/audit", None),
    ("contact-riec", "/console/subjects", "/console/subjects", None),
    ("po-gemeente", "/console/logout", "/console", "/console/audit"),  # no page of its own: the person's home
])
def test_a_form_posted_after_the_session_ended_returns_to_its_page_after_sign_in(
        console: TestClient, container: Container, clock: FixedClock,
        who: str, action: str, then: str, page: str | None) -> None:
    case = open_riec_case(container)
    action, then = action.format(case=case), then.format(case=case)
    sign_in(console, who)
    token = csrf_of(console.get("/console/register").text)
    clock.advance(timedelta(seconds=IDLE + 1))
    refused = console.post(f"{action}?x=1", data={"csrf_token": token, "text": "hello"}, follow_redirects=False)
    assert refused.status_code == 303
    asked = parse_qs(urlsplit(refused.headers["location"]).query)
    assert asked["expired"] == ["1"]
    assert asked["next"] == [then]
    landed = _sign_in_again(console, refused.headers["location"], who)
    assert landed == (page or then)
    assert console.get(landed).status_code == 200


def test_a_get_page_asked_for_keeps_its_query_after_sign_in(console: TestClient, clock: FixedClock
                                                             ) -> None:
    sign_in(console, "po-gemeente")
    clock.advance(timedelta(seconds=IDLE + 1))
    refused = console.get("/console/audit?event_type=disclosure", follow_redirects=False)
    assert _sign_in_again(console, refused.headers["location"]) == "/console/audit?event_type=disclosure"


@pytest.mark.parametrize(("target", "landing"), [
    ("/console/logout", "/console/audit"),
    ("/console/audit/verify?x=1", "/console/audit"),
    ("/console/escalations/some-case/withdraw", "/console/escalations/some-case"),
    ("/console/legal-gaps/some-gap/status", "/console/legal-gaps/some-gap"),
    ("/console/escalations?partnership=fec", "/console/escalations?partnership=fec"),
    ("/console/statistics?partnership=fec", "/console/audit"),  # writes as it opens (test_own_pages)
    ("/console/statistics.csv", "/console/audit"),
    ("/console/../v1/audit", "/console/audit"),
    ("/console/%2e%2e/v1/audit", "/console/audit"),
    ("/consolex", "/console/audit"),
    ("https://evil.example/console", "/console/audit"),
    ("//evil.example/console", "/console/audit"),
    ("/console/\\evil.example", "/console/audit"),
])
def test_sign_in_never_leads_to_a_post_only_action_nor_off_the_console(console: TestClient, target: str,
                                                                      landing: str) -> None:
    account(console, "po-gemeente")
    assert landing_after_sign_in(console, "po-gemeente", target) == landing

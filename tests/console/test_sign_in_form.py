"""The sign-in form's token has a lifetime (the idle timeout's length): a form left open longer, or a copy of
its cookie, signs nobody in, and the person is told to sign in again on a fresh form — never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.clock import FixedClock
from gateway.console.sessions import COOKIE, LOGIN_COOKIE
from gateway.container import Container
from tests.console.support import IDLE, PASSWORD, csrf_of, running_console
from tests.console.test_console import account

EXPIRED = "This sign-in form was open too long and has expired. Please sign in again."


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=False) as client:
        account(client, "po-gemeente")
        yield client


def _submit(console: TestClient, token: str) -> httpx.Response:
    answer: httpx.Response = console.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD,
                                                                  "csrf_token": token}, follow_redirects=False)
    return answer


def test_a_sign_in_form_left_open_too_long_signs_nobody_in_and_says_sign_in_again(
        console: TestClient, clock: FixedClock) -> None:
    form = console.get("/console/login")
    kept = console.cookies.get(LOGIN_COOKIE)
    assert kept
    clock.advance(timedelta(seconds=IDLE + 1))
    refused = _submit(console, csrf_of(form.text))
    assert refused.status_code == 403
    assert EXPIRED in refused.text
    assert COOKIE not in refused.cookies, "no session was made"
    assert console.get("/console/audit", follow_redirects=False).status_code == 303, "not signed in"
    # the refusal's own form is fresh: signing in again with it works
    again = _submit(console, csrf_of(refused.text))
    assert again.status_code == 303
    assert console.get("/console/audit").status_code == 200
    # and a copy of the old cookie with its token stays refused
    console.cookies.clear()
    console.cookies.set(LOGIN_COOKIE, kept, path="/console")
    assert EXPIRED in _submit(console, csrf_of(form.text)).text


def test_the_form_is_taken_within_its_lifetime_and_renewed_when_shown_late(console: TestClient,
                                                                           clock: FixedClock) -> None:
    first = csrf_of(console.get("/console/login").text)
    clock.advance(timedelta(seconds=IDLE // 4))
    assert csrf_of(console.get("/console/login").text) == first, "a second tab soon after shares the token"
    clock.advance(timedelta(seconds=IDLE // 2))  # three quarters of its lifetime gone: showing it renews it
    renewed = csrf_of(console.get("/console/login").text)
    assert renewed != first
    clock.advance(timedelta(seconds=IDLE // 2))  # the first one's lifetime is over, the renewed one's is not
    assert _submit(console, renewed).status_code == 303


def test_a_form_whose_cookie_the_browser_dropped_says_sign_in_again(console: TestClient) -> None:
    """The cookie expires with its token (``Max-Age``): the browser no longer sends it, and the person is told
    that the form expired — not that it may be forged."""
    form = console.get("/console/login")
    assert f"Max-Age={IDLE}" in form.headers["set-cookie"]
    console.cookies.clear()
    refused = _submit(console, csrf_of(form.text))
    assert refused.status_code == 403
    assert EXPIRED in refused.text


def test_a_wrong_token_is_still_the_forgery_refusal(console: TestClient) -> None:
    form = console.get("/console/login")
    refused = _submit(console, csrf_of(form.text) + "x")
    assert refused.status_code == 403
    assert "did not come from this console" in refused.text
    assert EXPIRED not in refused.text


def test_the_expiry_is_worded_in_dutch_too(console: TestClient, clock: FixedClock) -> None:
    form = console.get("/console/login?lang=nl")
    clock.advance(timedelta(seconds=IDLE + 1))
    refused = _submit(console, csrf_of(form.text))
    assert refused.status_code == 403
    assert "Dit aanmeldformulier stond te lang open en is verlopen. Meld u opnieuw aan." in refused.text

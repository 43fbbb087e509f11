"""Security properties of the console beyond the basics in ``test_console``: signing out holds in every
process and across restarts, signing in again ends the session before, and failed or throttled sign-ins
cannot grow the audit log without bound while the officers concerned still see them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway.console.sessions import COOKIE, install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from tests.console.support import PASSWORD, csrf_of, seed_entries
from tests.console.test_console import IDLE, account, sign_in


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    _another_process(container)
    with TestClient(app) as client:
        seed_entries(container)
        client.app_state["accounts"] = set()
        yield client


def _another_process(container: Container) -> None:
    """What a second worker process or a restarted one has: the same key and database, nothing in memory."""
    install_console(container, ConsoleSettings(cookie_secure=False, idle_timeout_seconds=IDLE,
                                               default_language="en"))


def test_a_signed_out_cookie_is_refused_by_another_process_too(console: TestClient, container: Container) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    copied = console.cookies.get(COOKIE)
    assert copied
    assert console.post("/console/logout", data={"csrf_token": csrf_of(page.text)},
                        follow_redirects=False).status_code == 303
    _another_process(container)
    console.cookies.set(COOKIE, copied, path="/console")
    refused = console.get("/console/audit", follow_redirects=False)
    assert refused.status_code == 303
    assert "expired=1" in refused.headers["location"]
    # the refusal is about that session only: signing in again works in the new process
    console.cookies.clear()
    sign_in(console, "po-gemeente")
    assert console.get("/console/audit").status_code == 200


def test_signing_in_again_ends_the_session_before(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    first = console.cookies.get(COOKIE)
    assert first
    account(console, "po-bank")
    again = console.post("/console/login", data={"username": "po-bank", "password": PASSWORD,
                                                 "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert again.status_code == 303
    assert "Signed in as po-bank" in console.get("/console/audit").text
    console.cookies.set(COOKIE, first, path="/console")
    assert console.get("/console/audit", follow_redirects=False).status_code == 303, "the first session ended"

"""What the gateway's own data could hold but its code does not expect fails closed, never as a 500: a person's
token whose ``cred`` is not ASCII (only the gateway's key could sign one) is a 401, and an account whose roles
hold a value this gateway does not know gets neither a token nor a console session (403, audited as every
failed sign-in is)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audit.tables import audit_entries
from gateway.auth.setup import auth_services
from gateway.auth.tables import accounts
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from gateway.db.engine import transaction
from tests.auth_helpers import account_id, bearer, issued_person_token, person_token
from tests.console.support import PASSWORD, csrf_of

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

SQLITE_ONLY = pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
USERNAME = "po-politie"


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()  # type: ignore[no-any-return]


def _failed_sign_ins(container: Container) -> list[dict[str, Any]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == "console.action").order_by(t.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [e for e in events if e["extra"]["action"] == "sign-in" and e["status"] == "error"]


def _give_role(container: Container, roles: list[str]) -> None:
    """What an administrator's SQL (or another version of the gateway) could write."""
    with transaction(container.sessions) as session:
        session.execute(update(accounts).where(accounts.c.username == USERNAME).values(roles=roles))


@SQLITE_ONLY
@pytest.mark.parametrize("credential", ["é" * 32, "ß", "\uff10" * 32])
def test_a_person_token_with_a_cred_that_is_not_ascii_is_401_not_500(client: TestClient, container: Container,
                                                                     credential: str) -> None:
    issued_person_token(container, USERNAME, "politie", ["privacy-officer"])
    token = auth_services(container).tokens.issue(subject=USERNAME, organisation="politie",
                                                  scopes=["register:read"], kind="person",
                                                  roles=["privacy-officer"], credential=credential).access_token
    assert "sign in again" in _problem(client.get("/v1/register", headers=bearer(token)), 401)["detail"]


@SQLITE_ONLY
def test_an_account_with_an_unknown_role_gets_no_token_and_the_refusal_is_audited(client: TestClient,
                                                                                 container: Container) -> None:
    earlier = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    _give_role(container, ["privacy-officer", "auditor-general"])
    login = client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert "role" in _problem(login, 403)["detail"]
    _problem(client.get("/v1/register", headers=bearer(earlier)), 401)  # the roles are part of its fingerprint
    [entry] = _failed_sign_ins(container)
    assert entry["requester"] == {"org": "politie", "system": None, "user": account_id(container, USERNAME)}
    assert entry["extra"] == {"action": "sign-in", "channel": "api", "reason": "unknown-role"}
    wrong = client.post("/v1/auth/login", json={"username": USERNAME, "password": "not the password at all"})
    _problem(wrong, 401)  # the role is told only to whoever knows the password


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    install_console(container, ConsoleSettings(cookie_secure=False, default_language="en"))
    with TestClient(app) as client:
        yield client


@SQLITE_ONLY
def test_a_console_session_and_sign_in_of_an_account_with_an_unknown_role_fail_closed(console: TestClient,
                                                                                     container: Container) -> None:
    client = console
    person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    form = client.get("/console/login")
    signed_in = client.post("/console/login", data={"username": USERNAME, "password": PASSWORD,
                                                    "csrf_token": csrf_of(form.text), "next": "/console/audit"},
                            follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    assert client.get("/console/audit", follow_redirects=False).status_code == 200
    _give_role(container, ["privacy-officer", "auditor-general"])
    ended = client.get("/console/audit", follow_redirects=False)
    assert ended.status_code == 303
    assert ended.headers["location"].startswith("/console/login")
    form = client.get("/console/login")
    refused = client.post("/console/login", data={"username": USERNAME, "password": PASSWORD,
                                                  "csrf_token": csrf_of(form.text), "next": "/console"},
                          follow_redirects=False)
    assert refused.status_code == 403
    assert "role the gateway does not know" in refused.text
    assert [e["extra"] for e in _failed_sign_ins(container)] == [
        {"action": "sign-in", "channel": "console", "reason": "unknown-role"}]

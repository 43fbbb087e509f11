"""What the audit log says about signing in through the API: a person's sign-in at ``POST /v1/auth/login`` is
an entry, as at the console; a token request the token endpoint refuses is an ``auth.rejected`` entry for the
system it named, bounded per window; a partner system's token that was issued is none (see
:mod:`gateway.auth.endpoints`)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit import AuditWriteError
from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auditing.setup import audit_services
from gateway.clock import FixedClock
from gateway.console.signins import summarise_ended
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.auth_helpers import (
    account_id,
    client_assertion,
    person_token,
    register_client,
    register_secret,
    system_token,
    token_form,
)

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

SYSTEM = "kvk-handelsregister"


def _events(container: Container, event_type: str) -> list[dict[str, Any]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == event_type).order_by(t.log_index))
        return [json.loads(row.canonical)["event"] for row in rows]


def _sign_ins(container: Container) -> list[dict[str, Any]]:
    return [e for e in _events(container, "console.action") if e["extra"]["action"] == "sign-in"]


def test_a_persons_sign_in_at_the_api_is_audited_as_at_the_console(client: TestClient, container: Container) -> None:
    person_token(client, container, "po-politie", "politie", ["privacy-officer"])
    [entry] = _sign_ins(container)
    assert entry["status"] == "ok"
    assert entry["requester"] == {"org": "politie", "system": None, "user": account_id(container, "po-politie")}
    assert entry["extra"] == {"action": "sign-in", "channel": "api"}
    assert "po-politie" not in json.dumps(entry)  # the account by reference, never the username


def test_a_sign_in_that_cannot_be_audited_gets_no_token(client: TestClient, container: Container,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    person_token(client, container, "po-politie", "politie", ["privacy-officer"])

    async def refuse(events: Any, companion: Any = None) -> None:
        raise AuditWriteError("the log is down")

    monkeypatch.setattr(audit_services(container).writer, "record", refuse)
    answer = client.post("/v1/auth/login", json={"username": "po-politie", "password": "correct horse battery staple"})
    assert answer.status_code == 503, answer.text
    assert "access_token" not in answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def _wrong_secret(client: TestClient, client_id: str = SYSTEM) -> int:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "not the secret"}
    status: int = client.post("/oauth/token", data=form).status_code
    return status


def test_refused_token_requests_are_audited_once_per_window_then_summarised(
        client: TestClient, container: Container, clock: FixedClock) -> None:
    register_secret(container, SYSTEM, ["exchange"])
    first = clock.now()
    for _ in range(12):
        assert _wrong_secret(client) == 401
        clock.advance(timedelta(seconds=1))
    [rejected] = _events(container, "auth.rejected")
    assert rejected["status"] == "error"
    assert rejected["requester"] == {"org": "kvk", "system": SYSTEM, "user": None}  # kvk's officers see it
    assert rejected["extra"] == {"endpoint": "token", "reason": "invalid_client"}
    clock.advance(timedelta(minutes=15))
    assert client.portal is not None
    client.portal.call(summarise_ended, container)
    _, summary = _events(container, "auth.rejected")
    assert summary["requester"] == rejected["requester"]
    assert summary["extra"] == {"endpoint": "token", "reason": "invalid_client", "more_attempts": 11,
                                "first_at": first.isoformat(), "last_at": (first + timedelta(seconds=11)).isoformat()}


def test_token_requests_naming_no_system_name_nobody_and_are_bounded(client: TestClient,
                                                                     container: Container) -> None:
    for n in range(10):
        assert _wrong_secret(client, f"someone-{n}@example.org") == 401
    [rejected] = _events(container, "auth.rejected")
    assert rejected["requester"] is None
    assert "someone-" not in json.dumps(rejected)  # whatever the caller sent is not written


def test_an_issued_system_token_is_no_entry(client: TestClient, container: Container) -> None:
    before = len(_events(container, "console.action")) + len(_events(container, "auth.rejected"))
    system_token(client, container, "politie-bvh", ["exchange"])
    assert len(_events(container, "console.action")) + len(_events(container, "auth.rejected")) == before


def test_a_replayed_assertion_and_wrong_basic_credentials_name_their_system(client: TestClient,
                                                                            container: Container) -> None:
    """The system is found in the client assertion (its ``sub``) and in Basic credentials too."""
    keys = register_client(container, "politie-bvh", ["exchange"])
    form = token_form(client_assertion(container, keys))
    assert client.post("/oauth/token", data=form).status_code == 200
    assert client.post("/oauth/token", data=form).status_code in (400, 401)  # the same assertion again
    register_secret(container, SYSTEM, ["exchange"])
    basic = base64.b64encode(f"{SYSTEM}:not the secret".encode()).decode()
    assert client.post("/oauth/token", data={"grant_type": "client_credentials"},
                       headers={"Authorization": f"Basic {basic}"}).status_code == 401
    assert [e["requester"] for e in _events(container, "auth.rejected")] == [
        {"org": "politie", "system": "politie-bvh", "user": None}, {"org": "kvk", "system": SYSTEM, "user": None}]


def test_one_entry_and_one_summary_per_window_over_every_gateway_process(
        client: TestClient, container: Container, settings: Settings, clock: FixedClock) -> None:
    """Two processes on one database (workers, or replicas): a flood spread over both is still one entry that
    opens the window and one summary that counts the rest, not one of each per process."""
    other_container = build_container(settings, clock)
    try:
        with TestClient(create_app(container=other_container)) as other:
            for n in range(6):
                for caller in (client, other):
                    answer = caller.post("/v1/auth/login", json={"username": f"guess-{n}-{id(caller)}",
                                                                 "password": "wrong password!"})
                    assert answer.status_code == 401
            clock.advance(timedelta(minutes=15))
            for caller, its_container in ((client, container), (other, other_container)):
                assert caller.portal is not None
                caller.portal.call(summarise_ended, its_container)  # what each process's timer runs
    finally:
        other_container.close()
    failed = [e for e in _sign_ins(container) if e["status"] == "error"]
    assert [e["extra"].get("more_attempts") for e in failed] == [None, 11]


def test_a_refused_token_request_whose_process_lost_a_summary_to_another_is_still_a_401(
        client: TestClient, container: Container, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process claims an ended window for its summary, stalls past the claim's lease, and another process
    takes the window over and writes the summary. That is the claim working, not a failure of the log: the
    refused request that looked for ended windows is answered 401 as any other, not 503."""
    from sqlalchemy import update

    from gateway.console.signins import failed_sign_ins
    from gateway.console.tables import sign_in_windows

    register_secret(container, SYSTEM, ["exchange"])
    assert [_wrong_secret(client) for _ in range(3)] == [401] * 3  # one entry, two counted
    clock.advance(timedelta(minutes=15))  # the window ended
    tracker = failed_sign_ins(container)
    claim = tracker.claim_ended

    def taken_over_meanwhile(now: float, mine: str) -> Any:
        claimed = claim(now, mine)
        with container.engine.begin() as connection:  # another process, after this one's lease ran out
            connection.execute(update(sign_in_windows).values(claim="another-process"))
        return claimed

    monkeypatch.setattr(tracker, "claim_ended", taken_over_meanwhile)
    refused = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                                "client_secret": "not the secret"})
    assert refused.status_code == 401, refused.text
    assert len(_events(container, "auth.rejected")) == 2  # the first of the new window; no summary of ours

"""A flood of guessed client secrets cannot starve the gateway's other requests, nor partner systems that
authenticate with a key.

A token request with a client secret runs argon2 (a worker thread and 64 MiB for a fraction of a second) for a
known client id; nothing limited the guesses in flight, so a burst over many connections took every worker
thread as a sign-in flood did (``test_sign_in_flood``). Such requests now wait for slots of their own
(``secret_checks``); one that gets none in time is refused with 429 problem+json and ``Retry-After``.
``private_key_jwt`` requests (a signature check) are not limited."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.settings import Settings
from tests.auth_helpers import client_assertion as assertion_of
from tests.auth_helpers import register_client, register_secret, token_form
from tests.integration.auth.test_sign_in_flood import every_slot_held, flood_while_reading

SYSTEM = "gemeente-amsterdam-vth"
FLOOD = 30


def _rejected(container: Container) -> list[dict[str, Any]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == "auth.rejected").order_by(t.log_index))
        return [json.loads(row.canonical)["event"] for row in rows]


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, log_json=True, password_checks=2,
                    password_check_wait_seconds=0.25)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_a_flood_of_secret_guesses_does_not_starve_other_requests(client: TestClient, container: Container) -> None:
    secret = register_secret(container, SYSTEM, ["exchange"])
    def guess(number: int) -> httpx.Response:
        answer: httpx.Response
        if number % 2:  # both ways of sending a secret are limited
            basic = base64.b64encode(f"{SYSTEM}:guess-{number}".encode()).decode()
            answer = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": f"Basic {basic}"})
        else:
            answer = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                                       "client_secret": f"guess-{number}"})
        return answer

    for answer in flood_while_reading(client, container, guess, "secret checks"):
        assert SYSTEM not in answer.text
        assert "guess" not in answer.text
    right = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                              "client_secret": secret})
    assert right.status_code == 200, right.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_secret_slots_taken_refuse_secrets_but_not_keys_or_sign_ins(app: FastAPI, container: Container) -> None:
    """Every secret slot held: a secret's token request is refused at once (429) before any check; a key's
    (``private_key_jwt``) is answered, and the sign-ins' own slots are free, so neither flood blocks the other."""
    secret = register_secret(container, SYSTEM, ["exchange"])
    keys = register_client(container, "politie-bvh", ["exchange"])
    with TestClient(app) as client:
        checks = auth_services(container).secret_checks
        with every_slot_held(client, checks, container.settings.password_checks):
            with_secret = client.post("/oauth/token", data={"grant_type": "client_credentials",
                                                            "client_id": SYSTEM, "client_secret": secret})
            with_key = client.post("/oauth/token", data=token_form(assertion_of(container, keys)))
            sign_in = client.post("/v1/auth/login", json={"username": "po-nobody", "password": "x" * 12})
        assert with_secret.status_code == 429, with_secret.text
        assert with_secret.headers["content-type"].startswith("application/problem+json")
        [rejected] = _rejected(container)  # accounted for as a refused token request, naming the system
        assert rejected["requester"] == {"org": "gemeente-amsterdam", "system": SYSTEM, "user": None}
        assert rejected["extra"] == {"endpoint": "token", "reason": "throttled"}
        assert with_key.status_code == 200, with_key.text
        assert sign_in.status_code == 401, sign_in.text  # checked in a sign-in slot, and wrong
        again = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                                  "client_secret": secret})
        assert again.status_code == 200, again.text

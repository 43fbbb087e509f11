"""A flood of sign-ins with made-up usernames cannot starve the gateway's other requests.

Every sign-in runs argon2 (an unknown username too, so the time does not tell which names exist) in a worker
thread; the throttle counts per username, not the attempts in flight. A burst over many connections took every
worker thread, and a person's token check (a read of the account in a worker thread) waited behind all of them.
The password checks now wait for a few slots per process (:mod:`gateway.auth.password_checks`); a sign-in that
gets none in time is refused with 429 and accounted for as a throttled one."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.auth.accounts import create_account
from gateway.auth.password_checks import PasswordChecks
from gateway.auth.setup import auth_services
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.settings import Settings
from tests.auth_helpers import bearer, issued_person_token
from tests.console.support import csrf_of

WORKER_THREADS = 4
FLOOD = 30  # below the 32 new usernames one address may bring per window (LoginThrottle), so none is refused for that
BOUND_SECONDS = 2.0
"""How long the unrelated read may take during the flood. Without the slots it waited for the flood's checks
ahead of it: FLOOD argon2 checks of about 0.1-0.3 s each on the worker threads (measured on two cores with 24:
7.6 s); with them it waits for the refusals' bookkeeping at most (measured: 0.02-0.6 s)."""
USERNAME = "po-politie"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, log_json=True, password_checks=2,
                    password_check_wait_seconds=0.25)


def _in_loop(client: TestClient, function: Callable[[], Any]) -> Any:
    portal = client.portal
    assert portal is not None
    return portal.call(function)


def _limit_worker_threads(client: TestClient) -> None:
    """A small pool, as a small server has: both kinds of worker thread of the app's event loop."""
    def limit() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(WORKER_THREADS))
    _in_loop(client, limit)


def _until_checks_run(client: TestClient) -> None:
    """Until the flood's password checks hold worker threads (bounded: a broken run fails below instead)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _in_loop(client, lambda: anyio.to_thread.current_default_thread_limiter().borrowed_tokens) >= 2:
            return
        time.sleep(0.01)


def _throttled_sign_ins(container: Container) -> list[dict[str, Any]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == "console.action")).scalars()
        events = [json.loads(row)["event"] for row in rows]
    return [e for e in events if e["extra"].get("action") == "sign-in" and e["extra"].get("reason") == "throttled"]


def flood_while_reading(client: TestClient, container: Container, guess: Callable[[int], httpx.Response],
                        what: str) -> list[httpx.Response]:
    """FLOOD ``guess`` requests at once on a small worker-thread pool; while their checks hold worker threads,
    a person's token-protected read (a worker thread's read of the account) must answer within
    BOUND_SECONDS. Every guess is refused (401) or gets no turn (429 problem+json with ``Retry-After``), and
    some get none; those are returned."""
    reader = issued_person_token(container, "po-reader", "politie", ["privacy-officer"])
    _limit_worker_threads(client)
    with ThreadPoolExecutor(FLOOD) as flood:
        answers = flood.map(guess, range(FLOOD))
        _until_checks_run(client)
        started = time.monotonic()
        read = client.get("/v1/register", headers=bearer(reader))
        took = time.monotonic() - started
        flooded = list(answers)
    assert read.status_code == 200, read.text
    assert took < BOUND_SECONDS, f"a token-protected read waited {took:.2f} s behind the {what}"
    assert {answer.status_code for answer in flooded} <= {401, 429}
    refused = [answer for answer in flooded if answer.status_code == 429]
    assert refused, f"every one of the {what} was checked"
    for answer in refused:
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert int(answer.headers["Retry-After"]) >= 1
    return refused


@pytest.mark.timeout(120)
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_a_flood_of_sign_ins_does_not_starve_other_requests(client: TestClient, container: Container) -> None:
    with transaction(container.sessions) as session:
        create_account(session, USERNAME, "politie", ["privacy-officer"], PASSWORD, container.clock)
    def guess(_: int) -> httpx.Response:
        answer: httpx.Response = client.post(
            "/v1/auth/login", json={"username": f"made-up-{uuid.uuid4().hex}", "password": "guess"})
        return answer

    flood_while_reading(client, container, guess, "sign-ins")
    assert _throttled_sign_ins(container), "the refused sign-ins are accounted for as throttled ones"

    signed_in = client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    assert client.get("/v1/register", headers=bearer(signed_in.json()["access_token"])).status_code == 200


@contextmanager
def every_slot_held(client: TestClient, checks: PasswordChecks, slots: int) -> Iterator[None]:
    """While the block runs, ``slots`` checks hold every slot of ``checks`` (each waits until the block ends;
    bounded: 30 s at most)."""
    release = threading.Event()

    def busy() -> None:
        release.wait(timeout=30)

    portal = client.portal
    assert portal is not None
    holders = [portal.start_task_soon(checks.run, busy) for _ in range(slots)]
    try:
        yield
    finally:
        release.set()
        for holder in holders:
            holder.result(timeout=30)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_a_sign_in_that_gets_no_slot_is_refused_at_either_door_and_accounted_for(app: FastAPI,
                                                                                 container: Container) -> None:
    """Both slots taken (two checks still running): a sign-in at the console and one at the API wait their
    turn, get none, and are refused with 429 before any password is checked (an unknown username alike); once
    the slots are free the same person signs in."""
    with transaction(container.sessions) as session:
        create_account(session, USERNAME, "politie", ["privacy-officer"], PASSWORD, container.clock)
    install_console(container, ConsoleSettings(cookie_secure=False, default_language="en"))
    with TestClient(app) as client:
        checks = auth_services(container).password_checks
        with every_slot_held(client, checks, container.settings.password_checks):
            form = client.get("/console/login")
            console = client.post("/console/login", data={"username": USERNAME, "password": PASSWORD,
                                                          "csrf_token": csrf_of(form.text)})
            api = client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD})
            unknown = client.post("/v1/auth/login", json={"username": "po-nobody", "password": PASSWORD})
        assert console.status_code == 429, console.text
        assert api.status_code == 429, api.text
        assert (unknown.status_code, unknown.json()) == (429, api.json())  # no name is told apart by waiting
        assert api.headers["content-type"].startswith("application/problem+json")
        assert {console.headers["Retry-After"], api.headers["Retry-After"]} == {"1"}
        throttled = _throttled_sign_ins(container)
        assert sorted((e["extra"]["channel"], (e["requester"] or {}).get("org", "")) for e in throttled) == [
            ("api", ""), ("api", "politie"), ("console", "politie")]  # the unknown name names nobody
        assert client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD}).status_code == 200

"""State that must hold across gateway processes (production runs several workers, possibly in several
containers, on one database): each test starts two real gateway processes on one database (an SQLite file,
and PostgreSQL) and sends them concurrent requests over HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from audit import verify_database
from audit.tables import audit_entries
from gateway.auditing.setup import audit_verifier
from gateway.auth.repository import set_client_active
from gateway.client.api import GatewayClient
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.settings import Settings
from tests.auth_helpers import ASSERTION_TYPE, ClientKeys, client_assertion, register_client
from tests.console.support import PASSWORD, add_account, csrf_of
from tests.reliability.gateways import all_hours_register, gateway_processes, prepared_container
from tests.reliability.test_crash_safety import BODY, _token
from tests.servers import serve_app

T = TypeVar("T")
SYSTEM = "gemeente-amsterdam-vth"
RIEC = "riec-amsterdam-amstelland"


def _burst(calls: list[Callable[[], T]]) -> list[T]:
    """Run ``calls`` at once (each on its own thread, released together)."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_the_daily_limit_holds_for_a_burst_split_over_two_processes(tmp_path: Path, empty_db_url: str) -> None:
    limit = 3
    register = all_hours_register(tmp_path, daily_limit_per_system=limit)
    container = prepared_container(tmp_path, empty_db_url, register_file=register)
    keys = register_client(container, SYSTEM, ["exchange"])
    add_account(container, "po-amsterdam", "gemeente-amsterdam", ["privacy-officer"])
    with gateway_processes(tmp_path, empty_db_url, env={"WGS_REGISTER_FILE": str(register)}) as urls:
        token = _token(urls[0], keys, container.settings.issuer)

        def ask(base: str, n: int) -> Callable[[], set[str]]:
            def call() -> set[str]:
                response = httpx.post(f"{base}/v1/exchanges", timeout=30, headers={"Authorization": f"Bearer {token}"},
                                      json=BODY | {"case_reference": f"RIEC-AA-2026-{n:03d}"})
                assert response.status_code == 200, response.text
                return {r["code"] for r in response.json()["targets"][0]["reasons"]}
            return call

        burst = _burst([ask(urls[n % 2], n) for n in range(12)])
        assert sum("daily-limit" not in codes for codes in burst) == limit, burst
        assert all("daily-limit" in ask(base, 100 + n)() for n, base in enumerate(urls))  # and afterwards
        officer = httpx.post(f"{urls[0]}/v1/auth/login", json={"username": "po-amsterdam", "password": PASSWORD})
        read = {"Authorization": f"Bearer {officer.json()['access_token']}"}
        notes = _burst([lambda base=base: httpx.get(f"{base}/v1/audit/checkpoint", headers=read)  # type: ignore[misc]
                        for base in urls * 2])  # both processes sign checkpoints of the log both wrote, at once
        assert [note.status_code for note in notes] == [200] * 4
    with container.engine.connect() as connection:  # one gap-free log from both processes, and it verifies
        indices = list(connection.execute(select(audit_entries.c.log_index).order_by(audit_entries.c.log_index))
                       .scalars())
    assert indices == list(range(len(indices)))
    result = verify_database(container.engine, audit_verifier(container.settings))
    assert result.ok, result.failure
    container.close()


@contextmanager
def held_holder() -> Iterator[tuple[str, threading.Event, list[str]]]:
    """A holder that answers a query (no records) only once ``release`` is set; ``calls`` lists the request ids
    it was asked with, so a test sees how often the holder was asked and keeps an exchange in flight."""
    release, calls = threading.Event(), list[str]()
    holder = FastAPI()

    @holder.post("/holder/v1/query")
    async def query(body: dict[str, Any]) -> dict[str, object]:
        calls.append(str(body.get("request_id")))
        await asyncio.to_thread(release.wait, 20)
        return {"status": "answered", "records": []}

    with serve_app(holder) as url:
        yield url, release, calls


def _audited(container: Container, event_type: str) -> int:
    with container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries).where(
            audit_entries.c.event_type == event_type)).scalar_one())


def test_one_idempotency_key_sent_to_two_processes_at_once_is_answered_once(tmp_path: Path,
                                                                             empty_db_url: str) -> None:
    container = prepared_container(tmp_path, empty_db_url)
    keys = register_client(container, SYSTEM, ["exchange"])
    with held_holder() as (holder, release, calls), gateway_processes(tmp_path, empty_db_url, env={
            "WGS_CONNECTOR_ENDPOINTS": json.dumps({"kvk-handelsregister": holder})}) as urls:
        token = _token(urls[0], keys, container.settings.issuer)

        def send(base: str, key: str, body: dict[str, Any]) -> Callable[[], httpx.Response]:
            return lambda: httpx.post(f"{base}/v1/exchanges", json=body, timeout=30, headers={
                "Authorization": f"Bearer {token}", "Idempotency-Key": key})

        other = BODY | {"case_reference": "RIEC-AA-2026-991"}
        for key, bodies in (("same-body-key-0001", (BODY, BODY)), ("other-body-key-0001", (BODY, other)),
                            ("other-body-key-0002", (other, BODY))):
            requested = _audited(container, "exchange.requested")
            with ThreadPoolExecutor(2) as pool:
                first = pool.submit(send(urls[0], key, bodies[0]))
                deadline = time.monotonic() + 20
                while len(calls) < 1 and time.monotonic() < deadline:  # the first is at the holder: in flight
                    time.sleep(0.02)
                second = send(urls[1], key, bodies[1])()
                release.set()
                answered = first.result()
            assert answered.status_code == 200, answered.text
            assert second.status_code == 409, second.text  # still being answered, or a different request
            if bodies[0] is bodies[1]:  # a retry: it is told to come back for the answer
                assert second.headers["Retry-After"] == "1"
            else:
                assert "used for a different request" in second.json()["detail"]
            assert len(calls) == 1
            assert _audited(container, "exchange.requested") == requested + 1
            for base in urls:  # afterwards: the first answer in either process, or refused for the other body
                again = send(base, key, bodies[0])()
                assert again.json()["exchange_id"] == answered.json()["exchange_id"]
                assert send(base, key, bodies[1])().status_code == (200 if bodies[0] is bodies[1] else 409)
            assert len(calls) == 1
            assert _audited(container, "exchange.requested") == requested + 1
            calls.clear()
            release.clear()
    container.close()


def test_sign_in_throttle_replay_sign_out_and_disabling_hold_over_every_process(tmp_path: Path,
                                                                               empty_db_url: str) -> None:
    container = prepared_container(tmp_path, empty_db_url)
    keys = register_client(container, SYSTEM, ["exchange", "enrol"])
    add_account(container, "po-amsterdam", "gemeente-amsterdam", ["privacy-officer"])
    add_account(container, "po-guessed", "gemeente-amsterdam", ["privacy-officer"])
    with gateway_processes(tmp_path, empty_db_url, env={"WGS_REVOCATION_REFRESH_SECONDS": "0.5",
                                                        "WGS_PSEUDONYM_DAILY_LIMIT": "3"}) as urls:
        # The daily cap on pseudonyms made holds over both processes together (found: it was each process's
        # own, so two workers made twice the cap).
        asked = asyncio.run(_pseudonyms_asked(urls, keys, [2, 2, 1, 1]))
        assert asked == [200, 429, 200, 429]

        # Wrong passwords spread over both processes: five are checked in all, not five per process (found:
        # the throttle was each process's own, and two workers checked ten).
        guesses = [httpx.post(f"{urls[n % 2]}/v1/auth/login", json={"username": "po-guessed",
                                                                    "password": f"wrong guess {n}"}).status_code
                   for n in range(8)]
        assert guesses == [401] * 5 + [429] * 3
        right = {"username": "po-guessed", "password": PASSWORD}
        assert [httpx.post(f"{base}/v1/auth/login", json=right).status_code for base in urls] == [429, 429]

        # One client assertion sent to both processes at once: one access token, the replay refused.
        assertion = client_assertion(container, keys, audience=f"{container.settings.issuer}/oauth/token")
        tokens = _burst([lambda base=base: httpx.post(f"{base}/oauth/token", data={  # type: ignore[misc]
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": ASSERTION_TYPE}) for base in urls])
        assert sorted(r.status_code for r in tokens) == [200, 401], [r.text for r in tokens]

        # Signed in through one process, signed out through the other: the cookie is refused in both.
        with httpx.Client(base_url=urls[0]) as browser:
            form = browser.get("/console/login")
            signed_in = browser.post("/console/login", data={"username": "po-amsterdam", "password": PASSWORD,
                                                             "csrf_token": csrf_of(form.text)})
            assert signed_in.status_code == 303, signed_in.text
            cookies = browser.cookies
        pages = [httpx.get(f"{base}/console/audit", cookies=cookies) for base in urls]
        assert [p.status_code for p in pages] == [200, 200]
        signed_out = httpx.post(f"{urls[1]}/console/logout", cookies=cookies,
                                data={"csrf_token": csrf_of(pages[1].text)})
        assert signed_out.status_code == 303
        assert [httpx.get(f"{base}/console/audit", cookies=cookies).status_code for base in urls] == [303, 303]

        # A client disabled (as by `wgs-gateway clients disable`): its token refused by both processes.
        token = tokens[0].json()["access_token"] if tokens[0].status_code == 200 else tokens[1].json()["access_token"]
        assert [_exchange(base, token) for base in urls] == [200, 200]
        with transaction(container.sessions) as session:
            set_client_active(session, SYSTEM, False)
        deadline = time.monotonic() + 20  # each re-reads the list every 0.5 s, later on a loaded machine: polled
        for base in urls:
            while _exchange(base, token) == 200 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert [_exchange(base, token) for base in urls] == [401, 401]
    container.close()


async def _pseudonyms_asked(urls: list[str], keys: ClientKeys, sizes: list[int]) -> list[int]:
    """Ask the processes in turn for ``sizes[n]`` of the system's own pseudonyms (RIEC); their status codes."""
    async with GatewayClient(urls[0], keys.system_id, keys.key, issuer=Settings().issuer) as client:
        pseudonyms = await client.pseudonym_client(RIEC)
    subjects = [{"type": "bsn", "polymorphic": pseudonyms.polymorphic("bsn", bsn)}
                for bsn in ("111222333", "123456782")]
    token = _token(urls[0], keys, Settings().issuer)
    return [httpx.post(f"{urls[n % 2]}/v1/pseudonyms", headers={"Authorization": f"Bearer {token}"},
                       json={"partnership": RIEC, "subjects": subjects[:size]}).status_code
            for n, size in enumerate(sizes)]


def _exchange(base: str, token: str) -> int:
    return httpx.post(f"{base}/v1/exchanges", json=BODY, headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_persons_token_ended_by_disabling_stays_ended_in_every_process_and_a_new_sign_in_works_at_once(
        tmp_path: Path, empty_db_url: str) -> None:
    """`users disable` then `users enable` (the CLI: another process): a token from before stays refused by
    both gateway processes (found: enabling brought it back), and a sign-in right after the enabling gets a
    token both accept at once (found: refused until each process next read its disabled list, here 60 s; the
    processes start while the account is disabled, so their lists name it)."""
    from gateway.auth.access_changes import set_active
    from gateway.auth.repository import get_account
    from gateway.auth.setup import auth_services

    container = prepared_container(tmp_path, empty_db_url)
    add_account(container, "po-amsterdam", "gemeente-amsterdam", ["privacy-officer"])
    with transaction(container.sessions) as session:
        account = get_account(session, "po-amsterdam")
    assert account is not None
    old = auth_services(container).person_token(account).access_token  # signed in before the disabling
    assert set_active(container.settings, container.engine, "account", "po-amsterdam", False).changed
    with gateway_processes(tmp_path, empty_db_url, env={"WGS_REVOCATION_REFRESH_SECONDS": "60"}) as urls:

        def uses(token: str) -> list[int]:
            return [httpx.get(f"{base}/v1/register", headers={"Authorization": f"Bearer {token}"}).status_code
                    for base in urls]

        assert uses(old) == [401, 401]
        assert set_active(container.settings, container.engine, "account", "po-amsterdam", True).changed
        assert uses(old) == [401, 401]
        signed_in = httpx.post(f"{urls[1]}/v1/auth/login", json={"username": "po-amsterdam", "password": PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        assert uses(signed_in.json()["access_token"]) == [200, 200]
    container.close()

"""A disabled client or account is refused on every route within the refresh interval, even with a token it got
before it was disabled; when the list of disabled ones cannot be read, every token is refused (fail closed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.auth import repository
from gateway.auth.principal import Principal
from gateway.auth.revocation import DisabledPrincipals
from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import make_engine, make_session_factory, transaction
from gateway.errors import ServiceUnavailable
from gateway.settings import Settings
from tests.auth_helpers import (
    bearer,
    client_assertion,
    fetch_token,
    person_token,
    register_client,
    system_token,
    token_form,
)

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

SYSTEM = "politie-bvh"


def _as_another_process(container: Container, change: str, subject: str, active: bool) -> None:
    """What `wgs-gateway clients disable` / `users disable` do: their own engine, their own transaction."""
    engine = make_engine(container.settings.effective_database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            setter = repository.set_client_active if change == "client" else repository.set_account_active
            assert setter(session, subject, active)
    finally:
        engine.dispose()


def _problem(response: object, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    return response.json()  # type: ignore[attr-defined,no-any-return]


def test_a_disabled_clients_token_is_refused_and_stays_refused_once_enabled(client: TestClient,
                                                                             container: Container) -> None:
    """Enabling the client again lets it get tokens, but does not bring back the ones the disabling ended (a
    system is disabled because something is wrong with it: a token got before is not vouched for after)."""
    keys = register_client(container, SYSTEM, ["register:read"])
    token = fetch_token(client, container, keys)
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200  # verified and remembered
    _as_another_process(container, "client", SYSTEM, False)
    auth_services(container).disabled.load()  # what the timer does every interval
    refused = client.get("/v1/register", headers=bearer(token))
    assert "disabled" in str(_problem(refused, 401)["detail"])
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/oauth/token", data=token_form(client_assertion(container, keys))).status_code == 401
    _as_another_process(container, "client", SYSTEM, True)
    auth_services(container).disabled.load()
    _problem(client.get("/v1/register", headers=bearer(token)), 401)
    renewed = fetch_token(client, container, keys)  # the same key: enabling did not re-key the client
    assert client.get("/v1/register", headers=bearer(renewed)).status_code == 200
    _problem(client.get("/v1/register", headers=bearer(token)), 401)  # still, after a valid token of the client


def test_a_disabled_persons_token_is_refused_but_not_a_namesake_systems(client: TestClient,
                                                                       container: Container) -> None:
    """An account whose username is a client id: disabling the person leaves the system alone."""
    person = person_token(client, container, SYSTEM, "politie", ["privacy-officer"])
    system = system_token(client, container, SYSTEM, ["register:read"])
    assert client.get("/v1/register", headers=bearer(person)).status_code == 200
    _as_another_process(container, "account", SYSTEM, False)
    auth_services(container).disabled.load()
    _problem(client.get("/v1/register", headers=bearer(person)), 401)
    assert client.get("/v1/register", headers=bearer(system)).status_code == 200  # only that account


@pytest.fixture
def quick_refresh_client(tmp_path: Path, sqlite_db_url: str, clock: FixedClock) -> Iterator[tuple[TestClient,
                                                                                                   Container]]:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, revocation_refresh_seconds=0.1)
    container = build_container(settings, clock)
    try:
        with TestClient(create_app(container=container)) as client:
            yield client, container
    finally:
        container.close()


def test_the_running_gateway_picks_the_disabling_up_by_itself(quick_refresh_client: tuple[TestClient,
                                                                                          Container]) -> None:
    client, container = quick_refresh_client
    token = system_token(client, container, SYSTEM, ["register:read"])
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    _as_another_process(container, "client", SYSTEM, False)
    deadline = time.monotonic() + 10
    while client.get("/v1/register", headers=bearer(token)).status_code == 200:
        assert time.monotonic() < deadline, "the disabled client's token still works after 10 s"
        time.sleep(0.05)
    _problem(client.get("/v1/register", headers=bearer(token)), 401)


class _Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_unreadable_list_refuses_every_token_and_fails_readiness(client: TestClient,
                                                                    container: Container) -> None:
    token = system_token(client, container, SYSTEM, ["register:read"])
    monotonic = _Monotonic()
    services = auth_services(container)
    services.disabled = DisabledPrincipals(container.sessions, 5.0, monotonic=monotonic)
    # never read: nobody can be shown not to be disabled
    assert "disabled" in str(_problem(client.get("/v1/register", headers=bearer(token)), 503)["detail"])
    services.disabled.load()
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    assert client.get("/health/ready").json()["checks"]["disabled_principals"] == "ok"
    monotonic.now += services.disabled.stale_after - 1
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200  # still within its age
    monotonic.now += 2  # reads failed for longer than that: fail closed
    refused = client.get("/v1/register", headers=bearer(token))
    _problem(refused, 503)
    assert refused.headers["retry-after"] == "5"
    ready = client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["disabled_principals"].startswith("failed")
    services.disabled.load()  # the database answers again
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200


def test_a_gateway_started_on_an_unreadable_database_refuses_tokens_instead_of_crashing(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'not-migrated.sqlite'}")  # no tables: every read fails

    async def start_and_check() -> None:
        disabled = DisabledPrincipals(make_session_factory(engine), 5.0)
        disabled.start()  # logs the failure, keeps the timer for the next read
        try:
            with pytest.raises(ServiceUnavailable):
                disabled.check(Principal(kind="system", subject=SYSTEM, organisation="politie",
                                         scopes=frozenset(), roles=frozenset(), token_id="t"))
        finally:
            await disabled.aclose()

    try:
        asyncio.run(start_and_check())
    finally:
        engine.dispose()

"""A person's bearer token ends with the credentials it was issued for: a new password (it leaked), other roles
or organisation, or a disabled account refuse it on its next use, in every process, not only when it expires
(``access_token_ttl_seconds``) or the disabled list is next read. A partner system's token is checked without
any read of the accounts (the exchange's hot path)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.accounts import set_password
from gateway.auth.setup import auth_services
from gateway.auth.tables import accounts
from gateway.container import Container
from gateway.db.engine import make_engine, make_session_factory, transaction
from tests.auth_helpers import bearer, person_token, system_token
from tests.statements import reads_accounts, statements_run

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

USERNAME = "po-politie"
PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another horse battery staple"


def _as_another_process(container: Container, change: Callable[[Session], None]) -> None:
    """What the CLI (or an administrator's SQL) does: its own engine and transaction, not the gateway's."""
    engine = make_engine(container.settings.effective_database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            change(session)
    finally:
        engine.dispose()


def _new_password(session: Session) -> None:
    set_password(session, USERNAME, NEW_PASSWORD)


def _other_roles(session: Session) -> None:
    session.execute(update(accounts).where(accounts.c.username == USERNAME).values(roles=["contact-point"]))


def _other_organisation(session: Session) -> None:
    session.execute(update(accounts).where(accounts.c.username == USERNAME).values(organisation="belastingdienst"))


def _disabled(session: Session) -> None:
    assert repository.set_account_active(session, USERNAME, False)


@pytest.mark.parametrize("change", [_new_password, _other_roles, _other_organisation, _disabled])
def test_a_persons_token_is_refused_at_once_after_a_change_of_credentials(
        client: TestClient, container: Container, change: Callable[[Session], None]) -> None:
    token = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200  # verified and remembered
    _as_another_process(container, change)
    refused = client.get("/v1/register", headers=bearer(token))  # no refresh of the disabled list needed
    assert refused.status_code == 401, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert USERNAME not in refused.text  # the problem names nobody
    if change is not _disabled:  # signing in again gives a token that works
        password = NEW_PASSWORD if change is _new_password else PASSWORD
        again = client.post("/v1/auth/login", json={"username": USERNAME, "password": password})
        assert again.status_code == 200, again.text
        assert client.get("/v1/register", headers=bearer(again.json()["access_token"])).status_code == 200


def test_an_unchanged_persons_token_keeps_working(client: TestClient, container: Container) -> None:
    token = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    _as_another_process(container, lambda session: None)
    for _ in range(3):
        assert client.get("/v1/register", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_only_a_persons_token_costs_a_read_of_the_accounts(client: TestClient, container: Container) -> None:
    """The partner system's path stays free of database round trips for authentication; a person's costs one."""
    system = system_token(client, container, "politie-bvh", ["register:read"])
    person = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    for token in (system, person):  # both verified and remembered once
        assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    with statements_run(container.engine) as by_system:
        assert client.get("/v1/register", headers=bearer(system)).status_code == 200
    with statements_run(container.engine) as by_person:
        assert client.get("/v1/register", headers=bearer(person)).status_code == 200
    assert by_system == []
    assert len([s for s in by_person if reads_accounts(s)]) == 1


def _enabled(session: Session) -> None:
    assert repository.set_account_active(session, USERNAME, True)


def test_a_token_refused_when_its_account_was_disabled_stays_refused_once_it_is_enabled_again(
        client: TestClient, container: Container) -> None:
    """Disabling an account (a leaked token, a person who left) ends its tokens; enabling it again lets the person
    sign in again, but must not bring back a token issued before: whoever held it kept it."""
    token = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    _as_another_process(container, _disabled)
    assert client.get("/v1/register", headers=bearer(token)).status_code == 401
    _as_another_process(container, _enabled)
    auth_services(container).disabled.load()  # the disabled list read again: only the token check is left
    revived = client.get("/v1/register", headers=bearer(token))
    assert revived.status_code == 401, revived.text
    again = client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert again.status_code == 200, again.text
    assert client.get("/v1/register", headers=bearer(again.json()["access_token"])).status_code == 200


def test_a_fresh_sign_in_after_the_account_is_enabled_again_gets_a_token_that_works(
        client: TestClient, container: Container) -> None:
    """`users enable` in another process, then a sign-in before this process next reads its disabled list: the
    sign-in succeeds (the account is active), so the token it gets must work too, not a 401 until the list is
    read again (the account read that every person's token costs already says the account is active)."""
    person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)
    _as_another_process(container, _disabled)
    auth_services(container).disabled.load()  # this process knows the account is disabled
    _as_another_process(container, _enabled)
    signed_in = client.post("/v1/auth/login", json={"username": USERNAME, "password": PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    used = client.get("/v1/register", headers=bearer(signed_in.json()["access_token"]))
    assert used.status_code == 200, used.text


def test_a_persons_token_while_the_accounts_cannot_be_read_is_a_503_problem(
        client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the in-memory list for people, the account read is the only check: when it fails the request
    fails closed (503 problem+json), never a 500 and never a pass."""
    from sqlalchemy.exc import OperationalError

    token = person_token(client, container, USERNAME, "politie", ["privacy-officer"], PASSWORD)

    def unreachable(*_args: object) -> None:
        raise OperationalError("SELECT accounts", {}, Exception("connection refused"))

    monkeypatch.setattr(repository, "get_account", unreachable)
    refused = client.get("/v1/register", headers=bearer(token))
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_an_audited_action_of_a_person_reads_the_account_once(client: TestClient, container: Container) -> None:
    """The token check reads the account; the audit entry of the action names it by the id read then, not by a
    second read of the same row."""
    import json

    from sqlalchemy import select

    from audit.tables import audit_entries
    from tests.auth_helpers import account_id, issued_person_token

    token = issued_person_token(container, "contact-riec", "riec-aa", ["contact-point"])
    with statements_run(container.engine, reads_accounts) as seen:
        found = client.get("/v1/audit/subjects/subj-3f9a0c1d2e4b5a6978c0d1e2/disclosures", headers=bearer(token))
    assert found.status_code == 200, found.text
    assert len(seen) == 1
    with container.engine.connect() as connection:
        [canonical] = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "console.action")).scalars()
    entry = json.loads(canonical)["event"]
    assert entry["extra"] == {"action": "subject-lookup", "channel": "api", "disclosures": 0}
    assert entry["requester"] == {"org": "riec-aa", "system": None, "user": account_id(container, "contact-riec")}

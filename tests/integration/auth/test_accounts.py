"""People's accounts on SQLite and PostgreSQL: stored hashed, unique by username, disabled accounts cannot log in."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from gateway.auth import repository
from gateway.auth.accounts import LoginThrottle, authenticate_person, create_account
from gateway.auth.tables import accounts, login_failures
from gateway.clock import FixedClock
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import TooManyRequests, Unauthorized, Unprocessable

PASSWORD = "correct horse battery staple"

KEY = b"login-throttle-key-for-tests-32b"


def _count(container: Container) -> int:
    with container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(accounts)).scalar_one())


def test_accounts_are_stored_hashed_and_read_back_with_their_roles(container: Container) -> None:
    with transaction(container.sessions) as session:
        create_account(session, "po-gemeente", "gemeente-amsterdam", ["privacy-officer", "contact-point"],
                       PASSWORD, container.clock)
        create_account(session, "admin-lsp", "landelijk-steunpunt", ["administrator"], PASSWORD, container.clock)
    with transaction(container.sessions) as session:
        listed = repository.list_accounts(session)
    assert [a.username for a in listed] == ["admin-lsp", "po-gemeente"]
    officer = listed[1]
    assert officer.roles == ["contact-point", "privacy-officer"]
    assert officer.organisation == "gemeente-amsterdam"
    assert officer.active is True
    with container.engine.connect() as connection:
        row = connection.execute(select(accounts).where(accounts.c.username == "po-gemeente")).mappings().one()
    assert all(PASSWORD not in str(value) for value in row.values())
    assert row["password_hash"].startswith("$argon2id$")
    assert PasswordHasher().verify(row["password_hash"], PASSWORD)


def test_a_second_account_with_the_same_username_is_refused_and_writes_nothing(container: Container) -> None:
    with transaction(container.sessions) as session:
        create_account(session, "po-gemeente", "gemeente-amsterdam", ["privacy-officer"], PASSWORD,
                       container.clock)
    with pytest.raises(Unprocessable, match="already exists"), transaction(container.sessions) as session:
        create_account(session, "po-gemeente", "politie", ["administrator"], PASSWORD, container.clock)
    assert _count(container) == 1
    # The database enforces it too, for writers that skip the service's check.
    clash = repository.AccountRecord("another-id", "po-gemeente", "politie", ["administrator"], "x", True)
    with pytest.raises(IntegrityError), transaction(container.sessions) as session:
        repository.insert_account(session, clash, container.clock.now())
    assert _count(container) == 1


def test_bad_accounts_are_refused_and_write_nothing(container: Container) -> None:
    for password, roles, reason in [("short", ["privacy-officer"], "at least"), (PASSWORD, ["emperor"], "role"),
                                    (PASSWORD, [], "role")]:
        with pytest.raises(Unprocessable, match=reason), transaction(container.sessions) as session:
            create_account(session, "someone", "politie", roles, password, container.clock)
    assert _count(container) == 0


def test_a_disabled_account_cannot_log_in(client: TestClient, container: Container) -> None:
    with transaction(container.sessions) as session:
        create_account(session, "cp-gemeente", "gemeente-amsterdam", ["contact-point"], PASSWORD, container.clock)
    login = {"username": "cp-gemeente", "password": PASSWORD}
    assert client.post("/v1/auth/login", json=login).status_code == 200
    with transaction(container.sessions) as session:
        assert repository.set_account_active(session, "cp-gemeente", False) is True
        assert repository.set_account_active(session, "nobody", False) is False
    refused = client.post("/v1/auth/login", json=login)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # the subject is the answer's headers
def test_a_person_s_token_is_answered_for_no_cache_to_keep(client: TestClient, container: Container) -> None:
    """The access token ``/v1/auth/login`` answers is a credential, as the token endpoint's is: RFC 6749 §5.1
    asks ``Cache-Control: no-store`` (and ``Pragma: no-cache``) of every answer that carries one, so that no
    proxy or browser cache keeps it where the next user of a shared workstation or proxy finds it. The token
    endpoint said so; the people's login sent the token with no cache header at all."""
    with transaction(container.sessions) as session:
        create_account(session, "po-gemeente", "gemeente-amsterdam", ["privacy-officer"], PASSWORD, container.clock)
    answer = client.post("/v1/auth/login", json={"username": "po-gemeente", "password": PASSWORD})
    assert answer.status_code == 200
    assert answer.json()["access_token"]
    assert answer.headers.get("cache-control") == "no-store"
    assert answer.headers.get("pragma") == "no-cache"


def test_parallel_wrong_passwords_get_no_more_guesses_than_the_limit(container: Container) -> None:
    """Each attempt counts from its start: twenty guesses sent at once are not all checked before the
    first failure is recorded (the password check is slow on purpose, so they would be)."""
    with transaction(container.sessions) as session:
        create_account(session, "alice", "gemeente-amsterdam", ["privacy-officer"], "correct horse battery staple",
                       container.clock)
    throttle = LoginThrottle(container.sessions, container.clock, KEY, limit=5)
    start = threading.Barrier(20)

    def guess(number: int) -> str:
        start.wait()
        try:
            with transaction(container.sessions) as session:
                authenticate_person(session, "alice", f"wrong guess {number}", throttle)
        except Unauthorized:
            return "checked"
        except TooManyRequests:
            return "throttled"
        return "logged in"

    with ThreadPoolExecutor(20) as pool:
        outcomes = Counter(pool.map(guess, range(20)))
    assert outcomes == {"checked": 5, "throttled": 15}


def test_the_throttle_forgets_usernames_nobody_tried_for_a_window(container: Container) -> None:
    clock = FixedClock(container.clock.now())
    throttle = LoginThrottle(container.sessions, clock, KEY, limit=5)
    for number in range(11):
        throttle.attempt(f"guessed-name-{number}")
    clock.advance(timedelta(minutes=16))
    throttle.attempt("one-more")  # a name new to the table: the expired names go
    with container.engine.connect() as connection:
        kept = list(connection.execute(select(login_failures.c.username_key)).scalars())
    assert len(kept) == 1
    assert all("guessed" not in key and "one-more" not in key for key in kept)  # never the name itself


def test_a_login_is_logged_by_account_id_never_by_username(client: TestClient, container: Container) -> None:
    """People pick usernames (a name, an e-mail address); the application log holds references only."""
    from structlog.testing import capture_logs

    with transaction(container.sessions) as session:
        account = create_account(session, "jan.jansen", "gemeente-amsterdam", ["privacy-officer"], PASSWORD,
                                 container.clock)
    with capture_logs() as logs:
        assert client.post("/v1/auth/login", json={"username": "jan.jansen", "password": PASSWORD}).status_code == 200
    (logged,) = [entry for entry in logs if entry["event"] == "person_logged_in"]
    assert logged["account_id"] == account.id
    assert logged["organisation"] == "gemeente-amsterdam"
    assert "jan.jansen" not in repr(logs)


def _failure_rows(container: Container) -> int:
    with container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(login_failures)).scalar_one())


def test_one_address_brings_at_most_its_cap_of_new_usernames_per_window(container: Container) -> None:
    """Every distinct typed username was a row: one address could grow the table as fast as the rate limit let
    it. Beyond the cap its new usernames that are no account get no row (and are not counted); names with a row,
    and other addresses, go on."""
    clock = FixedClock(container.clock.now())
    throttle = LoginThrottle(container.sessions, clock, KEY, limit=5, per_source=3)
    flooding, other = "198.51.100.7", "203.0.113.9"
    for number in range(3):
        assert throttle.attempt(f"made-up-{number}", flooding)
    for number in range(3, 10):
        assert not throttle.attempt(f"made-up-{number}", flooding)
    assert _failure_rows(container) == 3
    throttle.attempt("made-up-0", flooding)  # a username it brought: counted as before
    throttle.attempt("made-up-3", other)  # another address is not held back
    assert _failure_rows(container) == 4
    throttle.attempt("made-up-3", flooding)  # not new any more: another address brought it
    clock.advance(timedelta(minutes=16))
    throttle.attempt("made-up-5", flooding)  # a new window: the cap counts afresh, the expired rows go
    assert _failure_rows(container) == 1
    with container.engine.connect() as connection:
        sources = list(connection.execute(select(login_failures.c.source_key)).scalars())
    assert all(flooding not in str(source) for source in sources)  # the address as an HMAC only


def test_the_cap_per_address_holds_at_the_login_endpoint(client: TestClient, container: Container) -> None:
    from gateway.auth.setup import auth_services

    auth = auth_services(container)
    auth.login_throttle = LoginThrottle(container.sessions, container.clock, KEY, per_source=2)
    answers = [client.post("/v1/auth/login", json={"username": f"nobody-{n}", "password": "a wrong password"})
               for n in range(4)]
    assert [a.status_code for a in answers] == [401] * 4  # beyond the cap: answered as any wrong password ...
    assert answers[2].json() == {**answers[0].json(), "instance": answers[2].json()["instance"]}
    assert _failure_rows(container) == 2  # ... and kept nowhere
    from gateway.console.tables import sign_in_windows

    with container.engine.connect() as connection:  # their audit windows name nobody: one per reason, not per name
        windows = connection.execute(select(sign_in_windows.c.reason, sign_in_windows.c.target)).all()
    assert sorted(windows) == [("wrong-credentials", "")]


def test_a_burst_of_new_usernames_from_one_address_gets_exactly_its_cap(container: Container) -> None:
    """Attempts at new usernames from one address, all at once: each used to count the address's rows without
    seeing the rows the others had not committed yet, so a burst got a few usernames past the cap."""
    throttle = LoginThrottle(container.sessions, container.clock, KEY, limit=5)  # the cap as configured: 32
    burst = 48
    start = threading.Barrier(burst)

    def attempt(number: int) -> str:
        start.wait()
        return "counted" if throttle.attempt(f"made-up-{number}", "198.51.100.7") else "beyond the cap"

    with ThreadPoolExecutor(burst) as pool:
        outcomes = Counter(pool.map(attempt, range(burst)))
    assert outcomes == {"counted": 32, "beyond the cap": burst - 32}
    assert _failure_rows(container) == 32


# -- one address shared by many people (NAT, a proxy): made-up names cannot lock them out -------------------------

NAT = 2  # the cap of new made-up names per address, small for the tests


def _login(client: TestClient, username: str, password: str) -> int:
    status: int = client.post("/v1/auth/login", json={"username": username, "password": password}).status_code
    return status


@pytest.fixture
def behind_one_address(client: TestClient, container: Container) -> TestClient:
    """The login endpoint with a cap of ``NAT`` new names per address (every test request comes from one), and
    the accounts alice, bob and carol."""
    from gateway.auth.setup import auth_services

    auth_services(container).login_throttle = LoginThrottle(container.sessions, container.clock, KEY, limit=5,
                                                            per_source=NAT)
    with transaction(container.sessions) as session:
        for name in ("alice", "bob", "carol"):
            create_account(session, name, "gemeente-amsterdam", ["privacy-officer"], PASSWORD, container.clock)
    return client


def test_made_up_names_from_an_address_do_not_lock_its_people_out(behind_one_address: TestClient,
                                                                  container: Container) -> None:
    """33 made-up usernames from an office's one address made every sign-in from it a 429, the right password too,
    for the window and again in the next. Beyond the cap made-up names are kept nowhere; an account signs in."""
    client = behind_one_address
    assert [_login(client, f"made-up-{n}", "a wrong password") for n in range(NAT + 3)] == [401] * (NAT + 3)
    assert _failure_rows(container) == NAT  # the bound on memory holds
    assert _login(client, "alice", PASSWORD) == 200
    assert _login(client, "bob", "a wrong password") == 401  # counted against bob (a row of its own) ...
    assert _login(client, "bob", PASSWORD) == 200  # ... and bob signs in


def test_guessing_one_accounts_password_stays_limited_from_an_address_beyond_its_cap(
        behind_one_address: TestClient) -> None:
    client = behind_one_address
    for n in range(NAT + 1):
        _login(client, f"made-up-{n}", "a wrong password")
    assert [_login(client, "alice", f"guess {n}") for n in range(7)] == [401] * 5 + [429] * 2
    assert _login(client, "alice", PASSWORD) == 429  # the limit holds for the right password too, until it passes


def test_a_spray_over_many_usernames_stays_limited(behind_one_address: TestClient, container: Container) -> None:
    """Each account gets its five guesses and no more, however many names the address sprays; the names that are
    no account are answered alike and kept only up to the cap."""
    client = behind_one_address
    names = ["alice", "bob", "carol", *(f"made-up-{n}" for n in range(10))]
    answers = {name: [_login(client, name, f"guess {n}") for n in range(6)] for name in names}
    for name in ("alice", "bob", "carol"):
        assert answers[name] == [401] * 5 + [429]
        assert _login(client, name, PASSWORD) == 429
    capped = [answers[f"made-up-{n}"] for n in range(NAT)]
    assert capped == [[401] * 5 + [429]] * NAT  # made-up names with a row: throttled as accounts are
    assert _failure_rows(container) == 3 + NAT

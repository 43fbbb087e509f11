"""People's accounts: privacy officers, administrators and the contact point (created by the CLI).

Roles map to API scopes in one table (``ROLE_SCOPES``) so that what a role may do is reviewable in one
place. Failed logins are throttled per username so passwords cannot be guessed online.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from datetime import timedelta

from sqlalchemy.orm import Session

from gateway.auth import repository
from gateway.auth.passwords import DUMMY_HASH, hash_secret, verify_secret
from gateway.auth.principal import Role, Scope
from gateway.clock import Clock
from gateway.errors import NotFound, TooManyRequests, Unauthorized, Unprocessable
from gateway.ids import new_id

ROLE_SCOPES: dict[Role, set[Scope]] = {
    Role.PRIVACY_OFFICER: {Scope.AUDIT_READ, Scope.ESCALATION, Scope.REGISTER_READ},
    Role.COORDINATING_PRIVACY_OFFICER: {Scope.AUDIT_READ, Scope.ESCALATION, Scope.REGISTER_READ},
    Role.ADMINISTRATOR: {Scope.ADMIN, Scope.ESCALATION, Scope.REGISTER_READ, Scope.AUDIT_READ},
    Role.CONTACT_POINT: {Scope.AUDIT_READ, Scope.REGISTER_READ},
}
MIN_PASSWORD_LENGTH = 12


def scopes_for_roles(roles: list[str]) -> list[str]:
    return sorted({scope.value for role in roles for scope in ROLE_SCOPES.get(Role(role), set())})


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def create_account(session: Session, username: str, organisation: str, roles: list[str], password: str,
                   clock: Clock) -> repository.AccountRecord:
    _check_password(password)
    unknown = [role for role in roles if role not in {r.value for r in Role}]
    if not roles or unknown:
        raise Unprocessable(f"unknown or missing role(s): {', '.join(unknown) or 'none given'}")
    if repository.get_account(session, username) is not None:
        raise Unprocessable(f"account `{username}` already exists")
    record = repository.AccountRecord(new_id(), username, organisation, sorted(set(roles)),
                                      hash_secret(password), True)
    repository.insert_account(session, record, clock.now())
    return record


def set_password(session: Session, username: str, password: str) -> None:
    """Give an account a new password (``wgs-gateway users set-password``): a forgotten or leaked one.

    The new hash also ends the account's console sessions signed in before (their cookie carries a
    fingerprint of the hash they were signed in with, :meth:`gateway.console.sessions.Sessions.credential_of`);
    its bearer tokens from ``/v1/auth/login`` stay valid until they expire (``access_token_ttl_seconds``),
    as after a change of roles: disable the account to stop those at once."""
    _check_password(password)
    if not repository.set_account_password(session, username, hash_secret(password)):
        raise NotFound(f"no account `{username}`")


class LoginThrottle:
    """At most ``limit`` failed logins per username per ``window``; then 429 until the window passes.

    An attempt counts as failed from the moment it starts (:meth:`attempt`) until it succeeds: were it
    counted only after the slow password check, parallel guesses would all pass the limit before the first
    failure was recorded. Usernames nobody tried for a window are forgotten, so guessing names cannot grow
    the table without bound."""

    SWEEP_ABOVE = 10_000

    def __init__(self, clock: Clock, limit: int = 5, window: timedelta = timedelta(minutes=15)) -> None:
        self._clock = clock
        self._limit = limit
        self._window = window
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    @property
    def window(self) -> timedelta:
        """How long failed logins count against a username."""
        return self._window

    def attempt(self, username: str) -> None:
        """Count an attempt before its password is checked, or raise 429 when the limit is reached."""
        now = self._clock.now().timestamp()
        with self._lock:
            if len(self._failures) > self.SWEEP_ABOVE:
                self._sweep(now)
            failures = self._failures[username]
            self._expire(failures, now)
            if len(failures) >= self._limit:
                retry = int(self._window.total_seconds() - (now - failures[0])) + 1
                raise TooManyRequests("too many failed logins; try again later",
                                      headers={"Retry-After": str(retry)})
            failures.append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and now - failures[0] > self._window.total_seconds():
            failures.popleft()

    def _sweep(self, now: float) -> None:
        for username in list(self._failures):
            self._expire(self._failures[username], now)
            if not self._failures[username]:
                del self._failures[username]


def authenticate_person(session: Session, username: str, password: str,
                        throttle: LoginThrottle) -> repository.AccountRecord:
    throttle.attempt(username)
    account = repository.get_account(session, username)
    valid = verify_secret(account.password_hash if account else DUMMY_HASH, password)
    if account is None or not valid or not account.active:
        raise Unauthorized("username or password is wrong, or the account is disabled", error="invalid_grant")
    throttle.succeeded(username)
    return account

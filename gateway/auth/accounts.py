"""People's accounts: privacy officers, administrators and the contact point (created by the CLI).

Roles map to API scopes in one table (``ROLE_SCOPES``) so that what a role may do is reviewable in one
place. Failed logins are throttled per username so passwords cannot be guessed online.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import repository
from gateway.auth.passwords import DUMMY_HASH, hash_secret, verify_secret
from gateway.auth.principal import Principal, Role, Scope
from gateway.clock import Clock
from gateway.db.engine import transaction
from gateway.errors import Forbidden, NotFound, TooManyRequests, Unauthorized, Unprocessable
from gateway.ids import new_id

ROLE_SCOPES: dict[Role, set[Scope]] = {
    Role.PRIVACY_OFFICER: {Scope.AUDIT_READ, Scope.ESCALATION, Scope.REGISTER_READ},
    Role.COORDINATING_PRIVACY_OFFICER: {Scope.AUDIT_READ, Scope.ESCALATION, Scope.REGISTER_READ},
    Role.ADMINISTRATOR: {Scope.ADMIN, Scope.ESCALATION, Scope.REGISTER_READ, Scope.AUDIT_READ},
    Role.CONTACT_POINT: {Scope.AUDIT_READ, Scope.REGISTER_READ},
}
MIN_PASSWORD_LENGTH = 12
_ROLES = frozenset(role.value for role in Role)


class UnknownRole(Forbidden):
    """An account whose ``roles`` hold a value this gateway does not know (written by SQL, or by another
    version): it gets no token and no console session. Fail closed: neither a 500 (``Role(value)`` raised at
    every sign-in) nor the scopes of the roles that are known, which is not what was meant either."""

    def __init__(self) -> None:
        super().__init__("the account has a role this gateway does not know; an administrator must correct it")


def roles_known(roles: list[str] | frozenset[str]) -> bool:
    return all(role in _ROLES for role in roles)


def scopes_for_roles(roles: list[str]) -> list[str]:
    """The API scopes of ``roles``; :class:`UnknownRole` (403) when one of them is no role."""
    if not roles_known(roles):
        raise UnknownRole
    return sorted({scope.value for role in roles for scope in ROLE_SCOPES[Role(role)]})


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
    fingerprint of the hash they were signed in with, :meth:`gateway.console.sessions.Sessions.credential_of`)
    and its bearer tokens from ``/v1/auth/login`` (theirs, :func:`credential_fingerprint`), at once."""
    _check_password(password)
    if not repository.set_account_password(session, username, hash_secret(password)):
        raise NotFound(f"no account `{username}`")


class LoginThrottle:
    """At most ``limit`` failed logins per username per ``window``; then 429 until the window passes.

    An attempt counts as failed from the moment it starts (:meth:`attempt`) until it succeeds: were it
    counted only after the slow password check, parallel guesses would all pass the limit before the first
    failure was recorded. The attempts are counted in the database, one after another per username (its
    row locked), so the limit holds over every gateway process together: kept in each process's memory, a
    client spreading its guesses over N workers had N times the limit. The username is kept only as an
    HMAC under a key of this installation (a typed username may be a password typed in the wrong field).
    Usernames nobody tried for a window are forgotten (whenever a new one is counted).

    One address (``source``, the peer address, kept as an HMAC too) may bring at most ``per_source`` usernames
    new to the table per window; a further new username from it is refused (429) without a row until the
    window passes, while usernames that have a row go on as before. Why: every distinct typed username was a
    row, so one address could grow the table as fast as the per-address rate limit let it, with names it made
    up. The usernames beyond the cap are one bucket with no attempts of its own: a bucket that allowed
    ``limit`` of them would give every address that reached the cap ``limit`` more guesses at any account
    nobody else had tried this window, past the limit per username. A real person shares that refusal only
    when their address (a shared NAT) typed ``per_source`` usernames that failed within the window; a
    successful sign-in removes its row, so it does not count."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, key: bytes, limit: int = 5,
                 window: timedelta = timedelta(minutes=15), per_source: int = 32) -> None:
        self._sessions = sessions
        self._clock = clock
        self._key = key
        self._limit = limit
        self._window = window
        self._per_source = per_source

    @property
    def window(self) -> timedelta:
        """How long failed logins count against a username."""
        return self._window

    def attempt(self, username: str, source: str | None = None) -> None:
        """Count an attempt before its password is checked, or raise 429 when the limit is reached (for the
        username, or for new usernames from ``source``: see the class)."""
        now = self._clock.now()
        started, horizon = now.timestamp(), (now - self._window).timestamp()
        name = self._username_key(username)
        source_key = self._hmac(b"source\0" + source.encode("utf-8", "surrogatepass")) if source else None
        with transaction(self._sessions) as session:
            locked = repository.lock_login_failures(session, name, now, now - self._window, source_key)
            if locked.new_from_source is not None and locked.new_from_source > self._per_source:
                # raised in the transaction: the new row is rolled back with it
                raise TooManyRequests("too many failed logins; try again later",
                                      headers={"Retry-After": str(int(self._window.total_seconds()))})
            failures = [t for t in locked.attempts if t >= horizon]
            if len(failures) >= self._limit:
                retry = int(self._window.total_seconds() - (started - failures[0])) + 1
                raise TooManyRequests("too many failed logins; try again later",
                                      headers={"Retry-After": str(retry)})
            repository.store_login_failures(session, name, [*failures, started], now)

    def succeeded(self, username: str) -> None:
        with transaction(self._sessions) as session:
            repository.forget_login_failures(session, self._username_key(username))

    def _username_key(self, username: str) -> str:
        return self._hmac(username.encode("utf-8", "surrogatepass"))

    def _hmac(self, value: bytes) -> str:
        return hmac.new(self._key, value, hashlib.sha256).hexdigest()


def authenticate_person(session: Session, username: str, password: str, throttle: LoginThrottle,
                        source: str | None = None) -> repository.AccountRecord:
    """The account of ``username`` if ``password`` is its password and it may sign in; ``source``: the peer
    address the attempt came from (:class:`LoginThrottle`)."""
    throttle.attempt(username, source)
    account = repository.get_account(session, username)
    valid = verify_secret(account.password_hash if account else DUMMY_HASH, password)
    if account is None or not valid or not account.active:
        raise Unauthorized("username or password is wrong, or the account is disabled", error="invalid_grant")
    if not roles_known(account.roles):  # only after the password: says nothing to someone guessing
        raise UnknownRole
    throttle.succeeded(username)
    return account


def credential_fingerprint(key: bytes, account: repository.AccountRecord) -> str:
    """What a person's access token says about the account it was issued for (its ``cred`` claim).

    Why: a token is valid for ``access_token_ttl_seconds`` by its signature alone, so a token issued before
    the password was replaced (it leaked), the roles or the organisation changed, or the account was disabled
    kept what it had. Each use compares this fingerprint of the account *now* (:func:`check_person_token`) with
    the token's, so any of those changes ends the account's tokens at once, in every process, without a table
    of tokens or a version column every writer of the account must remember to bump (an administrator's SQL
    too). Keyed with a key of this installation: a token is signed, not encrypted, and should not carry
    anything computed from the password hash alone. The account's ``access_generation`` (bumped by every
    disabling) is part of it, so enabling the account again does not bring back the tokens the disabling
    ended; left out while 0, so tokens issued before that column existed stay as they were."""
    generation = [account.access_generation] if account.access_generation else []
    material = json.dumps([account.id, account.organisation, sorted(account.roles), account.password_hash,
                           *generation])
    return hmac.new(key, material.encode(), hashlib.sha256).hexdigest()[:32]


def check_person_token(session: Session, principal: Principal, key: bytes) -> repository.AccountRecord:
    """The account the person's token was issued for; 401 unless it is as it was then, and active.

    One read by username (unique index) per request of a person; partner systems' tokens never come here.
    What was read is returned so that the request need not read it again (an audited action names the
    account's id). The problem names nobody: the caller may not be the person the token was issued to."""
    account = repository.get_account(session, principal.subject)
    # compare_digest takes ASCII text only: any other ``cred`` (a token only the gateway's key could sign, but
    # still) is a mismatch, not a TypeError and a 500
    if (account is None or not account.active or not principal.credential or not principal.credential.isascii()
            or not hmac.compare_digest(principal.credential, credential_fingerprint(key, account))):
        raise Unauthorized("the account this token was issued to is disabled, or its password, roles or "
                           "organisation changed since; sign in again")
    return account

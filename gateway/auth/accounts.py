"""People's accounts: privacy officers, administrators and the contact point (created by the CLI).

Roles map to API scopes in one table (``ROLE_SCOPES``) so that what a role may do is reviewable in one
place. Failed logins are throttled per username so passwords cannot be guessed online.

Why sign-in limits are per account, and the one per address is only a bound on memory: many people share one
address (an office behind NAT, a proxy not declared in ``FORWARDED_ALLOW_IPS``), so a limit that refuses an
address refuses all of them, and anyone who can make the address's limit run out locks them all out. The
throttle (:class:`LoginThrottle`) therefore counts failures per typed username, over every address and process:
five wrong guesses at an account and it is refused for the window, whoever guesses. Usernames that are no account
cost a row each too (so that a throttled name does not say which names exist), and that is what one address may
add only so many of per window; beyond that cap an address's made-up names are checked (against a fixed hash)
and answered as wrong, but kept nowhere, and an account's own sign-in is never held back by it. A spray over
many usernames from one address stays limited: each account to its five guesses, the rows of made-up names to
the cap, and the pace to the per-address rate limit and the password-check slots
(:mod:`gateway.auth.password_checks`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
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
MAX_PASSWORD_LENGTH = 256
"""The longest password sign-in accepts (``/v1/auth/login``, the console's form); a longer one is refused when
it is set, or the account could never sign in."""
MAX_USERNAME_LENGTH = 64
USERNAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
"""What sign-in accepts as a username (1 to 64 characters, no control character); an account is refused any
other, which no one could sign in with."""
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
    """Between the minimum and what sign-in accepts. Why the maximum: ``users add``/``set-password`` took a
    longer one (a generated passphrase) and said the account was ready; every sign-in with it was then refused
    as bad input (422) before the password was even checked."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Unprocessable(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Unprocessable(f"password must have at most {MAX_PASSWORD_LENGTH} characters (what sign-in accepts)")


def _check_username(username: str) -> None:
    """A name sign-in accepts; else the account is made and no one can ever sign in with it (the login's 422)."""
    if len(username) > MAX_USERNAME_LENGTH or not re.fullmatch(USERNAME_PATTERN, username):
        raise Unprocessable(f"a username has 1 to {MAX_USERNAME_LENGTH} characters and no control character "
                            "(what sign-in accepts)")


def create_account(session: Session, username: str, organisation: str, roles: list[str], password: str,
                   clock: Clock) -> repository.AccountRecord:
    _check_username(username)
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


class _BeyondCap(Exception):
    """A new username that is no account, from an address at its cap: its row is rolled back."""


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
    that are *no account* new to the table per window. Why: every distinct typed username was a row, so one
    address could grow the table as fast as the per-address rate limit let it, with names it made up. Beyond the
    cap such a name gets no row and is not counted (:meth:`attempt` answers False): it is no account, so no
    password can be guessed for it, and the caller answers it as a wrong password, after the same check.

    A username that *is* an account is never held to that cap, and its row does not count
    towards it: the cap used to refuse (429, before the password was checked) every username new to the table,
    so 33 made-up names typed from an address shared by an office (NAT, a proxy) locked every person there out
    of signing in for the window, right password or not, again and again at 33 requests a window. Accounts are
    few and their rows bounded by their number; each keeps its own limit, over every address.

    Why over-cap names are answered as wrong rather than refused: refusing only names that are no account would
    tell, in one request, which names exist. What is left of that: beyond the cap a made-up name is never
    throttled, so six wrong guesses at one name tell an account (429 at the sixth) from none (401) — each such
    probe costs an account five counted failures, an audit entry each, and locks it for the window, which is
    what its officers see; below the cap the two are answered alike."""

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

    def attempt(self, username: str, source: str | None = None) -> bool:
        """Count an attempt before its password is checked, or raise 429 when the username's limit is reached.
        False: not counted, a username that is no account beyond the cap of new names from ``source`` (see the
        class); the caller answers it as a wrong password."""
        source_key = None
        if source is not None and not self._is_account(username):
            source_key = self._hmac(b"source\0" + source.encode("utf-8", "surrogatepass"))
        now = self._clock.now()
        started, horizon = now.timestamp(), (now - self._window).timestamp()
        name = self._username_key(username)
        try:
            with transaction(self._sessions) as session:
                locked = repository.lock_login_failures(session, name, now, now - self._window, source_key)
                if locked.new_from_source is not None and locked.new_from_source > self._per_source:
                    raise _BeyondCap  # raised in the transaction: the new row is rolled back with it
                failures = [t for t in locked.attempts if t >= horizon]
                if len(failures) >= self._limit:
                    retry = int(self._window.total_seconds() - (started - failures[0])) + 1
                    raise TooManyRequests("too many failed logins; try again later",
                                          headers={"Retry-After": str(retry)})
                repository.store_login_failures(session, name, [*failures, started], now)
        except _BeyondCap:
            return False
        return True

    def _is_account(self, username: str) -> bool:
        """Whether ``username`` is an account: a transaction of its own, before the one that locks the username's
        row (on SQLite that one must write first; and the caller's session has no connection yet, so a thread
        holds one connection at a time)."""
        with transaction(self._sessions) as session:
            return repository.get_account(session, username) is not None

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

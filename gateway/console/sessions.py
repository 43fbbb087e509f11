"""Console sessions: a signed cookie, CSRF tokens, idle and absolute expiry, and signing out.

The cookie holds no roles and no organisation, only who signed in and when: every request loads the account
again, so a disabled account or a changed role takes effect at once. It is signed (itsdangerous, HMAC-SHA-1
over a key derived from the console secret) and sent ``HttpOnly`` and ``SameSite=Strict``; ``Secure`` follows
:attr:`ConsoleSettings.cookie_secure`, and a Secure cookie is a ``__Host-`` cookie, the only name then read
(:mod:`gateway.console.cookies`: a sibling subdomain cannot toss one in). Times come from the container's
clock, so expiry is tested without sleeping.

Security checklist, in the order :meth:`Sessions.read` applies it:

1. a cookie whose signature does not verify is ignored (as if there were none), and so is a Secure cookie
   without the ``__Host-`` prefix; the sign-in form's session (its CSRF token) is a cookie of its own, so
   showing the form never replaces a signed-in session;
2. a session idle for longer than ``idle_timeout_seconds`` or older than ``max_session_seconds`` is refused;
3. a session that was signed out is refused until its absolute expiry, in every gateway process and after a
   restart: the signed-out session ids are in the database (:mod:`gateway.console.signouts`), checked by
   :func:`gateway.console.pages.current_page` in the transaction that loads the account; so is a session
   signed in with a password that has since been replaced (:meth:`Sessions.credential_of`). A sign-out the
   database could not record (it was down) is refused by the process that made it at once, and recorded for
   the others when the database is back (:class:`PendingSignOuts`);
4. every POST carries the session's CSRF token in a form field, compared in constant time; a new token and
   a new session id are issued on sign-in (no session fixation), and a session signed in before is signed
   out then;
5. the sign-in form's token lives as long as the idle timeout (:meth:`Sessions.login_expired`): a form left
   open longer, or a copy of its cookie, is refused with the words "sign in again" and a fresh form. It lived
   as long as its cookie did, and a browser that restores its session keeps that for weeks.
"""

from __future__ import annotations

import hmac
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.console.cookies import ConsoleCookies, is_secure
from gateway.console.settings import ConsoleSettings
from gateway.console.signouts import record_sign_out
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.keyfiles import read_or_create
from gateway.periodic import PeriodicJob

log = structlog.get_logger("gateway.console.sessions")

COOKIE = "wgs_console"
"""The signed-in session's cookie (``__Host-wgs_console`` when Secure: :mod:`gateway.console.cookies`)."""
LOGIN_COOKIE = "wgs_console_login"
"""The sign-in form's cookie (its CSRF token). Apart from the session's: a browser does not send a
``SameSite=Strict`` cookie with a request from another site (a link in an e-mail, a forged form), and the
sign-in page answering such a request with a new anonymous session in the same cookie signed the person
out — any site could do that."""
_SALT = "wgs-console-session/1"

SessionState = Literal["active", "idle", "expired", "signed-out", "anonymous"]


@dataclass(frozen=True)
class SessionData:
    """What the session cookie says (signed): session id, CSRF token, the username once signed in, times."""

    sid: str
    csrf: str
    username: str | None
    issued: float
    seen: float
    credential: str = ""  # fingerprint of the password hash signed in with (Sessions.credential_of)

    def as_payload(self) -> dict[str, Any]:
        return {"sid": self.sid, "csrf": self.csrf, "u": self.username, "iat": self.issued, "seen": self.seen,
                "cred": self.credential}

    @classmethod
    def from_payload(cls, payload: Any) -> SessionData | None:
        if not isinstance(payload, dict):
            return None
        try:
            username = payload["u"]
            if username is not None and not isinstance(username, str):
                return None
            return cls(str(payload["sid"]), str(payload["csrf"]), username, float(payload["iat"]),
                       float(payload["seen"]), str(payload.get("cred", "")))
        except (KeyError, TypeError, ValueError):
            return None


def load_or_create_secret(directory: Path) -> str:
    """The session-signing key in the key store (0600), created on first use; shared by all processes."""
    secret = read_or_create(directory / "console-session.key", lambda: secrets.token_urlsafe(48).encode())
    return secret.decode().strip()


class PendingSignOuts:
    """The sign-outs this process made that the database has not recorded yet: session id → the session's
    absolute expiry (POSIX seconds). Only this process knows them, and only until it stops: they are recorded
    as soon as the database takes them (see :meth:`Sessions.sign_out`), and at most as many as sessions were
    signed out while it was down."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, sid: str, until: float) -> None:
        with self._lock:
            self._until[sid] = until

    def refuses(self, sid: str) -> bool:
        with self._lock:
            return sid in self._until

    def due(self, now: float) -> dict[str, float]:
        """Those still to record; those past their expiry are forgotten."""
        with self._lock:
            self._until = {sid: until for sid, until in self._until.items() if until > now}
            return dict(self._until)

    def __len__(self) -> int:
        with self._lock:
            return len(self._until)

    def recorded(self, sids: Iterable[str]) -> None:
        with self._lock:
            for sid in sids:
                self._until.pop(sid, None)


@dataclass
class Sessions:
    settings: ConsoleSettings
    serializer: URLSafeSerializer
    pending: PendingSignOuts = field(default_factory=PendingSignOuts)

    # -- reading -------------------------------------------------------------------------------

    def read(self, request: Request) -> SessionData | None:
        """The signed-in session of the request's cookie, if any (its state is :meth:`state`'s to judge)."""
        data = self._load(self.cookies(request).read(request, COOKIE))
        return data if data is not None and data.username is not None else None

    def read_login(self, request: Request) -> SessionData | None:
        """The sign-in form's session (its CSRF token), kept in a cookie of its own."""
        data = self._load(self.cookies(request).read(request, LOGIN_COOKIE))
        return data if data is not None and data.username is None else None

    def _load(self, raw: str | None) -> SessionData | None:
        if not raw:
            return None
        try:
            payload = self.serializer.loads(raw)
        except BadSignature:
            return None
        return SessionData.from_payload(payload)

    def state(self, data: SessionData | None, now: float) -> SessionState:
        """What the cookie alone says; whether an active session was signed out is the database's to say."""
        if data is None or data.username is None:
            return "anonymous"
        if now - data.issued > self.settings.max_session_seconds:
            return "expired"
        if now - data.seen > self.settings.idle_timeout_seconds:
            return "idle"
        return "active"

    def login_expired(self, data: SessionData, now: float) -> bool:
        """Whether the sign-in form's token ``data`` has outlived :attr:`login_seconds` (or comes from the
        future: a clock set back)."""
        return not 0 <= now - data.issued <= self.login_seconds

    def login_fresh(self, data: SessionData | None, now: float) -> bool:
        """Whether the sign-in form may be shown again with the token ``data``: it has at least half its
        lifetime left, so a form just shown is never refused as expired moments later, and two tabs opened
        within that half share one token."""
        return data is not None and not self.login_expired(data, now + self.login_seconds / 2)

    @property
    def login_seconds(self) -> int:
        """How long the sign-in form's token is taken: the idle timeout's length (no setting of its own), as
        long as a signed-in page may be left alone."""
        return self.settings.idle_timeout_seconds

    # -- making --------------------------------------------------------------------------------

    @staticmethod
    def anonymous(now: float) -> SessionData:
        return SessionData(secrets.token_urlsafe(18), secrets.token_urlsafe(32), None, now, now)

    @staticmethod
    def signed_in(username: str, credential: str, now: float) -> SessionData:
        """A fresh session id and CSRF token on sign-in, never the anonymous ones (session fixation)."""
        return SessionData(secrets.token_urlsafe(18), secrets.token_urlsafe(32), username, now, now, credential)

    def credential_of(self, password_hash: str, generation: int = 0) -> str:
        """A fingerprint of an account's password hash (and how often it was disabled), kept in the session
        cookie at sign-in.

        Why: a new password (``wgs-gateway users set-password``: it leaked) must end every session signed in
        with the old one, in every process, at once. The account is loaded on every request anyway, so its
        current hash is compared with the one the session was signed in with; no table of sessions is kept.
        The account's ``access_generation`` (bumped by every ``users disable``) is part of it, so ``users
        enable`` does not bring back a session the disabling ended; left out while 0, so sessions signed in
        before that column existed are kept. Keyed with the session-signing key: the cookie is signed, not
        encrypted, and should not carry anything computed from the hash alone."""
        key = self.serializer.secret_keys[-1]
        material = password_hash.encode() + (f"\0{generation}".encode() if generation else b"")
        return hmac.new(key, b"wgs-console-credential/1\0" + material, "sha256").hexdigest()[:32]

    def credential_matches(self, data: SessionData, password_hash: str, generation: int = 0) -> bool:
        return bool(data.credential) and hmac.compare_digest(data.credential,
                                                             self.credential_of(password_hash, generation))

    @staticmethod
    def touched(data: SessionData, now: float) -> SessionData:
        return replace(data, seen=now)

    def sign_out(self, database: sessionmaker[Session], data: SessionData, now: float) -> None:
        """Refuse this session from now on, in every process, until it would have expired anyway.

        This process refuses it first, before the database is written: should the write fail (the database
        down), the browser's cookie is deleted all the same but a copy of it would have kept working until it
        went idle. The sign-out stays pending here instead — refused by this process at once, and recorded
        for every process when the database is back (:meth:`record_pending`); raises as the write did."""
        self.pending.add(data.sid, data.issued + self.settings.max_session_seconds)
        self.record_pending(database, now)

    def record_pending(self, database: sessionmaker[Session], now: float) -> int:
        """Record the sign-outs pending in this process (how many); raises when the database cannot take
        them, and they stay pending. Those past their session's absolute expiry are dropped unrecorded: the
        cookie is refused by then anyway."""
        due = self.pending.due(now)
        if due:
            with transaction(database) as session:
                for sid, until in due.items():
                    record_sign_out(session, sid, datetime.fromtimestamp(until, UTC), datetime.fromtimestamp(now, UTC))
            self.pending.recorded(due)
        return len(due)

    # -- CSRF ----------------------------------------------------------------------------------

    @staticmethod
    def csrf_ok(data: SessionData | None, token: str) -> bool:
        return data is not None and bool(token) and hmac.compare_digest(data.csrf.encode(), token.encode())

    # -- cookies -------------------------------------------------------------------------------

    def cookies(self, request: Request) -> ConsoleCookies:
        """The console's cookies for ``request``: ``__Host-`` named at ``Path=/`` when Secure, else plain names
        at ``Path=/console`` (:mod:`gateway.console.cookies`)."""
        return ConsoleCookies(is_secure(request, self.settings.cookie_secure))

    def write(self, response: Response, request: Request, data: SessionData) -> None:
        """A signed-in session goes into :data:`COOKIE` (and the sign-in form's cookie is dropped), the sign-in
        form's into :data:`LOGIN_COOKIE`: answering a request that came without the session cookie never
        overwrites it."""
        cookies = self.cookies(request)
        if data.username is None:  # the browser drops it with its token's lifetime; the server checks the time
            cookies.set(response, LOGIN_COOKIE, self.serializer.dumps(data.as_payload()), max_age=self.login_seconds)
        else:
            cookies.set(response, COOKIE, self.serializer.dumps(data.as_payload()))
        if data.username is not None and cookies.has(request, LOGIN_COOKIE):
            cookies.delete(response, LOGIN_COOKIE)

    def clear(self, response: Response, request: Request) -> None:
        self.cookies(request).delete(response, COOKIE)


_install_lock = threading.Lock()


CONSOLE_SETTINGS = "console_settings"
"""The container service holding the :class:`ConsoleSettings` read (and validated) by ``create_app``."""


def install_console(container: Container, settings: ConsoleSettings | None = None) -> Sessions:
    """Set up the console's session machinery (done lazily on the first console request when not called).

    Without ``settings`` it uses those ``create_app`` read at start-up, never the environment as it is now:
    a bad ``WGS_CONSOLE_`` value has stopped the start already, so a request cannot meet it (no 500)."""
    settings = settings or container.service(CONSOLE_SETTINGS, ConsoleSettings)
    secret = settings.session_secret or load_or_create_secret(container.settings.key_dir)
    sessions = Sessions(settings, URLSafeSerializer(secret, salt=_SALT))
    container.services["console"] = sessions
    return sessions


def console_sessions(container: Container) -> Sessions:
    found = container.services.get("console")
    if isinstance(found, Sessions):
        return found
    with _install_lock:
        found = container.services.get("console")
        return found if isinstance(found, Sessions) else install_console(container)


RETRY_SECONDS = 10.0
"""How often a process tries again to record its pending sign-outs (:class:`PendingSignOuts`) when no console
request does it first; nothing is read or written while none are pending."""
_RETRIES = "console_sign_out_retries"


async def record_pending_sign_outs(container: Container) -> None:
    """Record this process's pending sign-outs, if any (each console request, and the timer of
    :func:`start_sign_out_retries`). A database still down is logged, and they stay pending: refused here."""
    sessions = container.services.get("console")  # not installed: no console request, so nothing pending
    if not isinstance(sessions, Sessions) or not sessions.pending:
        return
    try:
        recorded = await run_in_threadpool(sessions.record_pending, container.sessions,
                                           container.clock.now().timestamp())
    except SQLAlchemyError as exc:
        log.warning("console_sign_outs_pending", pending=len(sessions.pending), error_type=type(exc).__name__)
        return
    if recorded:
        log.info("console_sign_outs_recorded", recorded=recorded)


def start_sign_out_retries(container: Container) -> None:
    """Start this process's timer that records the sign-outs the database could not take (the app's start-up):
    without it, the other processes would take a copied cookie of such a session until this process happened
    to get a console request after the database came back."""
    if container.services.get(_RETRIES) is None:
        timer = PeriodicJob(lambda: record_pending_sign_outs(container), RETRY_SECONDS, name=_RETRIES)
        container.services[_RETRIES] = timer
        timer.start()


async def close_sign_out_retries(container: Container) -> None:
    """Stop the timer and try the pending sign-outs once more (the app's shutdown): what is still pending then
    is lost with this process's memory, and logged."""
    timer = container.services.pop(_RETRIES, None)
    if isinstance(timer, PeriodicJob):
        await timer.aclose()
    await record_pending_sign_outs(container)
    sessions = container.services.get("console")
    if isinstance(sessions, Sessions) and sessions.pending:
        log.error("console_sign_outs_lost", lost=len(sessions.pending))

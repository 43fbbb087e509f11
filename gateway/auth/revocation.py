"""Disabled partner systems and accounts are refused on every route within seconds, not only at login.

An access token is a signed JWT that stays valid until it expires (``access_token_ttl_seconds``, 300 by
default), and a verified token is remembered. Disabling a client or an account (``wgs-gateway clients
disable``, ``users disable``: another process) therefore used to stop only the next token; one already
issued kept working. Each gateway process now keeps the set of disabled clients and accounts, re-read from
the database every ``revocation_refresh_seconds``, and refuses (401) any token whose subject is in it.
A person's token is checked against the account itself on every use instead
(:func:`gateway.auth.accounts.check_person_token`), which is never behind a ``users enable`` as the list is.

The same read brings the key generation of every client that was re-keyed (``clients add`` on an existing
client: :func:`gateway.auth.repository.upsert_client`) or disabled (:func:`gateway.auth.repository.
set_client_active`), and a system's token issued under an older generation (its ``gen`` claim) is refused
(401) too: after a key or secret leaked, giving the client a new one ends the tokens got with the old one within
the same interval, still without a database read per request; and enabling a disabled client again lets it
get new tokens without bringing back the ones the disabling ended.

Fail closed: when the set has not been read for ``max(60, 6 * interval)`` seconds (database gone), nobody
can be shown not to be disabled, so every token is refused with 503 until a read succeeds again; the
readiness probe reports the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth import repository
from gateway.auth.principal import Principal
from gateway.db.engine import transaction
from gateway.errors import ServiceUnavailable, Unauthorized
from gateway.periodic import PeriodicJob

log = structlog.get_logger("gateway.auth.revocation")

MIN_STALE_SECONDS = 60.0


class DisabledPrincipals:
    def __init__(self, sessions: sessionmaker[Session], refresh_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._monotonic = monotonic
        self.stale_after = max(MIN_STALE_SECONDS, 6 * refresh_seconds)
        self._disabled: dict[str, frozenset[str]] = {"system": frozenset(), "person": frozenset()}
        self._generations: dict[str, int] = {}  # client id -> key generation, for those re-keyed at least once
        self._read_at: float | None = None  # monotonic time of the last successful read; None: never read
        self._timer = PeriodicJob(self.refresh, refresh_seconds, name="disabled_principals_refresh")

    def load(self) -> None:
        """Read the disabled clients and accounts now (blocking: a worker thread, or start-up)."""
        with transaction(self._sessions) as session:
            clients, people = repository.disabled_subjects(session)
            generations = repository.client_generations(session)
        newly = (clients - self._disabled["system"]) | (people - self._disabled["person"])
        rekeyed = [client for client, generation in generations.items()
                   if generation > self._generations.get(client, 0)]
        self._disabled = {"system": clients, "person": people}
        self._generations = generations
        self._read_at = self._monotonic()
        if newly:
            log.info("principals_disabled", count=len(newly))
        if rekeyed:
            log.info("clients_rekeyed", count=len(rekeyed))

    async def refresh(self) -> None:
        await asyncio.to_thread(self.load)

    def start(self) -> None:
        """A first read before the first request (a failure is logged; requests get 503 until a read
        succeeds), then a read every interval."""
        try:
            self.load()
        except Exception as exc:
            log.error("disabled_principals_refresh_failed", error_type=type(exc).__name__)
        self._timer.start()

    async def aclose(self) -> None:
        await self._timer.aclose()

    def check(self, principal: Principal) -> None:
        """401 if the token's client or account is disabled, or the client was re-keyed or disabled after the
        token was issued; 503 if that cannot be known (fail closed)."""
        self.ensure_current()
        if principal.subject in self._disabled.get(principal.kind, frozenset()):
            raise Unauthorized("the client or account this token was issued to is disabled")
        if principal.kind == "system" and principal.generation < self._generations.get(principal.subject, 0):
            raise Unauthorized("the client this token was issued to was given new credentials, or disabled, since; "
                               "get a new token")

    def ensure_current(self) -> None:
        read_at = self._read_at
        if read_at is None or self._monotonic() - read_at > self.stale_after:
            raise ServiceUnavailable("cannot confirm that the caller is not disabled (the account list could "
                                     "not be read); the request is refused", headers={"Retry-After": "5"})

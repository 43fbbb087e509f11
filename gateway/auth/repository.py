"""All SQL of authentication: clients, the assertion replay guard, accounts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.auth.tables import accounts, login_failures, oauth_clients, used_client_assertions
from gateway.db.upsert import insert_on_conflict


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    organisation: str
    auth_method: str
    secret_hash: str | None
    jwks: dict[str, Any] | None
    scopes: list[str]
    active: bool
    key_generation: int = 0  # how often the client was given new credentials, disabled or bound to certificates
    # (:func:`upsert_client`, :func:`set_client_active`, :func:`set_client_certificate_bound`)
    certificate_bound: bool = False  # tokens only over a TLS client certificate, bound to it (RFC 8705)
    certificate_pins: tuple[str, ...] = ()  # a bound client's certificates (thumbprints); none: any the proxy verified


@dataclass(frozen=True)
class AccountRecord:
    id: str
    username: str
    organisation: str
    roles: list[str]
    password_hash: str
    active: bool
    access_generation: int = 0  # how often the account was disabled (:func:`set_account_active`)


def get_client(session: Session | Connection, client_id: str) -> ClientRecord | None:
    row = session.execute(select(oauth_clients).where(oauth_clients.c.client_id == client_id)).mappings().first()
    if row is None:
        return None
    return ClientRecord(row["client_id"], row["organisation"], row["auth_method"], row["secret_hash"],
                        row["jwks"], list(row["scopes"]), bool(row["active"]), int(row["key_generation"]),
                        bool(row["certificate_bound"]), tuple(row["certificate_pins"] or ()))


def upsert_client(session: Session | Connection, record: ClientRecord, created_at: datetime) -> bool:
    """Insert the client, or give an existing one the record's credentials and scopes; False (nothing written)
    when the existing one is no longer in the state ``record.active`` says it was read in.

    Why: the state is read before this write (:func:`gateway.auth.clients._active_after`), and a
    ``clients disable`` committing in between was undone by writing the state read back: the client was
    enabled again, without the audit entry every enabling has. Only ``clients enable``/``disable`` change it.

    Giving an existing client its credentials again bumps its ``key_generation``: the tokens issued before
    (under the old, perhaps leaked, key or secret, or with scopes it no longer has) are refused from then on
    (:class:`gateway.auth.revocation.DisabledPrincipals`).

    ``record.certificate_bound`` binds a new client or an existing one; an existing client stays bound when the
    record does not say so (new credentials never drop the binding by the way: unbinding is its own, audited
    step, :func:`set_client_certificate_bound`). Likewise ``record.certificate_pins`` replace an existing
    client's pins, and none keep them (re-keying never widens which certificates it may use)."""
    values: dict[str, Any] = {"organisation": record.organisation, "auth_method": record.auth_method,
                              "secret_hash": record.secret_hash, "jwks": record.jwks, "scopes": record.scopes}
    if get_client(session, record.client_id) is None:
        session.execute(oauth_clients.insert().values(client_id=record.client_id, created_at=created_at,
                                                      active=record.active, certificate_bound=record.certificate_bound,
                                                      certificate_pins=_stored_pins(record.certificate_pins),
                                                      **values))
        return True
    if record.certificate_bound:
        values["certificate_bound"] = True
    if record.certificate_pins:
        values["certificate_pins"] = _stored_pins(record.certificate_pins)
    result = session.execute(update(oauth_clients).where(
        oauth_clients.c.client_id == record.client_id, oauth_clients.c.active.is_(record.active)).values(
        key_generation=oauth_clients.c.key_generation + 1, **values))
    return bool(getattr(result, "rowcount", 0))


def list_clients(session: Session) -> list[ClientRecord]:
    rows = session.execute(select(oauth_clients.c.client_id).order_by(oauth_clients.c.client_id)).scalars().all()
    return [client for client_id in rows if (client := get_client(session, client_id)) is not None]


def set_client_active(session: Session | Connection, client_id: str, active: bool, *,
                      changing: bool = False) -> bool:
    """Enable or disable a client; False if there is none. A connection too: an operator's change commits in the
    audit log's transaction, together with its entry (:mod:`gateway.auth.access_changes`). ``changing``: only
    if it is not in that state already (False otherwise), so a change made meanwhile is never audited twice.

    Disabling bumps the client's ``key_generation``, as a re-key does: the tokens it got before are refused
    for good, not only while it is disabled. Why: a system is disabled because something is wrong with it (a
    leaked key, a compromised host), and enabling it again brought its unexpired tokens back with it, whoever
    held them. Bumped in the same statement as ``active``: whoever reads the client enabled again reads the
    new generation too (:class:`gateway.auth.revocation.DisabledPrincipals` reads both in one transaction)."""
    bump = {} if active else {"key_generation": oauth_clients.c.key_generation + 1}
    where = [oauth_clients.c.client_id == client_id] + ([oauth_clients.c.active.is_(not active)] if changing else [])
    result = session.execute(update(oauth_clients).where(*where).values(active=active, **bump))
    return bool(getattr(result, "rowcount", 0))


def set_client_certificate_bound(session: Session | Connection, client_id: str, bound: bool,
                                 pins: Sequence[str] = (), *, generation: int | None = None) -> bool:
    """Bind a client's tokens to TLS client certificates (``bound``), pinned to the certificates of ``pins``
    (thumbprints; none: any the proxy verified), or no longer (which clears its pins); False when there is no
    such client or it is in that state already (a change made meanwhile is never audited twice). With
    ``generation`` (binding only), when it is no longer at that key generation instead: that is how a change of
    a bound client's pins tells a change made meanwhile, as every binding, re-pinning, re-key and disabling
    bumps it. A connection too, as :func:`set_client_active`.

    Binding and re-pinning bump the client's ``key_generation``: the tokens it got before carry no certificate
    thumbprint, or one of a certificate no longer pinned, and a copy of one would otherwise go on working until
    it expired. Unbinding bumps nothing: the bound tokens it got before still ask for their certificate, which
    is stricter, not looser."""
    guard = (oauth_clients.c.certificate_bound.is_(not bound) if generation is None
             else oauth_clients.c.key_generation == generation)
    bump = {"key_generation": oauth_clients.c.key_generation + 1} if bound else {}
    result = session.execute(update(oauth_clients).where(oauth_clients.c.client_id == client_id, guard).values(
        certificate_bound=bound, certificate_pins=_stored_pins(pins) if bound else None, **bump))
    return bool(getattr(result, "rowcount", 0))


def _stored_pins(pins: Sequence[str]) -> list[str] | None:
    """None rather than an empty list: one way to say "not pinned" in the column."""
    return sorted(set(pins)) or None


def remember_assertion(session: Session, client_id: str, jti: str, expires_at: datetime, now: datetime) -> bool:
    """Record a client assertion's jti; False if it was seen before (a replay).

    Runs in its own savepoint so a replay does not poison the surrounding transaction; expired jtis are
    purged on the way (they can no longer be replayed because the assertion itself has expired).
    """
    session.execute(delete(used_client_assertions).where(used_client_assertions.c.expires_at < now))
    try:
        with session.begin_nested():
            session.execute(used_client_assertions.insert().values(client_id=client_id, jti=jti,
                                                                   expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def get_account(session: Session, username: str) -> AccountRecord | None:
    row = session.execute(select(accounts).where(accounts.c.username == username)).mappings().first()
    if row is None:
        return None
    return AccountRecord(row["id"], row["username"], row["organisation"], list(row["roles"]),
                         row["password_hash"], bool(row["active"]), int(row["access_generation"]))


def insert_account(session: Session, record: AccountRecord, created_at: datetime) -> None:
    session.execute(accounts.insert().values(
        id=record.id, username=record.username, organisation=record.organisation, roles=record.roles,
        password_hash=record.password_hash, active=record.active, created_at=created_at))


def list_accounts(session: Session) -> list[AccountRecord]:
    names = session.execute(select(accounts.c.username).order_by(accounts.c.username)).scalars().all()
    return [account for name in names if (account := get_account(session, name)) is not None]


def disabled_subjects(session: Session) -> tuple[frozenset[str], frozenset[str]]:
    """The client ids and the usernames that are disabled (tokens name them as ``sub``)."""
    clients = session.execute(select(oauth_clients.c.client_id).where(oauth_clients.c.active.is_(False))).scalars()
    people = session.execute(select(accounts.c.username).where(accounts.c.active.is_(False))).scalars()
    return frozenset(clients), frozenset(people)


def client_generations(session: Session) -> dict[str, int]:
    """The key generation of every client that was re-keyed or disabled at least once (a token without ``gen``
    is of 0)."""
    rows = session.execute(select(oauth_clients.c.client_id, oauth_clients.c.key_generation)
                           .where(oauth_clients.c.key_generation > 0))
    return {str(client_id): int(generation) for client_id, generation in rows}


def set_account_active(session: Session | Connection, username: str, active: bool, *,
                       changing: bool = False) -> bool:
    """Enable or disable an account; False if there is none (a connection too, as :func:`set_client_active`).

    Disabling bumps the account's ``access_generation``, which its tokens' fingerprint includes: a token
    issued before the disabling is not valid again when the account is enabled again. ``changing`` as for
    :func:`set_client_active`."""
    bump = {} if active else {"access_generation": accounts.c.access_generation + 1}
    where = [accounts.c.username == username] + ([accounts.c.active.is_(not active)] if changing else [])
    result = session.execute(update(accounts).where(*where).values(active=active, **bump))
    return bool(getattr(result, "rowcount", 0))


def set_account_password(session: Session, username: str, password_hash: str) -> bool:
    result = session.execute(update(accounts).where(accounts.c.username == username)
                             .values(password_hash=password_hash))
    return bool(getattr(result, "rowcount", 0))


_FAILURES_OF = login_failures.c.username_key == bindparam("the_username_key")


@dataclass(frozen=True)
class LockedFailures:
    """The failed logins counted for a username, and, when its row is new, how many usernames the same
    address typed first since ``forget_before`` (this one included)."""

    attempts: list[float]
    new_from_source: int | None


def lock_login_failures(session: Session, username_key: str, now: datetime, forget_before: datetime,
                        source_key: str | None = None) -> LockedFailures:
    """The start times of the failed logins counted for ``username_key``, its row locked (made if missing)
    until the transaction ends, so attempts on one username are counted one after another in every gateway
    process. The insert comes first: on SQLite the transaction then holds the write lock from its first
    statement (a read first could not take it later when another process wrote meanwhile). A new row is
    where the rows of usernames nobody tried since ``forget_before`` are removed, and names its ``source_key``
    (the caller refuses, and so rolls back, a new row of an address that typed too many already); the count of
    the address's rows is taken under a lock per address (:func:`_lock_source`), so that it is exact when
    attempts from one address come at once."""
    inserted = session.execute(insert_on_conflict(session, login_failures).values(
        username_key=username_key, attempts=[], last_at=now, source_key=source_key).on_conflict_do_nothing(
        index_elements=[login_failures.c.username_key]).returning(login_failures.c.username_key)).first()
    from_source = None
    if inserted is not None:
        session.execute(delete(login_failures).where(login_failures.c.last_at < forget_before))
        if source_key is not None:
            _lock_source(session, source_key)
            from_source = session.execute(select(func.count()).select_from(login_failures).where(
                login_failures.c.source_key == source_key)).scalar_one()
    attempts = session.execute(select(login_failures.c.attempts).where(_FAILURES_OF).with_for_update(),
                               {"the_username_key": username_key}).scalar_one()
    return LockedFailures([float(started) for started in attempts], from_source)


_SOURCE_LOCK_SPACE = int.from_bytes(b"WGSl", "big", signed=True)
"""The first key of the PostgreSQL advisory locks of :func:`_lock_source` (the two-key form: a key space of its
own, apart from the audit log's one-key lock)."""

_LOCK_SOURCE = text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:source AS integer))")


def _lock_source(session: Session, source_key: str) -> None:
    """Count the new rows of one address one transaction after another, until the transaction ends.

    Why: on PostgreSQL (READ COMMITTED) attempts at new usernames from one address at once each counted the
    address's rows without the others' rows, not committed yet, and a burst got past the cap (measured: 39 to
    45 of 48 at a cap of 32). Under this lock, taken after the transaction's own row is inserted, each count
    sees every row that an earlier holder admitted. Its holder waits for nothing else after taking it, so it
    cannot deadlock. Two addresses whose keys share the 32 bits only wait for each other. SQLite needs none:
    the insert before it took the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_LOCK_SOURCE, {"space": _SOURCE_LOCK_SPACE, "source": int(source_key[:8], 16) - 2**31})


def store_login_failures(session: Session, username_key: str, attempts: list[float], now: datetime) -> None:
    session.execute(update(login_failures).where(_FAILURES_OF).values(attempts=attempts, last_at=now),
                    {"the_username_key": username_key})


def forget_login_failures(session: Session, username_key: str) -> None:
    session.execute(delete(login_failures).where(_FAILURES_OF), {"the_username_key": username_key})

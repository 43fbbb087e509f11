"""An operator enabling or disabling a partner system's client or a person's account: an audit entry each.

Who may get tokens is part of what a privacy officer reviews (access-rights management is what the reports
on insider misuse ask to be watched), and the CLI is the only place it changes. Each change is a
``console.action`` entry with ``channel: cli`` and the action ``client-enabled``, ``client-disabled``,
``account-enabled`` or ``account-disabled``, under the organisation of the client or account (so its
officers see it) and naming it by reference: the system id, or the account's id, never a username (it
could be an e-mail address). The operator has no account; the entry has no ``user``. Disabling ends the tokens
issued before it for good: enabling again lets the client or account get new ones, never revives those
(:func:`gateway.auth.repository.set_client_active`, :func:`~gateway.auth.repository.set_account_active`).

The change commits in the audit log's own transaction, together with its entry: there is no change without
its entry and no entry without its change. When the log cannot be written (no checkpoint key yet, the
database refuses) nothing changes and the command fails. A change to the state the client or account is
already in writes nothing.

Giving an existing client new credentials (``wgs-gateway clients add`` again: a new key or secret, after a
leak or a routine rotation) is such a change too, ``client-rekeyed`` (with the client's new
``key_generation``), made the same way: it ends the tokens the client got before
(:mod:`gateway.auth.revocation`), and whoever re-keyed a system in the middle of an incident should be on
record. Registering a new client writes no entry (it has no tokens yet, and is the first step of setting up).

Binding a client's tokens to TLS client certificates (RFC 8705, :mod:`gateway.auth.certificate_binding`) or
no longer is one too: ``client-certificate-bound`` (with the client's new ``key_generation``: binding ends the
unbound tokens it got before) and ``client-certificate-unbound``. Unbinding makes a stolen token usable
without the certificate's key again, which is what an officer should be able to see was done, and by when.
A re-key that binds (``clients add --certificate-bound``) says so in its ``client-rekeyed`` entry.

Pinning a bound client to certificates (:mod:`gateway.auth.certificate_pins`), or changing its pins, is a
``client-certificate-bound`` entry too, with ``certificate_thumbprints`` (the pins now in force) beside the new
``key_generation``; a re-key that pins has them in its ``client-rekeyed`` entry. Thumbprints only: nothing of
a certificate (its subject may name a person) is in an entry. Unbinding clears the pins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import JsonValue
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from audit import AuditEvent, AuditLog, AuditWriteError
from audit.log import prepare
from gateway.auditing.actions import action_event
from gateway.auditing.setup import CheckpointKeyError, writing_signer
from gateway.auth import repository
from gateway.auth.certificate_pins import checked_pins
from gateway.auth.clients import new_secret, register_key_client, register_secret_client
from gateway.clock import Clock
from gateway.db.engine import make_session_factory, transaction
from gateway.errors import Conflict, NotFound, ServiceUnavailable, Unprocessable
from gateway.register.model import Register
from gateway.settings import Settings

Kind = Literal["client", "account"]


@dataclass(frozen=True)
class AccessChange:
    """What a command did: ``changed`` False when the client or account was in that state already."""

    kind: Kind
    name: str
    active: bool
    changed: bool


def set_active(settings: Settings, engine: Engine, kind: Kind, name: str, active: bool) -> AccessChange:
    """Enable (``active``) or disable the client of system ``name`` or the account of username ``name``,
    audited (see the module's docstring). Raises :class:`NotFound` when there is none, and
    :class:`ServiceUnavailable` when the change cannot be audited (then nothing changed)."""
    with transaction(make_session_factory(engine)) as session:
        if kind == "client":
            client = repository.get_client(session, name)
            found = (client.organisation, client.active, {"client": name}) if client else None
        else:
            account = repository.get_account(session, name)
            found = (account.organisation, account.active, {"account_id": account.id}) if account else None
    if found is None:
        raise NotFound(f"no {kind} {name}")
    organisation, was_active, reference = found
    if was_active == active:
        return AccessChange(kind, name, active, changed=False)
    event = action_event(None, f"{kind}-{'enabled' if active else 'disabled'}", organisation=organisation,
                         account_id=None, details=dict(reference), channel="cli")

    def change(connection: Connection) -> None:
        setter = repository.set_client_active if kind == "client" else repository.set_account_active
        # Gone, or changed by another operator, since it was read: nothing is written (their change has its entry)
        if not setter(connection, name, active, changing=True):
            raise Conflict(f"the {kind} {name} changed meanwhile; nothing was changed")

    audited(settings, engine, event, change)
    return AccessChange(kind, name, active, changed=True)


def set_certificate_bound(settings: Settings, engine: Engine, system_id: str, bound: bool,
                          pins: Sequence[str] = ()) -> bool:
    """Bind (``bound``) the client of system ``system_id`` to TLS client certificates or unbind it, audited (see
    the module's docstring); False (nothing written) when it is in that state already. ``pins`` (thumbprints)
    bind it to those certificates only, replacing the pins it had; none leave a bound client's pins as they are
    (an operator binding again does not widen it by the way) and bind an unbound one to any certificate the
    proxy verified. Raises :class:`NotFound` when there is no such client, :class:`Unprocessable` for pins that
    are no thumbprints or pins given to unbind, :class:`Conflict` when it changed meanwhile and
    :class:`ServiceUnavailable` when the change cannot be audited (then nothing changed)."""
    if pins and not bound:
        raise Unprocessable("unbinding clears a client's pinned certificates; give none")
    wanted = checked_pins(pins)
    with transaction(make_session_factory(engine)) as session:
        client = repository.get_client(session, system_id)
    if client is None:
        raise NotFound(f"no client {system_id}")
    if client.certificate_bound == bound and (not wanted or wanted == client.certificate_pins):
        return False
    details: dict[str, JsonValue] = {"client": system_id}
    if bound:
        details["key_generation"] = client.key_generation + 1
    if wanted:
        details["certificate_thumbprints"] = list(wanted)
    event = action_event(None, f"client-certificate-{'bound' if bound else 'unbound'}",
                         organisation=client.organisation, account_id=None, details=details, channel="cli")

    def change(connection: Connection) -> None:
        # Binding: only at the generation read, so that pins changed, a re-key or a disabling meanwhile are never
        # overwritten unseen (and the entry names the generation it makes); unbinding: only a client still bound
        generation = client.key_generation if bound else None
        if not repository.set_client_certificate_bound(connection, system_id, bound, wanted, generation=generation):
            raise Conflict(f"the client {system_id} changed meanwhile; nothing was changed")

    audited(settings, engine, event, change)
    return True


def audited(settings: Settings, engine: Engine, event: AuditEvent, change: Callable[[Connection], None]) -> None:
    """Make ``change`` in the audit log's transaction that writes ``event``: both or neither."""
    try:
        log = AuditLog(engine, writing_signer(engine, settings))
    except CheckpointKeyError as exc:
        raise ServiceUnavailable(f"the change cannot be audited, so it was not made: {exc}") from exc
    try:
        log.append_prepared([prepare(event)], within=lambda connection, _receipts: change(connection))
    except AuditWriteError as exc:
        raise ServiceUnavailable("the change cannot be audited (the audit log could not be written), so it was "
                                 "not made") from exc


@dataclass(frozen=True)
class Registration:
    """What ``clients add`` did: the client as stored, its new secret (shown once; None for a key), and whether
    it gave an existing client new credentials (``rekeyed``: its earlier tokens end)."""

    record: repository.ClientRecord
    secret: str | None
    rekeyed: bool


def register_client(settings: Settings, engine: Engine, register: Register, system_id: str, scopes: list[str],
                    clock: Clock, *, jwks: dict[str, Any] | None = None, keep_disabled: bool = False,
                    certificate_bound: bool = False, certificate_pins: Sequence[str] = ()) -> Registration:
    """Register a partner system's client with a public JWKS (``jwks``) or a new client secret, or give an
    existing one new credentials, audited as ``client-rekeyed`` (see the module's docstring). Raises what
    :func:`register_key_client` / :func:`register_secret_client` raise (nothing written then), and
    :class:`ServiceUnavailable` when a re-key cannot be audited (then nothing changed). ``certificate_pins``
    (thumbprints, with ``certificate_bound``) pin it to those certificates, replacing the pins it had.

    A new secret is hashed here, before any transaction: a re-key's write runs under the audit log's write
    lock, which the slow hash would hold for every other audited write (:class:`~gateway.auth.clients.NewSecret`)."""
    credential = None if jwks is not None else new_secret()

    def write(session: Session | Connection) -> tuple[repository.ClientRecord, str | None]:
        if jwks is not None:
            return register_key_client(session, register, system_id, scopes, jwks, clock,
                                       keep_disabled=keep_disabled, certificate_bound=certificate_bound,
                                       certificate_pins=certificate_pins), None
        return register_secret_client(session, register, system_id, scopes, clock, credential,
                                      keep_disabled=keep_disabled, certificate_bound=certificate_bound,
                                      certificate_pins=certificate_pins)

    with transaction(make_session_factory(engine)) as session:
        existing = repository.get_client(session, system_id)
        if existing is None:
            record, secret = write(session)
            return Registration(record, secret, rekeyed=False)
    generation = existing.key_generation + 1
    details: dict[str, JsonValue] = {"client": system_id, "key_generation": generation}
    if certificate_bound and not existing.certificate_bound:
        details["certificate_bound"] = True
    if certificate_pins:
        details["certificate_thumbprints"] = list(checked_pins(certificate_pins))
    event = action_event(None, "client-rekeyed", organisation=register.organisation_of_system(system_id)
                         or existing.organisation, account_id=None, channel="cli", details=details)
    written: list[tuple[repository.ClientRecord, str | None]] = []

    def change(connection: Connection) -> None:
        _, secret = write(connection)
        stored = repository.get_client(connection, system_id)
        # Re-keyed by another operator too since it was read: this entry would name the wrong generation
        if stored is None or stored.key_generation != generation:
            raise Conflict(f"the client {system_id} was given new credentials meanwhile; nothing was changed")
        written.append((stored, secret))

    audited(settings, engine, event, change)
    [(record, secret)] = written
    return Registration(record, secret, rekeyed=True)

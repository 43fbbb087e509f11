"""An operator enabling or disabling a partner system's client or a person's account: an audit entry each.

Who may get tokens is part of what a privacy officer reviews (access-rights management is what the reports
on insider misuse ask to be watched), and the CLI is the only place it changes. Each change is a
``console.action`` entry with ``channel: cli`` and the action ``client-enabled``, ``client-disabled``,
``account-enabled`` or ``account-disabled``, under the organisation of the client or account (so its
officers see it) and naming it by reference: the system id, or the account's id, never a username (it
could be an e-mail address). The operator has no account; the entry has no ``user``.

The change commits in the audit log's own transaction, together with its entry: there is no change without
its entry and no entry without its change. When the log cannot be written (no checkpoint key yet, the
database refuses) nothing changes and the command fails. A change to the state the client or account is
already in writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Engine

from audit import AuditLog, AuditWriteError, Receipt
from audit.log import prepare
from gateway.auditing.actions import action_event
from gateway.auditing.setup import CheckpointKeyError, audit_signer
from gateway.auth import repository
from gateway.db.engine import make_session_factory, transaction
from gateway.errors import Conflict, NotFound, ServiceUnavailable
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
    try:
        log = AuditLog(engine, audit_signer(settings))
    except CheckpointKeyError as exc:
        raise ServiceUnavailable(f"the change cannot be audited, so it was not made: {exc}") from exc

    def change(connection: Connection, _receipts: list[Receipt]) -> None:
        setter = repository.set_client_active if kind == "client" else repository.set_account_active
        # Gone, or changed by another operator, since it was read: nothing is written (their change has its entry)
        if not setter(connection, name, active, changing=True):
            raise Conflict(f"the {kind} {name} changed meanwhile; nothing was changed")

    try:
        log.append_prepared([prepare(event)], within=change)
    except AuditWriteError as exc:
        raise ServiceUnavailable("the change cannot be audited (the audit log could not be written), so it was "
                                 "not made") from exc
    return AccessChange(kind, name, active, changed=True)

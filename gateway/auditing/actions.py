"""The audit entry of one action a person takes while reviewing: a sign-in, an export, a data-subject lookup
(``console.action``), whichever way it came — the console (``channel: console``) or the API (``channel: api``).

What an entry says: the action, its outcome, the organisation and the *account id* (a reference, not a name or
a username, which could be an e-mail address) and, for look-ups and exports, counts and register references
only. Never a pseudonym that was looked up, never a typed username or password.

Why here and not in the console: who looked up whose disclosures is accountable however it was asked. The
lookup through the API left no entry while the console's did, so a contact point could look up any subject
unseen by going around the console.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import JsonValue

from audit import AuditEvent, EventType, ExportSummary, Requester, Status
from gateway.auditing.setup import audit_services
from gateway.auth import repository as accounts
from gateway.auth.principal import Principal
from gateway.container import Container
from gateway.db.engine import transaction


def _trace(request: Request | None) -> tuple[str, str | None]:
    """The request's trace id and span (a new trace when there is no request: a summary written by a timer)."""
    state = request.state if request is not None else None
    return getattr(state, "trace_id", None) or secrets.token_hex(16), getattr(state, "span_id", None)


EXACT_INTEGER = 2**53 - 1
"""The largest integer every JSON reader keeps exact, and so the largest the log takes in an entry."""


def position(value: int | None) -> int | str | None:
    """An index or tree size as an entry's ``extra`` can hold it: beyond :data:`EXACT_INTEGER` as its decimal digits.

    Why: the sizes and indices a failed check names come from the rows it failed on, and a row planted at such a
    size (an INSERT, which the append-only triggers allow; the log itself never gets there) made the entry
    reporting the failure invalid: the report was a 500 and left no trace (the console's "verify now" went on
    showing the previous run's result)."""
    return str(value) if value is not None and abs(value) > EXACT_INTEGER else value


def action_event(request: Request | None, action: str, *, organisation: str | None, account_id: str | None,
                 ok: bool = True, details: dict[str, JsonValue] | None = None,
                 channel: str = "console") -> AuditEvent:
    """The entry of one action, in the request's trace."""
    trace_id, parent = _trace(request)
    return AuditEvent(
        event_type=EventType.CONSOLE_ACTION, trace_id=trace_id, span_id=secrets.token_hex(8), parent_span_id=parent,
        status=Status.OK if ok else Status.ERROR,
        requester=Requester(org=organisation, user=account_id) if organisation else None,
        extra={"action": action, "channel": channel, **(details or {})})


def export_event(summary: ExportSummary) -> AuditEvent:
    """The entry of ``wgs-gateway audit export`` (``console.action``, ``export``, channel ``cli``): who asked what
    of whom is in the file, so handing it out is itself a disclosure. The operator has no account (no
    ``user``, as for the other CLI actions) and the export has no filter: it is always the log's first
    ``entries`` entries, which the root its checkpoint signs pins down; the file by its SHA-256 digest, never
    its path (a home directory may carry a person's name). Naming no organisation, it is seen by the
    partnerships' coordinating privacy officers (:func:`gateway.auditing.review.scope_of`)."""
    return action_event(None, "export", organisation=None, account_id=None, channel="cli",
                        details={"export": "audit-log", "entries": summary.tree_size,
                                 "checkpoints": summary.checkpoint_count, "root_hash": summary.root_hash.hex(),
                                 "sha256": summary.sha256})


def rejection_event(request: Request | None, reason: str, *, organisation: str | None, system: str | None,
                    details: dict[str, JsonValue] | None = None) -> AuditEvent:
    """The ``auth.rejected`` entry of a token request the token endpoint refused (``reason``: the OAuth error
    code), naming the partner system it named when that is one, under its organisation; in the request's trace."""
    trace_id, parent = _trace(request)
    return AuditEvent(
        event_type=EventType.AUTH_REJECTED, trace_id=trace_id, span_id=secrets.token_hex(8), parent_span_id=parent,
        status=Status.ERROR, requester=Requester(org=organisation, system=system) if organisation else None,
        extra={"endpoint": "token", "reason": reason, **(details or {})})


def account_id_of(container: Container, principal: Principal) -> str | None:
    """The account id of a person's principal (whose subject is the username), None if there is no such
    account (blocking: call it in a worker thread)."""
    with transaction(container.sessions) as session:
        found = accounts.get_account(session, principal.subject)
    return found.id if found is not None else None


async def record_api_action(container: Container, request: Request, principal: Principal, action: str, *,
                            details: dict[str, JsonValue] | None = None) -> None:
    """Durably log one action a person took through the API; raises :class:`audit.AuditWriteError` when that
    fails (the caller answers nothing then: fail closed).

    The account's id is the one the token check of this request read (``principal.account_id``, set only by
    :class:`gateway.auth.dependencies.TokenRequired`); read again only for a principal that did not come from
    that check."""
    account_id = principal.account_id or await run_in_threadpool(account_id_of, container, principal)
    event = action_event(request, action, organisation=principal.organisation, account_id=account_id,
                         details=details, channel="api")
    await audit_services(container).writer.record([event])

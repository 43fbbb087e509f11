"""Every console action is itself an audit entry (``console.action``), written through the gateway's
group-commit writer like every other entry: sign-in (also a failed one), sign-out, downloads and
data-subject look-ups.

What an entry says: the action, its outcome, the organisation and the *account id* (a reference, not a name
or a username, which could be an e-mail address) and, for look-ups and exports, counts and register
references only. Never a pseudonym that was looked up, never a typed username or password: a failed sign-in
names the account that was tried only when the typed username is one (its id and organisation, so that its
organisation's privacy officer sees it), and nothing at all otherwise (see :mod:`gateway.console.signins`).
"""

from __future__ import annotations

import secrets

from fastapi import Request
from pydantic import JsonValue

from audit import AuditEvent, EventType, Requester, Status
from gateway.auditing.setup import audit_services
from gateway.container import Container


def action_event(request: Request | None, action: str, *, organisation: str | None, account_id: str | None,
                 ok: bool = True, details: dict[str, JsonValue] | None = None, channel: str = "console"
                 ) -> AuditEvent:
    """The entry of one console action, in the request's trace (a new trace when there is no request: a
    summary written by a timer). ``channel`` says where: the console, or ``api`` for a failed sign-in at
    ``POST /v1/auth/login`` (see :mod:`gateway.console.signins`)."""
    state = request.state if request is not None else None
    trace_id = getattr(state, "trace_id", None) or secrets.token_hex(16)
    parent = getattr(state, "span_id", None)
    return AuditEvent(
        event_type=EventType.CONSOLE_ACTION, trace_id=trace_id, span_id=secrets.token_hex(8), parent_span_id=parent,
        status=Status.OK if ok else Status.ERROR,
        requester=Requester(org=organisation, user=account_id) if organisation else None,
        extra={"action": action, "channel": channel, **(details or {})})


async def record_action(container: Container, request: Request, action: str, *, organisation: str | None,
                        account_id: str | None, ok: bool = True, details: dict[str, JsonValue] | None = None
                        ) -> None:
    """Durably log one console action; raises :class:`audit.AuditWriteError` when that fails (fail closed)."""
    event = action_event(request, action, organisation=organisation, account_id=account_id, ok=ok, details=details)
    await audit_services(container).writer.record([event])

"""Every console action is itself an audit entry (``console.action``), written through the gateway's
group-commit writer like every other entry: sign-in (also a failed one), sign-out, downloads and
data-subject look-ups.

What an entry says: the action, its outcome, the organisation and the *account id* (a reference, not a name
or a username, which could be an e-mail address) and, for look-ups and exports, counts and register
references only. Never a pseudonym that was looked up, never a typed username or password: a failed sign-in
is recorded without any identifier.
"""

from __future__ import annotations

import secrets

from fastapi import Request
from pydantic import JsonValue

from audit import AuditEvent, EventType, Requester, Status
from gateway.auditing.setup import audit_services
from gateway.container import Container


async def record_action(container: Container, request: Request, action: str, *, organisation: str | None,
                        account_id: str | None, ok: bool = True, details: dict[str, JsonValue] | None = None
                        ) -> None:
    """Durably log one console action; raises :class:`audit.AuditWriteError` when that fails (fail closed)."""
    state = request.state
    trace_id = getattr(state, "trace_id", None) or secrets.token_hex(16)
    parent = getattr(state, "span_id", None)
    event = AuditEvent(
        event_type=EventType.CONSOLE_ACTION, trace_id=trace_id, span_id=secrets.token_hex(8), parent_span_id=parent,
        status=Status.OK if ok else Status.ERROR,
        requester=Requester(org=organisation, user=account_id) if organisation else None,
        extra={"action": action, "channel": "console", **(details or {})})
    await audit_services(container).writer.record([event])

"""Every console action is itself an audit entry (``console.action``), written through the gateway's
group-commit writer like every other entry: sign-in (also a failed one), sign-out, downloads and
data-subject look-ups. The entry itself is built by :func:`gateway.auditing.actions.action_event`, which the
API's own review actions share (``channel: api``).

A failed sign-in names the account that was tried only when the typed username is one (its id and
organisation, so that its organisation's privacy officer sees it), and nothing at all otherwise (see
:mod:`gateway.console.signins`).
"""

from __future__ import annotations

from fastapi import Request
from pydantic import JsonValue

from gateway.auditing.actions import action_event
from gateway.auditing.setup import audit_services
from gateway.container import Container

__all__ = ["action_event", "record_action"]


async def record_action(container: Container, request: Request, action: str, *, organisation: str | None,
                        account_id: str | None, ok: bool = True, details: dict[str, JsonValue] | None = None
                        ) -> None:
    """Durably log one console action; raises :class:`audit.AuditWriteError` when that fails (fail closed)."""
    event = action_event(request, action, organisation=organisation, account_id=account_id, ok=ok, details=details)
    await audit_services(container).writer.record([event])

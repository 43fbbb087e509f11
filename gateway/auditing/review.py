"""``GET /v1/audit/entries``: privacy officers review the entries they are entitled to.

A privacy officer sees entries where their organisation is requester or holder; a coordinating privacy
officer also sees every entry of the partnerships their organisation coordinates (from the register).
Other roles and partner systems see nothing here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from audit.review import MAX_PAGE, EntryFilter, EntryScope, list_entries
from gateway.auth.dependencies import require_scope
from gateway.auth.principal import Principal, Role, Scope
from gateway.container import Container
from gateway.deps import get_container
from gateway.errors import Forbidden
from gateway.register.setup import register_service

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class EntryView(BaseModel):
    index: int
    recorded_at: datetime
    entry: dict[str, Any]


class EntryPage(BaseModel):
    entries: list[EntryView]
    next_cursor: int | None


def scope_of(principal: Principal, container: Container) -> EntryScope:
    if principal.kind != "person" or not principal.roles & {Role.PRIVACY_OFFICER, Role.COORDINATING_PRIVACY_OFFICER}:
        raise Forbidden("only privacy officers review audit entries")
    partnerships: frozenset[str] = frozenset()
    if Role.COORDINATING_PRIVACY_OFFICER in principal.roles:
        register = register_service(container).current()
        partnerships = frozenset(pid for pid, p in register.partnerships.items()
                                 if p.coordinating_privacy_officer == principal.organisation)
    return EntryScope(organisations=frozenset({principal.organisation}), partnerships=partnerships)


@router.get("/entries", response_model=EntryPage, summary="Audit entries you may see, filtered, oldest first",
            responses={403: {"description": "Not a privacy officer"}})
async def entries(partnership: str | None = None, purpose: str | None = None, organisation: str | None = None,
                  event_type: str | None = None, decision: str | None = None, since: datetime | None = None,
                  until: datetime | None = None, subject: str | None = Query(None, max_length=1024),
                  cursor: int = Query(-1, ge=-1, description="Return entries after this index."),
                  limit: int = Query(100, ge=1, le=MAX_PAGE),
                  principal: Principal = Depends(require_scope(Scope.AUDIT_READ)),
                  container: Container = Depends(get_container)) -> EntryPage:
    scope = scope_of(principal, container)
    wanted = EntryFilter(partnership, purpose, organisation, event_type, decision, since, until, subject)
    page = await run_in_threadpool(list_entries, container.engine, scope, wanted, after=cursor, limit=limit)
    return EntryPage(entries=[EntryView(index=e.index, recorded_at=e.recorded_at, entry=e.entry)
                              for e in page.entries], next_cursor=page.next_cursor)

"""Reading the log for review: filtered, scoped, cursor-paginated listings of entries.

Scope is part of the query, not a filter applied afterwards: a privacy officer's listing is built with
``EntryScope`` so that entries of other organisations never leave the database.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, or_, select

from audit.store import subject_key
from audit.tables import audit_entries

MAX_PAGE = 500


@dataclass(frozen=True)
class EntryScope:
    """Which entries a reviewer may see: where one of ``organisations`` is a party, or any entry of one of
    ``partnerships`` (the coordinating privacy officer's view)."""

    organisations: frozenset[str] = frozenset()
    partnerships: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EntryFilter:
    partnership: str | None = None
    purpose: str | None = None
    organisation: str | None = None
    event_type: str | None = None
    decision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    subject: str | None = None


@dataclass(frozen=True)
class ReviewedEntry:
    index: int
    recorded_at: datetime
    entry: dict[str, Any]


@dataclass(frozen=True)
class Page:
    entries: list[ReviewedEntry] = field(default_factory=list)
    next_cursor: int | None = None


def list_entries(engine: Engine, scope: EntryScope, wanted: EntryFilter, *, after: int = -1,
                 limit: int = 100) -> Page:
    """Entries with ``log_index > after`` in index order, at most ``limit`` (≤ MAX_PAGE)."""
    limit = max(1, min(limit, MAX_PAGE))
    t = audit_entries.c
    visible = []
    if scope.organisations:
        visible += [t.requester_org.in_(sorted(scope.organisations)), t.holder_org.in_(sorted(scope.organisations))]
    if scope.partnerships:
        visible.append(t.partnership.in_(sorted(scope.partnerships)))
    if not visible:
        return Page()
    conditions = [or_(*visible), t.log_index > after]
    if wanted.partnership:
        conditions.append(t.partnership == wanted.partnership)
    if wanted.purpose:
        conditions.append(t.purpose == wanted.purpose)
    if wanted.organisation:
        conditions.append(or_(t.requester_org == wanted.organisation, t.holder_org == wanted.organisation))
    if wanted.event_type:
        conditions.append(t.event_type == wanted.event_type)
    if wanted.decision:
        conditions.append(t.decision == wanted.decision)
    if wanted.since:
        conditions.append(t.recorded_at >= wanted.since)
    if wanted.until:
        conditions.append(t.recorded_at < wanted.until)
    if wanted.subject:
        conditions += [t.subject_key == subject_key(wanted.subject), t.subject_pseudonym == wanted.subject]
    query = (select(t.log_index, t.recorded_at, t.canonical).where(and_(*conditions))
             .order_by(t.log_index).limit(limit + 1))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    entries = [ReviewedEntry(int(row.log_index), row.recorded_at, json.loads(row.canonical)) for row in rows[:limit]]
    return Page(entries, entries[-1].index if len(rows) > limit else None)

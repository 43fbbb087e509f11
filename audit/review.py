"""Reading the log for review: filtered, scoped, cursor-paginated listings of entries.

Scope is part of the query, not a filter applied afterwards: a privacy officer's listing is built with
``EntryScope`` so that entries of other organisations never leave the database. :func:`scope_condition` is
that one condition; the anomaly flags (:mod:`audit.anomaly`) count through it too, so they cannot be
computed from entries the reviewer could not list.

Times are UTC throughout. SQLite keeps ``recorded_at`` as naive UTC text and compares bounds as text, so a
bound's offset would be ignored there; PostgreSQL hands values back in the server's time zone. Hence bounds
are turned into UTC before they reach the query (:func:`utc_bound`), and values read back are turned into
UTC (:func:`utc`) before anything is grouped by month or day.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, false, or_, select

from audit.events import CASE_REQUESTER, EventType
from audit.store import subject_key, utc
from audit.tables import audit_entries

MAX_PAGE = 500

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def utc_bound(moment: datetime) -> datetime:
    """A ``since``/``until`` bound in UTC, for comparing with ``recorded_at`` on any engine.

    A bound at the edge of the calendar (9999-12-31T23:59-14:00, 0001-01-01T00:00+14:00) has no UTC
    equivalent; it lies beyond every entry, so it is clamped to the first or last representable moment
    rather than raising (which would surface as a 500)."""
    try:
        return utc(moment)
    except OverflowError:
        offset = moment.utcoffset() or timedelta(0)
        return _LATEST if offset < timedelta(0) else _EARLIEST


@dataclass(frozen=True)
class EntryScope:
    """Which entries a reviewer may see: where one of ``organisations`` is a party, any entry of one of
    ``partnerships`` (the coordinating privacy officer's view), and the entries of the ``unattributed``
    event types that name no party at all (no requester organisation, no holder, no partnership).

    Those last are facts about the gateway as a whole (a register change, a sign-in on a username that is
    no account): scoped by organisation they would reach no reviewer. Which types a reviewer sees is the
    gateway's decision (:func:`gateway.auditing.review.scope_of`); this package only keeps it exact: an
    entry that names any party is never shown through ``unattributed``."""

    organisations: frozenset[str] = frozenset()
    partnerships: frozenset[str] = frozenset()
    unattributed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EntryFilter:
    partnership: str | None = None
    purpose: str | None = None
    organisation: str | None = None
    event_type: str | None = None
    decision: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    subject: str | tuple[str, ...] | None = None
    """A subject's partnership-domain pseudonym, or every form it takes in the log (one per key version)."""


@dataclass(frozen=True)
class ReviewedEntry:
    index: int
    recorded_at: datetime
    entry: dict[str, Any]


@dataclass(frozen=True)
class Page:
    entries: list[ReviewedEntry] = field(default_factory=list)
    next_cursor: int | None = None


def scope_condition(scope: EntryScope, *, as_holder: bool = True) -> ColumnElement[bool] | None:
    """The entries ``scope`` may see: its organisations' own entries, or any entry of its partnerships;
    None when it sees nothing.

    An organisation's own entries are those where it is the requester or the holder, and the steps of an
    escalation case about its request (:data:`audit.events.CASE_REQUESTER`): such a step's requester is
    whoever took it, and the holder is the other party, yet the requesting organisation is a party to the
    case and sees the case itself. That member is found in the entry's canonical text, where RFC 8785 escapes
    every quote inside a string, so no text elsewhere in an entry can pose as it.

    ``as_holder=False`` leaves out entries that are the organisations' only as holder (or as a case's
    party). Anomaly flags are about requesting actors, and a holder sees only the part of another
    organisation's activity that came its way — not a baseline to judge that organisation's actors by. It
    only ever narrows the scope, and leaves out the ``unattributed`` entries too (they have no actor)."""
    t = audit_entries.c
    visible = _party_of(sorted(scope.organisations), as_holder=as_holder) if scope.organisations else []
    if scope.partnerships:
        visible.append(t.partnership.in_(sorted(scope.partnerships)))
    if scope.unattributed and as_holder:
        visible.append(and_(t.event_type.in_(sorted(scope.unattributed)), t.requester_org.is_(None),
                            t.holder_org.is_(None), t.partnership.is_(None)))
    return or_(*visible) if visible else None


def _party_of(organisations: list[str], *, as_holder: bool = True) -> list[ColumnElement[bool]]:
    """Entries where one of ``organisations`` is a party (see :func:`scope_condition`), as alternatives: the
    officer's own scope, and the ``organisation`` filter within it, mean the same by it."""
    t = audit_entries.c
    parties: list[ColumnElement[bool]] = [t.requester_org.in_(organisations)]
    if as_holder:
        parties.append(t.holder_org.in_(organisations))
        parties.append(and_(t.event_type == EventType.ESCALATION_STEP.value, or_(*(
            t.canonical.contains(_case_requester(org), autoescape=True) for org in organisations))))
    return parties


def _case_requester(organisation: str) -> str:
    """How :data:`audit.events.CASE_REQUESTER` naming ``organisation`` reads in an entry's RFC 8785 text (the
    closing quote included, so that ``gemeente-a`` does not match ``gemeente-ab``)."""
    return f'"{CASE_REQUESTER}":{json.dumps(organisation, ensure_ascii=False)}'


def _scoped(scope: EntryScope, wanted: EntryFilter) -> list[ColumnElement[bool]] | None:
    """The reviewer's scope plus the partnership, purpose and time filters; None when nothing is visible."""
    t = audit_entries.c
    visible = scope_condition(scope)
    if visible is None:
        return None
    conditions: list[ColumnElement[bool]] = [visible]
    if wanted.partnership:
        conditions.append(t.partnership == wanted.partnership)
    if wanted.purpose:
        conditions.append(t.purpose == wanted.purpose)
    if wanted.since:
        conditions.append(t.recorded_at >= utc_bound(wanted.since))
    if wanted.until:
        conditions.append(t.recorded_at < utc_bound(wanted.until))
    return conditions


def _subject_is(subject: str | Collection[str]) -> ColumnElement[bool]:
    """Entries naming ``subject``, or any one of its forms (by the indexed key, then the exact pseudonym); no
    forms, no entry (an empty ``or_`` would be no condition at all: every subject's entries)."""
    t = audit_entries.c
    forms = sorted({subject} if isinstance(subject, str) else set(subject))
    if not forms:
        return false()
    return or_(*(and_(t.subject_key == subject_key(form), t.subject_pseudonym == form) for form in forms))


def list_entries(engine: Engine, scope: EntryScope, wanted: EntryFilter, *, after: int = -1,
                 limit: int = 100) -> Page:
    """Entries with ``log_index > after`` in index order, at most ``limit`` (≤ MAX_PAGE)."""
    limit = max(1, min(limit, MAX_PAGE))
    t = audit_entries.c
    conditions = _scoped(scope, wanted)
    if conditions is None:
        return Page()
    conditions.append(t.log_index > after)
    if wanted.organisation:
        conditions.append(or_(*_party_of([wanted.organisation])))
    if wanted.event_type:
        conditions.append(t.event_type == wanted.event_type)
    if wanted.decision:
        conditions.append(t.decision == wanted.decision)
    if wanted.subject or isinstance(wanted.subject, tuple):  # forms none of which to look for: nothing found
        conditions.append(_subject_is(wanted.subject))
    query = (select(t.log_index, t.recorded_at, t.canonical).where(and_(*conditions))
             .order_by(t.log_index).limit(limit + 1))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    entries = [ReviewedEntry(int(row.log_index), utc(row.recorded_at), json.loads(row.canonical))
               for row in rows[:limit]]
    return Page(entries, entries[-1].index if len(rows) > limit else None)


@dataclass(frozen=True)
class Statistic:
    """Counts for one group (partnership, purpose, participant, month) — the accountability report's rows."""

    partnership: str
    purpose: str
    participant: str
    month: str
    requests: int = 0
    allows: int = 0
    narrowings: int = 0
    denials: int = 0
    escalations: int = 0
    refusals: int = 0


_DECISION_COLUMN = {"allow": "allows", "narrowed": "narrowings", "deny": "denials", "escalate": "escalations"}


def statistics(engine: Engine, scope: EntryScope, wanted: EntryFilter) -> list[Statistic]:
    """Requests, allows, narrowings, denials, escalations and holder refusals per partnership, purpose,
    requesting participant and month (UTC), within the reviewer's scope."""
    t = audit_entries.c
    conditions = _scoped(scope, wanted)
    if conditions is None:
        return []
    conditions.append(t.event_type.in_(["exchange.requested", "policy.decided", "holder.refused"]))
    query = select(t.event_type, t.decision, t.partnership, t.purpose, t.requester_org, t.recorded_at).where(
        and_(*conditions))
    counts: dict[tuple[str, str, str, str], dict[str, int]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            key = (row.partnership or "", row.purpose or "", row.requester_org or "",
                   utc(row.recorded_at).strftime("%Y-%m"))
            group = counts.setdefault(key, dict.fromkeys(("requests", "allows", "narrowings", "denials",
                                                          "escalations", "refusals"), 0))
            if row.event_type == "exchange.requested":
                group["requests"] += 1
            elif row.event_type == "holder.refused":
                group["refusals"] += 1
            elif row.decision in _DECISION_COLUMN:
                group[_DECISION_COLUMN[row.decision]] += 1
    return [Statistic(partnership=key[0], purpose=key[1], participant=key[2], month=key[3], **values)
            for key, values in sorted(counts.items())]


def subject_disclosures(engine: Engine, partnerships: frozenset[str],
                        subject: str | Collection[str]) -> list[ReviewedEntry]:
    """Every disclosure about one subject in the given partnerships — the contact point's answer to a
    data-subject request. ``subject``: its partnership-domain pseudonym, or every form it takes in the log
    (one per key version: the caller knows the keys, this package does not)."""
    t = audit_entries.c
    if not partnerships or not subject:
        return []
    query = (select(t.log_index, t.recorded_at, t.canonical)
             .where(_subject_is(subject),
                    t.event_type == "disclosure", t.partnership.in_(sorted(partnerships)))
             .order_by(t.log_index))
    with engine.connect() as connection:
        return [ReviewedEntry(int(r.log_index), utc(r.recorded_at), json.loads(r.canonical))
                for r in connection.execute(query)]

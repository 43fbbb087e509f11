"""The register of legal gaps: missing or unclear legal bases that cases brought to light.

A gap moves forward only — identified → on-agenda → resolved — so the agenda of the steering group can
trust that a resolved gap stays resolved; a new problem is a new gap. That holds for links too: a case is
linked to an open gap only (``GapResolved`` otherwise), or it would hang on a gap the agenda no longer lists
and drop out of the export the steering group works from. Each change names the version it was based on
(optimistic locking, like cases).

The register is a record: every status change is kept with its note, who made it and when
(``legal_gap_changes``, rows only added — see :class:`GapChange`); ``note`` is the latest note, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import uuid6
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from escalation.cases import CaseNotFound, ConcurrentUpdate, EscalationError, get_case, mark_legal_gap
from escalation.tables import legal_gap_cases, legal_gap_changes, legal_gaps


class GapStatus(StrEnum):
    IDENTIFIED = "identified"
    ON_AGENDA = "on-agenda"
    RESOLVED = "resolved"


GAP_TRANSITIONS: dict[GapStatus, set[GapStatus]] = {
    GapStatus.IDENTIFIED: {GapStatus.ON_AGENDA, GapStatus.RESOLVED},
    GapStatus.ON_AGENDA: {GapStatus.RESOLVED},
    GapStatus.RESOLVED: set(),
}


class GapNotFound(EscalationError):
    code = "gap-not-found"


class InvalidGapTransition(EscalationError):
    code = "gap-transition"


class AlreadyLinked(EscalationError):
    """The case is linked to the gap already: linking it again changes nothing, so it is no step either (the
    caller answers with the gap as it is, and logs nothing)."""

    code = "gap-already-linked"

    def __init__(self, gap_id: str) -> None:
        super().__init__(f"the case is linked to legal gap `{gap_id}` already")
        self.gap_id = gap_id


class GapResolved(EscalationError):
    """A case may not be linked to a resolved gap (409): a new problem is a new gap."""

    code = "gap-resolved"

    def __init__(self, gap_id: str) -> None:
        super().__init__(f"legal gap `{gap_id}` is {GapStatus.RESOLVED.value}: a resolved gap takes no new "
                         "cases; flag the case as a new gap")
        self.gap_id = gap_id


@dataclass(frozen=True)
class GapChange:
    """One status change of a gap, as recorded. A change carried over from before the history was kept (the
    single note a gap had, by the migration that made the history) names no organisation and no earlier
    status."""

    at: datetime
    status_before: GapStatus | None
    status: GapStatus
    note: str | None
    actor_org: str | None
    actor_user: str | None


@dataclass(frozen=True)
class LegalGap:
    id: str
    partnership: str
    title: str
    description: str
    status: GapStatus
    version: int
    created_at: datetime
    updated_at: datetime
    created_by_org: str
    note: str | None
    case_ids: list[str] = field(default_factory=list)
    history: list[GapChange] = field(default_factory=list)


def _load(session: Session, rows: list[object]) -> list[LegalGap]:
    ids = [r.id for r in rows]  # type: ignore[attr-defined]
    links: dict[str, list[str]] = {i: [] for i in ids}
    if ids:
        for link in session.execute(select(legal_gap_cases).where(legal_gap_cases.c.gap_id.in_(ids))
                                    .order_by(legal_gap_cases.c.linked_at, legal_gap_cases.c.case_id)):
            links[link.gap_id].append(link.case_id)
    changes: dict[str, list[GapChange]] = {i: [] for i in ids}
    if ids:
        t = legal_gap_changes.c
        for c in session.execute(select(legal_gap_changes).where(t.gap_id.in_(ids)).order_by(t.at, t.id)):
            changes[c.gap_id].append(GapChange(c.at, GapStatus(c.status_before) if c.status_before else None,
                                               GapStatus(c.status), c.note, c.actor_org, c.actor_user))
    return [LegalGap(r.id, r.partnership, r.title, r.description, GapStatus(r.status), r.version,  # type: ignore[attr-defined]
                     r.created_at, r.updated_at, r.created_by_org, r.note, links[r.id], changes[r.id])  # type: ignore[attr-defined]
            for r in rows]


def get_gap(session: Session, gap_id: str) -> LegalGap:
    row = session.execute(select(legal_gaps).where(legal_gaps.c.id == gap_id)).first()
    if row is None:
        raise GapNotFound(f"no legal gap `{gap_id}`")
    return _load(session, [row])[0]


def list_gaps(session: Session, *, partnerships: set[str] | None = None,
              status: GapStatus | None = None) -> list[LegalGap]:
    query = select(legal_gaps).order_by(legal_gaps.c.created_at, legal_gaps.c.id)
    if partnerships is not None:
        query = query.where(legal_gaps.c.partnership.in_(sorted(partnerships)))
    if status is not None:
        query = query.where(legal_gaps.c.status == status.value)
    return _load(session, list(session.execute(query).all()))


def new_gap_id() -> str:
    """Gap ids are UUIDv7, like case ids; made before the gap is, so the audit entry logged ahead of
    recording a new gap can name it."""
    return str(uuid6.uuid7())


def flag_case(session: Session, case_id: str, *, organisation: str, now: datetime, gap_id: str | None = None,
              title: str | None = None, description: str | None = None, new_id: str | None = None) -> LegalGap:
    """Link a case to an existing gap of its partnership, or record a new gap described by the flagger (with
    the id ``new_id`` when the caller made one already, see :func:`new_gap_id`). ``AlreadyLinked`` (nothing
    changes) for a case linked to that gap already — also by a link that committed while this one waited."""
    case = get_case(session, case_id)
    if gap_id is None:
        if not (title and title.strip() and description and description.strip()):
            raise EscalationError("a new legal gap needs a title and a description of the missing basis",
                                  code="gap-description-required")
        gap_id = new_id or new_gap_id()
        session.execute(legal_gaps.insert().values(
            id=gap_id, partnership=case.partnership, title=title.strip(), description=description.strip(),
            status=GapStatus.IDENTIFIED.value, version=1, created_at=now, updated_at=now,
            created_by_org=organisation, note=None))
    else:
        if get_gap(session, gap_id).partnership != case.partnership:
            raise GapNotFound(f"no legal gap `{gap_id}` in partnership `{case.partnership}`")
        # The case row first: its write lock makes concurrent flags of this case wait for each other, so the
        # link is looked for only once the other flag has committed (linking twice is then refused as the
        # no-op it is, not a primary-key violation).
        mark_legal_gap(session, case_id)
        _lock_open_gap(session, gap_id)
        if case_id in get_gap(session, gap_id).case_ids:
            raise AlreadyLinked(gap_id)
    session.execute(legal_gap_cases.insert().values(gap_id=gap_id, case_id=case_id, linked_at=now))
    mark_legal_gap(session, case_id)
    return get_gap(session, gap_id)


def _lock_open_gap(session: Session, gap_id: str) -> None:
    """Hold the gap's row while linking to it, if it is not resolved (``GapResolved`` otherwise). An update
    that changes nothing, so that a concurrent status change waits for the link or the link for it (a check
    by reading alone would let a gap resolved meanwhile take the case); neither the version nor the time
    of the last change moves: a link is no status change."""
    result = session.execute(update(legal_gaps).where(
        legal_gaps.c.id == gap_id, legal_gaps.c.status != GapStatus.RESOLVED.value)
        .values(version=legal_gaps.c.version))
    if getattr(result, "rowcount", 0) != 1:
        raise GapResolved(gap_id)


def change_status(session: Session, gap_id: str, expected_version: int, status: GapStatus, *, now: datetime,
                  actor_org: str, actor_user: str | None, note: str | None = None) -> LegalGap:
    """Move the gap on and record the change with its note in the gap's history (in the same transaction:
    both or neither). ``note`` on the gap becomes the new note, or stays the previous one without it."""
    gap = get_gap(session, gap_id)
    if gap.version != expected_version:
        raise ConcurrentUpdate(f"legal gap `{gap_id}` is at version {gap.version}, not {expected_version}")
    if status not in GAP_TRANSITIONS[gap.status]:
        raise InvalidGapTransition(f"a legal gap cannot go from `{gap.status.value}` to `{status.value}`")
    result = session.execute(update(legal_gaps).where(
        legal_gaps.c.id == gap_id, legal_gaps.c.version == expected_version).values(
        status=status.value, version=expected_version + 1, updated_at=now, note=note if note else gap.note))
    if getattr(result, "rowcount", 0) != 1:
        raise ConcurrentUpdate(f"legal gap `{gap_id}` changed concurrently")
    session.execute(legal_gap_changes.insert().values(
        id=str(uuid6.uuid7()), gap_id=gap_id, at=now, status_before=gap.status.value, status=status.value,
        note=note or None, actor_org=actor_org, actor_user=actor_user))
    return get_gap(session, gap_id)


__all__ = ["AlreadyLinked", "CaseNotFound", "GapChange", "GapNotFound", "GapResolved", "GapStatus",
           "InvalidGapTransition", "LegalGap", "change_status", "flag_case", "get_gap", "list_gaps", "new_gap_id"]

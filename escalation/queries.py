"""Reading cases: the scoped list with filters, and the workflow's metrics.

Who may see which case is decided by the caller (it knows the register); this module only applies a
``CaseScope``: the organisations that are a party, and per partnership the lowest tier whose deciders the
caller belongs to (a tier-2 desk sees the partnership's cases once they reach tier 2).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import and_, false, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from escalation.cases import Case, EscalationError, case_from_row
from escalation.states import State
from escalation.tables import escalation_cases

ACTIVE_STATES = (State.OPEN.value, State.IN_REVIEW.value, State.ESCALATED.value)


@dataclass(frozen=True)
class CaseScope:
    parties: frozenset[str] = frozenset()
    partnership_from_tier: dict[str, int] = field(default_factory=dict)
    everything: bool = False
    within: frozenset[str] | None = None
    """The partnerships in which ``parties`` see their cases (None: in all). A partner system acts for its
    organisation only in the partnerships the register lists it in; another partnership's cases of the same
    organisation are none of its business."""

    def allows(self, case: Case) -> bool:
        if self.everything:
            return True
        if ((case.requester_org in self.parties or case.holder_org in self.parties)
                and (self.within is None or case.partnership in self.within)):
            return True
        lowest = self.partnership_from_tier.get(case.partnership)
        return lowest is not None and case.tier >= lowest

    def clause(self) -> ColumnElement[bool]:
        if self.everything:
            return escalation_cases.c.id.is_not(None)
        parts: list[ColumnElement[bool]] = []
        if self.parties and (self.within is None or self.within):
            parties = sorted(self.parties)
            party = or_(escalation_cases.c.requester_org.in_(parties), escalation_cases.c.holder_org.in_(parties))
            parts.append(party if self.within is None
                         else and_(party, escalation_cases.c.partnership.in_(sorted(self.within))))
        parts += [and_(escalation_cases.c.partnership == p, escalation_cases.c.tier >= t)
                  for p, t in sorted(self.partnership_from_tier.items())]
        return or_(*parts) if parts else false()


@dataclass(frozen=True)
class CaseFilter:
    partnership: str | None = None
    state: str | None = None
    tier: int | None = None
    trigger: str | None = None
    organisation: str | None = None  # requester or holder
    overdue_on: date | None = None  # only active cases whose deadline is before this day
    legal_gap: bool | None = None
    states: frozenset[str] = frozenset()  # only cases in one of these states (empty: any state)


def list_cases(session: Session, scope: CaseScope, filters: CaseFilter, *, limit: int = 50,
               after: str | None = None) -> list[Case]:
    """Cases in the order they were committed (``seq``), ``limit`` from after the case ``after`` (cursor
    pagination; the cursor stays a case id). Not in id order: a case committed after a page was read can have
    an id before that page's last (ids are made when a request begins), and was skipped by the next page."""
    c = escalation_cases.c
    query = select(escalation_cases).where(scope.clause()).order_by(c.seq).limit(limit)
    if after:
        query = query.where(c.seq > _cursor_seq(session, scope, after))
    if filters.partnership:
        query = query.where(c.partnership == filters.partnership)
    if filters.state:
        query = query.where(c.state == filters.state)
    if filters.states:
        query = query.where(c.state.in_(sorted(filters.states)))
    if filters.tier:
        query = query.where(c.tier == filters.tier)
    if filters.trigger:
        query = query.where(c.trigger == filters.trigger)
    if filters.organisation:
        query = query.where(or_(c.requester_org == filters.organisation, c.holder_org == filters.organisation))
    if filters.overdue_on:
        query = query.where(c.state.in_(ACTIVE_STATES), c.deadline < filters.overdue_on)
    if filters.legal_gap is not None:
        query = query.where(c.legal_gap.is_(filters.legal_gap))
    return [case_from_row(row) for row in session.execute(query).all()]


class UnknownCursor(EscalationError):
    """A page cursor that names no case the caller may see (422): a list goes on after the case its cursor
    names, so one naming none has no place to go on from."""

    code = "case-cursor-unknown"


def _cursor_seq(session: Session, scope: CaseScope, after: str) -> int:
    """The ``seq`` of the case ``after`` names, looked up within ``scope`` alone (not the filters: a case may
    have left a filter since its page). Else :class:`UnknownCursor`, alike for a case that does not exist and
    one the caller may not see: an empty page for the one (a client stopped there, the cases after it never
    listed) and the caller's cases committed after the other told an organisation that gets a 404 for that case
    that it exists and about when it was opened."""
    found = session.execute(select(escalation_cases.c.seq).where(
        scope.clause(), escalation_cases.c.id == after)).scalar_one_or_none()
    if found is None:
        raise UnknownCursor("the cursor names no case of this list; start again from the first page")
    return int(found)


def visible_case_ids(session: Session, scope: CaseScope, case_ids: set[str]) -> set[str]:
    """Those of ``case_ids`` that ``scope`` may see: whatever lists case ids next to other things (the
    register of legal gaps) shows only these, or it tells a reader about cases that are 404 to it."""
    if not case_ids:
        return set()
    query = select(escalation_cases.c.id).where(scope.clause(), escalation_cases.c.id.in_(sorted(case_ids)))
    return {row.id for row in session.execute(query)}


def metrics(session: Session, scope: CaseScope, today: date) -> dict[str, Any]:
    """Time to decision per tier (hours: mean, median, max) and open cases past their deadline.

    The figures the steering group asks for: is the escalation model settling disputes quickly?"""
    cases = [case_from_row(r) for r in session.execute(select(escalation_cases).where(scope.clause())).all()]
    per_tier: dict[int, list[float]] = {}
    for case in cases:
        if case.decided_at is not None and case.opened_at is not None and case.decision:
            hours = (case.decided_at - case.opened_at).total_seconds() / 3600
            per_tier.setdefault(int(case.decision.get("tier", case.tier)), []).append(hours)
    overdue = [c for c in cases if c.active and c.deadline < today]
    by_state: dict[str, int] = {}
    for case in cases:
        by_state[case.state.value] = by_state.get(case.state.value, 0) + 1
    return {
        "cases": len(cases),
        "by_state": dict(sorted(by_state.items())),
        "time_to_decision_hours": {
            str(tier): {"decided": len(hours), "mean": round(statistics.fmean(hours), 2),
                        "median": round(statistics.median(hours), 2), "max": round(max(hours), 2)}
            for tier, hours in sorted(per_tier.items())},
        "open_past_deadline": len(overdue),
        "open_past_deadline_by_tier": {str(t): sum(1 for c in overdue if c.tier == t)
                                       for t in sorted({c.tier for c in overdue})},
    }

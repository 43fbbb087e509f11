"""Escalation cases: open, act on, decide (four eyes), and escalate overdue ones — with optimistic locking.

Rules enforced here (issue 6):
* every change names the version it was based on; a concurrent change makes the second one fail
  (``ConcurrentUpdate``, mapped to 409 by the API), so two deciders can never both win;
* a decision needs a written motivation and deciders from outside the requesting organisation; tier 3
  needs two different deciders;
* deadlines are counted in Dutch working days per tier; ``escalate_overdue`` moves every case past its
  deadline one tier up (a missed tier-3 deadline stays at tier 3 and is reported, not decided).
Every operation returns what happened so the caller records it in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import uuid6
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from escalation.calendar import add_working_days
from escalation.states import MAX_TIER, Action, CaseState, InvalidTransition, State, new_case
from escalation.tables import escalation_cases, escalation_events


class EscalationError(Exception):
    pass


class CaseNotFound(EscalationError):
    pass


class ConcurrentUpdate(EscalationError):
    """The case changed since the caller read it (optimistic lock lost)."""


class FourEyesViolation(EscalationError):
    pass


class MotivationRequired(EscalationError):
    pass


@dataclass(frozen=True)
class Actor:
    organisation: str
    user: str


@dataclass(frozen=True)
class Case:
    id: str
    partnership: str
    purpose: str
    requester_org: str
    holder_org: str
    trigger: str
    state: State
    tier: int
    version: int
    deadline: date
    decision: dict[str, Any] | None
    policy_reasons: list[str] = field(default_factory=list)
    exchange_id: str | None = None
    request_fingerprint: str | None = None


def _row_to_case(row: Any) -> Case:
    return Case(row.id, row.partnership, row.purpose, row.requester_org, row.holder_org, row.trigger,
                State(row.state), row.tier, row.version, row.deadline, row.decision, list(row.policy_reasons),
                row.exchange_id, row.request_fingerprint)


def get_case(session: Session, case_id: str) -> Case:
    row = session.execute(select(escalation_cases).where(escalation_cases.c.id == case_id)).first()
    if row is None:
        raise CaseNotFound(f"no escalation case `{case_id}`")
    return _row_to_case(row)


def open_case(session: Session, *, partnership: str, purpose: str, requester_org: str, holder_org: str,
              trigger: str, register_version: str, policy_reasons: list[str], deadlines: dict[int, int],
              now: datetime, exchange_id: str | None = None, request_fingerprint: str | None = None) -> Case:
    """A new case at tier 1; ``deadlines`` maps tier -> working days (from the register)."""
    state = new_case()
    case_id = str(uuid6.uuid7())
    session.execute(escalation_cases.insert().values(
        id=case_id, exchange_id=exchange_id, request_fingerprint=request_fingerprint, partnership=partnership,
        purpose=purpose, requester_org=requester_org, holder_org=holder_org, trigger=trigger,
        state=state.state.value, tier=state.tier, version=state.version,
        deadline=add_working_days(now.date(), deadlines[state.tier]), opened_at=now, updated_at=now,
        register_version=register_version, policy_reasons=policy_reasons, decision=None, legal_gap=False))
    _event(session, case_id, now, "opened", None, None, state)
    return get_case(session, case_id)


def act(session: Session, case_id: str, expected_version: int, action: Action, actor: Actor | None, *,
        now: datetime, deadlines: dict[int, int], motivation: str | None = None,
        decision: dict[str, Any] | None = None) -> Case:
    """Apply ``action`` if the case is still at ``expected_version``; raise otherwise (nothing changes)."""
    case = get_case(session, case_id)
    if case.version != expected_version:
        raise ConcurrentUpdate(f"case `{case_id}` is at version {case.version}, not {expected_version}")
    after = CaseState(case.state, case.tier, case.version).apply(action)
    values: dict[str, Any] = {"state": after.state.value, "tier": after.tier, "version": after.version,
                              "updated_at": now}
    if after.tier != case.tier:  # a new tier gets its own deadline
        values["deadline"] = add_working_days(now.date(), deadlines[after.tier])
    if decision is not None:
        values["decision"] = decision
    result = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.version == expected_version).values(**values))
    if getattr(result, "rowcount", 0) != 1:  # someone else changed it between our read and write
        raise ConcurrentUpdate(f"case `{case_id}` changed concurrently")
    _event(session, case_id, now, action.value, actor.organisation if actor else None,
           actor.user if actor else None, after, motivation)
    return get_case(session, case_id)


def decide(session: Session, case_id: str, expected_version: int, deciders: list[Actor], motivation: str, *,
           outcome: str, permitted_categories: list[str], now: datetime, deadlines: dict[int, int]) -> Case:
    """Allow (with the categories it permits) or deny; four eyes, tier 3 needs two deciders."""
    if not motivation.strip():
        raise MotivationRequired("a decision needs a written motivation")
    if outcome not in {"allow", "deny"}:
        raise EscalationError("outcome must be allow or deny")
    case = get_case(session, case_id)
    if not deciders or any(d.organisation == case.requester_org for d in deciders):
        raise FourEyesViolation("the decider must be outside the requesting organisation")
    if case.tier == MAX_TIER and len({(d.organisation, d.user) for d in deciders}) < 2:
        raise FourEyesViolation("a tier-3 decision needs two different deciders")
    decision = {"outcome": outcome, "permitted_categories": sorted(permitted_categories) if outcome == "allow" else [],
                "deciders": [f"{d.organisation}/{d.user}" for d in deciders], "tier": case.tier,
                "decided_at": now.isoformat()}
    return act(session, case_id, expected_version, Action.DECIDE, deciders[0], now=now, deadlines=deadlines,
               motivation=motivation, decision=decision)


def escalate_overdue(session: Session, today: date, now: datetime, deadlines: dict[int, int]) -> list[Case]:
    """Every case past its deadline goes one tier up (the scheduler calls this; the clock is injected)."""
    rows = session.execute(select(escalation_cases.c.id, escalation_cases.c.version, escalation_cases.c.tier)
                           .where(escalation_cases.c.state.in_([State.OPEN.value, State.IN_REVIEW.value,
                                                                State.ESCALATED.value]),
                                  escalation_cases.c.deadline < today)).all()
    moved = []
    for row in rows:
        if row.tier >= MAX_TIER:
            continue
        try:
            moved.append(act(session, row.id, row.version, Action.DEADLINE_MISSED, None, now=now,
                             deadlines=deadlines, motivation="deadline missed"))
        except (ConcurrentUpdate, InvalidTransition):
            continue  # someone acted on it meanwhile; the next run looks again
    return moved


def history(session: Session, case_id: str) -> list[dict[str, Any]]:
    rows = session.execute(select(escalation_events).where(escalation_events.c.case_id == case_id)
                           .order_by(escalation_events.c.id)).mappings().all()  # UUIDv7: creation order
    return [dict(row) for row in rows]


def _event(session: Session, case_id: str, at: datetime, action: str, org: str | None, user: str | None,
           state: CaseState, motivation: str | None = None) -> None:
    session.execute(escalation_events.insert().values(
        id=str(uuid6.uuid7()), case_id=case_id, at=at, action=action, actor_org=org, actor_user=user,
        motivation=motivation, tier=state.tier, state=state.state.value))

"""Escalation cases: open, act on, decide (four eyes), and escalate overdue ones — with optimistic locking.

Rules enforced here (issue 6):
* every change names the version it was based on; a concurrent change makes the second one fail
  (``ConcurrentUpdate``, mapped to 409 by the API), so two deciders can never both win;
* a decision needs a written motivation and deciders from outside the requesting organisation; tier 3
  needs two different deciders; no party decides its own case alone (``independent``);
* deadlines are counted in Dutch working days per tier; a case past its deadline moves one tier up
  (``act`` with ``DEADLINE_MISSED``), and a missed tier-3 deadline stays at tier 3 and is reported once, not
  decided (``unreported_final_overdue`` lists those). The scan that does both, with an audit entry and a
  notification per step, is the gateway's (``gateway.escalations.deadlines``): a scan here, without either,
  skipped tier 3 silently and was used by tests only;
* an allow decision is valid for a while (``valid_until``); one nobody used in time expires
  (``expirable_decisions``, then the ``expire`` action).
Every operation returns what happened so the caller records it in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import uuid6
from sqlalchemy import Connection, exists, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit import CompanionRefused
from escalation.calendar import add_working_days, local_date
from escalation.states import MAX_TIER, Action, CaseState, InvalidTransition, State, new_case
from escalation.tables import escalation_cases, escalation_events


class EscalationError(CompanionRefused):
    """A step the workflow refuses (4xx). A :class:`~audit.CompanionRefused`: raised inside the audit writer's
    transaction (the step and its entry commit together), it is an expected refusal, not a fault of the log.

    ``code`` names the reason (a class's own, or one given where it is raised) and ``values`` what its words
    need, so that the console can word it in Dutch too (:class:`gateway.errors.GatewayError`)."""

    code: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None, values: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.values = values or {}


class CaseNotFound(EscalationError):
    code = "case-not-found"


class ConcurrentUpdate(EscalationError):
    """The case changed since the caller read it (optimistic lock lost)."""

    code = "stale-version"


class CaseExists(ConcurrentUpdate):
    """An active case about the same exchange and holder exists already (another was opened meanwhile)."""

    code = "case-exists"


class DecisionInUse(ConcurrentUpdate):
    """The allow decision is held by another re-run, or was used (whether or not its case is closed yet)."""

    code = "decision-in-use"


class FourEyesViolation(EscalationError):
    code = "four-eyes"


class MotivationRequired(EscalationError):
    code = "motivation-required"


Deadlines = dict[int, int] | Callable[[str], dict[int, int]]
"""Working days per tier: one table, or a function of the partnership (each partnership sets its own)."""


def _deadlines(deadlines: Deadlines, partnership: str) -> dict[int, int]:
    return deadlines(partnership) if callable(deadlines) else deadlines


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
    register_version: str = ""
    opened_at: datetime | None = None
    updated_at: datetime | None = None
    opened_by_org: str | None = None
    requested_categories: list[str] = field(default_factory=list)
    votes: list[dict[str, Any]] = field(default_factory=list)
    decision_id: str | None = None
    decided_at: datetime | None = None
    legal_gap: bool = False
    rerun_claim: str | None = None
    rerun_claimed_at: datetime | None = None
    rerun_exchange_id: str | None = None  # the exchange that used the decision (see ``use_decision``)

    @property
    def active(self) -> bool:
        """Still waiting for someone: not decided, closed, withdrawn or expired."""
        return self.state in {State.OPEN, State.IN_REVIEW, State.ESCALATED}

    @property
    def grants_rerun(self) -> bool:
        """Whether an allow on this case is a decision the requester may re-run with. Not on a holder's
        objection: that case contests a disclosure that happened, and its allow says the disclosure stands — a
        re-run citing it would disclose the same again, past the bulk and office-hours rules a decision
        overrides (rule 8). Such a case closes when it is decided, whatever the outcome."""
        return self.trigger != "holder-objection"

    @property
    def valid_until(self) -> datetime | None:
        """Until when an allow decision may be re-run (None without one); always timezone-aware."""
        if not self.decision or self.decision.get("outcome") != "allow" or not self.decision.get("valid_until"):
            return None
        moment = datetime.fromisoformat(self.decision["valid_until"])
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def decision_usable(self, now: datetime) -> bool:
        """Whether the requester may still re-run with the decision: an allow, ``decided``, unused, in time."""
        until = self.valid_until
        return (self.state is State.DECIDED and self.grants_rerun and until is not None and now < until
                and self.rerun_exchange_id is None)


def case_from_row(row: Any) -> Case:
    return Case(row.id, row.partnership, row.purpose, row.requester_org, row.holder_org, row.trigger,
                State(row.state), row.tier, row.version, row.deadline, row.decision, list(row.policy_reasons),
                row.exchange_id, row.request_fingerprint, row.register_version, row.opened_at, row.updated_at,
                row.opened_by_org, list(row.requested_categories or []), list(row.votes or []), row.decision_id,
                row.decided_at, bool(row.legal_gap), row.rerun_claim, row.rerun_claimed_at, row.rerun_exchange_id)


def get_case(session: Session, case_id: str) -> Case:
    row = session.execute(select(escalation_cases).where(escalation_cases.c.id == case_id)).first()
    if row is None:
        raise CaseNotFound(f"no escalation case `{case_id}`")
    return case_from_row(row)


def new_case_id() -> str:
    """Case ids are UUIDv7: time-ordered, so listing by id lists by opening time."""
    return str(uuid6.uuid7())


def find_by_decision(session: Session, decision_id: str) -> Case | None:
    row = session.execute(select(escalation_cases).where(escalation_cases.c.decision_id == decision_id)).first()
    return case_from_row(row) if row is not None else None


def decided_requests(session: Session, *, requester_org: str, partnership: str,
                     purpose: str) -> list[tuple[str, str]]:
    """``(request_fingerprint, decision_id)`` of every case of ``requester_org``'s with a decision, in this
    partnership and purpose, whatever its state: the requests that a re-run may have cited a decision for
    (the gateway uses them to find which request a re-run ran when the re-run's row does not say so itself —
    rows written before migration 0031; see ``EscalationService._request_fingerprint``)."""
    c = escalation_cases.c
    rows = session.execute(select(c.request_fingerprint, c.decision_id).where(
        c.requester_org == requester_org, c.partnership == partnership, c.purpose == purpose,
        c.decision_id.is_not(None), c.request_fingerprint.is_not(None)).order_by(c.id)).all()
    return [(row.request_fingerprint, row.decision_id) for row in rows]


_OPENING_LOCK = text("SELECT pg_advisory_xact_lock(7421931146280455201)")
"""PostgreSQL's lock that serialises case openings from ``seq`` to commit (a 64-bit constant of their own)."""


def _next_seq(session: Session) -> Any:
    """The new case's ``seq``: one more than any committed case's, taken under a lock held until this transaction
    ends, so that ``seq`` increases in commit order and a list paged by it skips no case that commits late.

    The case id (UUIDv7) is made when the request begins; paging by it skipped a case whose transaction
    committed after a page was read, with an id before that page's last. On PostgreSQL an advisory lock
    (READ COMMITTED: the ``max`` after it sees every case committed before); SQLite has one writer at a time."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_OPENING_LOCK)
    return select(func.coalesce(func.max(escalation_cases.c.seq), 0) + 1).scalar_subquery()


def open_case(session: Session, *, partnership: str, purpose: str, requester_org: str, holder_org: str,
              trigger: str, register_version: str, policy_reasons: list[str], deadlines: Deadlines,
              now: datetime, timezone: str, exchange_id: str | None = None,
              request_fingerprint: str | None = None, opened_by: Actor | None = None, motivation: str | None = None,
              requested_categories: list[str] | None = None, case_id: str | None = None) -> Case:
    """A new case at tier 1; ``deadlines`` gives tier -> working days (from the register), counted from the
    day ``now`` is in ``timezone`` (the register's office hours: a Dutch deadline runs by the Dutch date).

    ``opened_by`` is None when the gateway opens the case itself (policy escalated, holder refused)."""
    state = new_case()
    case_id = case_id or new_case_id()
    try:
        session.execute(escalation_cases.insert().values(
            seq=_next_seq(session), id=case_id, exchange_id=exchange_id, request_fingerprint=request_fingerprint,
            partnership=partnership,
            purpose=purpose, requester_org=requester_org, holder_org=holder_org, trigger=trigger,
            state=state.state.value, tier=state.tier, version=state.version,
            deadline=add_working_days(local_date(now, timezone), _deadlines(deadlines, partnership)[state.tier]),
            opened_at=now, updated_at=now, register_version=register_version, policy_reasons=policy_reasons,
            decision=None, legal_gap=False, opened_by_org=opened_by.organisation if opened_by else None,
            opened_by=opened_by.user if opened_by else None, requested_categories=sorted(requested_categories or []),
            votes=[]))
    except IntegrityError as exc:  # the only constraint a fresh UUIDv7 can meet: one active case per pair
        raise CaseExists(f"an active case about exchange `{exchange_id}` and holder `{holder_org}` exists "
                         "already") from exc
    _event(session, case_id, now, "opened", opened_by.organisation if opened_by else None,
           opened_by.user if opened_by else None, state, motivation)
    return get_case(session, case_id)


def act(session: Session, case_id: str, expected_version: int, action: Action, actor: Actor | None, *,
        now: datetime, deadlines: Deadlines, timezone: str, motivation: str | None = None,
        decision: dict[str, Any] | None = None) -> Case:
    """Apply ``action`` if the case is still at ``expected_version``; raise otherwise (nothing changes).

    A new tier's deadline counts from the day ``now`` is in ``timezone`` (the register's office hours). It is
    required of every action, not only of those that move the case up a tier: a default would let a caller
    count a Dutch deadline by another calendar without noticing."""
    case = get_case(session, case_id)
    if case.version != expected_version:
        raise ConcurrentUpdate(f"case `{case_id}` is at version {case.version}, not {expected_version}")
    after = CaseState(case.state, case.tier, case.version).apply(action)
    values: dict[str, Any] = {"state": after.state.value, "tier": after.tier, "version": after.version,
                              "updated_at": now}
    if after.tier != case.tier:  # a new tier gets its own deadline
        values["deadline"] = add_working_days(local_date(now, timezone),
                                              _deadlines(deadlines, case.partnership)[after.tier])
        values["votes"] = []  # votes of a lower tier do not count at the next
    if decision is not None:
        values["decision"] = decision
        values["decision_id"] = decision["id"]
        values["decided_at"] = now
        values["votes"] = []
    result = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.version == expected_version).values(**values))
    if getattr(result, "rowcount", 0) != 1:  # someone else changed it between our read and write
        raise ConcurrentUpdate(f"case `{case_id}` changed concurrently")
    _event(session, case_id, now, action.value, actor.organisation if actor else None,
           actor.user if actor else None, after, motivation)
    return get_case(session, case_id)


DECISION_VALIDITY = timedelta(days=30)


def may_vote(case: Case, organisation: str) -> bool:
    """Four eyes: the requesting organisation never decides its own request. A holder's objection is the
    exception: there the requester is the other party (tier 1 is both parties' privacy officers), its allow
    grants no re-run (``Case.grants_rerun``), and its vote never decides alone (``independent``)."""
    return organisation != case.requester_org or case.trigger == "holder-objection"


def independent(case: Case, organisations: set[str]) -> bool:
    """Whether a decision by deciders of ``organisations`` is no party's judgement in its own cause. On a
    holder's objection both organisations are parties: the objecting holder may not uphold (or drop) its own
    objection alone, nor the requester keep its disclosure alone, so the deciders include someone outside
    each — at tier 1 both parties' officers agreeing, above it the tier's deciders. Otherwise the requester
    takes no part (``may_vote``).

    Above tier 1 the dispute has left the parties: a party that also sits on the higher tier (the FIOD on
    the FEC board, the OM on the RIEC steering group) does not settle its own case there either, however
    many of its people agree — the deciders include someone who is neither party."""
    if case.trigger == "holder-objection":
        independent_ = bool(organisations - {case.holder_org}) and bool(organisations - {case.requester_org})
    else:
        independent_ = bool(organisations) and case.requester_org not in organisations
    if case.tier > 1:
        independent_ = independent_ and bool(organisations - {case.requester_org, case.holder_org})
    return independent_


def _check_decision(case: Case, deciders: list[Actor], motivation: str, outcome: str) -> None:
    if not motivation.strip():
        raise MotivationRequired("a decision needs a written motivation")
    if outcome not in {"allow", "deny"}:
        raise EscalationError("outcome must be allow or deny", code="outcome-invalid")
    if not deciders or not all(may_vote(case, d.organisation) for d in deciders):
        raise FourEyesViolation("the decider must be outside the requesting organisation")


def decide(session: Session, case_id: str, expected_version: int, deciders: list[Actor], motivation: str, *,
           outcome: str, permitted_categories: list[str], now: datetime, deadlines: Deadlines, timezone: str,
           obligations: dict[str, Any] | None = None, min_deciders: int | None = None,
           valid_for: timedelta = DECISION_VALIDITY) -> Case:
    """Allow (with the categories it permits, and extra obligations) or deny; four eyes, tier 3 needs two
    different deciders (or ``min_deciders`` from the register, never fewer than that).

    An allow gets an id and a validity: the requester re-runs the original request citing the id, and the
    policy honours it only for exactly that request and only until ``valid_until``."""
    case = get_case(session, case_id)
    _check_decision(case, deciders, motivation, outcome)
    needed = votes_needed(case, min_deciders or 1)
    if len({(d.organisation, d.user) for d in deciders}) < needed:
        raise FourEyesViolation(f"a tier-{case.tier} decision needs {needed} different deciders",
                                code="four-eyes-deciders", values={"tier": str(case.tier), "n": str(needed)})
    if not independent(case, {d.organisation for d in deciders}):
        raise FourEyesViolation("no party decides its own case alone: the deciders must include someone of "
                                "the other party (a holder's objection, tier 1) or, above tier 1, of neither",
                                code="four-eyes-parties")
    decision = {"id": str(uuid6.uuid7()), "outcome": outcome,
                "permitted_categories": sorted(permitted_categories) if outcome == "allow" else [],
                "obligations": dict(obligations or {}) if outcome == "allow" else {},
                "deciders": [f"{d.organisation}/{d.user}" for d in deciders], "tier": case.tier,
                "decided_at": now.isoformat(), "valid_until": (now + valid_for).isoformat(),
                "motivation": motivation}
    return act(session, case_id, expected_version, Action.DECIDE, deciders[0], now=now, deadlines=deadlines,
               timezone=timezone, motivation=motivation, decision=decision)


def votes_needed(case: Case, min_deciders: int) -> int:
    """Different deciders a decision at the case's tier needs: the register's minimum, at tier 3 two at least."""
    return max(min_deciders, 2 if case.tier == MAX_TIER else 1)


def proposal_of(outcome: str, permitted_categories: list[str], obligations: dict[str, Any] | None) -> dict[str, Any]:
    """What deciders agree on; two votes count together only when their proposals are equal."""
    return {"outcome": outcome, "permitted_categories": sorted(permitted_categories) if outcome == "allow" else [],
            "obligations": dict(obligations or {}) if outcome == "allow" else {}}


def agreeing_votes(case: Case, voter: Actor, proposal: dict[str, Any]) -> list[dict[str, Any]]:
    """The pending votes of other deciders for the same proposal."""
    return [v for v in case.votes if {k: v.get(k) for k in proposal} == proposal
            and (v["organisation"], v["user"]) != (voter.organisation, voter.user)]


def completes(case: Case, voter: Actor, proposal: dict[str, Any], needed: int) -> bool:
    """Whether ``voter``'s vote for ``proposal`` takes the decision: enough different deciders agree, and
    they are not all of one party (``independent``); otherwise the vote waits on the case."""
    agreeing = agreeing_votes(case, voter, proposal)
    organisations = {voter.organisation} | {v["organisation"] for v in agreeing}
    return len(agreeing) + 1 >= needed and independent(case, organisations)


def vote(session: Session, case_id: str, expected_version: int, voter: Actor, motivation: str, *,
         outcome: str, permitted_categories: list[str], now: datetime, deadlines: Deadlines, timezone: str,
         min_deciders: int, obligations: dict[str, Any] | None = None,
         valid_for: timedelta = DECISION_VALIDITY) -> Case:
    """One decider's vote. When enough different deciders voted the same decision it is taken; until then
    the vote waits on the case (a different proposal replaces the pending votes: all must agree on one text).

    This is how four eyes work through an API where each person signs in alone."""
    case = get_case(session, case_id)
    _check_decision(case, [voter], motivation, outcome)
    if case.state is not State.IN_REVIEW:
        raise InvalidTransition(case.state, Action.DECIDE, case.tier)
    needed = votes_needed(case, min_deciders)
    proposal = proposal_of(outcome, permitted_categories, obligations)
    agreeing = agreeing_votes(case, voter, proposal)
    if completes(case, voter, proposal, needed):
        deciders = [voter] + [Actor(v["organisation"], v["user"]) for v in agreeing]  # the deciding vote first
        return decide(session, case_id, expected_version, deciders, motivation, outcome=outcome,
                      permitted_categories=permitted_categories, now=now, deadlines=deadlines, timezone=timezone,
                      obligations=obligations, min_deciders=needed, valid_for=valid_for)
    if case.version != expected_version:
        raise ConcurrentUpdate(f"case `{case_id}` is at version {case.version}, not {expected_version}")
    votes = [*agreeing, {"organisation": voter.organisation, "user": voter.user, **proposal}]
    result = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.version == expected_version).values(
        votes=votes, version=case.version + 1, updated_at=now))
    if getattr(result, "rowcount", 0) != 1:
        raise ConcurrentUpdate(f"case `{case_id}` changed concurrently")
    _event(session, case_id, now, "vote", voter.organisation, voter.user,
           CaseState(case.state, case.tier, case.version + 1), motivation)
    return get_case(session, case_id)


def claim_decision(session: Session, case_id: str, claim: str, *, now: datetime, stale_before: datetime) -> Case:
    """Reserve the case's decision for one re-run, atomically: of two re-runs at the same moment one gets it,
    the other ``DecisionInUse`` (nothing changes). The case must be ``decided`` and its decision unused; a
    claim taken before ``stale_before`` belongs to a re-run that died and may be taken over — unless that
    re-run used the decision (``use_decision``): then it is never taken over, however old. The version goes
    up, so a close based on the case as it was before a take-over fails."""
    result = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.state == State.DECIDED.value,
        escalation_cases.c.rerun_exchange_id.is_(None),
        or_(escalation_cases.c.rerun_claim.is_(None), escalation_cases.c.rerun_claimed_at < stale_before))
        .values(rerun_claim=claim, rerun_claimed_at=now, version=escalation_cases.c.version + 1))
    if getattr(result, "rowcount", 0) != 1:
        raise DecisionInUse(f"the decision of case `{case_id}` is being used by another re-run, or was used")
    return get_case(session, case_id)


def use_decision(connection: Connection, case_id: str, claim: str, exchange_id: str) -> None:
    """Mark the decision used by the re-run ``exchange_id``, which holds it by ``claim``: run in the transaction
    that logs that re-run's disclosure, so the decision is used exactly when a disclosure under it is on
    record, whatever fails afterwards (closing the case, storing the outcome, the process). A used decision
    is never given back nor taken over. ``DecisionInUse`` (nothing changes) if the re-run no longer holds it:
    it outlived its reservation and another re-run took the decision over."""
    result = connection.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.state == State.DECIDED.value,
        escalation_cases.c.rerun_claim == claim, escalation_cases.c.rerun_exchange_id.is_(None))
        .values(rerun_exchange_id=exchange_id, version=escalation_cases.c.version + 1))
    if result.rowcount != 1:
        raise DecisionInUse(f"the decision of case `{case_id}` is no longer held by re-run `{exchange_id}`")


def release_decision(session: Session, case_id: str, claim: str) -> bool:
    """Give the decision back after a re-run that did not use it (the requester may re-run again); only
    the re-run holding ``claim`` can, and only while the case is still ``decided`` and the decision unused
    (``use_decision``). Whether it was given back."""
    result = session.execute(update(escalation_cases).where(
        escalation_cases.c.id == case_id, escalation_cases.c.state == State.DECIDED.value,
        escalation_cases.c.rerun_claim == claim, escalation_cases.c.rerun_exchange_id.is_(None))
        .values(rerun_claim=None, rerun_claimed_at=None, version=escalation_cases.c.version + 1))
    return getattr(result, "rowcount", 0) == 1


def mark_legal_gap(session: Session, case_id: str) -> None:
    """Flag the case as one that showed a legal gap (the gap itself is in ``escalation.legal_gaps``)."""
    session.execute(update(escalation_cases).where(escalation_cases.c.id == case_id).values(legal_gap=True))


def _reported() -> Any:
    """SQL: the case already has its ``final_deadline_missed`` step (there is one tier-3 period per case)."""
    return exists().where(escalation_events.c.case_id == escalation_cases.c.id,
                          escalation_events.c.action == Action.FINAL_DEADLINE_MISSED.value)


def unreported_final_overdue(session: Session, today: date) -> list[Case]:
    """Active tier-3 cases past their deadline (before ``today``, the register's day) whose missed deadline
    has not been reported yet. A case is reported once: its ``final_deadline_missed`` step is the record,
    and a case that has one is never listed again, however many scans follow."""
    rows = session.execute(select(escalation_cases).where(
        escalation_cases.c.state.in_([State.OPEN.value, State.IN_REVIEW.value, State.ESCALATED.value]),
        escalation_cases.c.tier == MAX_TIER, escalation_cases.c.deadline < today, ~_reported())
        .order_by(escalation_cases.c.id)).all()
    return [case_from_row(row) for row in rows]


def final_deadline_reported(session: Session, case_id: str) -> bool:
    """Whether the case's missed tier-3 deadline has been reported (see ``unreported_final_overdue``)."""
    return bool(session.execute(select(exists().where(
        escalation_events.c.case_id == case_id,
        escalation_events.c.action == Action.FINAL_DEADLINE_MISSED.value))).scalar())


def expirable_decisions(session: Session, now: datetime) -> list[Case]:
    """``decided`` cases whose allow decision's validity ended by ``now``, and those whose decision a re-run used
    (``use_decision``) whenever it ends: the caller expires those nobody used, and closes those a re-run used
    but could not close — not only once their validity has ended: such a case read ``decided`` for up to the
    decision's whole validity, its decision spent. The validity is inside the decision (JSON), so it is
    compared here rather than in SQL; decided cases are few (a deny closes at once)."""
    rows = session.execute(select(escalation_cases).where(escalation_cases.c.state == State.DECIDED.value)
                           .order_by(escalation_cases.c.id)).all()
    found = [case_from_row(row) for row in rows]
    return [case for case in found if case.rerun_exchange_id is not None
            or (case.valid_until is not None and case.valid_until <= now)]


def history(session: Session, case_id: str) -> list[dict[str, Any]]:
    rows = session.execute(select(escalation_events).where(escalation_events.c.case_id == case_id)
                           .order_by(escalation_events.c.id)).mappings().all()  # UUIDv7: creation order
    return [dict(row) for row in rows]


def _event(session: Session, case_id: str, at: datetime, action: str, org: str | None, user: str | None,
           state: CaseState, motivation: str | None = None) -> None:
    session.execute(escalation_events.insert().values(
        id=str(uuid6.uuid7()), case_id=case_id, at=at, action=action, actor_org=org, actor_user=user,
        motivation=motivation, tier=state.tier, state=state.state.value))

"""The case state machine: every allowed transition is listed here, and nothing else is allowed.

    open ──start_review──▶ in_review ──decide──▶ decided ──close──▶ closed
      │                      │                      ├──expire──▶ expired (an allow not re-run in time)
      │                      │                      └──decision_refused_by_holder, decision_holder_unavailable──▶
      │                      │                         decided (a re-run's holder gave nothing)
      │                      └──refer_up / deadline_missed──▶ escalated ──start_review──▶ in_review (next tier)
      └──withdraw──▶ withdrawn ◀──withdraw── (in_review, escalated)

A referral or a missed deadline moves the case to the next tier; there is no tier after 3, so at tier 3 a
case can only be decided (or withdrawn). A missed tier-3 deadline is ``final_deadline_missed``: the case
stays where it is (state and tier), the step only records that the last deadline passed and that those
who must act were told — once, see ``escalation.cases.final_deadline_reported``.

A re-run citing an allow that its holder refused (``decision_refused_by_holder``) or could not answer
(``decision_holder_unavailable``) leaves the case ``decided`` too: the decision stays usable until it expires,
and the step is the record that the binding decision was not applied, so nobody learns it only from the
expiry (the deciders are told; see ``gateway.escalations.service.EscalationService.rerun_not_applied``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal

from audit import CompanionRefused


class State(StrEnum):
    OPEN = "open"
    IN_REVIEW = "in_review"
    ESCALATED = "escalated"
    DECIDED = "decided"
    CLOSED = "closed"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"  # an allow decision whose validity passed unused: it can no longer be re-run


Trigger = Literal["policy-escalated", "holder-refused", "requester-objection", "holder-objection"]
"""Why a case was opened: the policy escalated, a holder refused, or the requester or the holder objected."""


class Action(StrEnum):
    START_REVIEW = "start_review"
    DECIDE = "decide"
    REFER_UP = "refer_up"
    DEADLINE_MISSED = "deadline_missed"
    WITHDRAW = "withdraw"
    CLOSE = "close"
    FINAL_DEADLINE_MISSED = "final_deadline_missed"
    EXPIRE = "expire"
    DECISION_REFUSED_BY_HOLDER = "decision_refused_by_holder"
    DECISION_HOLDER_UNAVAILABLE = "decision_holder_unavailable"


MAX_TIER = 3

TRANSITIONS: dict[tuple[State, Action], State] = {
    (State.OPEN, Action.START_REVIEW): State.IN_REVIEW,
    (State.OPEN, Action.DEADLINE_MISSED): State.ESCALATED,
    (State.OPEN, Action.WITHDRAW): State.WITHDRAWN,
    (State.IN_REVIEW, Action.DECIDE): State.DECIDED,
    (State.IN_REVIEW, Action.REFER_UP): State.ESCALATED,
    (State.IN_REVIEW, Action.DEADLINE_MISSED): State.ESCALATED,
    (State.IN_REVIEW, Action.WITHDRAW): State.WITHDRAWN,
    (State.ESCALATED, Action.START_REVIEW): State.IN_REVIEW,
    (State.ESCALATED, Action.DEADLINE_MISSED): State.ESCALATED,
    (State.ESCALATED, Action.WITHDRAW): State.WITHDRAWN,
    (State.DECIDED, Action.CLOSE): State.CLOSED,
    (State.DECIDED, Action.EXPIRE): State.EXPIRED,
    (State.DECIDED, Action.DECISION_REFUSED_BY_HOLDER): State.DECIDED,
    (State.DECIDED, Action.DECISION_HOLDER_UNAVAILABLE): State.DECIDED,
    (State.OPEN, Action.FINAL_DEADLINE_MISSED): State.OPEN,
    (State.IN_REVIEW, Action.FINAL_DEADLINE_MISSED): State.IN_REVIEW,
    (State.ESCALATED, Action.FINAL_DEADLINE_MISSED): State.ESCALATED,
}
_RAISES_TIER = {Action.REFER_UP, Action.DEADLINE_MISSED}
_LAST_TIER_ONLY = {Action.FINAL_DEADLINE_MISSED}  # below it a missed deadline moves the case up instead


class InvalidTransition(CompanionRefused):
    """A step the case's state does not allow (409); an expected refusal when raised in the audit writer's
    transaction (:class:`~audit.CompanionRefused`)."""

    code = "invalid-transition"  # the console's words for it (escalation.cases.EscalationError)

    def __init__(self, state: State, action: Action, tier: int) -> None:
        super().__init__(f"`{action.value}` is not allowed in state `{state.value}` at tier {tier}")
        self.state, self.action, self.tier = state, action, tier


@dataclass(frozen=True)
class CaseState:
    state: State
    tier: int
    version: int  # optimistic locking: every transition increments it

    def apply(self, action: Action) -> CaseState:
        """The state after ``action``, or InvalidTransition (nothing changes then)."""
        target = TRANSITIONS.get((self.state, action))
        if (target is None or (action in _RAISES_TIER and self.tier >= MAX_TIER)
                or (action in _LAST_TIER_ONLY and self.tier < MAX_TIER)):
            raise InvalidTransition(self.state, action, self.tier)
        tier = self.tier + 1 if action in _RAISES_TIER else self.tier
        return replace(self, state=target, tier=tier, version=self.version + 1)


def new_case() -> CaseState:
    return CaseState(State.OPEN, tier=1, version=1)

"""Every transition of the case state machine, allowed and refused, including the tier ceiling."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import CheckConstraint

from escalation.legal_gaps import GapStatus
from escalation.states import MAX_TIER, TRANSITIONS, Action, CaseState, InvalidTransition, State, new_case
from escalation.tables import escalation_cases, legal_gaps

ALL = list(itertools.product(State, Action))


@pytest.mark.parametrize(("state", "action"), ALL, ids=[f"{s.value}-{a.value}" for s, a in ALL])
def test_each_state_action_pair_is_either_listed_or_refused(state: State, action: Action) -> None:
    tier = MAX_TIER if action is Action.FINAL_DEADLINE_MISSED else 1  # the one step of the last tier only
    case = CaseState(state, tier=tier, version=7)
    if (state, action) in TRANSITIONS:
        after = case.apply(action)
        assert after.state is TRANSITIONS[(state, action)]
        assert after.version == 8
        assert after.tier == (2 if action in {Action.REFER_UP, Action.DEADLINE_MISSED} else tier)
    else:
        with pytest.raises(InvalidTransition):
            case.apply(action)


@pytest.mark.parametrize("action", [Action.REFER_UP, Action.DEADLINE_MISSED])
def test_there_is_no_tier_above_three(action: Action) -> None:
    at_top = CaseState(State.IN_REVIEW, tier=MAX_TIER, version=3)
    with pytest.raises(InvalidTransition, match="tier 3"):
        at_top.apply(action)
    assert at_top.apply(Action.DECIDE).state is State.DECIDED


def test_the_s9_path_through_the_tiers() -> None:
    case = new_case()
    case = case.apply(Action.START_REVIEW)
    case = case.apply(Action.DEADLINE_MISSED)  # tier 1 misses its deadline
    assert (case.state, case.tier) == (State.ESCALATED, 2)
    case = case.apply(Action.START_REVIEW).apply(Action.DECIDE).apply(Action.CLOSE)
    assert (case.state, case.tier, case.version) == (State.CLOSED, 2, 6)


@pytest.mark.parametrize("state", [State.OPEN, State.IN_REVIEW, State.ESCALATED])
def test_a_missed_last_deadline_changes_neither_state_nor_tier_and_only_at_the_last_tier(state: State) -> None:
    after = CaseState(state, tier=MAX_TIER, version=4).apply(Action.FINAL_DEADLINE_MISSED)
    assert (after.state, after.tier, after.version) == (state, MAX_TIER, 5)
    for tier in range(1, MAX_TIER):  # below it a missed deadline moves the case up instead
        with pytest.raises(InvalidTransition):
            CaseState(state, tier=tier, version=4).apply(Action.FINAL_DEADLINE_MISSED)


def test_only_a_decided_case_expires() -> None:
    assert CaseState(State.DECIDED, 2, 5).apply(Action.EXPIRE).state is State.EXPIRED
    for state in set(State) - {State.DECIDED}:
        with pytest.raises(InvalidTransition):
            CaseState(state, 2, 5).apply(Action.EXPIRE)


def test_closed_withdrawn_and_expired_are_final() -> None:
    for final in (State.CLOSED, State.WITHDRAWN, State.EXPIRED):
        for action in Action:
            with pytest.raises(InvalidTransition):
                CaseState(final, 1, 1).apply(action)


def test_the_tables_check_constraints_list_every_state_and_tier() -> None:
    """The database's checks (escalation/tables.py, migration 0033) spell the states and tiers out as SQL:
    a state or tier added to the machine and not to the checks would have every step into it refused."""
    checks = {str(c.name).rsplit("_", 1)[-1]: str(c.sqltext) for table in (escalation_cases, legal_gaps)
              for c in table.constraints if isinstance(c, CheckConstraint)}
    assert checks["state"] == "state IN ({})".format(", ".join(f"'{s.value}'" for s in State))
    assert checks["tier"] == f"tier BETWEEN 1 AND {MAX_TIER}"
    assert checks["status"] == "status IN ({})".format(", ".join(f"'{s.value}'" for s in GapStatus))

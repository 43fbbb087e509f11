"""Escalation cases on SQLite and PostgreSQL: open, review, four eyes, optimistic locking, a missed deadline's
step, and the S9 path up to a tier-2 narrowed allow."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from escalation.cases import (
    Actor,
    ConcurrentUpdate,
    FourEyesViolation,
    MotivationRequired,
    act,
    decide,
    get_case,
    history,
    open_case,
)
from escalation.states import Action, InvalidTransition, State
from gateway.db.engine import make_engine, make_session_factory, transaction

DEADLINES = {1: 5, 2: 10, 3: 20}
TZ = "Europe/Amsterdam"  # the register's office-hours time zone
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
POLICE_PO = Actor("politie", "po-politie")
RIEC_DESK = Actor("riec-aa", "legal-desk")
MUNICIPALITY = Actor("gemeente-amsterdam", "po-amsterdam")


@pytest.fixture
def sessions(db_url: str) -> Iterator[object]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _open(session: Session) -> str:
    case = open_case(session, partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                     requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused",
                     register_version="2026.11.1", policy_reasons=["refused-by-holder"], deadlines=DEADLINES,
                     now=NOW, timezone=TZ, exchange_id="ex-1", request_fingerprint="fp-1")
    assert case.state is State.OPEN
    assert case.deadline == datetime(2026, 12, 2).date()  # 5 working days
    return case.id


def test_s9_path_tier_1_misses_its_deadline_then_tier_2_allows_narrowed(sessions: object) -> None:
    with transaction(sessions) as session:  # type: ignore[arg-type]
        case_id = _open(session)
        act(session, case_id, 1, Action.START_REVIEW, POLICE_PO, now=NOW, deadlines=DEADLINES, timezone=TZ)
    later = NOW + timedelta(days=10)
    with transaction(sessions) as session:  # type: ignore[arg-type]
        # The step the gateway's deadline scan takes (tests/integration/escalation/test_final_deadline.py and
        # test_api.py's metrics test run the scan itself, tier 3 included).
        moved = act(session, case_id, 2, Action.DEADLINE_MISSED, None, now=later, deadlines=DEADLINES, timezone=TZ,
                    motivation="deadline missed")
        assert (moved.id, moved.state, moved.tier) == (case_id, State.ESCALATED, 2)
        assert get_case(session, case_id).deadline > later.date()
        case = act(session, case_id, 3, Action.START_REVIEW, RIEC_DESK, now=later, deadlines=DEADLINES, timezone=TZ)
        decided = decide(session, case_id, case.version, [RIEC_DESK], "incidents are necessary; nothing else",
                         outcome="allow", permitted_categories=["police_incidents"], now=later,
                         deadlines=DEADLINES, timezone=TZ)
    assert decided.state is State.DECIDED
    assert decided.decision is not None
    assert decided.decision["permitted_categories"] == ["police_incidents"]
    assert decided.decision["tier"] == 2
    with transaction(sessions) as session:  # type: ignore[arg-type]
        steps = [event["action"] for event in history(session, case_id)]
    assert steps == ["opened", "start_review", "deadline_missed", "start_review", "decide"]


def test_four_eyes_and_motivation(sessions: object) -> None:
    with transaction(sessions) as session:  # type: ignore[arg-type]
        case_id = _open(session)
        act(session, case_id, 1, Action.START_REVIEW, POLICE_PO, now=NOW, deadlines=DEADLINES, timezone=TZ)
        with pytest.raises(FourEyesViolation):
            decide(session, case_id, 2, [MUNICIPALITY], "we think so", outcome="allow",
                   permitted_categories=["police_incidents"], now=NOW, deadlines=DEADLINES, timezone=TZ)
        with pytest.raises(MotivationRequired):
            decide(session, case_id, 2, [POLICE_PO], "   ", outcome="deny", permitted_categories=[], now=NOW,
                   deadlines=DEADLINES, timezone=TZ)
        assert get_case(session, case_id).state is State.IN_REVIEW


def test_tier_3_needs_two_deciders(sessions: object) -> None:
    with transaction(sessions) as session:  # type: ignore[arg-type]
        case_id = _open(session)
        version = 1
        for action in (Action.START_REVIEW, Action.REFER_UP, Action.START_REVIEW, Action.REFER_UP,
                       Action.START_REVIEW):
            version = act(session, case_id, version, action, RIEC_DESK, now=NOW, deadlines=DEADLINES,
                          timezone=TZ).version
        assert get_case(session, case_id).tier == 3
        with pytest.raises(FourEyesViolation, match="2 different deciders"):
            decide(session, case_id, version, [RIEC_DESK], "steering group", outcome="deny",
                   permitted_categories=[], now=NOW, deadlines=DEADLINES, timezone=TZ)
        decided = decide(session, case_id, version, [RIEC_DESK, Actor("landelijk-steunpunt", "chair")],
                         "steering group", outcome="deny", permitted_categories=[], now=NOW, deadlines=DEADLINES,
                         timezone=TZ)
        assert decided.decision is not None
        assert decided.decision == decided.decision | {"outcome": "deny", "permitted_categories": []}
        with pytest.raises(InvalidTransition):
            act(session, case_id, decided.version, Action.REFER_UP, RIEC_DESK, now=NOW, deadlines=DEADLINES,
                timezone=TZ)


def test_concurrent_decisions_one_wins_the_other_conflicts(sessions: object) -> None:
    with transaction(sessions) as session:  # type: ignore[arg-type]
        case_id = _open(session)
        version = act(session, case_id, 1, Action.START_REVIEW, POLICE_PO, now=NOW, deadlines=DEADLINES,
                      timezone=TZ).version
    with transaction(sessions) as session:  # type: ignore[arg-type]
        decide(session, case_id, version, [POLICE_PO], "first", outcome="deny", permitted_categories=[], now=NOW,
               deadlines=DEADLINES, timezone=TZ)
    with pytest.raises(ConcurrentUpdate), transaction(sessions) as session:  # type: ignore[arg-type]
        decide(session, case_id, version, [RIEC_DESK], "second, based on the same version", outcome="allow",
               permitted_categories=["police_incidents"], now=NOW, deadlines=DEADLINES, timezone=TZ)
    with transaction(sessions) as session:  # type: ignore[arg-type]
        assert get_case(session, case_id).decision["outcome"] == "deny"  # type: ignore[index]

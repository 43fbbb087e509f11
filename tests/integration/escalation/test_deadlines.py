"""Deadlines run by the Dutch calendar day, not the UTC date of the gateway's clock — through the real app,
on SQLite and PostgreSQL: a case opened just after midnight in Amsterdam (still the day before in UTC) gets
its deadline counted from the Amsterdam day, and a case is overdue from midnight in Amsterdam on, in the
API's detail, list filter and metrics and for the overdue scheduler (which counts the next tier's deadline
from the Amsterdam day too). Each test runs its own gateway: the clock moves."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.client.models import Outcome
from tests.integration.escalation.test_api import ENGINES, Env, migrated_url, running_env, target


@pytest.fixture(params=ENGINES)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with running_env(tmp_path, migrated_url(str(request.param), tmp_path, request)) as the_env:
        yield the_env


def at(env: Env, moment: datetime) -> None:
    env.clock.set(moment)
    env.forget_people()  # tokens of another time are not valid now


def test_a_case_opened_after_midnight_in_amsterdam_counts_from_that_day(env: Env) -> None:
    at(env, datetime(2026, 11, 29, 23, 30, tzinfo=UTC))  # Sunday in UTC, Monday 30 Nov 00:30 in Amsterdam
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.DENIED, [])])
    opened = env.post("po-gemeente", "/v1/escalations", {
        "exchange_id": exchange_id, "holder": "politie", "motivation": "The legal basis covers this, review."})
    assert opened.status_code == 201, opened.text
    assert opened.json()["deadline"] == "2026-12-07"  # five working days after Monday (Sunday's: Friday 4th)
    step = env.audit_steps(opened.json()["id"])[0]
    assert step["extra"]["action"] == "opened"


def test_overdue_from_midnight_in_amsterdam_for_the_api_and_the_scheduler(env: Env) -> None:
    case_id = env.open_case(opened_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    assert env.case(case_id).deadline.isoformat() == "2026-12-02"
    at(env, datetime(2026, 12, 2, 22, 30, tzinfo=UTC))  # Wednesday 23:30 in Amsterdam: the deadline day
    assert env.detail("po-politie", case_id)["overdue"] is False
    assert env.run_overdue_job() == []
    at(env, datetime(2026, 12, 2, 23, 30, tzinfo=UTC))  # Thursday 00:30 in Amsterdam, Wednesday in UTC
    assert env.detail("po-politie", case_id)["overdue"] is True
    assert case_id in env.listed("desk-riec", overdue=True)
    assert env.get("desk-riec", "/v1/escalations/metrics").json()["open_past_deadline_by_tier"] == {"1": 1}
    moved = env.run_overdue_job()
    assert [(c.id, c.tier) for c in moved] == [(case_id, 2)]
    assert moved[0].deadline.isoformat() == "2026-12-17"  # ten working days after Thursday 3 December

"""A missed tier-3 deadline, through the real app with a webhook receiver served by uvicorn on loopback.

Tier 3 is the last tier: there is nobody to refer the case to, so the overdue scan used to skip it and
nobody heard that the steering group let its deadline pass. Now the scan reports it, once: one audit entry
(`final_deadline_missed`, naming who was told), one signed notification to each organisation that must act
— the two parties (their privacy officers), the tier-3 deciders (the administrative steering group) and the
partnership's coordinating privacy officer — and nothing more on the scans after it. The case stays at
tier 3, active and overdue, and can still be decided.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from gateway.settings import Settings, WebhookTarget
from tests.integration.escalation.test_api import Env, running_env
from tests.integration.escalation.test_webhooks import Delivery, _drain, _receiver
from tests.servers import serve_app

# RIEC: parties gemeente-amsterdam (requester) and politie (holder); tier 3 riec-aa, landelijk-steunpunt,
# gemeente-amsterdam and om-amsterdam; coordinating privacy officer riec-aa. The bank takes no part.
HOOKED = ("gemeente-amsterdam", "politie", "riec-aa", "landelijk-steunpunt", "om-amsterdam", "abn-amro")
SECRETS = {org: f"{org}-secret-0123456789" for org in HOOKED}


@pytest.fixture
def hooked(tmp_path: Path, sqlite_db_url: str) -> Iterator[tuple[Env, list[Delivery]]]:
    deliveries: list[Delivery] = []
    with serve_app(_receiver(deliveries)) as base:
        settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True, escalation_webhooks={
            org: WebhookTarget(url=f"{base}/hooks/{org}", secret=secret) for org, secret in SECRETS.items()})
        with running_env(tmp_path, sqlite_db_url, settings) as env:
            yield env, deliveries


def _after(env: Env, deadline_day: datetime) -> None:
    env.clock.set(deadline_day)
    env.forget_people()


def test_a_missed_tier_3_deadline_is_reported_to_parties_and_steering_group_once(
        hooked: tuple[Env, list[Delivery]]) -> None:
    env, deliveries = hooked
    case_id = env.open_case()
    env.move_up(case_id, 3)
    deadline = env.case(case_id).deadline
    version = env.version(case_id)
    _drain(env)
    deliveries.clear()

    _after(env, datetime.combine(deadline + timedelta(days=1), time(9), UTC))  # the day after: overdue
    assert env.detail("desk-riec", case_id)["overdue"] is True
    assert env.run_overdue_job() == []  # nothing moves: there is no tier 4
    _drain(env)

    steps = [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "final_deadline_missed"]
    assert len(steps) == 1, "a missed last deadline is audited"
    [step] = steps
    told = ["gemeente-amsterdam", "landelijk-steunpunt", "om-amsterdam", "politie", "riec-aa"]
    assert (step["status"], step["extra"]["tier"], step["extra"]["state"]) == ("ok", 3, "escalated")
    assert step["extra"]["deadline"] == deadline.isoformat()
    assert step["extra"]["notified"] == told
    assert step["requester"] == {"org": "wgs-gateway", "system": "escalation-scheduler", "user": None}

    assert sorted(d.organisation for d in deliveries) == told  # not the bank
    for delivery in deliveries:
        payload = delivery.payload
        assert (payload["event"], payload["case_id"], payload["tier"], payload["deadline"]) == (
            "escalation.final_deadline_missed", case_id, 3, deadline.isoformat())
        assert payload["roles"] == ["administrator", "privacy-officer"]  # whom the receiver should route to

    detail = env.detail("desk-riec", case_id)
    assert (detail["tier"], detail["state"], detail["overdue"]) == (3, "escalated", True)
    assert [h["action"] for h in detail["history"]].count("final_deadline_missed") == 1

    # Later scans, the same day and the next, report nothing again: audited and told once.
    assert env.run_overdue_job() == []
    _after(env, datetime.combine(deadline + timedelta(days=3), time(9), UTC))
    assert env.run_overdue_job() == []
    _drain(env)
    assert len(deliveries) == len(told)
    assert [s["extra"]["action"] for s in env.audit_steps(case_id)].count("final_deadline_missed") == 1

    # The steering group can still decide (with the case's current version).
    assert env.version(case_id) == version + 1
    first = env.decide("desk-riec", case_id, "deny")
    assert first.status_code == 200, first.text
    second = env.decide("po-om", case_id, "deny")
    assert second.status_code == 200, second.text
    assert second.json()["state"] == "closed"


def test_a_tier_3_case_within_its_deadline_is_not_reported(hooked: tuple[Env, list[Delivery]]) -> None:
    env, _deliveries = hooked
    case_id = env.open_case()
    env.move_up(case_id, 3)
    _after(env, datetime.combine(env.case(case_id).deadline, time(9), UTC))  # the deadline day itself
    assert env.run_overdue_job() == []
    assert [s for s in env.audit_steps(case_id) if s["extra"]["action"] == "final_deadline_missed"] == []


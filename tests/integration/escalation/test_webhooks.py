"""Escalation webhooks over real HTTP: a receiver served by uvicorn on loopback gets a signed body per step
for each organisation that configured a webhook and has to act or is a party; the signature verifies with
that organisation's secret only, a tampered or stale body does not, and the body carries references only
(no motivation, no comment, no personal data)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

import gateway.escalations.deadlines as scan_module
from escalation.queries import CaseFilter, CaseScope, list_cases
from gateway.client.models import Outcome
from gateway.escalations.notifications import SIGNATURE_HEADER, sign, verify_signature
from gateway.escalations.setup import escalation_service
from gateway.settings import Settings, WebhookTarget
from tests.integration.escalation.test_api import Env, running_env, target
from tests.servers import serve_app

SECRETS = {"politie": "0123456789abcdef0123", "riec-aa": "fedcba9876543210fedc", "abn-amro": "abn-secret-0123456789"}
OBJECTION = "The disclosure names informants of officer J. de Vries; it must be reviewed."
REFERRAL = "Tier 1 cannot agree about the memo of officer J. de Vries."


@dataclass
class Delivery:
    organisation: str
    body: bytes
    headers: dict[str, str]

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


def _receiver(deliveries: list[Delivery]) -> FastAPI:
    app = FastAPI()

    @app.post("/hooks/{organisation}")
    async def hook(organisation: str, request: Request) -> dict[str, bool]:
        deliveries.append(Delivery(organisation, await request.body(), dict(request.headers)))
        return {"received": True}

    return app


@pytest.fixture
def hooked(tmp_path: Path, sqlite_db_url: str) -> Iterator[tuple[Env, list[Delivery]]]:
    deliveries: list[Delivery] = []
    with serve_app(_receiver(deliveries)) as base:
        settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True, escalation_webhooks={
            org: WebhookTarget(url=f"{base}/hooks/{org}", secret=secret) for org, secret in SECRETS.items()})
        with running_env(tmp_path, sqlite_db_url, settings) as env:
            yield env, deliveries


def _drain(env: Env) -> None:
    portal = env.client.portal
    assert portal is not None
    portal.call(escalation_service(env.container).notifier.drain)


def test_signed_notifications_to_the_parties_and_the_awaited_deciders_only(hooked: tuple[Env, list[Delivery]]) -> None:
    env, deliveries = hooked
    exchange_id = env.insert_exchange([target("politie", "politie-bvh", Outcome.ALLOWED, ["police_incidents"])])
    opened = env.post("po-politie", "/v1/escalations",
                      {"exchange_id": exchange_id, "holder": "politie", "motivation": OBJECTION})
    assert opened.status_code == 201, opened.text
    case_id = opened.json()["id"]
    _drain(env)

    # Tier 1: the parties are told (only the police configured a webhook); the RIEC desk and the bank not.
    assert [d.organisation for d in deliveries] == ["politie"]
    first = deliveries[0]
    assert first.headers["content-type"] == "application/json"
    assert first.payload == {"event": "escalation.step", "case_id": case_id, "state": "open", "tier": 1,
                             "deadline": "2026-12-02", "partnership": "riec-amsterdam-amstelland", "version": 1,
                             "organisation": "politie"}
    header = first.headers[SIGNATURE_HEADER.lower()]
    assert verify_signature(SECRETS["politie"], first.body, header)
    assert not verify_signature(SECRETS["riec-aa"], first.body, header)  # each organisation its own secret
    tampered = first.body.replace(b'"tier":1', b'"tier":3')
    assert tampered != first.body
    assert not verify_signature(SECRETS["politie"], tampered, header)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert abs(timestamp - time.time()) < 60
    assert not verify_signature(SECRETS["politie"], first.body, header, now=timestamp + 3600)  # a replay later
    forged = sign(SECRETS["politie"], tampered, timestamp)  # only the secret's holder can re-sign
    assert verify_signature(SECRETS["politie"], tampered, forged)
    assert not verify_signature(SECRETS["politie"], first.body, forged)
    assert not verify_signature(SECRETS["politie"], first.body, header.split(",")[1])  # no timestamp

    # Referred up: tier 2's deciders are now awaited too (the RIEC desk), the parties are told; not the bank.
    referred = env.post("po-politie", f"/v1/escalations/{case_id}/decision", {
        "expected_version": 1, "outcome": "refer-up", "motivation": REFERRAL})
    assert referred.status_code == 200, referred.text
    assert env.post("po-politie", f"/v1/escalations/{case_id}/comments",
                    {"text": "Memo of officer J. de Vries attached."}).status_code == 200
    _drain(env)
    later = deliveries[1:]
    assert {d.organisation for d in later} == {"politie", "riec-aa"}
    for delivery in later:
        assert verify_signature(SECRETS[delivery.organisation], delivery.body,
                                delivery.headers[SIGNATURE_HEADER.lower()])
        assert delivery.payload["organisation"] == delivery.organisation
        assert (delivery.payload["case_id"], delivery.payload["tier"], delivery.payload["state"]) == (
            case_id, 2, "escalated")
    assert "abn-amro" not in {d.organisation for d in deliveries}
    everything = b"".join(d.body for d in deliveries)
    for free_text in (b"J. de Vries", b"informants", b"memo", b"motivation", b"police_incidents"):
        assert free_text not in everything

    # A closed case is awaited by nobody: the parties learn of it, the deciders (who closed it) are not told.
    other = env.open_case()
    env.move_up(other, 2)
    seen = len(deliveries)
    denied = env.post("desk-riec", f"/v1/escalations/{other}/decision", {
        "expected_version": env.version(other), "outcome": "deny", "motivation": REFERRAL})
    assert denied.status_code == 200, denied.text
    _drain(env)
    closed = deliveries[seen:]
    assert [(d.organisation, d.payload["case_id"], d.payload["state"]) for d in closed] == [
        ("politie", other, "closed")]
    assert verify_signature(SECRETS["politie"], closed[0].body, closed[0].headers[SIGNATURE_HEADER.lower()])


def test_a_missed_deadline_moves_notifies_and_is_logged_once_when_two_gateways_scan(
        hooked: tuple[Env, list[Delivery]], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gateway processes on one database both run the overdue scan. The second one listed the case while
    it was still overdue, but the first moved it before the second got to it: the second must see that it
    changed and leave it alone — no second step in the log (nor one retracted), no second notification."""
    env, deliveries = hooked
    case_id = env.open_case()  # deadline Wednesday 2 December
    env.clock.set(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))  # Thursday: overdue
    with env.container.sessions() as session:  # what the second gateway's scan listed, before the first moved it
        listed = list_cases(session, CaseScope(everything=True), CaseFilter(overdue_on=date(2026, 12, 3)))
    assert [c.id for c in listed] == [case_id]

    assert [(c.id, c.tier) for c in env.run_overdue_job()] == [(case_id, 2)]  # the first gateway
    _drain(env)
    assert sorted(d.organisation for d in deliveries) == ["politie", "riec-aa"]  # parties and tier-2 desk
    logged = env.audit_steps(case_id)

    monkeypatch.setattr(scan_module, "list_cases", lambda *_args, **_kwargs: listed)
    assert env.run_overdue_job() == []  # the second gateway, with its earlier listing
    _drain(env)
    assert len(deliveries) == 2
    assert env.audit_steps(case_id) == logged
    assert [(s["extra"]["action"], s["extra"]["tier"]) for s in logged] == [("deadline_missed", 2)]
    assert (env.case(case_id).tier, env.case(case_id).state.value) == (2, "escalated")

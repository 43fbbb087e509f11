"""Helpers for the console tests: accounts, realistic audit entries, signing in through the real form."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from audit import AuditEvent, DataSubject, Decision, EventType, ProcessingActivity, Requester
from gateway.auditing.setup import audit_services
from gateway.auth.accounts import create_account
from gateway.clock import FixedClock
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from gateway.db.engine import transaction

PASSWORD = "correct horse battery staple"
IDLE = 600  # the console's idle timeout in these tests (seconds): tests advance the clock past it
SUBJECT = "subj-3f9a0c1d2e4b5a6978c0d1e2"  # a partnership-domain pseudonym, as in docs/exchange-api.md
RIEC = ProcessingActivity(partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check")
FEC = ProcessingActivity(partnership="fec", purpose="money-laundering-taskforce")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_account(container: Container, username: str, organisation: str, roles: list[str]) -> None:
    with transaction(container.sessions) as session:
        create_account(session, username, organisation, roles, PASSWORD, container.clock)


def _exchange(activity: ProcessingActivity, requester: str, system: str, holder: str, decision: Decision,
              categories: tuple[str, ...], disclosed: bool) -> list[AuditEvent]:
    trace = secrets.token_hex(16)
    common: dict[str, Any] = {"trace_id": trace, "processing_activity": activity,
                              "data_subject": DataSubject(pseudonym=SUBJECT),
                              "requester": Requester(org=requester, system=system)}
    events = [AuditEvent(event_type=EventType.EXCHANGE_REQUESTED, span_id=secrets.token_hex(8),
                         categories=categories, **common),
              AuditEvent(event_type=EventType.POLICY_DECIDED, span_id=secrets.token_hex(8), holder=holder,
                         decision=decision, categories=categories, reasons=("rule.purpose-bound",), **common)]
    if disclosed:
        events.append(AuditEvent(event_type=EventType.DISCLOSURE, span_id=secrets.token_hex(8), holder=holder,
                                 categories=categories, payload_sha256=secrets.token_hex(32), **common))
    return events


def seed_entries(container: Container) -> None:
    """Exchanges of the municipality (RIEC) and of the bank (FEC), written through the real audit log."""
    log = audit_services(container).log
    log.append(_exchange(RIEC, "gemeente-amsterdam", "gemeente-amsterdam-vth", "kvk", Decision.ALLOW,
                         ("company_registration",), True))
    log.append(_exchange(RIEC, "gemeente-amsterdam", "gemeente-amsterdam-vth", "belastingdienst",
                         Decision.NARROWED, ("tax_debts",), True))
    log.append(_exchange(RIEC, "gemeente-amsterdam", "gemeente-amsterdam-vth", "politie", Decision.DENY,
                         ("police_records",), False))
    log.append(_exchange(FEC, "abn-amro", "abn-amro-fec", "fiod", Decision.DENY, ("transactions",), False))
    log.issue_checkpoint()


def seed_anomaly(container: Container, clock: FixedClock) -> None:
    """A RIEC desk of the police deciding four times its usual volume today: a flag the RIEC's officers see."""
    log = audit_services(container).log
    today = clock.now()
    for days_ago, count in ((3, 10), (2, 10), (1, 10), (0, 40)):
        clock.set(today - timedelta(days=days_ago))
        log.append([AuditEvent(event_type=EventType.POLICY_DECIDED, trace_id=secrets.token_hex(16),
                               span_id=secrets.token_hex(8), processing_activity=RIEC,
                               requester=Requester(org="politie", system="politie-riec-desk"), holder="kvk",
                               decision=Decision.ALLOW) for _ in range(count)])
    clock.set(today)


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has a CSRF field"
    return match.group(1)


def landing_after_sign_in(console: Any, username: str, target: str) -> str:
    """Sign ``username`` in through the real form with ``next`` set to ``target``; where the answer (a 303)
    sends the browser: the one place the tests of ``next`` submit the form."""
    form = console.get("/console/login")
    response = console.post("/console/login", data={"username": username, "password": PASSWORD,
                                                    "csrf_token": csrf_of(form.text), "next": target},
                            follow_redirects=False)
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


@contextmanager
def running_console(app: FastAPI, container: Container, *, seeded: bool,
                    settings: ConsoleSettings | None = None) -> Iterator[TestClient]:
    """The console installed (plain-HTTP cookies, English, ``IDLE`` unless ``settings`` say otherwise) and the
    app started, with the audit entries of ``seed_entries`` when ``seeded``. Accounts are created on first
    sign-in (argon2 hashing is slow on purpose): ``app_state["accounts"]`` remembers which exist."""
    install_console(container, settings or ConsoleSettings(cookie_secure=False, idle_timeout_seconds=IDLE,
                                                           default_language="en"))
    with TestClient(app) as client:
        if seeded:
            seed_entries(container)
        client.app_state["accounts"] = set()
        yield client

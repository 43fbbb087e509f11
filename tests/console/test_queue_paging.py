"""The escalation queue's pages skip no case: one that commits after a page was shown, with an id (UUIDv7, made
when its request began) before that page's last, is on the next page. Paged by id, it was on none."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from escalation.cases import new_case_id, open_case
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.escalations.setup import escalation_service
from tests.console.support import running_console
from tests.console.test_escalations import RIEC, sign_in

PAGE = 5  # the smallest page the console takes


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    settings = ConsoleSettings(cookie_secure=False, default_language="en", page_size=PAGE)
    with running_console(app, container, seeded=False, settings=settings) as client:
        yield client


def _open(container: Container, exchange: str, case_id: str | None = None) -> str:
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        return open_case(session, partnership=RIEC, purpose="bibob-integrity-check",
                         requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused",
                         register_version=service.register.version, policy_reasons=["holder.refused"],
                         deadlines=service.deadlines, now=container.clock.now(), timezone=service.timezone,
                         exchange_id=exchange, requested_categories=["police_incidents"], case_id=case_id).id


def _cases(html: str) -> set[str]:
    return set(re.findall(r'<tr[^>]*data-case="([^"]+)"', html))


def _next(html: str) -> str | None:
    found = re.search(r'href="(/console/escalations\?[^"]*after=[^"]*)"', html)
    return unescape(found.group(1)) if found else None


def test_a_case_committed_after_a_page_was_shown_is_on_the_next_page(console: TestClient,
                                                                     container: Container) -> None:
    late = new_case_id()  # its request began before the others ...
    opened = [_open(container, f"ex-{n}") for n in range(PAGE + 1)]
    sign_in(console, "po-politie")
    first = console.get("/console/escalations")
    assert first.status_code == 200
    assert _cases(first.text) == set(opened[:PAGE])
    next_page = _next(first.text)
    assert next_page is not None

    _open(container, "ex-late", case_id=late)  # ... and committed after the first page was shown
    assert all(late < case_id for case_id in opened)
    assert _cases(console.get(next_page).text) == {opened[PAGE], late}, "the late case is not skipped"

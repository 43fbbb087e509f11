"""No console GET writes anything when another origin's page starts it.

SameSite=Strict keeps the session cookie from other sites, not from other origins of the same site (another
application on a sibling subdomain), and a GET carries no CSRF token: such a page could make the officer's
browser open any console address (an image, a frame, a link) and so make the gateway write — anomaly flags,
checkpoints signed on demand, exports — in the officer's session. The downloads were refused already; these
tests go over every GET route of the console, so that a new one that writes is caught too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audit import EventType
from audit.tables import audit_checkpoints, audit_entries
from escalation.legal_gaps import flag_case
from gateway.auditing.setup import audit_services
from gateway.clock import FixedClock
from gateway.console import endpoints, escalations
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from gateway.db.engine import transaction
from tests.console.support import (
    IDLE,
    PASSWORD,
    add_account,
    csrf_of,
    landing_after_sign_in,
    seed_anomaly,
    seed_entries,
)
from tests.console.test_escalations import open_riec_case

OTHER_ORIGIN = ("same-site", "cross-site")
PAGE_STARTS: tuple[dict[str, str], ...] = (
    {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}, {"Sec-Fetch-Site": "none"}, {})
"""The console's own link, an address typed or bookmarked, a browser without Fetch Metadata."""


@pytest.fixture
def console(app: FastAPI, container: Container, clock: FixedClock,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """Signed in as an officer who may open every console page, with something for each page to write: an
    anomaly flag to record, a checkpoint due, an entry no checkpoint covers yet."""
    install_console(container, ConsoleSettings(cookie_secure=False, idle_timeout_seconds=IDLE,
                                               default_language="en"))
    with TestClient(app) as client:
        # The writer's idle round signs due checkpoints too; here only the requests may write.
        monkeypatch.setattr(audit_services(container).writer, "_idle", lambda: None)
        seed_entries(container)
        seed_anomaly(container, clock)
        case_id = open_riec_case(container)
        with transaction(container.sessions) as session:
            gap = flag_case(session, case_id, organisation="politie", now=clock.now(), title="No basis",
                            description="The WGS is silent on it.")
        add_account(container, "officer", "riec-aa",
                    ["coordinating-privacy-officer", "contact-point", "administrator"])
        form = client.get("/console/login")
        assert client.post("/console/login", data={"username": "officer", "password": PASSWORD,
                                                   "csrf_token": csrf_of(form.text)},
                           follow_redirects=False).status_code == 303
        clock.advance(timedelta(minutes=2))  # a checkpoint is due by time now (the sign-in is not in one)
        client.app_state["ids"] = {"case_id": case_id, "gap_id": gap.id, "name": "console.css",
                                   "index": str(_size(container) - 1)}
        yield client


def _size(container: Container) -> int:
    with container.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


def _written(container: Container) -> tuple[int, int]:
    """What the log holds: entries and checkpoints."""
    with container.engine.connect() as connection:
        return _size(container), int(connection.execute(
            select(func.count()).select_from(audit_checkpoints)).scalar_one())


def console_gets(ids: dict[str, str]) -> list[str]:
    """Every GET address of the console, its path parameters filled in (a new parameter must be added here)."""
    routes = [(route, "") for route in endpoints.router.routes] + [(r, "/console") for r in escalations.router.routes]
    found = set()
    for route, prefix in routes:
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            assert set(route.param_convertors) <= set(ids), f"{route.path}: which value to use?"
            found.add(prefix + route.path.format(**ids))
    return sorted(found)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_no_console_get_writes_when_another_origin_starts_it(console: TestClient, container: Container,
                                                             method: str) -> None:
    """A HEAD is answered as its GET (``gateway.middleware.HeadMiddleware``): refused alike, writing nothing."""
    addresses = console_gets(console.app_state["ids"])
    assert len(addresses) >= 12
    refused = set()
    for site in OTHER_ORIGIN:
        for address in addresses:
            before = _written(container)
            answer = console.request(method, address, follow_redirects=False, headers={
                "Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"})
            assert answer.status_code < 500, (site, address)
            assert _written(container) == before, f"{site} {method} {address} wrote to the log"
            if answer.status_code == 403:
                refused.add(address)
    assert refused == writing_gets(console.app_state["ids"])  # a new one: add it there (and mark its handler)


def writing_gets(ids: dict[str, str]) -> set[str]:
    """The console's GET addresses that write as they open, and refuse another origin (403)."""
    return {f"/console/audit/entries/{ids['index']}", "/console/statistics", "/console/statistics.csv",
            "/console/legal-gaps.csv"}


def test_the_sign_in_form_never_sends_the_browser_on_to_a_page_that_writes(console: TestClient,
                                                                           container: Container) -> None:
    """Another origin's link to a page that writes as it opens, followed by someone signed out, went to the sign-in
    form with that page as ``next`` (a link to ``/console/login?next=...`` did the same): signing in sent the
    browser on to it, by then from the console's own page, so it wrote — an ``export`` entry in the officer's
    name for a CSV they never asked for. The sign-in lands on a page that only reads instead."""
    writing = writing_gets(console.app_state["ids"])
    for address in sorted(writing):
        console.cookies.clear()  # signed out: the link goes to the sign-in form
        asked = console.get(address, follow_redirects=False, headers={"Sec-Fetch-Site": "same-site"})
        assert asked.status_code in {303, 403}, address
        kept = parse_qs(urlsplit(asked.headers.get("location", "")).query).get("next", [])
        for target in [*kept, address]:
            landing = landing_after_sign_in(console, "officer", target)
            assert urlsplit(landing).path not in writing, (address, landing)
            before = _written(container)
            assert console.get(landing, headers={"Sec-Fetch-Site": "same-origin"}).status_code == 200, landing
            assert _written(container)[0] == before[0], f"signing in to {address} wrote on {landing}"


def test_the_refusal_says_to_open_the_page_from_the_console(console: TestClient) -> None:
    refused = console.get("/console/statistics", headers={"Sec-Fetch-Site": "same-site"})
    assert refused.status_code == 403
    assert "This page writes to the audit log as it opens" in refused.text
    assert 'href="/console"' in refused.text  # one click, and it opens from the console's own page
    dutch = console.get("/console/statistics?lang=nl", headers={"Sec-Fetch-Site": "cross-site"})
    assert "Deze pagina schrijft bij het openen in het auditlog" in dutch.text


def test_from_the_consoles_own_pages_they_still_write(console: TestClient, container: Container) -> None:
    """The rule refuses other origins only: the flags are recorded and the entry's checkpoint signed as ever."""
    index = int(console.app_state["ids"]["index"])
    for headers in PAGE_STARTS:
        entries, checkpoints = _written(container)
        statistics = console.get("/console/statistics", headers=headers)
        assert statistics.status_code == 200, headers
        assert "politie-riec-desk" in statistics.text
        entry = console.get(f"/console/audit/entries/{index}", headers=headers)
        assert entry.status_code == 200, headers
        if headers is PAGE_STARTS[0]:  # the first time: the flag recorded, the entry's checkpoint signed
            assert _written(container) == (entries + 1, checkpoints + 1)
    t = audit_entries.c
    with container.engine.connect() as connection:
        flagged = connection.execute(select(func.count()).where(t.event_type == EventType.ANOMALY_FLAGGED.value))
        assert flagged.scalar_one() == 1  # once per actor, day and metric


def test_the_audit_explorer_writes_nothing_and_opens_from_anywhere(console: TestClient, container: Container
                                                                    ) -> None:
    """The explorer is the console's home page, which a link elsewhere (the intranet) may well open. It signed a
    due checkpoint itself as it opened; the audit writer signs due checkpoints anyway (with each append and in
    its idle round), so the page only reads now, and needs no refusal."""
    before = _written(container)
    for headers in ({"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "navigate"}, *PAGE_STARTS):
        page = console.get("/console/audit", headers=headers)
        assert page.status_code == 200, headers
        assert 'id="integrity"' in page.text
    assert _written(container) == before


def test_a_head_from_the_consoles_own_page_writes_what_its_get_writes(console: TestClient, container: Container
                                                                      ) -> None:
    """Every console GET answers HEAD, with the GET's status and headers (a download's name and length
    included) and no body; and writes what the GET writes — an ``export`` entry for a CSV: its length tells how
    much was taken, so it is recorded as the download is. No page writes more for a HEAD than for its GET."""
    ids = console.app_state["ids"]
    for address in console_gets(ids):
        got = console.get(address, follow_redirects=False)
        written = _written(container)
        head = console.head(address, follow_redirects=False)
        assert head.status_code == got.status_code, address
        assert head.content == b""
        for name in ("content-type", "content-length", "content-disposition", "location"):
            assert head.headers.get(name) == got.headers.get(name), (address, name)
        assert _written(container)[0] - written[0] <= (1 if address.endswith(".csv") else 0), address
    for address in ("/console/statistics.csv", "/console/legal-gaps.csv"):
        before = _size(container)
        assert console.head(address).status_code == 200
        assert _size(container) == before + 1, address

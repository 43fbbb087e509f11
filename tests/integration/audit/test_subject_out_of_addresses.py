"""The review API without pseudonyms in addresses: ``POST /v1/audit/entries/search`` and
``POST /v1/audit/subjects/disclosures`` with ``{"pseudonym": ...}``.

Why: a data-subject filter (a pseudonym) in ``GET /v1/audit/entries?subject=`` or in the path of
``GET /v1/audit/subjects/{pseudonym}/disclosures`` lands in reverse proxies' access logs and browser histories,
from which a privacy officer's searches ("which disclosures about subject X") can be read back. The POST forms
answer exactly as the GETs; the GETs still work but say they are deprecated (RFC 9745 ``Deprecation``, a
``Link`` to their successor) in their answers and in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from audit.events import AuditEvent, DataSubject, EventType, ProcessingActivity, Requester
from gateway.app import create_app
from gateway.auditing.review import SUBJECT_IN_ADDRESS_DEPRECATED
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.settings import Settings
from tests.audit_support import span_id, trace_id
from tests.auth_helpers import bearer, issued_person_token

pytestmark = pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # the routes, not the SQL

RIEC = "riec-amsterdam-amstelland"
ALICE, BOB = "bsn.v1.QWxpY2UncyBwc2V1ZG9ueW0gaW4gdGhlIHRlc3Q", "bsn.v1.Qm9iJ3MgcHNldWRvbnltIGluIHRoZSB0ZXN0IGxvZw"
SEARCH, DISCLOSURES = "/v1/audit/entries/search", "/v1/audit/subjects/disclosures"


class Addresses:
    """The ASGI app, recording every request line it is sent (method, path, raw path, query string): what a
    reverse proxy in front of the gateway would log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(" ".join((scope["method"], scope["path"], bytes(scope.get("raw_path") or b"").decode(),
                                       bytes(scope["query_string"]).decode())))
        await self.app(scope, receive, send)


@pytest.fixture
def review(db_url: str, tmp_path: Path, clock: FixedClock) -> Iterator[tuple[TestClient, Container, Addresses]]:
    container = build_container(Settings(data_dir=tmp_path, database_url=db_url, log_json=True), clock)
    addresses = Addresses(create_app(container=container))
    with TestClient(addresses) as client:
        yield client, container, addresses
    container.close()


def _log(container: Container) -> None:
    """Decisions and disclosures about two subjects, requested by the municipality (whose officer sees them) and
    by a bank (whose entries the municipality's officer does not see), and a few without a subject."""
    events = []
    for n in range(24):
        subject = (ALICE, BOB, None)[n % 3]
        requester = ("gemeente-amsterdam", "gemeente-amsterdam-vth") if n % 4 else ("abn-amro", "abn-amro-fec")
        events.append(AuditEvent(
            event_type=EventType.DISCLOSURE if n % 2 else EventType.POLICY_DECIDED, trace_id=trace_id(5000 + n),
            span_id=span_id(5000 + n), holder="kvk",
            processing_activity=ProcessingActivity(partnership=RIEC, purpose="bibob-integrity-check"),
            requester=Requester(org=requester[0], system=requester[1]),
            data_subject=DataSubject(pseudonym=subject) if subject else None))
    container.services["audit"].log.append(events)


def _person(container: Container, organisation: str, role: str) -> dict[str, str]:
    return bearer(issued_person_token(container, f"{role}-{organisation}", organisation, [role]))


def _pages_by_get(client: TestClient, headers: dict[str, str], filters: dict[str, Any]) -> list[dict[str, Any]]:
    pages, cursor = [], -1
    while True:
        answer = client.get("/v1/audit/entries", params={**filters, "cursor": cursor, "limit": 2}, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        if answer.json()["next_cursor"] is None:
            return pages
        cursor = answer.json()["next_cursor"]


def _pages_by_post(client: TestClient, headers: dict[str, str], filters: dict[str, Any]) -> list[dict[str, Any]]:
    pages, cursor = [], -1
    while True:
        answer = client.post(SEARCH, json={**filters, "cursor": cursor, "limit": 2}, headers=headers)
        assert answer.status_code == 200, answer.text
        assert "deprecation" not in answer.headers
        pages.append(answer.json())
        if answer.json()["next_cursor"] is None:
            return pages
        cursor = answer.json()["next_cursor"]


@pytest.mark.parametrize("filters", [
    {"subject": ALICE}, {"subject": BOB, "event_type": "disclosure"},
    {"subject": ALICE, "partnership": RIEC, "since": "2026-11-25T09:00:00Z", "until": "2026-11-25T12:00:00+01:00"},
    {"subject": "bsn.v1.bm9ib2R5IGluIHRoZSBsb2c"}, {"organisation": "gemeente-amsterdam", "decision": "allow"}, {},
], ids=["subject", "subject-and-type", "subject-partnership-window", "unknown-subject", "no-subject", "nothing"])
def test_the_search_answers_page_by_page_what_the_get_answers(
        review: tuple[TestClient, Container, Addresses], filters: dict[str, Any]) -> None:
    client, container, _ = review
    _log(container)
    officer = _person(container, "gemeente-amsterdam", "privacy-officer")
    by_get, by_post = _pages_by_get(client, officer, filters), _pages_by_post(client, officer, filters)
    assert by_post == by_get
    found = [e["entry"]["event"] for page in by_post for e in page["entries"]]
    if filters.get("subject") in {ALICE, BOB}:  # not vacuous: the subject's own entries, only theirs, paged
        assert len(by_post) >= 2
        assert found
        assert {e["data_subject"]["pseudonym"] for e in found} == {filters["subject"]}
        assert {e["requester"]["org"] for e in found} == {"gemeente-amsterdam"}


def test_no_pseudonym_reaches_an_address_however_the_review_is_paged(
        review: tuple[TestClient, Container, Addresses]) -> None:
    client, container, addresses = review
    _log(container)
    officer = _person(container, "gemeente-amsterdam", "privacy-officer")
    contact = _person(container, "gemeente-amsterdam", "contact-point")
    pages = _pages_by_post(client, officer, {"subject": ALICE})
    assert sum(len(page["entries"]) for page in pages) > 2
    found = client.post(DISCLOSURES, json={"pseudonym": ALICE}, headers=contact)
    assert found.status_code == 200, found.text
    assert found.json()
    assert all(e["entry"]["event"]["data_subject"]["pseudonym"] == ALICE for e in found.json())
    assert addresses.seen  # the recorder saw the requests
    assert not [line for line in addresses.seen if ALICE in line or "subject=" in line]
    # The deprecated forms put it there: what the recorder is for.
    client.get(f"/v1/audit/subjects/{ALICE}/disclosures", headers=contact)
    assert ALICE in addresses.seen[-1]


def test_a_lookup_by_the_logs_pseudonym_in_a_body_answers_as_the_deprecated_get(
        review: tuple[TestClient, Container, Addresses]) -> None:
    client, container, _ = review
    _log(container)
    contact = _person(container, "gemeente-amsterdam", "contact-point")
    by_get = client.get(f"/v1/audit/subjects/{BOB}/disclosures", headers=contact)
    by_post = client.post(DISCLOSURES, json={"pseudonym": BOB}, headers=contact)
    assert by_get.status_code == by_post.status_code == 200, by_post.text
    assert by_post.json() == by_get.json()
    assert by_post.json()
    assert {e["entry"]["event"]["event_type"] for e in by_post.json()} == {"disclosure"}
    assert "deprecation" not in by_post.headers
    # Both look-ups are accountable alike: a subject-lookup entry each, naming neither the subject.
    officer = _person(container, "gemeente-amsterdam", "privacy-officer")
    actions = client.post(SEARCH, json={"event_type": "console.action", "limit": 500}, headers=officer).json()
    lookups = [e["entry"]["event"] for e in actions["entries"] if e["entry"]["event"]["extra"].get(
        "action") == "subject-lookup"]
    assert [e["extra"] for e in lookups] == [{"action": "subject-lookup", "channel": "api", "disclosures": 4}] * 2
    assert BOB not in str(lookups)


def test_the_get_forms_with_a_pseudonym_say_they_are_deprecated_and_what_follows_them(
        review: tuple[TestClient, Container, Addresses]) -> None:
    client, container, _ = review
    officer = _person(container, "gemeente-amsterdam", "privacy-officer")
    contact = _person(container, "gemeente-amsterdam", "contact-point")
    moment = f"@{int(SUBJECT_IN_ADDRESS_DEPRECATED.timestamp())}"

    listed = client.get("/v1/audit/entries", params={"subject": ALICE}, headers=officer)
    assert listed.status_code == 200, listed.text
    assert listed.headers["deprecation"] == moment
    assert listed.headers["link"] == f'<{SEARCH}>; rel="successor-version"'
    looked_up = client.get(f"/v1/audit/subjects/{ALICE}/disclosures", headers=contact)
    assert looked_up.status_code == 200, looked_up.text
    assert looked_up.headers["deprecation"] == moment
    assert looked_up.headers["link"] == f'<{DISCLOSURES}>; rel="successor-version"'
    assert ALICE not in looked_up.headers["link"]
    # The listing without a subject is not deprecated: its filters stay bookmarkable.
    plain = client.get("/v1/audit/entries", params={"event_type": "disclosure"}, headers=officer)
    assert plain.status_code == 200, plain.text
    assert "deprecation" not in plain.headers
    assert "link" not in plain.headers


def test_the_successor_link_is_under_the_root_path_a_proxy_mounts_the_gateway_at(
        review: tuple[TestClient, Container, Addresses]) -> None:
    _, container, addresses = review
    contact = _person(container, "gemeente-amsterdam", "contact-point")
    mounted = TestClient(addresses, root_path="/gateway")  # the same running app (its lifespan is the fixture's)
    looked_up = mounted.get(f"/v1/audit/subjects/{ALICE}/disclosures", headers=contact)
    assert looked_up.status_code == 200, looked_up.text
    assert looked_up.headers["link"] == f'</gateway{DISCLOSURES}>; rel="successor-version"'


def test_the_openapi_document_marks_the_address_forms_deprecated_and_not_their_successors(
        review: tuple[TestClient, Container, Addresses]) -> None:
    client, _, _ = review
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/v1/audit/subjects/{pseudonym}/disclosures"]["get"]["deprecated"] is True
    listing = paths["/v1/audit/entries"]["get"]
    assert not listing.get("deprecated")  # the listing stays; only its subject parameter goes
    assert {p["name"] for p in listing["parameters"] if p.get("deprecated")} == {"subject"}
    assert SEARCH in next(p["description"] for p in listing["parameters"] if p["name"] == "subject")
    assert set(listing["responses"]["200"]["headers"]) == {"Deprecation", "Link"}
    for path in (SEARCH, DISCLOSURES):
        operation = paths[path]["post"]
        assert not operation.get("deprecated")
        assert operation["requestBody"]["content"]["application/json"]["examples"]
        assert {"401", "403", "422"} <= set(operation["responses"])


_BAD_SEARCHES = {
    "unknown member": {"subjekt": ALICE},
    "empty subject": {"subject": ""},
    "over-long subject": {"subject": "p" * 1025},
    "subject not text": {"subject": ["p"]},
    "malformed partnership": {"partnership": "RIEC Amsterdam"},
    "malformed event type": {"event_type": "Policy Decided"},
    "malformed moment": {"since": "yesterday"},
    "cursor below -1": {"cursor": -2},
    "cursor beyond 2**53": {"cursor": 2**53 + 1},
    "limit 0": {"limit": 0},
    "limit over a page": {"limit": 501},
    "not an object": [ALICE],
}


@pytest.mark.parametrize("body", list(_BAD_SEARCHES.values()), ids=list(_BAD_SEARCHES))
def test_a_bad_search_body_is_a_422_problem_that_never_repeats_it(
        review: tuple[TestClient, Container, Addresses], body: Any) -> None:
    client, container, _ = review
    answer = client.post(SEARCH, json=body, headers=_person(container, "gemeente-amsterdam", "privacy-officer"))
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == 422
    assert ALICE not in answer.text
    assert "p" * 1025 not in answer.text


def test_an_empty_subject_in_the_address_is_a_422_as_in_the_body(
        review: tuple[TestClient, Container, Addresses]) -> None:
    """``?subject=`` (a tool that filled in no pseudonym) answered every entry the officer may see, as if they
    were the subject's: the body refuses an empty subject and the console an address one for that reason."""
    client, container, _ = review
    _log(container)
    officer = _person(container, "gemeente-amsterdam", "privacy-officer")
    for query in ("subject=", "subject=&partnership=" + RIEC):
        answer = client.get(f"/v1/audit/entries?{query}", headers=officer)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "deprecation" not in answer.headers
    assert client.get("/v1/audit/entries", headers=officer).json()["entries"]  # the log is not empty


_BAD_LOOKUPS = {
    "neither form": {},
    "unknown member only": {"pseudonym_": ALICE},
    "empty pseudonym": {"pseudonym": ""},
    "over-long pseudonym": {"pseudonym": "p" * 1025},
    "pseudonym not text": {"pseudonym": 42},
    "both forms": {"pseudonym": ALICE, "partnership": RIEC},
    "pseudonym and an unknown member": {"pseudonym": ALICE, "limit": 10},
    "not an object": [ALICE],
}


@pytest.mark.parametrize("body", list(_BAD_LOOKUPS.values()), ids=list(_BAD_LOOKUPS))
def test_a_bad_lookup_body_is_a_422_problem_that_never_repeats_it(
        review: tuple[TestClient, Container, Addresses], body: Any) -> None:
    client, container, _ = review
    contact = _person(container, "gemeente-amsterdam", "contact-point")
    assert client.post(DISCLOSURES, json={"pseudonym": ALICE}, headers=contact).status_code == 200  # the form is
    answer = client.post(DISCLOSURES, json=body, headers=contact)  # taken: what is refused is this body
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert ALICE not in answer.text
    assert "p" * 1025 not in answer.text


def test_a_lookup_naming_neither_form_says_what_the_two_forms_are(
        review: tuple[TestClient, Container, Addresses]) -> None:
    client, container, _ = review
    answer = client.post(DISCLOSURES, json={}, headers=_person(container, "gemeente-amsterdam", "contact-point"))
    assert answer.status_code == 422, answer.text
    assert "`pseudonym`" in answer.json()["detail"]
    assert "`partnership` and `subject`" in answer.json()["detail"]

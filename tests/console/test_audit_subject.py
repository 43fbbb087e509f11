"""The audit explorer's data-subject filter never travels in an address.

Why: the filter is a pseudonym, personal data under the GDPR, and reverse proxies (and browsers' histories)
keep addresses. The filter form is POSTed with the CSRF token, the page is the answer to the POST, and its
pager POSTs again with the filters in hidden fields; no link, form action or redirect carries the subject.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from gateway.clock import FixedClock
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from tests.console.support import IDLE, PASSWORD, SUBJECT, csrf_of, running_console
from tests.console.test_console import entry_indices, sign_in

_ADDRESS = re.compile(r'\b(?:href|action|src|formaction)="([^"]*)"')
_FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.DOTALL)
_NEXT = re.compile(r'name="next" value="([^"]*)"')
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=True) as client:
        yield client


def _addresses(response: Response) -> list[str]:
    """Every address the page links, posts or redirects to (what a browser may ask for next, and a proxy log)."""
    found = [html.unescape(a) for a in _ADDRESS.findall(response.text)]
    return [*found, response.headers.get("location", "")]


def _assert_no_subject_in_addresses(response: Response, subject: str = SUBJECT) -> None:
    for address in _addresses(response):
        assert subject not in address, address
        assert "subject=" not in address, address


def _pager_form(page: Response, button: str) -> dict[str, str] | None:
    """The hidden fields of the pager's form whose button says ``button``, or None if there is none."""
    for form in _FORM.findall(page.text):
        if f">{button}</button>" in form and 'action="/console/audit"' in form and 'method="post"' in form:
            return {name: html.unescape(value) for name, value in _HIDDEN.findall(form)}
    return None


def _explore(console: TestClient, **fields: str) -> Response:
    token = csrf_of(console.get("/console/audit").text)
    answer: Response = console.post("/console/audit", data={"csrf_token": token, **fields}, follow_redirects=False)
    return answer


def test_pages_of_a_subject_are_posted_and_no_address_carries_the_pseudonym(console: TestClient,
                                                                            container: Container) -> None:
    install_console(container, ConsoleSettings(cookie_secure=False, page_size=5, default_language="en"))
    sign_in(console, "po-gemeente")
    everything = entry_indices(console.get("/console/audit?partnership=riec-amsterdam-amstelland").text)
    assert len(everything) == 5
    page = _explore(console, subject=f"  {SUBJECT} ", partnership="riec-amsterdam-amstelland")
    assert page.status_code == 200
    assert 'method="get"' not in page.text  # the filter form too is POSTed
    seen: list[int] = []
    pages = 0
    while True:
        pages += 1
        assert pages < 10, "the pager ends"
        _assert_no_subject_in_addresses(page)
        assert f'value="{SUBJECT}"' in page.text  # the filter is kept, in the body
        seen += entry_indices(page.text)
        if pages > 1:
            first = _pager_form(page, "First page")
            assert first is not None
            assert first["subject"] == SUBJECT
            assert "after" not in first
        following = _pager_form(page, "Next page")
        if following is None:
            break
        assert following["subject"] == SUBJECT
        assert following["partnership"] == "riec-amsterdam-amstelland"
        page = console.post("/console/audit", data=following, follow_redirects=False)
        assert page.status_code == 200
    assert pages == 2  # 8 entries of the subject in the partnership, 5 a page
    assert seen == sorted(set(seen))
    assert len(seen) == 8
    back = console.post("/console/audit", data=_pager_form(page, "First page"), follow_redirects=False)
    assert entry_indices(back.text) == seen[:5]
    other = _explore(console, subject="subj-of-nobody-in-the-log")
    assert entry_indices(other.text) == []  # the filter filters


def test_filters_without_a_subject_go_back_to_the_address(console: TestClient) -> None:
    """Without a subject nothing personal is in the filters: the POST answers 303 to the bookmarkable GET."""
    sign_in(console, "po-gemeente")
    answer = _explore(console, subject="  ", partnership="riec-amsterdam-amstelland", event_type="disclosure",
                      decision="", after="2")
    assert answer.status_code == 303
    assert answer.headers["location"] == ("/console/audit?partnership=riec-amsterdam-amstelland"
                                          "&event_type=disclosure&after=2")
    assert _explore(console).headers["location"] == "/console/audit"
    page = console.get(answer.headers["location"])
    assert page.status_code == 200
    assert re.search(r'href="[^"]+" rel="next"', page.text) or "First page" in page.text  # pager by link


def test_the_filter_form_needs_the_csrf_token(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    for token in ({}, {"csrf_token": ""}, {"csrf_token": "not-the-token"}):
        refused = console.post("/console/audit", data={"subject": SUBJECT, **token}, follow_redirects=False)
        assert refused.status_code == 403, token
        assert SUBJECT not in refused.text
        assert entry_indices(refused.text) == []
        _assert_no_subject_in_addresses(refused)


def test_a_subject_in_the_address_is_refused_not_ignored(console: TestClient) -> None:
    """An old bookmark (``?subject=``) would otherwise show every entry as if they were the subject's."""
    sign_in(console, "po-gemeente")
    for query in ({"subject": SUBJECT}, {"subject": ""}, {"subject": "x", "partnership": "fec"}):
        page = console.get("/console/audit", params=query, follow_redirects=False)
        assert page.status_code == 422, query
        assert entry_indices(page.text) == []
        assert "form only" in page.text
        assert SUBJECT not in page.text
        _assert_no_subject_in_addresses(page)


def test_a_session_that_ended_sends_to_sign_in_without_the_subject(console: TestClient, clock: FixedClock) -> None:
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    clock.advance(timedelta(seconds=IDLE + 1))
    expired = console.post("/console/audit", data={"csrf_token": token, "subject": SUBJECT},
                           follow_redirects=False)
    assert expired.status_code == 303
    _assert_no_subject_in_addresses(expired)


@pytest.mark.parametrize("fields", [
    {"subject": "p" * 1025}, {"subject": "\x00"}, {"subject": "Jan Jansen"}, {"subject": "'\"><script>"},
    {"subject": "é" * 600}, {"subject": SUBJECT, "after": "abc"}, {"subject": SUBJECT, "after": str(2**53 + 1)},
    {"subject": SUBJECT, "after": "-5"}, {"subject": SUBJECT, "partnership": "RIEC Amsterdam"},
    {"subject": SUBJECT, "since": "yesterday"}, {"subject": SUBJECT, "until": "2026-12-05T00:00:00+01:00"},
    {"subject": SUBJECT, "event_type": "x" * 100}, {"subject": [SUBJECT, SUBJECT]},
])
def test_odd_filters_are_console_pages_never_500(console: TestClient, fields: dict[str, object]) -> None:
    sign_in(console, "po-gemeente")
    page = _explore(console, **fields)  # type: ignore[arg-type]
    assert page.status_code in {200, 422}, page.text
    assert page.headers["content-type"].startswith("text/html")
    _assert_no_subject_in_addresses(page)
    if page.status_code == 422:
        assert str(fields["subject"]) not in page.text or fields["subject"] == SUBJECT


def test_invalid_utf8_in_the_posted_form_is_not_a_500(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    page = console.post("/console/audit", content=f"csrf_token={token}&subject=%ff%fe".encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert page.status_code in {200, 422}
    assert page.headers["content-type"].startswith("text/html")



def test_an_old_bookmark_opened_signed_out_carries_the_subject_through_no_sign_in(console: TestClient) -> None:
    """A ``?subject=`` bookmark opened while signed out: the console's own redirect to the sign-in form, that
    form (its ``next`` field, its language links) and the redirect after signing in carried the pseudonym on
    into three more addresses. They keep the filter's name without its value, so the person lands on the
    explorer's refusal (422), which says why, and the pseudonym is in nothing the console made."""
    sign_in(console, "po-gemeente")  # the account exists
    console.cookies.clear()
    bookmark = console.get("/console/audit", params={"subject": SUBJECT, "partnership": "fec"},
                           follow_redirects=False)
    assert bookmark.status_code == 303
    assert SUBJECT not in bookmark.headers["location"]
    hand_made = "/console/login?" + urlencode({"next": f"/console/audit?subject={SUBJECT}"})
    for address in (bookmark.headers["location"], hand_made):
        page = console.get(address)
        assert page.status_code == 200
        assert SUBJECT not in page.text  # neither in the form's next field nor in its language links
        landing = console.post("/console/login", data={
            "username": "po-gemeente", "password": PASSWORD, "csrf_token": csrf_of(page.text),
            "next": html.unescape(_NEXT.findall(page.text)[0])}, follow_redirects=False)
        assert landing.status_code == 303
        assert SUBJECT not in landing.headers["location"]
        refused = console.get(landing.headers["location"], follow_redirects=False)
        assert refused.status_code == 422  # refused, not shown unfiltered
        assert "form only" in refused.text
        assert entry_indices(refused.text) == []
        console.cookies.clear()

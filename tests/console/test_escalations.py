"""The console's escalation pages over the ASGI app (TestClient): the queue per tier with its countdowns,
the case page and its forms (decision, review, withdraw, comment, legal-gap flag), the legal-gap register
with status changes and export — scoping, CSRF, the service's refusals shown as readable errors, and the
audit entries (the service's ``escalation.step``; the console adds only its own export)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, get_args

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from escalation.cases import Actor, act, get_case, open_case
from escalation.comments import comments
from escalation.legal_gaps import get_gap
from escalation.states import Action
from gateway.clock import FixedClock
from gateway.console.i18n import MESSAGES
from gateway.console.settings import ConsoleSettings
from gateway.console.views import short_id
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.escalations.setup import escalation_service
from gateway.register.model import Retention, Status
from tests.auth_helpers import account_id
from tests.console.support import PASSWORD, add_account, csrf_of, running_console
from tests.statements import reads_accounts, statements_run

RIEC = "riec-amsterdam-amstelland"
ACCOUNTS = {"po-politie": ("politie", "privacy-officer"), "po-gemeente": ("gemeente-amsterdam", "privacy-officer"),
            "po-bank": ("abn-amro", "privacy-officer"), "admin-riec": ("riec-aa", "administrator"),
            "contact-riec": ("riec-aa", "contact-point"), "po-om": ("om-amsterdam", "privacy-officer"),
            "admin-politie": ("politie", "administrator"), "po-belasting": ("belastingdienst", "privacy-officer")}


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=False,
                         settings=ConsoleSettings(cookie_secure=False, default_language="en")) as client:
        yield client


def sign_in(client: TestClient, username: str) -> TestClient:
    created: set[str] = client.app_state["accounts"]
    if username not in created:
        organisation, role = ACCOUNTS[username]
        add_account(client.app.state.container, username, organisation, [role])  # type: ignore[attr-defined]
        created.add(username)
    client.cookies.clear()
    form = client.get("/console/login")
    response = client.post("/console/login", data={"username": username, "password": PASSWORD,
                                                   "csrf_token": csrf_of(form.text)}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def open_riec_case(container: Container, *, days_ago: int = 0, holder: str = "politie") -> str:
    """A case as the gateway opens it when the police refuses (the exchange itself is not needed here)."""
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        case = open_case(session, partnership=RIEC, purpose="bibob-integrity-check",
                         requester_org="gemeente-amsterdam", holder_org=holder, trigger="holder-refused",
                         register_version=service.register.version, policy_reasons=["holder.refused"],
                         deadlines=service.deadlines, now=container.clock.now() - timedelta(days=days_ago),
                         timezone=service.timezone,
                         exchange_id=f"ex-{days_ago}-{holder}", request_fingerprint="fp",
                         requested_categories=["police_incidents", "criminal_intelligence"])
    return case.id


def riec_case_at_tier_3(container: Container) -> str:
    """A RIEC case referred up twice by missed deadlines: tier 3, the steering group's."""
    case_id = open_riec_case(container)
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        for version in (1, 2):
            act(session, case_id, version, Action.DEADLINE_MISSED, None, now=container.clock.now(),
                deadlines=service.deadlines, timezone=service.timezone)
    return case_id


def version_of(container: Container, case_id: str) -> int:
    with transaction(container.sessions) as session:
        return get_case(session, case_id).version


def audit_events(container: Container, event_type: str) -> list[dict[str, Any]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == event_type).order_by(t.log_index))
        return [json.loads(row)["event"] for row in rows.scalars()]


def case_rows(html: str, tier: int) -> list[str]:
    table = html.split(f'id="cases-tier-{tier}"')
    if len(table) < 2:
        return []
    return re.findall(r'data-case="([^"]+)"', table[1].split("</table>")[0])


def test_queue_per_tier_counts_down_and_highlights_overdue(console: TestClient, container: Container) -> None:
    fresh = open_riec_case(container)
    late = open_riec_case(container, days_ago=20, holder="belastingdienst")
    sign_in(console, "admin-riec")
    page = console.get("/console/escalations")
    assert page.status_code == 200
    assert 'href="/console/escalations" aria-current="page"' in page.text
    assert case_rows(page.text, 1) == [late, fresh]  # most urgent first
    row_of = {case: page.text.split(f'data-case="{case}"')[1].split("</tr>")[0] for case in (fresh, late)}
    assert "7 day(s) left" in row_of[fresh]  # Wed 25 Nov 2026 → Wed 2 Dec: 5 working days
    assert "5 working day(s)" in row_of[fresh]
    assert "Overdue by 13 day(s)" in row_of[late]  # opened 5 Nov, due 12 Nov
    assert f'<tr class="overdue" data-case="{late}">' in page.text
    assert case_rows(page.text, 2) == []
    assert "Tier 2" in page.text
    overdue = console.get("/console/escalations?overdue=1")
    assert case_rows(overdue.text, 1) == [late]
    assert case_rows(console.get("/console/escalations?state=in_review").text, 1) == []
    tier_2 = console.get("/console/escalations?tier=2")
    assert 'id="tier-1"' not in tier_2.text
    assert 'id="tier-2"' in tier_2.text
    assert console.get("/console/escalations?state=sleeping").status_code == 422
    assert console.get("/console/escalations?tier=4").status_code == 422
    # the countdown follows the gateway's clock, not the browser's
    clock: FixedClock = container.clock  # type: ignore[assignment]
    clock.advance(timedelta(days=8))
    sign_in(console, "admin-riec")
    later = console.get("/console/escalations")
    assert "Overdue by 1 day(s)" in later.text.split(f'data-case="{fresh}"')[1].split("</tr>")[0]


def test_overdue_0_means_not_only_overdue_and_a_garbled_flag_is_422(console: TestClient,
                                                                   container: Container) -> None:
    """``?overdue=0`` (or ``false``, ``off``, empty) shows every case, as an unticked box does: it used to
    filter to the overdue ones, because any value at all counted as "only overdue". A value that is no yes
    or no is refused, as the other filters refuse theirs."""
    fresh = open_riec_case(container)
    late = open_riec_case(container, days_ago=20, holder="belastingdienst")
    sign_in(console, "admin-riec")
    for off in ("0", "false", "off", "no", ""):
        page = console.get(f"/console/escalations?overdue={off}")
        assert page.status_code == 200, off
        assert case_rows(page.text, 1) == [late, fresh], off
        assert 'name="overdue" type="checkbox" value="1" checked' not in page.text, off
    for on in ("1", "true", "on", "yes"):
        page = console.get(f"/console/escalations?overdue={on}")
        assert case_rows(page.text, 1) == [late], on
        assert 'name="overdue" type="checkbox" value="1" checked' in page.text, on
    garbled = console.get("/console/escalations?overdue=maybe")
    assert garbled.status_code == 422
    assert "overdue" in garbled.text


def test_the_queue_cursor_is_bounded_as_in_the_api(console: TestClient, container: Container) -> None:
    """``/v1/escalations`` takes a ``cursor`` (a case id) of at most 64 characters; the queue's ``after`` took
    any length into the query. It is refused with the API's message now; one within the bound that names no case
    is refused as well, with its own words (the list goes on after the case its cursor names)."""
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    refused = console.get("/console/escalations", params={"after": "c" * 65})
    assert refused.status_code == 422
    assert "query.after: at most 64 characters." in refused.text
    unknown = console.get("/console/escalations", params={"after": "c" * 64})  # long enough, but names no case
    assert unknown.status_code == 422
    assert "at most 64 characters" not in unknown.text
    assert "start again from the first page" in unknown.text
    assert console.get("/console/escalations", params={"after": case_id}).status_code == 200


def test_awaiting_panel_lists_the_cases_the_organisation_decides(console: TestClient,
                                                                  container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    awaiting = console.get("/console/escalations").text.split('id="awaiting"')[1].split("</section>")[0]
    assert f"/console/escalations/{case_id}" in awaiting
    assert "decision" in awaiting
    sign_in(console, "admin-riec")  # the coordinator sees the case but decides only from tier 2
    awaiting = console.get("/console/escalations").text.split('id="awaiting"')[1].split("</section>")[0]
    assert case_id not in awaiting


def test_each_awaiting_case_has_a_link_of_its_own_name(console: TestClient, container: Container) -> None:
    """Two cases between the same organisations in one partnership were two links reading alike ("RIEC · gemeente
    → politie"), told apart by neither a screen reader's list of links nor the eye: each names its case now, as
    the queue's links do."""
    first, second = open_riec_case(container, days_ago=1), open_riec_case(container)
    sign_in(console, "po-politie")
    awaiting = console.get("/console/escalations").text.split('id="awaiting"')[1].split("</section>")[0]
    links = dict(re.findall(r'<a href="/console/escalations/([^"]+)"[^>]*>(.*?)</a>', awaiting, re.S))
    assert set(links) == {first, second}
    assert links[first] != links[second]
    for case_id, text in links.items():
        assert f"…{short_id(case_id)}" in text, text


def test_case_page_shows_the_request_history_and_the_forms(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    assert page.status_code == 200
    html = page.text
    for text in (RIEC, "bibob-integrity-check", "gemeente-amsterdam", "politie", "holder refused", "holder.refused",
                 "criminal_intelligence, police_incidents", "Tier 1 — Privacy officers of both organisations",
                 "7 day(s) left", "opened"):
        assert text in html, text
    assert f'<input type="hidden" name="expected_version" value="{version_of(container, case_id)}">' in html
    assert 'name="permitted_categories" value="police_incidents"' in html
    assert re.search(r'value="police_incidents"[^>]*checked', html), "requested categories are ticked at first"
    # ... except one the partnership never discloses: an allow naming it is refused (see below)
    assert 'name="permitted_categories" value="criminal_intelligence"' in html
    assert not re.search(r'value="criminal_intelligence"[^>]*checked', html)
    assert 'id="review-form"' in html
    assert 'id="withdraw-form"' not in html, "only the organisation that asked withdraws"
    assert html.count('name="csrf_token"') == 5  # sign-out, review, decision, legal gap, comment
    sign_in(console, "po-gemeente")
    own = console.get(f"/console/escalations/{case_id}").text
    assert 'id="four-eyes-note"' in own
    assert 'id="withdraw-form"' in own
    sign_in(console, "admin-politie")  # the holder's administrator: tier 1 is its privacy officers'
    admin = console.get(f"/console/escalations/{case_id}").text
    assert 'id="comment-form"' in admin
    assert 'id="decision-form"' not in admin
    assert 'id="review-form"' not in admin


def test_an_unrelated_organisation_gets_404_and_a_contact_point_403(console: TestClient,
                                                                     container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-bank")
    page = console.get(f"/console/escalations/{case_id}")
    assert page.status_code == 404
    assert "Not found." in page.text
    assert "politie" not in page.text
    assert case_id not in console.get("/console/escalations").text
    token = csrf_of(console.get("/console/escalations").text)
    for action, data in (("decision", {"expected_version": "1", "outcome": "deny",
                                       "motivation": "the bank thinks it should be denied"}),
                         ("review", {"expected_version": "1"}), ("comments", {"text": "hello"}),
                         ("legal-gap", {"title": "t", "description": "d"})):
        response = console.post(f"/console/escalations/{case_id}/{action}", data=data | {"csrf_token": token})
        assert response.status_code == 404, action
    assert version_of(container, case_id) == 1
    sign_in(console, "contact-riec")
    assert console.get("/console/escalations").status_code == 403
    assert console.get(f"/console/escalations/{case_id}").status_code == 403
    assert console.get("/console/legal-gaps").status_code == 403
    assert 'href="/console/escalations"' not in console.get("/console/register").text


def test_forms_without_the_csrf_token_are_refused(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    decision = {"expected_version": "1", "outcome": "allow", "motivation": "incidents are needed for the advice",
                "permitted_categories": ["police_incidents"]}
    for action, data in (("decision", decision), ("review", {"expected_version": "1"}),
                         ("comments", {"text": "hello"}), ("withdraw", {"expected_version": "1", "motivation": "x"}),
                         ("legal-gap", {"title": "t", "description": "d"})):
        for token in (None, "forged"):
            body = data | ({"csrf_token": token} if token else {})
            response = console.post(f"/console/escalations/{case_id}/{action}", data=body)
            assert response.status_code == 403, action
            assert "did not come from this console" in response.text
    assert version_of(container, case_id) == 1
    assert not audit_events(container, "escalation.step")
    response = console.post("/console/legal-gaps/some-gap/status", data={"expected_version": "1",
                                                                       "status": "resolved"})
    assert response.status_code == 403


def test_a_category_the_holder_may_never_give_the_requester_is_not_ticked_at_first(console: TestClient,
                                                                                 container: Container) -> None:
    """The municipality objected to a narrowing: income, removed because the municipality may not receive it
    for unexplained wealth (rule 3), is among the requested categories. The decision form ticked every
    requested category but those never disclosed, so an allow sent as offered named income, which no re-run
    discloses (the service refuses it now); it is offered unticked, like criminal intelligence."""
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        case_id = open_case(session, partnership=RIEC, purpose="unexplained-wealth",
                            requester_org="gemeente-amsterdam", holder_org="belastingdienst",
                            trigger="requester-objection", register_version=service.register.version,
                            policy_reasons=["category-not-receivable"], deadlines=service.deadlines,
                            now=container.clock.now(), timezone=service.timezone, exchange_id="ex-wealth",
                            request_fingerprint="fp", requested_categories=["assets", "income"]).id
    sign_in(console, "po-belasting")
    html = console.get(f"/console/escalations/{case_id}").text
    assert 'id="decision-form"' in html
    assert re.search(r'value="assets"[^>]*checked', html)
    assert 'name="permitted_categories" value="income"' in html
    assert not re.search(r'value="income"[^>]*checked', html)
    token = csrf_of(html)
    refused = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "allow", "permitted_categories": ["assets", "income"],
        "motivation": "the municipality needs the income as well"})
    assert refused.status_code == 422
    assert "cannot permit income" in refused.text
    assert version_of(container, case_id) == 1


def test_decision_form_errors_are_shown_on_the_case_page(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    url = f"/console/escalations/{case_id}/decision"
    base = {"csrf_token": token, "expected_version": "1", "outcome": "allow",
            "permitted_categories": ["police_incidents"]}

    short = console.post(url, data=base | {"motivation": "ok"})
    assert short.status_code == 422
    assert 'role="alert" id="decision-error">Write a motivation' in short.text
    assert re.search(r'id="motivation"[^>]*aria-invalid="true"', short.text)
    assert 'id="summary"' in short.text, "the case page, not an error page"

    none = console.post(url, data={k: v for k, v in base.items() if k != "permitted_categories"}
                        | {"motivation": "allowing without saying what"})
    assert none.status_code == 422
    assert "An allow names at least one permitted category." in none.text
    assert "allowing without saying what" in none.text, "what was typed is kept"

    unknown = console.post(url, data=base | {"permitted_categories": ["bank_accounts"],
                                             "motivation": "bank accounts were never asked for"})
    assert unknown.status_code == 422
    assert "Incomplete:" in unknown.text
    assert "not requested: bank_accounts" in unknown.text

    never = console.post(url, data=base | {"permitted_categories": ["police_incidents", "criminal_intelligence"],
                                           "motivation": "intelligence is needed here as well"})
    assert never.status_code == 422
    assert "cannot permit criminal_intelligence" in never.text

    no_outcome = console.post(url, data={k: v for k, v in base.items() if k != "outcome"}
                              | {"motivation": "a motivation without an outcome"})
    assert no_outcome.status_code == 422
    assert "Choose an outcome." in no_outcome.text

    stale = console.post(url, data=base | {"expected_version": "7", "motivation": "on a stale page, too late"})
    assert stale.status_code == 409
    assert "Someone acted on this case first" in stale.text
    assert "the case changed since this page was loaded" in stale.text
    assert version_of(container, case_id) == 1

    sign_in(console, "po-gemeente")  # four eyes: the requesting organisation may not decide its own request
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    own = console.post(url, data=base | {"csrf_token": token, "motivation": "we would like our data please"})
    assert own.status_code == 403
    assert "Not allowed: the decider must be outside the requesting organisation" in own.text
    assert 'id="summary"' in own.text
    assert version_of(container, case_id) == 1

    sign_in(console, "admin-riec")  # not a decider at tier 1
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    assert "Your organisation does not decide at this tier." in console.get(f"/console/escalations/{case_id}").text
    desk = console.post(url, data=base | {"csrf_token": token, "motivation": "the desk is not asked yet"})
    assert desk.status_code == 403
    assert 'role="alert" id="case-error">Not allowed: your organisation does not decide at tier 1' in desk.text


def test_review_then_a_narrowed_allow_is_recorded_by_the_service_only(console: TestClient,
                                                                       container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    reviewed = console.post(f"/console/escalations/{case_id}/review",
                            data={"csrf_token": csrf_of(page.text), "expected_version": "1"})
    assert reviewed.status_code == 200
    assert "The case is in review." in reviewed.text
    assert 'id="review-form"' not in reviewed.text
    decided = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": csrf_of(reviewed.text), "expected_version": "2", "outcome": "allow",
        "motivation": "Incidents are necessary for the Bibob advice; intelligence stays out.",
        "permitted_categories": ["police_incidents"], "results_only": "1"})
    assert decided.status_code == 200
    assert "Your decision was recorded." in decided.text
    assert '<dd id="decided-categories">police_incidents</dd>' in decided.text
    assert re.search(r'<code id="decision-id">[0-9a-f-]{36}</code>', decided.text)
    assert '<dd id="decided-obligations">Only results may leave the partnership</dd>' in decided.text
    # the decision's times as every time on the console is shown (UTC, to the second), not as stored (ISO text)
    times = re.findall(r"<dd>(\d{4}-\d{2}-\d{2}[^<]*)</dd>", decided.text)
    assert len(times) >= 2, times
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", t) for t in times), times
    assert 'id="decision-form"' not in decided.text, "nothing left to decide"
    steps = [e for e in audit_events(container, "escalation.step") if e["extra"]["case_id"] == case_id]
    officer = account_id(container, "po-politie")  # the account, never the username
    assert [(s["extra"]["action"], s["requester"]["user"]) for s in steps] == [
        ("start_review", officer), ("decide", officer)]
    assert steps[1]["categories"] == ["police_incidents"]
    assert steps[1]["decision"] == "narrowed"
    assert steps[0]["trace_id"] != steps[1]["trace_id"], "each form post is its own request"
    actions = [a["extra"]["action"] for a in audit_events(container, "console.action")]
    assert actions == ["sign-in"], "no second entry for a case action"


def test_the_requester_may_refer_its_case_up(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    referred = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "refer-up",
        "motivation": "The police will not talk to us; the desk should decide."})
    assert referred.status_code == 200
    assert "The case was referred up to the next tier." in referred.text
    assert "Tier 2 — RIEC legal desk" in referred.text
    assert 'id="not-decider"' in referred.text, "tier 2 is the desk's"


def test_tier_3_needs_two_deciders_who_vote_the_same(console: TestClient, container: Container) -> None:
    case_id = riec_case_at_tier_3(container)
    decision = {"expected_version": "3", "outcome": "allow", "permitted_categories": ["police_incidents"],
                "motivation": "The steering group allows the incidents only."}
    sign_in(console, "admin-riec")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    voted = console.post(f"/console/escalations/{case_id}/decision", data=decision | {"csrf_token": token})
    assert voted.status_code == 200
    assert "Your vote was recorded" in voted.text
    assert "riec-aa: allow (police_incidents)" in voted.text
    assert "<strong>in review</strong>" in voted.text
    sign_in(console, "po-om")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    decided = console.post(f"/console/escalations/{case_id}/decision",
                           data=decision | {"csrf_token": token, "expected_version": "5"})
    assert decided.status_code == 200
    assert "Your decision was recorded." in decided.text
    assert "<dd>om-amsterdam/po-om, riec-aa/admin-riec</dd>" in decided.text


def test_a_holders_objection_is_decided_by_both_parties_not_the_objector_alone(console: TestClient,
                                                                                container: Container) -> None:
    """The police object to a disclosure: their officer's vote waits (the page says why) until the
    municipality's officer — the requester, otherwise barred by four eyes — votes the same."""
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        case_id = open_case(session, partnership=RIEC, purpose="bibob-integrity-check",
                            requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-objection",
                            register_version=service.register.version, policy_reasons=[],
                            deadlines=service.deadlines, now=container.clock.now(), timezone=service.timezone,
                            exchange_id="ex-objected", request_fingerprint="fp",
                            opened_by=Actor("politie", "po-politie"), requested_categories=["police_incidents"]).id
    decision = {"expected_version": "1", "outcome": "deny",
                "motivation": "The disclosure went further than the Bibob advice needs."}
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}").text
    assert 'id="both-parties-note"' in page
    voted = console.post(f"/console/escalations/{case_id}/decision",
                         data=decision | {"csrf_token": csrf_of(page)})
    assert voted.status_code == 200
    assert "Your vote was recorded" in voted.text
    assert "<strong>in review</strong>" in voted.text
    sign_in(console, "po-gemeente")
    page = console.get(f"/console/escalations/{case_id}").text
    assert 'id="four-eyes-note"' not in page
    assert 'id="decision-form"' in page
    decided = console.post(f"/console/escalations/{case_id}/decision",
                           data=decision | {"csrf_token": csrf_of(page), "expected_version": "3"})
    assert decided.status_code == 200
    assert "Your decision was recorded." in decided.text
    with transaction(container.sessions) as session:
        case = get_case(session, case_id)
    assert (case.state.value, sorted(d.split("/")[0] for d in (case.decision or {})["deciders"])) == (
        "closed", ["gemeente-amsterdam", "politie"])


def test_a_console_comment_reads_the_account_once(console: TestClient, container: Container) -> None:
    """The console's session check reads the signed-in account; the escalation step's audit entry names it by
    that id, not by reading the same row again per action."""
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    with statements_run(container.engine, reads_accounts) as reads:
        posted = console.post(f"/console/escalations/{case_id}/comments", data={"csrf_token": token, "text": "A note."},
                              follow_redirects=False)  # the case page it leads to is a request of its own
    assert posted.status_code == 303
    assert len(reads) == 1
    step = audit_events(container, "escalation.step")[-1]
    assert step["requester"]["user"] == account_id(container, "po-gemeente")


def test_comments_carry_attachments_by_reference(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    url = f"/console/escalations/{case_id}/comments"
    bad = console.post(url, data={"csrf_token": token, "text": "see the memo",
                                  "attachment_reference": ["not a reference!", ""], "attachment_title": ["Memo", ""],
                                  "attachment_sha256": ["", ""]})
    assert bad.status_code == 422
    assert "An attachment needs a reference" in bad.text
    assert 'value="not a reference!"' in bad.text
    empty = console.post(url, data={"csrf_token": token, "text": "  "})
    assert empty.status_code == 422
    assert "Write a comment." in empty.text
    # A document number shaped like a BSN is a reference like any other: the log names it by its SHA-256 only
    # (it refused such a reference as personal data when it logged references as typed).
    shaped = console.post(url, data={"csrf_token": token, "text": "see the memo",
                                     "attachment_reference": ["dms://gemeente/2026/111222333", ""],
                                     "attachment_title": ["Memo", ""], "attachment_sha256": ["", ""]})
    assert shaped.status_code == 200
    assert "111222333" not in json.dumps(audit_events(container, "escalation.step")[-1])
    digest = "ab" * 32
    good = console.post(url, data={"csrf_token": token, "text": "Our memo explains why we need it.",
                                   "attachment_reference": ["dms://gemeente/2026/4711", ""],
                                   "attachment_title": ["Memo Bibob advice", ""], "attachment_sha256": [digest, ""]})
    assert good.status_code == 200
    comments = good.text.split('id="comments"')[1]
    assert "Our memo explains why we need it." in comments
    assert "dms://gemeente/2026/4711" in comments
    assert digest in comments
    step = audit_events(container, "escalation.step")[-1]
    assert step["extra"]["attachment_sha256"] == [hashlib.sha256(b"dms://gemeente/2026/4711").hexdigest()]
    assert "dms://gemeente" not in json.dumps(step)
    assert "Our memo" not in json.dumps(step)


@pytest.mark.parametrize("fields", [
    {"attachment_reference": ["dms://gemeente/2026/4711", "dms://gemeente/2026/4712"],
     "attachment_title": ["Memo"], "attachment_sha256": ["", ""]},  # the second title left out
    {"attachment_reference": ["dms://gemeente/2026/4711"], "attachment_title": ["Memo", "Advice"],
     "attachment_sha256": [""]},  # a title without its reference
    {"attachment_reference": ["dms://gemeente/2026/4711"], "attachment_title": ["Memo"],
     "attachment_sha256": ["", "ab" * 32]},  # a SHA-256 without its attachment
])
def test_attachment_fields_in_different_numbers_are_refused_and_nothing_is_written(
        console: TestClient, container: Container, fields: dict[str, list[str]]) -> None:
    """The form sends a reference, a title and a SHA-256 field for every attachment row. They were paired with
    ``zip(strict=False)``: a hand-built POST with more references than titles saved the comment without the
    attachments that had no partner, and said nothing. A comment is part of the case's record (the audit entry
    names its attachments): saved whole or not at all. (No SHA-256 fields at all is still none given: they are
    optional, see test_security.)"""
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    steps = len(audit_events(container, "escalation.step"))
    refused = console.post(f"/console/escalations/{case_id}/comments",
                           data={"csrf_token": token, "text": "Our memo explains why we need it.", **fields})
    assert refused.status_code == 422
    assert "sent them in different numbers" in refused.text
    assert 'id="comment-error"' in refused.text
    assert "Our memo explains why we need it." in refused.text  # what was typed is kept
    assert len(audit_events(container, "escalation.step")) == steps
    with transaction(container.sessions) as session:
        assert comments(session, case_id) == []


def test_the_requester_withdraws_its_case(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    missing = console.post(f"/console/escalations/{case_id}/withdraw",
                           data={"csrf_token": token, "expected_version": "1", "motivation": " "})
    assert missing.status_code == 422
    assert 'id="withdraw-error"' in missing.text
    done = console.post(f"/console/escalations/{case_id}/withdraw",
                        data={"csrf_token": token, "expected_version": "1", "motivation": "settled by phone"})
    assert done.status_code == 200
    assert "The case was withdrawn." in done.text
    assert "<strong>withdrawn</strong>" in done.text
    assert 'id="work"' not in done.text


def test_a_done_notice_is_shown_only_after_this_sessions_own_form(console: TestClient, container: Container) -> None:
    """A link cannot make a case page say "Your decision was recorded" (an administrator would then leave a
    waiting case alone): the notice shows only with the tag this session's redirect carried, for that page."""
    case_id, other_case = open_riec_case(container), open_riec_case(container, holder="belastingdienst")
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    commented = console.post(f"/console/escalations/{case_id}/comments", follow_redirects=False,
                             data={"csrf_token": token, "expected_version": "1", "text": "called the police"})
    assert commented.status_code == 303
    own = commented.headers["location"]
    assert "Your comment was added." in console.get(own).text
    tag = re.search(r"notice=([0-9a-f]+)", own)
    assert tag

    for crafted in (f"/console/escalations/{case_id}?done=decision",
                    f"/console/escalations/{case_id}?done=decision&notice={tag.group(1)}",  # another notice's tag
                    f"/console/escalations/{other_case}?done=comment&notice={tag.group(1)}",  # another page's
                    f"/console/escalations/{case_id}?done=comment&notice={'0' * 32}"):
        page = console.get(crafted)
        assert page.status_code == 200, crafted
        assert 'id="done"' not in page.text, crafted
        assert "was recorded" not in page.text, crafted
        assert "was added" not in page.text, crafted

    sign_in(console, "po-politie")  # another session (a new sign-in): the first session's tag is not its
    page = console.get(own)
    assert page.status_code == 200
    assert 'id="done"' not in page.text


def test_legal_gaps_flag_status_changes_export_and_scoping(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    incomplete = console.post(f"/console/escalations/{case_id}/legal-gap",
                              data={"csrf_token": token, "title": "No basis for intelligence"})
    assert incomplete.status_code == 422
    assert "A new legal gap needs a title and a description." in incomplete.text
    flagged = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": token, "title": "No basis for intelligence in Bibob checks",
        "description": "The WGS does not say whether criminal intelligence may serve a Bibob advice."})
    assert flagged.status_code == 200
    assert "The case was flagged as a legal gap." in flagged.text
    gap_link = re.search(r'href="/console/legal-gaps/([^"]+)">No basis for intelligence', flagged.text)
    assert gap_link
    gap_id = gap_link.group(1)

    listing = console.get("/console/legal-gaps")
    assert listing.status_code == 200
    assert f'<tr id="gap-{gap_id}" data-status="identified">' in listing.text
    assert f'action="/console/legal-gaps/{gap_id}/status"' not in listing.text, "the police does not manage gaps"
    refused = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": csrf_of(listing.text), "expected_version": "1", "status": "on-agenda"})
    assert refused.status_code == 403
    assert "Not allowed: only the coordinating privacy officer" in refused.text

    sign_in(console, "admin-riec")
    listing = console.get("/console/legal-gaps")
    token = csrf_of(listing.text)
    assert "Put on the agenda" in listing.text
    assert "Mark resolved" in listing.text
    moved = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "1", "status": "on-agenda", "note": "steering group 10 Dec"})
    assert moved.status_code == 200
    assert f'<tr id="gap-{gap_id}" data-status="on-agenda">' in moved.text
    stale = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "1", "status": "resolved", "back": "detail"})
    assert stale.status_code == 409
    assert f'id="gap-error-{gap_id}"' in stale.text
    assert "the legal gap changed since this page was loaded" in stale.text
    backwards = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "2", "status": "identified"})
    assert backwards.status_code == 422
    assert "Choose a status." in backwards.text
    resolved = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "2", "status": "resolved", "back": "detail"})
    assert resolved.status_code == 200
    assert "Resolved: final." in resolved.text
    assert "steering group 10 Dec" in resolved.text
    assert gap_id in console.get("/console/legal-gaps?status=resolved").text
    assert gap_id not in console.get("/console/legal-gaps?status=identified").text
    assert console.get("/console/legal-gaps?status=forgotten").status_code == 422

    download = console.get("/console/legal-gaps.csv?status=resolved")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert [(r["id"], r["status"], r["cases"]) for r in rows] == [(gap_id, "resolved", case_id)]
    exports = [a for a in audit_events(container, "console.action") if a["extra"]["action"] == "export"]
    assert [e["extra"] for e in exports] == [{"action": "export", "channel": "console", "export": "legal-gaps.csv",
                                             "rows": 1, "status": "resolved"}]
    steps = [(e["extra"]["action"], e["extra"].get("status")) for e in audit_events(
        container, "escalation.step")]
    # refused attempts (incomplete flag, stale version, not a manager) left no entry
    assert steps == [("legal_gap_flagged", None), ("legal_gap_status", "on-agenda"), ("legal_gap_status", "resolved")]

    sign_in(console, "po-bank")
    assert console.get(f"/console/legal-gaps/{gap_id}").status_code == 404
    assert gap_id not in console.get("/console/legal-gaps").text
    assert gap_id not in console.get("/console/legal-gaps.csv").text


def test_the_gap_download_opens_in_a_spreadsheet_with_its_accents_intact(console: TestClient,
                                                                        container: Container) -> None:
    """The console's CSV, like the API's, starts with the UTF-8 byte-order mark that Excel needs to read
    "ë" and "é" as such (without it, it reads the file in the machine's code page)."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    title = "Geen grondslag: België, één café"
    flagged = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": token, "title": title, "description": "@Ëén formule mag niet."})
    assert flagged.status_code == 200, flagged.text
    download = console.get("/console/legal-gaps.csv")
    assert download.status_code == 200
    assert download.content.startswith(b"\xef\xbb\xbf")
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert [(r["title"], r["description"]) for r in rows] == [(title, "'@Ëén formule mag niet.")]
    [export] = [a for a in audit_events(container, "console.action") if a["extra"]["action"] == "export"]
    assert export["extra"]["rows"] == 1  # the mark is no row


def test_the_gap_pages_name_only_cases_the_reader_may_see(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    flagged = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": token, "title": "=1+1 no basis for intelligence", "description": "@The WGS is silent."})
    gap_link = re.search(r'href="/console/legal-gaps/([^"]+)">=1\+1 no basis', flagged.text)
    assert gap_link
    gap_id = gap_link.group(1)
    assert case_id in console.get(f"/console/legal-gaps/{gap_id}").text  # a party sees its case

    sign_in(console, "po-om")  # a RIEC participant deciding at tier 3: reads the gap, not the tier-1 case
    assert console.get(f"/console/escalations/{case_id}").status_code == 404
    for path in ("/console/legal-gaps", f"/console/legal-gaps/{gap_id}", "/console/legal-gaps.csv"):
        shown = console.get(path)
        assert shown.status_code == 200
        assert gap_id in shown.text, path
        assert case_id not in shown.text, path
    rows = list(csv.DictReader(io.StringIO(console.get("/console/legal-gaps.csv").content.decode("utf-8-sig"))))
    assert [(r["title"], r["description"], r["cases"]) for r in rows if r["id"] == gap_id] == [
        ("'=1+1 no basis for intelligence", "'@The WGS is silent.", "")]


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "9" * 5000])  # superscript two, Arabic-Indic one, too long
@pytest.mark.parametrize("form", ["review", "decision", "withdraw"])
def test_a_mangled_expected_version_is_a_stale_form_not_a_500(console: TestClient, container: Container,
                                                               value: str, form: str) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie" if form != "withdraw" else "po-gemeente")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    response = console.post(f"/console/escalations/{case_id}/{form}", data={
        "csrf_token": token, "expected_version": value, "outcome": "deny",
        "motivation": "A long enough motivation for the form."}, follow_redirects=False)
    assert response.status_code == 422, response.text
    assert f'id="{form}-error"' in response.text
    assert version_of(container, case_id) == 1  # nothing happened


@pytest.mark.parametrize("language", ["nl", "en"])
def test_escalation_pages_render_in_both_languages(console: TestClient, container: Container, language: str) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    expected = {"nl": ("Escalaties", "Juridische knelpunten", "verstrekker weigerde", "nog 7 dag(en)"),
                "en": ("Escalations", "Legal gaps", "holder refused", "7 day(s) left")}[language]
    pages = [console.get(f"{path}?lang={language}") for path in
             ("/console/escalations", f"/console/escalations/{case_id}", "/console/legal-gaps")]
    for page in pages:
        assert page.status_code == 200
        assert f'<html lang="{language}">' in page.text
    assert expected[0] in pages[0].text
    assert expected[1] in pages[2].text
    assert expected[2] in pages[1].text
    assert expected[3] in pages[1].text
    for page in pages:  # every form control has a label
        for control in re.findall(r'<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"', page.text):
            assert f'for="{control}"' in page.text, control


def metrics_row(html: str, tier: int) -> list[str]:
    table = html.split('id="metrics-table"')[1].split("</table>")[0]
    row = table.split(f'<tr data-tier="{tier}">')[1].split("</tr>")[0]
    return [cell.strip() for cell in re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row)]


def test_metrics_show_time_to_decision_per_tier_and_cases_past_deadline(console: TestClient,
                                                                         container: Container) -> None:
    decided = open_riec_case(container, days_ago=3)
    open_riec_case(container, days_ago=20, holder="belastingdienst")  # due 12 Nov: past its deadline
    open_riec_case(container, holder="kvk")
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{decided}").text)
    response = console.post(f"/console/escalations/{decided}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "deny",
        "motivation": "Not necessary for the Bibob advice."})
    assert "Your decision was recorded." in response.text
    sign_in(console, "admin-riec")
    page = console.get("/console/escalations")
    assert page.status_code == 200
    panel = page.text.split('id="metrics"')[1].split("</section>")[0]
    assert "Of the 3 cases you may see:" in panel
    assert "1 open past their deadline." in panel
    assert metrics_row(page.text, 1) == ["tier 1", "1", "72.0", "72.0", "72.0", "1"]
    assert metrics_row(page.text, 2) == ["tier 2", "0", "-", "-", "-", "0"]
    assert metrics_row(page.text, 3) == ["tier 3", "0", "-", "-", "-", "0"]
    assert "Time to decision per tier" in panel
    dutch = console.get("/console/escalations?lang=nl").text
    assert "Kengetallen" in dutch
    assert "Open na termijn" in dutch
    assert metrics_row(dutch, 1) == ["niveau 1", "1", "72.0", "72.0", "72.0", "1"]
    sign_in(console, "po-bank")  # another organisation: none of these cases
    bank = console.get("/console/escalations").text
    assert "Of the 0 cases you may see:" in bank
    assert metrics_row(bank, 1) == ["tier 1", "0", "-", "-", "-", "0"]


@pytest.mark.parametrize("path", ["/console/escalations", "/console/legal-gaps", "/console/legal-gaps.csv"])
def test_the_partnership_filter_is_bounded_as_in_the_api(console: TestClient, path: str) -> None:
    """The queue's and the legal-gap register's partnership filter is an id as the API's: an over-long or
    malformed one is the 422 page without the value; the form's empty choice is still "all"."""
    sign_in(console, "admin-riec")
    for wrong in ("x" * 8_000, '"><script>alert(1)</script>', "RIEC-Amsterdam", "fec'--"):
        page = console.get(path, params={"partnership": wrong})
        assert page.status_code == 422, wrong[:40]
        assert wrong not in page.text
        assert "<script>" not in page.text
    assert console.get(path, params={"partnership": "riec-amsterdam-amstelland"}).status_code == 200
    assert console.get(path, params={"partnership": ""}).status_code == 200


def test_the_case_page_offers_only_open_gaps_to_link_to(console: TestClient, container: Container) -> None:
    """A resolved gap takes no new case (a new problem is a new gap), so the page does not offer it."""
    first, later = open_riec_case(container), open_riec_case(container, holder="belastingdienst")
    sign_in(console, "admin-riec")
    token = csrf_of(console.get(f"/console/escalations/{first}").text)
    for title in ("Gap still open", "Gap to be resolved"):
        flagged = console.post(f"/console/escalations/{first}/legal-gap", data={
            "csrf_token": token, "title": title, "description": "The WGS does not say."})
        assert flagged.status_code == 200, flagged.text
    gap_ids = {title: re.search(rf'href="/console/legal-gaps/([^"]+)">{title}', flagged.text).group(1)  # type: ignore[union-attr]
               for title in ("Gap still open", "Gap to be resolved")}
    listing = console.get("/console/legal-gaps")
    resolved = console.post(f"/console/legal-gaps/{gap_ids['Gap to be resolved']}/status", data={
        "csrf_token": csrf_of(listing.text), "expected_version": "1", "status": "resolved"})
    assert resolved.status_code == 200, resolved.text

    page = console.get(f"/console/escalations/{later}")
    choice = page.text.split('<select id="gap-id" name="gap_id">')[1].split("</select>")[0]
    assert f'value="{gap_ids["Gap still open"]}"' in choice
    assert f'value="{gap_ids["Gap to be resolved"]}"' not in choice
    refused = console.post(f"/console/escalations/{later}/legal-gap", data={
        "csrf_token": csrf_of(page.text), "gap_id": gap_ids["Gap to be resolved"]})
    assert refused.status_code == 409
    assert "resolved" in refused.text
    with transaction(container.sessions) as session:
        assert get_case(session, later).legal_gap is False


def test_a_decision_form_with_a_deletion_date_outside_the_retention_is_refused_and_kept(
        console: TestClient, container: Container) -> None:
    """The service's reason shows next to the decision form, what was typed is kept, and nothing is decided."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    for retain_until, why in (("2026-11-24", "is in the past"), ("2028-11-26", "later than the retention")):
        refused = console.post(f"/console/escalations/{case_id}/decision", data={
            "csrf_token": csrf_of(page.text), "expected_version": "1", "outcome": "allow",
            "motivation": "Incidents are necessary for the Bibob advice; intelligence stays out.",
            "permitted_categories": ["police_incidents"], "retain_until": retain_until})
        assert refused.status_code == 422, refused.text
        assert why in refused.text
        assert f'value="{retain_until}"' in refused.text
    with transaction(container.sessions) as session:
        assert get_case(session, case_id).version == 1
    assert [e for e in audit_events(container, "escalation.step") if e["extra"]["case_id"] == case_id] == []


def test_a_tier_past_its_deadline_is_offered_only_the_referral(console: TestClient, container: Container) -> None:
    """The service refuses a review or an allow/deny of a tier whose deadline passed (409): the case page offered
    them all the same, so a person filled in a decision only to have it refused. Now the page says why and
    offers the referral alone; a case in time keeps every choice."""
    late, on_time = open_riec_case(container, days_ago=20), open_riec_case(container)
    sign_in(console, "po-politie")  # the holder's officer decides at tier 1
    lapsed = console.get(f"/console/escalations/{late}")
    assert lapsed.status_code == 200
    assert 'id="tier-lapsed"' in lapsed.text
    assert re.findall(r'name="outcome" value="([^"]+)"', lapsed.text) == ["refer-up"]
    assert f'action="/console/escalations/{late}/review"' not in lapsed.text
    in_time = console.get(f"/console/escalations/{on_time}")
    assert 'id="tier-lapsed"' not in in_time.text
    assert re.findall(r'name="outcome" value="([^"]+)"', in_time.text) == ["allow", "deny", "refer-up"]
    assert f'action="/console/escalations/{on_time}/review"' in in_time.text


@pytest.mark.parametrize("ending", ["withdrawn", "closed"])
def test_a_closed_or_withdrawn_case_offers_no_comment_form_and_refuses_one(console: TestClient, container: Container,
                                                                          ending: str) -> None:
    """A comment on an ended case is refused by the service (409); the page does not offer the form, and a
    POST made anyway (a page left open) shows the refusal on top, with nothing written."""
    case_id = open_riec_case(container)
    with transaction(container.sessions) as session:
        actor = Actor("gemeente-amsterdam", "set-up")
        service = escalation_service(container)
        steps = ([(Action.WITHDRAW, actor)] if ending == "withdrawn" else
                 [(Action.START_REVIEW, actor), (Action.DECIDE, actor), (Action.CLOSE, None)])
        for version, (action, who) in enumerate(steps, start=1):
            act(session, case_id, version, action, who, now=container.clock.now(), deadlines=service.deadlines,
                timezone=service.timezone, motivation="set-up")
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    assert page.status_code == 200
    assert f"<strong>{ending}</strong>" in page.text
    assert 'id="comment-form"' not in page.text
    assert 'id="comments-closed"' in page.text
    refused = console.post(f"/console/escalations/{case_id}/comments",
                           data={"csrf_token": csrf_of(page.text), "text": "After the end."})
    assert refused.status_code == 409
    assert 'id="case-error"' in refused.text
    assert "open a new escalation or object" in refused.text
    with transaction(container.sessions) as session:
        assert comments(session, case_id) == []
    assert not [e for e in audit_events(container, "escalation.step") if e["extra"]["action"] == "comment"]


def test_the_gap_page_shows_every_status_change_with_its_note(console: TestClient, container: Container) -> None:
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    flagged = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": csrf_of(console.get(f"/console/escalations/{case_id}").text),
        "title": "No basis for intelligence in Bibob checks", "description": "The WGS is silent on it."})
    gap_link = re.search(r'href="/console/legal-gaps/([^"]+)">No basis for intelligence', flagged.text)
    assert gap_link
    gap_id = gap_link.group(1)
    sign_in(console, "admin-riec")
    token = csrf_of(console.get("/console/legal-gaps").text)
    for version, status, note in ((1, "on-agenda", "steering group 10 Dec"), (2, "resolved", "settled by decree")):
        moved = console.post(f"/console/legal-gaps/{gap_id}/status", data={
            "csrf_token": token, "expected_version": str(version), "status": status, "note": note, "back": "detail"})
        assert moved.status_code == 200, moved.text
    history = moved.text.split('id="gap-history"')[1].split("</table>")[0]
    assert "steering group 10 Dec" in history
    assert "settled by decree" in history
    assert history.index("steering group 10 Dec") < history.index("settled by decree")
    assert "riec-aa / admin-riec" in history


def flag_gap(console: TestClient, case_id: str, title: str) -> str:
    """Flag a new legal gap on ``case_id`` through the case page's form; the gap's id."""
    flagged = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": csrf_of(console.get(f"/console/escalations/{case_id}").text),
        "title": title, "description": "The WGS is silent on it."})
    gap_link = re.search(rf'href="/console/legal-gaps/([^"]+)">{title}', flagged.text)
    assert gap_link, flagged.text
    return gap_link.group(1)


def note_field(html: str, gap_id: str) -> str:
    field = re.search(rf'<input id="note-{gap_id}"[^>]*>', html)
    assert field, f"the status form of {gap_id}"
    return field.group(0)


@pytest.mark.parametrize("back", ["list", "detail"])
def test_a_refused_gap_status_change_keeps_the_note_that_was_typed(console: TestClient, container: Container,
                                                                   back: str) -> None:
    """The note for the steering group was thrown away when the change was refused (someone moved the gap
    first: 409; a note too long: 422): the form came back empty. It comes back as typed, in the form of the
    gap it was about only, marked invalid when the note itself was to blame; nothing is changed."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    gap_id, other = flag_gap(console, case_id, "Gap A"), flag_gap(console, case_id, "Gap B")
    token = csrf_of(console.get("/console/legal-gaps").text)
    note = 'Steering group 10 Dec: "ask the ministry" <first>'
    stale = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "2", "status": "on-agenda", "note": note, "back": back})
    assert stale.status_code == 409, stale.text
    assert 'value="Steering group 10 Dec: &#34;ask the ministry&#34; &lt;first&gt;"' in note_field(stale.text, gap_id)
    assert "aria-invalid" not in note_field(stale.text, gap_id)  # the version was stale, not the note
    if back == "list":
        assert 'value=""' in note_field(stale.text, other)
    too_long = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "1", "status": "on-agenda", "note": "n" * 4001, "back": back})
    assert too_long.status_code == 422, too_long.text
    assert "The note is too long." in too_long.text
    field = note_field(too_long.text, gap_id)
    assert f'value="{"n" * 4001}"' in field
    assert f'aria-invalid="true" aria-describedby="gap-error-{gap_id}"' in field
    with transaction(container.sessions) as session:
        assert get_gap(session, gap_id).version == 1


def test_the_requesting_organisation_is_offered_only_the_referral_of_its_own_request(
        console: TestClient, container: Container) -> None:
    """Four eyes: the requesting organisation never allows or denies its own request (the service refuses, 403).
    Its officer was offered allow and deny all the same, next to a note saying they were forbidden, and a
    filled-in decision was refused; now only the referral is offered. The holder's officer keeps every choice,
    and on a holder's objection the requester is a party who votes (``both_parties``), so it keeps them too."""
    case_id = open_riec_case(container)
    sign_in(console, "po-gemeente")  # the municipality asked
    own = console.get(f"/console/escalations/{case_id}")
    assert own.status_code == 200
    assert 'id="four-eyes-note"' in own.text
    assert re.findall(r'name="outcome" value="([^"]+)"', own.text) == ["refer-up"]
    sign_in(console, "po-politie")  # the holder decides at tier 1
    holder = console.get(f"/console/escalations/{case_id}")
    assert 'id="four-eyes-note"' not in holder.text
    assert re.findall(r'name="outcome" value="([^"]+)"', holder.text) == ["allow", "deny", "refer-up"]


def test_the_last_tier_is_offered_no_referral(console: TestClient, container: Container) -> None:
    """Tier 3 is the last: a referral there is refused (409, no tier above). Its deciders were offered "refer
    up" next to allow and deny, and the requesting organisation, which sits on the RIEC's steering group and
    may not allow or deny its own request, was offered a decision form whose only choice was that referral,
    refused whenever sent. Now tier 3 offers allow and deny, and the requester no decision form at all."""
    case_id = riec_case_at_tier_3(container)
    sign_in(console, "po-om")  # a tier-3 decider
    page = console.get(f"/console/escalations/{case_id}").text
    assert re.findall(r'name="outcome" value="([^"]+)"', page) == ["allow", "deny"]
    sign_in(console, "po-gemeente")  # the requester, on the steering group
    own = console.get(f"/console/escalations/{case_id}").text
    assert 'id="decision-form"' not in own
    assert 'name="outcome"' not in own
    assert 'id="four-eyes-note"' in own
    assert "tier 3 is the last" in own
    assert 'id="not-decider"' not in own, "it does sit on the tier; four eyes keep it out"
    assert version_of(container, case_id) == 3


def language_links(html: str) -> dict[str, str]:
    nav = html.split('<nav class="languages"')[1].split("</nav>")[0]
    return {lang: href.replace("&amp;", "&") for href, lang in re.findall(r'<a href="([^"]*)" lang="(nl|en)"', nav)}


def test_the_language_switch_stays_on_the_page_and_keeps_its_filters(console: TestClient, container: Container) -> None:
    """The links were ``?lang=nl``, relative to the address shown. After a refused form that address is the
    form's action, a POST route: switching language there was a GET of it, the 405 page, and what the page
    said was gone. On a list the link dropped the filters (and on the sign-in form the page to return to).
    Now the switch leads to the page a form is on, and keeps the query of a page opened by GET."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    refused = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": csrf_of(page.text), "expected_version": "1", "outcome": "deny", "motivation": "short"})
    assert refused.status_code == 422
    links = language_links(refused.text)
    assert links == {"nl": f"/console/escalations/{case_id}?lang=nl", "en": f"/console/escalations/{case_id}?lang=en"}
    dutch = console.get(links["nl"])
    assert dutch.status_code == 200
    assert '<html lang="nl">' in dutch.text

    queue = console.get("/console/escalations?state=open&junk=%3Cb%3E&tier=1&lang=en")
    assert language_links(queue.text)["nl"] == "/console/escalations?state=open&tier=1&lang=nl"  # what it reads
    forged = console.post(f"/console/escalations/{case_id}/comments", data={"csrf_token": "forged", "text": "x"})
    assert forged.status_code == 403  # the error page echoes no address: the home page, in the other language
    assert language_links(forged.text) == {"nl": "/console?lang=nl", "en": "/console?lang=en"}
    console.cookies.clear()
    login = console.get("/console/login?next=/console/legal-gaps%3Fstatus%3Didentified")
    assert language_links(login.text)["nl"] == ("/console/login?next=%2Fconsole%2Flegal-gaps%3Fstatus%3Didentified"
                                                "&lang=nl")


def test_a_status_change_on_a_filtered_gap_list_comes_back_to_that_list(console: TestClient,
                                                                        container: Container) -> None:
    """Working through the gaps still to be put on the agenda (``?status=identified``), each change — done or
    refused — came back to the whole register, the filter gone. The list's filters now travel with the form:
    the change returns to the filtered list, and a refusal shows there too, even for a gap the filter no
    longer lists (someone moved it first). Filters that are no choice of the list are dropped, not kept."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    first, second, third = (flag_gap(console, case_id, title) for title in ("Gap A", "Gap B", "Gap C"))
    listing = console.get("/console/legal-gaps?status=identified&partnership=riec-amsterdam-amstelland")
    token = csrf_of(listing.text)
    form = listing.text.split(f'action="/console/legal-gaps/{first}/status"')[1].split("</form>")[0]
    assert 'name="list_status" value="identified"' in form
    moved = console.post(f"/console/legal-gaps/{first}/status", follow_redirects=False, data={
        "csrf_token": token, "expected_version": "1", "status": "on-agenda", "list_status": "identified",
        "list_partnership": "riec-amsterdam-amstelland"})
    assert moved.status_code == 303
    assert re.fullmatch(r"/console/legal-gaps\?status=identified&partnership=riec-amsterdam-amstelland"
                        rf"&done=status&notice=[0-9a-f]{{32}}#gap-{first}", moved.headers["location"])
    refused = console.post(f"/console/legal-gaps/{first}/status", data={  # stale: the list no longer shows it
        "csrf_token": token, "expected_version": "1", "status": "resolved", "note": "decree",
        "list_status": "identified", "list_partnership": "riec-amsterdam-amstelland"})
    assert refused.status_code == 409
    assert f'id="gap-{second}"' in refused.text
    assert f'id="gap-{first}"' not in refused.text  # filtered out: on-agenda now
    assert 'selected>' in refused.text.split('id="f-status"')[1].split("</select>")[0]
    above = refused.text.split('id="gaps"')[0]
    assert "the legal gap changed since this page was loaded" in above  # shown above the list
    assert f'<textarea id="unsaved-note-{first}" rows="2" readonly>decree</textarea>' in refused.text
    odd = console.post(f"/console/legal-gaps/{third}/status", follow_redirects=False, data={
        "csrf_token": token, "expected_version": "1", "status": "on-agenda", "list_status": "sleeping",
        "list_partnership": "fec\r\nSet-Cookie: x=1"})
    assert odd.status_code == 303
    assert re.fullmatch(rf"/console/legal-gaps\?done=status&notice=[0-9a-f]{{32}}#gap-{third}", odd.headers["location"])


def test_a_text_typed_into_a_form_the_case_no_longer_offers_is_shown_to_copy(console: TestClient,
                                                                              container: Container) -> None:
    """A comment (or a motivation) sent just as the case ended is refused (409) and the page no longer shows
    its form: the text was gone with it. It is now shown above, read-only, to copy into a new objection."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    with transaction(container.sessions) as session:  # the municipality withdraws meanwhile
        service = escalation_service(container)
        act(session, case_id, 1, Action.WITHDRAW, Actor("gemeente-amsterdam", "set-up"), now=container.clock.now(),
            deadlines=service.deadlines, timezone=service.timezone, motivation="set-up")
    text = "Intelligence is <not> needed; see the memo of 3 Dec."
    refused = console.post(f"/console/escalations/{case_id}/comments",
                           data={"csrf_token": csrf_of(page.text), "text": text})
    assert refused.status_code == 409
    assert 'id="comment-form"' not in refused.text
    kept = re.search(r'<textarea id="unsaved-text"[^>]*>([^<]*)</textarea>', refused.text)
    assert kept, refused.text
    assert kept.group(1) == "Intelligence is &lt;not&gt; needed; see the memo of 3 Dec."
    assert "readonly" in kept.group(0)
    assert 'for="unsaved-text"' in refused.text
    decided = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": csrf_of(page.text), "expected_version": "1", "outcome": "deny",
        "motivation": "Not necessary for the Bibob advice."})
    assert decided.status_code == 409
    assert ">Not necessary for the Bibob advice.</textarea>" in decided.text
    assert 'id="unsaved-text"' not in console.get(f"/console/escalations/{case_id}").text


@pytest.mark.parametrize("back", ["list", "detail"])
def test_a_note_for_a_gap_resolved_meanwhile_is_shown_to_copy(console: TestClient, container: Container,
                                                              back: str) -> None:
    """Resolved is final, so the refused gap shows no status form to put the note back into: it is shown
    read-only beside the refusal instead."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    gap_id = flag_gap(console, case_id, "Gap A")
    token = csrf_of(console.get("/console/legal-gaps").text)
    assert console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "1", "status": "resolved"}).status_code == 200
    refused = console.post(f"/console/legal-gaps/{gap_id}/status", data={
        "csrf_token": token, "expected_version": "1", "status": "on-agenda", "note": "For the 10 Dec <meeting>",
        "back": back})
    assert refused.status_code == 409
    assert f'action="/console/legal-gaps/{gap_id}/status"' not in refused.text
    kept = re.search(rf'<textarea id="unsaved-note-{gap_id}"[^>]*readonly>([^<]*)</textarea>', refused.text)
    assert kept, refused.text
    assert kept.group(1) == "For the 10 Dec &lt;meeting&gt;"
    assert f'for="unsaved-note-{gap_id}"' in refused.text


@pytest.mark.parametrize("action", [Action.DECISION_REFUSED_BY_HOLDER, Action.DECISION_HOLDER_UNAVAILABLE])
def test_the_case_page_shows_a_rerun_the_holder_did_not_follow(console: TestClient, container: Container,
                                                               action: Action) -> None:
    """A re-run citing the allow, refused by the holder or not answered, is a step of its own on the page
    (what happened in words, and its reason code), not left out or shown as the raw action."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    decided = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": csrf_of(page.text), "expected_version": "1", "outcome": "allow",
        "motivation": "Incidents are necessary for the Bibob advice; intelligence stays out.",
        "permitted_categories": ["police_incidents"]})
    assert decided.status_code == 200, decided.text
    service = escalation_service(container)
    with transaction(container.sessions) as session:
        act(session, case_id, get_case(session, case_id).version, action, None, now=container.clock.now(),
            deadlines=service.deadlines, timezone=service.timezone,
            motivation="re-run x-1: refused-by-holder (holder:investigation-confidentiality)")
    html = console.get(f"/console/escalations/{case_id}").text
    label = {Action.DECISION_REFUSED_BY_HOLDER: "re-run refused by the holder despite the decision",
             Action.DECISION_HOLDER_UNAVAILABLE: "re-run: holder unavailable, decision not applied"}[action]
    assert label in html
    assert "holder:investigation-confidentiality" in html


def test_a_too_long_gap_title_gets_its_own_message_not_the_attachments(console: TestClient,
                                                                      container: Container) -> None:
    """The flag form's `title` shared the attachment's message ("an attachment needs a reference ... and
    optionally a SHA-256"), which says nothing of what was wrong with a gap's title. It has its own; the
    description and title typed are kept, and nothing is flagged."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    page = console.get(f"/console/escalations/{case_id}")
    refused = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": csrf_of(page.text), "title": "T" * 201, "description": "The WGS does not say."})
    assert refused.status_code == 422
    assert "title is at most 200 characters of text" in refused.text
    assert "An attachment needs a reference" not in refused.text
    assert "The WGS does not say." in refused.text
    with transaction(container.sessions) as session:
        assert get_case(session, case_id).legal_gap is False


@pytest.mark.parametrize(("description", "language", "message"), [
    ("D" * 4001, "en", "description is at most 4,000 characters of text"),
    ("The WGS does not\x00 say.", "en", "description is at most 4,000 characters of text"),
    ("D" * 4001, "nl", "omschrijving van een juridisch knelpunt is ten hoogste 4.000 tekens tekst")])
def test_an_invalid_gap_description_gets_its_own_message(console: TestClient, container: Container,
                                                         description: str, language: str, message: str) -> None:
    """A too-long description (or one with a NUL) was told "needs a title and a description", which it had:
    it gets its own message, in the page's language; the title typed is kept and nothing is flagged."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    page = console.get(f"/console/escalations/{case_id}")
    refused = console.post(f"/console/escalations/{case_id}/legal-gap?lang={language}", data={
        "csrf_token": csrf_of(page.text), "title": "Bibob cooperation between municipalities",
        "description": description})
    assert refused.status_code == 422
    assert message in refused.text
    assert "needs a title and a description" not in refused.text
    assert "vraagt een titel en een omschrijving" not in refused.text
    assert "Bibob cooperation between municipalities" in refused.text
    with transaction(container.sessions) as session:
        assert get_case(session, case_id).legal_gap is False


def test_a_nul_in_the_queue_cursor_is_a_422(console: TestClient, container: Container) -> None:
    """As in the API: the queue's `after` is a case id, and a NUL in it is a 422 on every engine."""
    open_riec_case(container)
    sign_in(console, "po-gemeente")
    assert console.get("/console/escalations", params={"after": "\x00"}).status_code == 422
    assert console.get("/console/escalations", params={"after": ""}).status_code == 200


def focused(html: str) -> str | None:
    """The id of the element a browser focuses as the page opens (``autofocus``; at most one on a page)."""
    found = re.findall(r"<[a-z]+ [^>]*\bautofocus\b[^>]*>", html)
    assert len(found) <= 1, found
    return re.search(r'id="([^"]+)"', found[0]).group(1) if found else None  # type: ignore[union-attr]


def test_a_refused_form_takes_the_focus_to_its_message(console: TestClient, container: Container) -> None:
    """A refused form comes back as the whole page, opened at its top, with the message beside the form far below
    (the decision form, a comment, a gap's status): a keyboard or screen-reader user started again from the top
    and had to hunt for what went wrong, although the field to correct is marked. The message takes the focus as
    the page opens; it describes the field it is about (``aria-describedby``), which follows it in the form. A
    page shown without an error takes the focus nowhere."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    assert focused(page.text) is None
    token = csrf_of(page.text)
    short = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "deny", "motivation": "ok"})
    assert short.status_code == 422
    assert focused(short.text) == "decision-error"
    empty = console.post(f"/console/escalations/{case_id}/comments", data={"csrf_token": token, "text": " "})
    assert empty.status_code == 422
    assert focused(empty.text) == "comment-error"

    sign_in(console, "admin-riec")  # not a decider at tier 1: the refusal is shown above the case
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    desk = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "deny", "motivation": "the desk is not asked yet"})
    assert desk.status_code == 403
    assert focused(desk.text) == "case-error"
    gap_id = flag_gap(console, case_id, "Gap A")
    for back in ("list", "detail"):
        stale = console.post(f"/console/legal-gaps/{gap_id}/status", data={
            "csrf_token": token, "expected_version": "7", "status": "on-agenda", "back": back})
        assert stale.status_code == 409
        assert focused(stale.text) == f"gap-error-{gap_id}", back

    sign_in(console, "contact-riec")
    form = console.get("/console/subjects")
    assert focused(form.text) is None
    wrong = console.post("/console/subjects", data={"csrf_token": csrf_of(form.text), "pseudonym": "not one!"})
    assert wrong.status_code == 422
    assert focused(wrong.text) == "subject-error"


def test_a_decisions_obligations_are_in_words_in_either_language(console: TestClient, container: Container
                                                                  ) -> None:
    """The decision panel showed the obligations as stored — ``retain_until: 2026-12-31; results_only: True`` —
    in Dutch as in English: field names of the API and Python's ``True``. They are the form's words now."""
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    retain_until = (escalation_service(container).today() + timedelta(days=30)).isoformat()
    decided = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": "1", "outcome": "allow", "retain_until": retain_until,
        "motivation": "Incidents are necessary for the Bibob advice.", "permitted_categories": ["police_incidents"],
        "results_only": "1"})
    assert decided.status_code == 200, decided.text
    assert (f'<dd id="decided-obligations">Delete by {retain_until}; Only results may leave the partnership</dd>'
            in decided.text)
    dutch = console.get(f"/console/escalations/{case_id}?lang=nl")
    assert (f'<dd id="decided-obligations">Verwijderen uiterlijk op {retain_until}; Alleen resultaten mogen het '
            "verband verlaten</dd>") in dutch.text
    for raw in ("retain_until", "results_only:", "True"):
        assert raw not in dutch.text.split('id="decision"')[1].split("</section>")[0], raw


def test_the_register_page_speaks_dutch_about_statuses_and_retention(console: TestClient) -> None:
    """A partnership's and a participant's status and where a retention is counted from were shown as the
    register's values (``active``, ``disclosure``) on the Dutch page too."""
    sign_in(console, "po-politie")
    dutch = console.get("/console/register?lang=nl")
    assert dutch.status_code == 200
    assert ">actief<" in dutch.text
    assert ">active<" not in dutch.text
    assert re.search(r"\d+ maanden vanaf (verstrekking|sluiting van de zaak)<", dutch.text)
    assert "vanaf disclosure" not in dutch.text
    english = console.get("/console/register?lang=en")
    assert ">active<" in english.text
    assert re.search(r"\d+ months from (disclosure|case closure)<", english.text)
    counted_from = get_args(Retention.model_fields["counted_from"].annotation)
    assert {f"register_status.{s.value}" for s in Status} | {f"counted_from.{c}" for c in counted_from} <= set(
        MESSAGES), "every value the register may hold has its words"


def test_refusals_on_a_dutch_case_page_are_in_dutch(console: TestClient, container: Container) -> None:
    """The service's refusals of a case's forms (not a decider, four eyes, a stale version, categories not
    requested) and the form's own validation are worded by their code in the page's language: no English
    on a Dutch page."""
    case_id = open_riec_case(container)
    url = f"/console/escalations/{case_id}/decision"

    def dutch(username: str) -> dict[str, Any]:
        sign_in(console, username)
        page = console.get(f"/console/escalations/{case_id}?lang=nl")
        return {"csrf_token": csrf_of(page.text), "expected_version": "1", "outcome": "allow",
                "permitted_categories": ["police_incidents"], "motivation": "incidents are needed for the advice"}

    desk = console.post(url, data=dutch("admin-riec"))
    assert desk.status_code == 403
    assert ('id="case-error">Niet toegestaan: uw organisatie beslist niet op niveau 1 van dit '
            "samenwerkingsverband.</p>") in desk.text
    own = console.post(url, data=dutch("po-gemeente"))
    assert own.status_code == 403
    assert "Niet toegestaan: wie beslist, moet buiten de verzoekende organisatie staan (vier-ogenprincipe)." in own.text
    base = dutch("po-politie")
    stale = console.post(url, data=base | {"expected_version": "7"})
    assert stale.status_code == 409
    assert "de zaak is gewijzigd sinds deze pagina werd geladen; u hebt niets gewijzigd." in stale.text
    unknown = console.post(url, data=base | {"permitted_categories": ["bank_accounts"]})
    assert unknown.status_code == 422
    assert "Onvolledig: toestaan geldt alleen gevraagde categorieën; niet gevraagd: bank_accounts." in unknown.text
    bad_gap = console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": base["csrf_token"], "gap_id": "not a gap id!"})
    assert bad_gap.status_code == 422
    assert 'id="gap-error">gap_id: niet in de verwachte vorm.</p>' in bad_gap.text
    for page in (desk, own, stale, unknown, bad_gap):
        assert '<html lang="nl">' in page.text
        assert '<span lang="en">' not in page.text
        for english in ("Not allowed", "does not decide", "four eyes", "is at version", "not requested", "invalid"):
            assert english not in page.text
    assert version_of(container, case_id) == 1


@pytest.mark.parametrize("back", ["list", "detail"])
def test_refusals_on_dutch_gap_pages_are_in_dutch(console: TestClient, container: Container, back: str) -> None:
    """A refused status change of a legal gap (someone moved it first; a move its status does not allow) is
    worded in the page's language on the list and on the gap's own page."""
    case_id = open_riec_case(container)
    sign_in(console, "admin-riec")
    gap_id = flag_gap(console, case_id, "Gap A")
    token = csrf_of(console.get("/console/legal-gaps?lang=nl").text)
    status = f"/console/legal-gaps/{gap_id}/status"
    stale = console.post(status, data={"csrf_token": token, "expected_version": "2", "status": "on-agenda",
                                       "back": back})
    assert stale.status_code == 409
    assert ("Iemand anders was u voor, of de stap past niet bij de stand van de zaak; de pagina toont de zaak "
            "zoals die nu is: het juridisch knelpunt is gewijzigd sinds deze pagina werd geladen") in stale.text
    assert console.post(status, data={"csrf_token": token, "expected_version": "1",
                                      "status": "resolved"}).status_code == 200
    final = console.post(status, data={"csrf_token": token, "expected_version": "2", "status": "on-agenda",
                                       "back": back})
    assert final.status_code == 409
    assert "de status van het juridisch knelpunt kan vanuit de huidige status niet zo veranderen." in final.text
    for page in (stale, final):
        assert '<html lang="nl">' in page.text
        assert '<span lang="en">' not in page.text
        assert "legal gap" not in page.text
        assert "cannot go from" not in page.text


def test_a_case_refusal_the_console_has_no_words_for_is_marked_english(console: TestClient, container: Container,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal without a code in the catalogue (a newer service's) keeps the service's English reason after
    the page's own words for its kind, marked ``lang="en"``."""
    from gateway.errors import Conflict
    from gateway.escalations.service import EscalationService

    async def refuse(*_args: object) -> None:
        raise Conflict("a reason from a newer service")

    monkeypatch.setattr(EscalationService, "review", refuse)
    case_id = open_riec_case(container)
    sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}?lang=nl").text)
    refused = console.post(f"/console/escalations/{case_id}/review", data={"csrf_token": token,
                                                                          "expected_version": "1"})
    assert refused.status_code == 409
    assert ("de pagina toont de zaak zoals die nu is: <span lang=\"en\">a reason from a newer service</span></p>"
            in refused.text)

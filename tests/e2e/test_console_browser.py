"""The console in a real browser: Debian's headless Chromium driven by Playwright, against the whole product on
loopback (gateway and simulated partners as real servers, exchanges through the real API).

A privacy officer signs in with the keyboard, verifies the whole log, filters it, opens an entry and sees its inclusion
proof verified by the page's own JavaScript; a privacy officer of another organisation sees none of it; the
contact point answers a data-subject request. Scenario S9 through the console: the police refuses, tier 1
misses its deadline and the gateway's scheduler moves the case up, the RIEC desk (an administrator of riec-aa)
flags a legal gap and allows `police_incidents` only at tier 2, and the municipality's re-run gets exactly
that; the bank's privacy officer sees neither the case nor the gap. Screenshots of the main pages are taken
(into ``WGS_SCREENSHOTS_DIR``, e.g. docs/screenshots/ for docs/console.md).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from escalation.cases import act, get_case, open_case
from escalation.states import Action
from gateway.auditing.setup import audit_services
from gateway.clock import FixedClock
from gateway.db.engine import transaction
from gateway.escalations.setup import escalation_service
from tests.console.support import PASSWORD, add_account
from tests.stack import Stack, running_stack

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots go to a temporary directory, so a test run leaves the checkout as it was; to refresh the
# docs/console.md's pictures: WGS_SCREENSHOTS_DIR=docs/screenshots .venv/bin/pytest tests/e2e
SCREENSHOTS = Path(os.environ.get("WGS_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="wgs-screenshots-"))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (scripts/test installs it)")


def _exchange(stack: Stack, system: str, body: dict[str, object]) -> None:
    response = stack.post(system, "/v1/exchanges", body)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("console-e2e")) as running:
        subjects = running.world.scenarios()
        _exchange(running, "gemeente-amsterdam-vth", {
            "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-700",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-700"},
            "subjects": [{"ref": subjects["bibob-applicant"][0]}], "holders": ["kvk"],
            "categories": ["company_registration"]})
        _exchange(running, "gemeente-amsterdam-vth", {  # narrowed: criminal intelligence is never shared
            "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-702",
            "signal": {"type": "bibob-application", "reference": "BIBOB-2026-702"},
            "subjects": [{"ref": subjects["bibob-applicant"][1]}], "holders": ["politie"],
            "categories": ["police_incidents", "criminal_intelligence"]})
        _exchange(running, "abn-amro-fec", {
            "partnership": "fec", "purpose": "taskforce-subject-check", "legal_basis": "WGS (FEC) with covenant",
            "case_reference": "FEC-TF-701", "signal": {"type": "unusual-transaction", "reference": "MOT-2026-701"},
            "subjects": [{"ref": subjects["bank-customer"][0]}], "holders": ["fiod", "politie"],
            "categories": ["ongoing_investigation"]})
        audit_services(running.container).log.issue_checkpoint()
        add_account(running.container, "po-gemeente", "gemeente-amsterdam", ["privacy-officer"])
        add_account(running.container, "po-bank", "abn-amro", ["privacy-officer"])
        add_account(running.container, "contact-riec", "riec-aa", ["contact-point"])
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as playwright:
        executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
        launched = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def _page(browser: Browser) -> Page:
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def _sign_in(page: Page, base: str, username: str) -> None:
    page.goto(f"{base}/console/login?lang=en")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/login" not in url)


def _entry_of(stack: Stack, requester: str, event_type: str) -> tuple[int, str | None]:
    t = audit_entries.c
    with stack.container.engine.connect() as connection:
        row = connection.execute(select(t.log_index, t.subject_pseudonym).where(
            t.requester_org == requester, t.event_type == event_type).order_by(t.log_index)).first()
    assert row is not None
    return int(row.log_index), row.subject_pseudonym


def test_privacy_officer_filters_the_log_and_sees_a_proof_verified(stack: Stack,
                                                                   browser: Browser) -> None:
    base = stack.gateway_url
    page = _page(browser)
    page.goto(f"{base}/console/audit?lang=en")  # not signed in: sent to the sign-in form
    assert "/console/login" in page.url
    page.screenshot(path=str(SCREENSHOTS / "login.png"), full_page=True)
    # keyboard only: the username field has focus, Tab moves to the password, Enter submits
    page.keyboard.type("po-gemeente")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/console/audit?lang=en")
    assert page.locator("#integrity").get_by_text("valid (checked by the gateway)").is_visible()
    page.get_by_role("button", name="Verify the log now").click()  # the whole log, by the gateway; audited
    page.wait_for_url("**/console/audit?done=verified&notice=*")
    assert page.locator("#last-verification[data-result='ok']").is_visible()
    assert page.get_by_role("status").get_by_text("The log has been verified").is_visible()

    page.get_by_label("Event type").select_option("disclosure")
    page.get_by_label("Partnership").select_option("riec-amsterdam-amstelland")
    page.get_by_role("button", name="Apply filters").click()
    page.wait_for_url("**/console/audit?*event_type=disclosure*")
    rows = page.locator("#entries tbody tr")
    assert rows.count() >= 1
    for text in rows.all_inner_texts():
        assert "disclosure" in text
        assert "gemeente-amsterdam" in text
    page.screenshot(path=str(SCREENSHOTS / "audit-explorer.png"), full_page=True)

    rows.first.locator("a").click()
    status = page.locator("#proof-status")
    page.wait_for_selector("#proof-status[data-result='verified']")
    assert "Proof verified" in status.inner_text()
    assert "verified in your browser" in page.locator("#signature-status").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "audit-entry.png"), full_page=True)

    # the check is real: one changed byte in the entry (as a lying server would send it) fails it
    def tamper(route: Route) -> None:
        response = route.fetch()
        body = response.text()
        canonical = body.split('data-canonical="', 1)[1].split('"', 1)[0]
        changed = canonical[:10] + ("A" if canonical[10] != "A" else "B") + canonical[11:]
        route.fulfill(response=response, body=body.replace(canonical, changed))

    page.route("**/console/audit/entries/*", tamper)
    page.reload()
    page.wait_for_selector("#proof-status[data-result='failed']")
    assert "Proof NOT verified" in status.inner_text()
    page.unroute("**/console/audit/entries/*")

    page.get_by_role("link", name="Statistics").click()
    assert page.locator("#statistics tbody tr").count() >= 1
    assert page.locator("svg[role='img']").count() == 4
    page.screenshot(path=str(SCREENSHOTS / "statistics.png"), full_page=True)

    page.get_by_role("link", name="Register").click()
    assert page.get_by_role("heading", name="Partnership register").is_visible()
    page.screenshot(path=str(SCREENSHOTS / "register.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login?signed_out=1")
    page.goto(f"{base}/console/audit")
    assert "/console/login" in page.url
    page.context.close()


def test_officer_of_another_organisation_sees_none_of_it(stack: Stack, browser: Browser) -> None:
    base = stack.gateway_url
    municipality_entry, _ = _entry_of(stack, "gemeente-amsterdam", "disclosure")
    page = _page(browser)
    _sign_in(page, base, "po-bank")
    rows = page.locator("#entries tbody tr").all_inner_texts()
    own = [row for row in rows if "register.changed" not in row]  # the register's changes: every participant's
    assert own, "the bank's own entries are listed"
    assert all("abn-amro" in row for row in own)
    assert not any("gemeente-amsterdam" in row for row in rows)
    response = page.goto(f"{base}/console/audit/entries/{municipality_entry}")
    assert response is not None
    assert response.status == 404
    assert page.get_by_text("Not found.").is_visible()
    assert page.locator("#proof").count() == 0
    page.context.close()


def test_contact_point_answers_a_data_subject_request(stack: Stack, browser: Browser) -> None:
    base = stack.gateway_url
    _, pseudonym = _entry_of(stack, "gemeente-amsterdam", "disclosure")
    assert pseudonym
    page = _page(browser)
    _sign_in(page, base, "contact-riec")
    assert page.url.endswith("/console/register")  # the contact point has no audit explorer
    page.get_by_role("link", name="Data-subject requests").click()
    page.get_by_label("Subject pseudonym").fill(pseudonym)
    page.get_by_role("button", name="Look up disclosures").click()
    assert "1 disclosure(s) found." in page.locator("#subject-result-count").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "subject-request.png"), full_page=True)
    page.context.close()
    # the look-up is audited, without the pseudonym
    t = audit_entries.c
    with stack.container.engine.connect() as connection:
        actions = [json.loads(c) for c in connection.execute(
            select(t.canonical).where(t.event_type == "console.action")).scalars()]
    lookups = [a for a in actions if a["event"]["extra"]["action"] == "subject-lookup"]
    assert lookups
    assert pseudonym not in json.dumps(lookups)


# -- escalations -----------------------------------------------------------------------------------------

MUNICIPALITY = "gemeente-amsterdam-vth"
RIEC, BIBOB = "riec-amsterdam-amstelland", "bibob-integrity-check"
S9_REQUEST = {"partnership": RIEC, "purpose": BIBOB,
              "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-901",
              "signal": {"type": "bibob-application", "reference": "BIBOB-2026-77"}}
GAP_TITLE = "Criminal intelligence in Bibob advice"


@pytest.fixture(scope="module")
def escalation_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: the test moves its clock eight days ahead, and its scheduler scans every 0.2 s."""
    clock = FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    with running_stack(tmp_path_factory.mktemp("console-s9"), clock=clock,
                       settings_overrides={"escalation_scan_seconds": 0.2}) as running:
        add_account(running.container, "desk-riec", "riec-aa", ["administrator"])
        add_account(running.container, "po-bank", "abn-amro", ["privacy-officer"])
        yield running


def _stale_tier_3_case(stack: Stack) -> str:
    """An older dispute that went through every tier and is now past its tier-3 deadline (the scheduler
    leaves tier 3 alone): it shows how the queue highlights an overdue case."""
    service = escalation_service(stack.container)
    opened = stack.clock.now() - timedelta(days=70)
    with transaction(stack.container.sessions) as session:
        case = open_case(session, partnership=RIEC, purpose=BIBOB,
                         requester_org="gemeente-amsterdam", holder_org="belastingdienst",
                         trigger="policy-escalated", register_version=service.register.version,
                         policy_reasons=["rule.outside-office-hours"], deadlines=service.deadlines, now=opened,
                         timezone=service.timezone, requested_categories=["tax_debts"])
        for days in (8, 25):
            case = act(session, case.id, case.version, Action.DEADLINE_MISSED, None, now=opened + timedelta(days),
                       deadlines=service.deadlines, timezone=service.timezone, motivation="deadline missed")
    assert case.tier == 3
    return case.id


def _wait_for_tier(stack: Stack, case_id: str, tier: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with transaction(stack.container.sessions) as session:
            if get_case(session, case_id).tier == tier:
                return
        time.sleep(0.1)
    raise AssertionError(f"case {case_id} did not reach tier {tier}")


def test_desk_decides_a_tier_2_case_and_the_rerun_gets_exactly_that(escalation_stack: Stack,
                                                                    browser: Browser) -> None:
    stack = escalation_stack
    base = stack.gateway_url
    subjects = [{"ref": ref, "minor": False} for ref in stack.world.scenarios()["police-confidential"]]
    body = S9_REQUEST | {"subjects": subjects, "holders": ["politie"],
                         "categories": ["police_incidents", "criminal_intelligence"]}
    first = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert first.status_code == 200, first.text
    refused = first.json()["targets"][0]
    assert refused["outcome"] == "refused-by-holder"
    case_id = refused["escalation_id"]
    stale_id = _stale_tier_3_case(stack)

    stack.clock.advance(timedelta(days=8))  # tier 1 lets its five working days pass
    stack.forget_tokens()
    _wait_for_tier(stack, case_id, 2)  # moved by the gateway's own scheduler

    page = _page(browser)
    _sign_in(page, base, "desk-riec")
    assert page.url.endswith("/console/escalations")  # the administrator's first page
    tier_2 = page.locator("#cases-tier-2 tbody tr")
    assert tier_2.count() == 1
    assert "riec-amsterdam-amstelland" in tier_2.first.inner_text()
    assert "day(s) left" in tier_2.first.inner_text()
    overdue = page.locator(f"#cases-tier-3 tr[data-case='{stale_id}']")
    assert "overdue" in (overdue.get_attribute("class") or "")
    assert "Overdue by" in overdue.inner_text()
    page.screenshot(path=str(SCREENSHOTS / "escalations.png"), full_page=True)

    page.get_by_role("link", name=f"Open case {case_id}").click()
    assert "Tier 2" in page.locator("#case-status").inner_text()
    assert page.locator("#requested-categories").inner_text() == "criminal_intelligence, police_incidents"
    assert "holder refused" in page.locator("#summary").inner_text()

    # the case shows a gap in the law: flag it for the steering group's agenda
    page.get_by_label("Title", exact=True).fill(GAP_TITLE)
    page.get_by_label("Missing or unclear basis").fill(
        "The WGS does not say whether criminal intelligence may inform a Bibob advice.")
    page.get_by_role("button", name="Flag", exact=True).click()
    assert "flagged as a legal gap" in page.locator("#done").inner_text()

    # allow, narrowed to the police incidents; a motivation that is too short is refused on the page
    form = page.locator("#decision-form")
    form.get_by_label("allow", exact=True).check()
    form.get_by_label("criminal_intelligence").uncheck()
    assert form.get_by_label("police_incidents").is_checked()
    form.get_by_label("Motivation").fill("needed")
    form.get_by_role("button", name="Record decision").click()
    assert "Write a motivation" in page.locator("#decision-error").inner_text()
    assert page.locator("#motivation").get_attribute("aria-invalid") == "true"
    form = page.locator("#decision-form")
    assert not form.get_by_label("criminal_intelligence").is_checked(), "the narrowing was kept"
    form.get_by_label("Motivation").fill("Incidents are necessary for the Bibob advice; intelligence stays out.")
    form.get_by_role("button", name="Record decision").click()
    assert "Your decision was recorded." in page.locator("#done").inner_text()
    assert page.locator("#decided-categories").inner_text() == "police_incidents"
    decision_id = page.locator("#decision-id").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "escalation-case.png"), full_page=True)

    rerun = stack.post(MUNICIPALITY, "/v1/exchanges", body | {"escalation_decision": decision_id})
    assert rerun.status_code == 200, rerun.text
    police = rerun.json()["targets"][0]
    assert police["outcome"] == "allowed-narrowed"
    assert police["escalation_decision_applied"] is True
    assert police["records"], "the holder answered under the binding decision"
    assert {record["category"] for record in police["records"]} == {"police_incidents"}
    page.reload()
    assert "closed" in page.locator("#case-status").inner_text()

    page.get_by_role("link", name="Legal gaps").click()
    row = page.locator("#gaps tbody tr", has_text=GAP_TITLE)
    assert "identified" in row.inner_text()
    row.get_by_label("Note").fill("Steering group, 10 December")
    row.get_by_role("button", name="Put on the agenda").click()
    row = page.locator("#gaps tbody tr", has_text=GAP_TITLE)
    assert row.get_attribute("data-status") == "on-agenda"
    gap_href = row.get_by_role("link", name=GAP_TITLE).get_attribute("href")
    assert gap_href
    page.screenshot(path=str(SCREENSHOTS / "legal-gaps.png"), full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="Download for the agenda (CSV)").click()
    assert GAP_TITLE in Path(str(download.value.path())).read_text()
    page.context.close()

    other = _page(browser)
    _sign_in(other, base, "po-bank")
    for path in (f"/console/escalations/{case_id}", gap_href):
        response = other.goto(f"{base}{path}")
        assert response is not None
        assert response.status == 404, path
        assert other.get_by_text("Not found.").is_visible()
    other.goto(f"{base}/console/escalations")
    assert case_id not in other.content()
    other.goto(f"{base}/console/legal-gaps")
    assert GAP_TITLE not in other.content()
    other.context.close()

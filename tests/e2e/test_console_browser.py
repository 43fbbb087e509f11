"""The console in a real browser: Debian's headless Chromium driven by Playwright, against the whole product on
loopback (gateway and simulated partners as real servers, exchanges through the real API).

A privacy officer signs in with the keyboard, filters the audit log, opens an entry and sees its inclusion
proof verified by the page's own JavaScript; a privacy officer of another organisation sees none of it; the
contact point answers a data-subject request. Screenshots of the main pages go to docs/screenshots/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.auditing.setup import audit_services
from tests.console.support import PASSWORD, add_account
from tests.stack import Stack, running_stack

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

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
def browser() -> Iterator[playwright_sync.Browser]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_sync.sync_playwright() as playwright:
        executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
        launched = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


def _page(browser: playwright_sync.Browser) -> playwright_sync.Page:
    context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    return page


def _sign_in(page: playwright_sync.Page, base: str, username: str) -> None:
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
                                                                   browser: playwright_sync.Browser) -> None:
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
    def tamper(route: playwright_sync.Route) -> None:
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


def test_officer_of_another_organisation_sees_none_of_it(stack: Stack, browser: playwright_sync.Browser) -> None:
    base = stack.gateway_url
    municipality_entry, _ = _entry_of(stack, "gemeente-amsterdam", "disclosure")
    page = _page(browser)
    _sign_in(page, base, "po-bank")
    rows = page.locator("#entries tbody tr").all_inner_texts()
    assert rows, "the bank's own entries are listed"
    assert all("abn-amro" in row for row in rows)
    assert not any("gemeente-amsterdam" in row for row in rows)
    response = page.goto(f"{base}/console/audit/entries/{municipality_entry}")
    assert response is not None
    assert response.status == 404
    assert page.get_by_text("Not found.").is_visible()
    assert page.locator("#proof").count() == 0
    page.context.close()


def test_contact_point_answers_a_data_subject_request(stack: Stack, browser: playwright_sync.Browser) -> None:
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

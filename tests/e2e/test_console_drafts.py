"""What an officer typed survives their session going idle (Debian's headless Chromium through Playwright,
against the app served on loopback with the tests' fixed clock).

The server refuses a form sent after the idle timeout without acting on it and sends the person to the
sign-in form; the console's own script (static/drafts.js, allowed by the console's CSP: no inline script) keeps
the typed text in the tab's sessionStorage and puts it back into the form after signing in again. It is
dropped once the form was sent and done, on signing out, and when someone else signs in in the tab.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI

from gateway.clock import FixedClock
from gateway.console.sessions import install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from tests.console.support import IDLE, PASSWORD, add_account
from tests.console.test_escalations import ACCOUNTS, open_riec_case, version_of
from tests.servers import serve_app

if TYPE_CHECKING:
    from playwright.sync_api import Page

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                                reason="Debian's chromium is not installed (scripts/test installs it)")

MOTIVATION = ("Incidents are necessary for the Bibob advice; criminal intelligence stays out, as the "
              "register says for this purpose. Written at length, as such motivations are.")
RESTORED = "What you typed here before and did not send (your session may have expired) is back."


@pytest.fixture
def base(app: FastAPI, container: Container) -> Iterator[str]:
    install_console(container, ConsoleSettings(cookie_secure=False, idle_timeout_seconds=IDLE,
                                               default_language="en"))
    for username in ("po-politie", "po-gemeente"):
        organisation, role = ACCOUNTS[username]
        add_account(container, username, organisation, [role])
    with serve_app(app) as url:
        yield url


@pytest.fixture
def page(base: str) -> Iterator[Page]:
    with playwright_sync.sync_playwright() as playwright:
        executable = CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
        browser = playwright.chromium.launch(executable_path=str(executable), headless=True,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(locale="en-GB")
        opened = context.new_page()
        opened.set_default_timeout(10_000)
        yield opened
        browser.close()


def _sign_in(page: Page, username: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/console/login" not in url)


def _drafts(page: Page) -> str:
    return str(page.evaluate("() => sessionStorage.getItem('wgs-console-drafts') || ''"))


def test_a_motivation_typed_before_the_session_idled_out_is_back_after_signing_in(
        page: Page, base: str, container: Container, clock: FixedClock) -> None:
    case_id = open_riec_case(container)
    page.goto(f"{base}/console/escalations/{case_id}?lang=en")
    _sign_in(page, "po-politie")
    assert page.url.endswith(f"/console/escalations/{case_id}?lang=en")
    form = page.locator("#decision-form")
    form.get_by_label("allow", exact=True).check()
    form.get_by_label("Motivation").fill(MOTIVATION)

    clock.advance(timedelta(seconds=IDLE + 1))  # the officer was called away
    form.get_by_role("button", name="Record decision").click()
    page.wait_for_url("**/console/login?*expired=1*")
    assert page.get_by_text("Your session has expired").is_visible()
    assert version_of(container, case_id) == 1, "the refused POST did nothing"

    _sign_in(page, "po-politie")
    assert page.url.endswith(f"/console/escalations/{case_id}")
    form = page.locator("#decision-form")
    assert form.get_by_label("Motivation").input_value() == MOTIVATION
    assert RESTORED in form.get_by_role("status").inner_text()
    assert not form.get_by_label("allow", exact=True).is_checked(), "choices are made again, only text is kept"

    form.get_by_label("allow", exact=True).check()
    form.get_by_role("button", name="Record decision").click()
    assert "Your decision was recorded." in page.locator("#done").inner_text()
    assert version_of(container, case_id) > 1, "decided"
    assert MOTIVATION not in _drafts(page), "sent and done: the draft is gone"


def test_drafts_go_with_signing_out_and_are_never_shown_to_someone_else(
        page: Page, base: str, container: Container, clock: FixedClock) -> None:
    case_id = open_riec_case(container)
    page.goto(f"{base}/console/escalations/{case_id}?lang=en")
    _sign_in(page, "po-politie")
    page.locator("#comment-form").get_by_label("Comment").fill("A comment the next person must not read")
    clock.advance(timedelta(seconds=IDLE + 1))
    page.locator("#comment-form").get_by_role("button").click()
    page.wait_for_url("**/console/login?*expired=1*")

    _sign_in(page, "po-gemeente")  # someone else at the same workstation, in the same tab
    page.goto(f"{base}/console/escalations/{case_id}")
    assert page.locator("#comment-form").get_by_label("Comment").input_value() == ""
    assert "must not read" not in _drafts(page)

    page.locator("#comment-form").get_by_label("Comment").fill("Typed, then signed out")
    assert "signed out" in _drafts(page)
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login?signed_out=1")
    assert _drafts(page) == ""

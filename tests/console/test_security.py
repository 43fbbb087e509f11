"""Security properties of the console beyond the basics in ``test_console``: signing out holds in every
process and across restarts, signing in again ends the session before, and failed or throttled sign-ins
cannot grow the audit log without bound while the officers concerned still see them."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit import AuditWriteError
from audit.tables import audit_entries
from gateway.auditing.setup import audit_services
from gateway.auth.accounts import set_password
from gateway.auth.repository import get_account
from gateway.clock import FixedClock
from gateway.console import endpoints, escalations
from gateway.console.pages import _templates
from gateway.console.sessions import COOKIE, PendingSignOuts, install_console, record_pending_sign_outs
from gateway.console.settings import ConsoleSettings
from gateway.console.signin_windows import CLAIM_SECONDS
from gateway.console.signins import summarise_ended
from gateway.container import Container
from gateway.db.engine import transaction
from tests.console.support import IDLE, PASSWORD, csrf_of, running_console
from tests.console.test_console import account, console_actions, entry_indices, sign_in
from tests.console.test_escalations import open_riec_case
from tests.console.test_escalations import sign_in as escalation_sign_in

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=True) as client:
        yield client


def _another_process(container: Container) -> None:
    """What a second worker process or a restarted one has: the same key and database, nothing in memory."""
    install_console(container, ConsoleSettings(cookie_secure=False, idle_timeout_seconds=IDLE,
                                               default_language="en"))


def test_a_signed_out_cookie_is_refused_by_another_process_too(console: TestClient, container: Container) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    copied = console.cookies.get(COOKIE)
    assert copied
    assert console.post("/console/logout", data={"csrf_token": csrf_of(page.text)},
                        follow_redirects=False).status_code == 303
    _another_process(container)
    console.cookies.set(COOKIE, copied, path="/console")
    refused = console.get("/console/audit", follow_redirects=False)
    assert refused.status_code == 303
    assert "expired=1" in refused.headers["location"]
    # the refusal is about that session only: signing in again works in the new process
    console.cookies.clear()
    sign_in(console, "po-gemeente")
    assert console.get("/console/audit").status_code == 200


def test_a_link_or_form_from_another_site_does_not_sign_the_person_out(console: TestClient) -> None:
    """The SameSite=Strict cookie is not sent on a request from another site (a link in an e-mail, a forged
    form). The sign-in page answering such a request used to overwrite the session cookie with a new
    anonymous one, so any site could sign a person out of the console."""
    sign_in(console, "po-gemeente")
    session = console.cookies.get(COOKIE)
    assert session
    from_elsewhere = TestClient(console.app, cookies={})  # what the browser sends cross-site: no Strict cookies
    for response in (from_elsewhere.get("/console/login"),
                     from_elsewhere.post("/console/login", data={"username": "x", "password": "y"})):
        assert all(not header.startswith(f"{COOKIE}=") for header in response.headers.get_list("set-cookie"))
    assert console.get("/console/audit").status_code == 200


def test_signing_in_again_ends_the_session_before(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    first = console.cookies.get(COOKIE)
    assert first
    account(console, "po-bank")
    again = console.post("/console/login", data={"username": "po-bank", "password": PASSWORD,
                                                 "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert again.status_code == 303
    assert "Signed in as po-bank" in console.get("/console/audit").text
    console.cookies.set(COOKIE, first, path="/console")
    assert console.get("/console/audit", follow_redirects=False).status_code == 303, "the first session ended"


def test_a_new_password_ends_the_sessions_signed_in_with_the_old_one(console: TestClient, container: Container
                                                                     ) -> None:
    """A password is reset because it leaked: whoever signed in with it must be out at once, in every
    process, not only after the session idles out. Other accounts' sessions are left alone."""
    sign_in(console, "po-gemeente")
    elsewhere = TestClient(console.app)
    elsewhere.app_state["accounts"] = console.app_state["accounts"]
    sign_in(elsewhere, "po-bank")
    copied = console.cookies.get(COOKIE)
    assert console.get("/console/audit").status_code == 200
    with transaction(container.sessions) as session:  # what `wgs-gateway users set-password` does
        set_password(session, "po-gemeente", NEW_PASSWORD)
    _another_process(container)
    for client in (console, TestClient(console.app, cookies={COOKIE: copied})):
        refused = client.get("/console/audit", follow_redirects=False)
        assert refused.status_code == 303, refused.text
        assert "expired=1" in refused.headers["location"]
    assert elsewhere.get("/console/audit").status_code == 200
    console.cookies.clear()
    assert _try(console, "po-gemeente", PASSWORD) == 401
    sign_in(console, "po-gemeente", NEW_PASSWORD)
    assert console.get("/console/audit").status_code == 200


# -- failed and throttled sign-ins ------------------------------------------------------------------------

def _failed_sign_ins(container: Container) -> list[tuple[int, dict[str, Any]]]:
    """The failed console sign-ins in the log: (index, event)."""
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.log_index, t.canonical).where(t.event_type == "console.action")
                                  .order_by(t.log_index)).all()
    events = [(index, json.loads(canonical)["event"]) for index, canonical in rows]
    return [(i, e) for i, e in events if e["status"] == "error" and e["extra"]["action"] == "sign-in"]


def _try(client: TestClient, username: str, password: str = "wrong password!") -> int:
    form = client.get("/console/login")
    status: int = client.post("/console/login", data={"username": username, "password": password,
                                                      "csrf_token": csrf_of(form.text)}).status_code
    return status


def _account_id(container: Container, username: str) -> str:
    with transaction(container.sessions) as session:
        found = get_account(session, username)
    assert found is not None
    return found.id


def test_throttled_sign_ins_are_audited_once_per_window_and_then_summarised(
        console: TestClient, container: Container, clock: FixedClock) -> None:
    account(console, "po-bank")
    bank = {"org": "abn-amro", "system": None, "user": _account_id(container, "po-bank")}
    assert [_try(console, "po-bank") for _ in range(5)] == [401] * 5
    first_throttled = clock.now()
    for _ in range(20):
        assert _try(console, "po-bank") == 429
        clock.advance(timedelta(seconds=1))
    failed = _failed_sign_ins(container)
    assert [e["extra"]["reason"] for _, e in failed] == ["wrong-credentials"] * 5 + ["throttled"]
    assert all(e["requester"] == bank for _, e in failed), "the bank's officers see attempts on its account"

    clock.advance(timedelta(minutes=15))  # the window has ended: the next failed sign-in writes its summary
    assert _try(console, "nobody-of-that-name") == 401
    index, summary = _failed_sign_ins(container)[6]
    assert summary["requester"] == bank
    assert summary["extra"] == {"action": "sign-in", "channel": "console", "reason": "throttled",
                                "more_attempts": 19, "first_at": first_throttled.isoformat(),
                                "last_at": (first_throttled + timedelta(seconds=19)).isoformat()}
    assert "po-bank" not in json.dumps([e for _, e in _failed_sign_ins(container)]), "never the typed username"

    # the bank's own officer finds the attempts and their summary in the audit explorer
    assert _try(console, "po-bank", PASSWORD) == 200
    listed = set(entry_indices(console.get("/console/audit?event_type=console.action").text))
    assert {i for i, _ in failed} | {index} <= listed


def test_failed_sign_ins_at_the_api_are_audited_as_the_console_s_are(console: TestClient, container: Container,
                                                                     clock: FixedClock) -> None:
    """``POST /v1/auth/login`` checks the same passwords under the same throttle, but its failures left no entry:
    five guesses there, then a sign-in at the console, showed the account's officers one "throttled" entry
    and none of the guesses that caused it. They are entries now, bounded as the console's, saying where."""
    account(console, "po-bank")
    bank = {"org": "abn-amro", "system": None, "user": _account_id(container, "po-bank")}

    def api(username: str = "po-bank") -> int:
        status: int = console.post("/v1/auth/login", json={"username": username,
                                                           "password": "wrong password!"}).status_code
        return status

    assert [api() for _ in range(8)] == [401] * 5 + [429] * 3
    failed = _failed_sign_ins(container)
    assert [(e["extra"]["reason"], e["extra"]["channel"]) for _, e in failed] == \
        [("wrong-credentials", "api")] * 5 + [("throttled", "api")]
    assert all(e["requester"] == bank for _, e in failed)
    assert _try(console, "po-bank") == 429  # one throttle for both doors
    assert [e["extra"]["channel"] for _, e in _failed_sign_ins(container)][-1] == "console"
    assert [api(f"guess-{n}@example.org") for n in range(10)] == [401] * 10
    assert len(_failed_sign_ins(container)) == 8, "names that are no account: one entry, the rest counted"
    clock.advance(timedelta(minutes=15))
    assert console.portal is not None
    console.portal.call(summarise_ended, container)
    summaries = {(e["extra"]["channel"], e["extra"]["reason"]): e["extra"]["more_attempts"]
                 for _, e in _failed_sign_ins(container)[8:]}
    assert summaries == {("api", "throttled"): 2, ("api", "wrong-credentials"): 9}
    assert "po-bank" not in json.dumps([e for _, e in _failed_sign_ins(container)]), "never the typed username"
    assert "guess-" not in json.dumps([e for _, e in _failed_sign_ins(container)])


def test_a_failed_api_sign_in_that_cannot_be_audited_is_503_and_no_token(console: TestClient, container: Container,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    account(console, "po-bank")

    async def refuse(events: Any) -> None:
        raise AuditWriteError("the log is down")

    monkeypatch.setattr(audit_services(container).writer, "record", refuse)
    answer = console.post("/v1/auth/login", json={"username": "po-bank", "password": "wrong password!"})
    assert answer.status_code == 503, answer.text
    assert "access_token" not in answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")


def test_guessing_usernames_that_are_no_account_writes_one_entry_and_a_count(
        console: TestClient, container: Container, clock: FixedClock) -> None:
    guesses = [f"guess-{n}@example.org" for n in range(30)]  # none throttled: each name is tried once
    assert [_try(console, name) for name in guesses] == [401] * 30
    failed = _failed_sign_ins(container)
    assert len(failed) == 1
    assert failed[0][1]["requester"] is None
    assert failed[0][1]["extra"]["reason"] == "wrong-credentials"
    clock.advance(timedelta(minutes=15))
    assert console.portal is not None
    console.portal.call(summarise_ended, container)  # what the timer runs every minute
    _, summary = _failed_sign_ins(container)[1]
    assert summary["requester"] is None
    assert summary["extra"]["more_attempts"] == 29
    assert "guess-" not in json.dumps([e for _, e in _failed_sign_ins(container)])


def test_the_count_of_an_open_window_outlives_the_gateway_process(app: FastAPI, container: Container,
                                                                  clock: FixedClock) -> None:
    """A process that stops leaves its open windows in the database; whichever process runs when they end
    writes their summaries (before, the counts were in the stopped process's memory)."""
    _another_process(container)
    with TestClient(app) as client:
        client.app_state["accounts"] = set()
        account(client, "po-bank")
        assert [_try(client, "po-bank") for _ in range(8)] == [401] * 5 + [429] * 3
        assert [e["extra"]["reason"] for _, e in _failed_sign_ins(container)][-1] == "throttled"
        written = len(_failed_sign_ins(container))
    assert len(_failed_sign_ins(container)) == written, "the window is still open: no summary yet"
    clock.advance(timedelta(minutes=15))
    with TestClient(app) as client:  # the next process
        assert client.portal is not None
        client.portal.call(summarise_ended, container)  # what its timer runs every minute
    _, summary = _failed_sign_ins(container)[written]
    assert summary["extra"]["reason"] == "throttled"
    assert summary["extra"]["more_attempts"] == 2


def test_a_summary_that_cannot_be_written_is_kept_for_the_next_try(console: TestClient, container: Container,
                                                                   clock: FixedClock,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    account(console, "po-bank")
    assert [_try(console, "po-bank") for _ in range(8)] == [401] * 5 + [429] * 3
    written = len(_failed_sign_ins(container))
    clock.advance(timedelta(minutes=15))
    writer = audit_services(container).writer
    real = writer.record

    async def refuse(events: Any, companion: Any = None) -> None:
        raise AuditWriteError("the log is down")

    monkeypatch.setattr(writer, "record", refuse)
    assert console.portal is not None
    with pytest.raises(AuditWriteError):
        console.portal.call(summarise_ended, container)
    monkeypatch.setattr(writer, "record", real)
    console.portal.call(summarise_ended, container)  # still claimed by the failed try: not yet
    assert len(_failed_sign_ins(container)) == written
    clock.advance(timedelta(seconds=CLAIM_SECONDS + 1))  # the claim lapsed: any process takes it again
    console.portal.call(summarise_ended, container)
    console.portal.call(summarise_ended, container)
    summaries = _failed_sign_ins(container)[written:]
    assert [e["extra"]["more_attempts"] for _, e in summaries] == [2], "written once"


# -- regression guards: CSRF on every form, escaping of what partners and people type ----------------------

def test_every_console_post_route_refuses_a_request_without_the_csrf_token(console: TestClient) -> None:
    routes = [(route, "") for route in endpoints.router.routes] + [(r, "/console") for r in escalations.router.routes]
    posts = sorted(prefix + route.path for route, prefix in routes
                   if isinstance(route, APIRoute) and "POST" in (route.methods or ()))
    assert len(posts) >= 9
    sign_in(console, "po-gemeente")
    session = console.cookies.get(COOKIE)
    for path in posts:
        concrete = re.sub(r"\{[^}]+\}", "some-id", path)
        for token in ({}, {"csrf_token": "forged"}):
            response = console.post(concrete, data=token, follow_redirects=False)
            assert response.status_code == 403, path
            assert console.cookies.get(COOKIE) == session, f"{path} left the session alone"
    assert console.get("/console/audit").status_code == 200


MARKUP = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_what_partners_and_people_type_is_escaped_on_every_page(console: TestClient, container: Container) -> None:
    assert all(name.endswith(".html") for name in _templates.list_templates())  # autoescaped: select_autoescape
    case_id = open_riec_case(container)
    escalation_sign_in(console, "po-politie")
    page = console.get(f"/console/escalations/{case_id}")
    token = csrf_of(page.text)
    assert console.post(f"/console/escalations/{case_id}/comments", data={
        "csrf_token": token, "text": MARKUP, "attachment_reference": "dms://case/1", "attachment_title": MARKUP,
    }).status_code == 200
    typed_back = console.post(f"/console/escalations/{case_id}/comments", data={
        "csrf_token": token, "text": MARKUP, "attachment_reference": MARKUP, "attachment_title": MARKUP})
    assert typed_back.status_code == 422
    assert console.post(f"/console/escalations/{case_id}/legal-gap", data={
        "csrf_token": token, "title": MARKUP[:200], "description": MARKUP}).status_code == 200
    refused = console.post(f"/console/escalations/{case_id}/decision", data={
        "csrf_token": token, "expected_version": MARKUP, "outcome": MARKUP, "motivation": MARKUP})
    assert refused.status_code == 422
    shown_pages = (console.get(f"/console/escalations/{case_id}"), console.get("/console/legal-gaps"), refused,
                   typed_back, console.get("/console/login?next=/console/" + MARKUP))
    for shown in shown_pages:
        assert "<script>" not in shown.text
        assert "<img" not in shown.text
    assert "&lt;script&gt;" in console.get(f"/console/escalations/{case_id}").text


def test_a_comment_whose_attachment_has_no_hash_leaves_the_case_page_readable(console: TestClient,
                                                                                container: Container) -> None:
    """The hash is optional and not stored when left out; the case page used to fail (500) on every view."""
    case_id = open_riec_case(container)
    escalation_sign_in(console, "po-politie")
    token = csrf_of(console.get(f"/console/escalations/{case_id}").text)
    posted = console.post(f"/console/escalations/{case_id}/comments", data={
        "csrf_token": token, "text": "see the memo", "attachment_reference": "dms://politie/2026/4711",
        "attachment_title": "Memo"}, follow_redirects=False)
    assert posted.status_code == 303
    page = console.get(f"/console/escalations/{case_id}")
    assert page.status_code == 200
    assert "dms://politie/2026/4711" in page.text.split('id="comments"')[1]
    assert "<small>SHA-256" not in page.text.split('id="comments"')[1]


def test_a_session_ended_by_disabling_the_account_stays_ended_once_it_is_enabled_again(
        console: TestClient, container: Container) -> None:
    """`users disable` ends the account's console sessions (a stolen cookie, a person who left); `users enable`
    lets the person sign in again but must not bring back a session signed in before the disabling."""
    from gateway.auth.repository import set_account_active

    sign_in(console, "po-gemeente")
    copied = console.cookies.get(COOKIE)
    assert console.get("/console/audit").status_code == 200
    with transaction(container.sessions) as session:  # what `users disable`, then `users enable`, do
        assert set_account_active(session, "po-gemeente", False)
    assert console.get("/console/audit", follow_redirects=False).status_code == 303
    with transaction(container.sessions) as session:
        assert set_account_active(session, "po-gemeente", True)
    _another_process(container)
    revived = TestClient(console.app, cookies={COOKIE: copied}).get("/console/audit", follow_redirects=False)
    assert revived.status_code == 303, "a session from before the disabling works again"
    console.cookies.clear()
    sign_in(console, "po-gemeente")
    assert console.get("/console/audit").status_code == 200


def test_a_sign_out_that_fails_midway_still_signs_the_browser_out(console: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A person on a shared workstation who clicks "Sign out" and gets an error page must not leave a working
    session behind. When the database could not record the sign-out, the error page used to send the session
    cookie back refreshed: the next person at that browser was still signed in as the officer."""
    from sqlalchemy.exc import OperationalError

    from gateway.console import sessions as session_module

    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)

    def outage(*_: object, **__: object) -> None:
        raise OperationalError("INSERT INTO console_sign_outs", {}, Exception("connection lost"))

    monkeypatch.setattr(session_module, "record_sign_out", outage)
    quiet = TestClient(console.app, raise_server_exceptions=False, cookies=console.cookies)
    failed = quiet.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert failed.status_code == 503
    assert "Something went wrong" in failed.text
    assert "Signed in as" not in failed.text
    assert quiet.cookies.get(COOKIE) is None, "the browser keeps the session"
    after = quiet.get("/console/audit", follow_redirects=False)
    assert after.status_code == 303
    assert after.headers["location"].startswith("/console/login")


def _sign_out_during_an_outage(console: TestClient, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sign in, copy the session cookie, sign out while the database cannot record it, and let the database
    come back; the copied cookie."""
    from sqlalchemy.exc import OperationalError

    from gateway.console import sessions as session_module

    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/statistics").text)
    copied: str | None = console.cookies.get(COOKIE)
    assert copied

    def outage(*_: object, **__: object) -> None:
        raise OperationalError("INSERT INTO console_sign_outs", {}, Exception("connection lost"))

    with monkeypatch.context() as down:
        down.setattr(session_module, "record_sign_out", outage)
        quiet = TestClient(console.app, raise_server_exceptions=False, cookies=console.cookies)
        assert quiet.post("/console/logout", data={"csrf_token": token}, follow_redirects=False).status_code == 503
    console.cookies.clear()
    return copied


def _refused(console: TestClient, cookie: str) -> bool:
    console.cookies.clear()
    console.cookies.set(COOKIE, cookie, path="/console")
    answer = console.get("/console/statistics", follow_redirects=False)
    console.cookies.clear()
    return answer.status_code == 303 and "expired=1" in answer.headers["location"]


def test_a_sign_out_the_database_could_not_record_is_refused_all_the_same(console: TestClient,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The browser's cookie was deleted, but the session was not recorded as ended: a copy of the cookie (taken
    before, on that shared workstation) kept working until it went idle, and each use kept it from going idle.
    The process that was asked to sign it out refuses it at once, whatever the database says."""
    copied = _sign_out_during_an_outage(console, monkeypatch)
    assert _refused(console, copied)
    assert _refused(console, copied), "refused again: it is not forgotten after one refusal"


def test_the_sign_out_is_recorded_once_the_database_is_back(console: TestClient, container: Container,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process refuses it once recorded: the next console request of the process that signed it out
    records it (a person signing in, here), and so does its timer when no request comes."""
    copied = _sign_out_during_an_outage(console, monkeypatch)
    sign_in(console, "po-bank")
    console.cookies.clear()
    _another_process(container)
    assert _refused(console, copied)

    copied = _sign_out_during_an_outage(console, monkeypatch)
    console.portal.call(record_pending_sign_outs, container)  # type: ignore[union-attr]
    _another_process(container)
    assert _refused(console, copied)


def test_pending_sign_outs_are_forgotten_at_their_sessions_expiry_and_once_recorded() -> None:
    """What a process keeps while the database is down stays bounded: a pending sign-out goes when it is
    recorded, or unrecorded when its session has expired anyway (the cookie is refused then without it)."""
    pending = PendingSignOuts()
    pending.add("expires-soon", 100.0)
    pending.add("expires-later", 200.0)
    assert pending.refuses("expires-soon")
    assert len(pending) == 2
    assert pending.due(150.0) == {"expires-later": 200.0}
    assert not pending.refuses("expires-soon")
    pending.recorded(["expires-later"])
    assert not pending
    assert not pending.refuses("expires-later")


def test_clicks_on_verify_during_a_run_share_it_and_hold_no_worker_threads(console: TestClient,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """"Verify the log now" recomputes the whole log. Every click that came while a run was going waited for a
    worker thread of its own, then ran the whole verification again: a few impatient clicks (or one officer's
    script) took every worker thread of the process, and the gateway answered nobody — partner systems' exchanges
    included — until all those runs were done, one after the other."""
    from concurrent.futures import ThreadPoolExecutor

    import anyio.to_thread

    from audit import verify_database
    from gateway.console import verification

    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    real, runs = verify_database, []  # the real one, which `verification` looks up by this name
    started, release = threading.Event(), threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        started.set()
        assert release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(verification, "verify_database", slow)
    real_shared, clicked = verification.run_shared, []

    async def counted(container: Any) -> Any:
        clicked.append(1)  # on the event loop, in the same step as joining the run or starting it
        return await real_shared(container)

    monkeypatch.setattr(verification, "run_shared", counted)
    workers = 3

    def limit_threads() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = workers

    console.portal.call(limit_threads)  # type: ignore[union-attr]
    with ThreadPoolExecutor(max_workers=workers + 1) as pool:
        clicks = [pool.submit(console.post, "/console/audit/verify", data={"csrf_token": token},
                              follow_redirects=False) for _ in range(workers)]
        assert started.wait(10)
        deadline = time.monotonic() + 10  # the other clicks arrive while the first run goes on (bounded)
        while len(clicked) < workers and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(clicked) == workers, "the other clicks never reached the verification"
        page = pool.submit(console.get, "/console/register")
        try:
            answered = page.result(timeout=5).status_code
        except TimeoutError:
            answered = None
        finally:
            release.set()
        assert [click.result(timeout=20).status_code for click in clicks] == [303] * workers
    assert answered == 200, "a page asked for during the run waited for a worker thread"
    assert len(runs) == 1, "each click ran the whole verification again"


@pytest.mark.parametrize("export", ["/console/statistics.csv", "/console/legal-gaps.csv"])
def test_a_download_another_origin_starts_is_refused_and_writes_no_entry(console: TestClient, container: Container,
                                                                         export: str) -> None:
    """A download is an action: it writes an ``export`` entry in the officer's name. SameSite=Strict keeps
    the session cookie from other sites, not from other origins of the same site (another application on a
    sibling subdomain): its page could make the officer's browser fetch the CSV (an image, a script, a
    redirect) and so write exports the officer never made into the accountability log. The browser says
    where a request comes from (Fetch Metadata); downloads are taken from the console's own pages only."""
    sign_in(console, "cpo-riec")  # reads statistics and works cases
    for site in ("same-site", "cross-site"):
        refused = console.get(export, headers={"Sec-Fetch-Site": site, "Sec-Fetch-Dest": "image"})
        assert refused.status_code == 403, site
        assert "text/csv" not in refused.headers["content-type"]
    assert not [a for a in console_actions(container) if a["extra"]["action"] == "export"]  # type: ignore[index]
    for headers in ({"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate"}, {"Sec-Fetch-Site": "none"},
                    {}):  # the console's link, typed in the address bar, a browser without Fetch Metadata
        assert console.get(export, headers=headers).headers["content-type"].startswith("text/csv"), headers
    exports = [a for a in console_actions(container) if a["extra"]["action"] == "export"]  # type: ignore[index]
    assert len(exports) == 3


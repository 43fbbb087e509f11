"""The web console over the ASGI app (TestClient): sign-in, CSRF, idle expiry, sign-out, role and
organisation scoping, languages, and the ``console.action`` audit entries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from audit.tables import audit_checkpoints, audit_entries
from gateway.auditing.setup import audit_services
from gateway.clock import FixedClock
from gateway.console.i18n import MESSAGES
from gateway.console.sessions import COOKIE, install_console
from gateway.console.settings import ConsoleSettings
from gateway.container import Container
from tests.audit_support import triggers_disabled
from tests.auth_helpers import bearer, person_token
from tests.console.support import (
    IDLE,
    PASSWORD,
    SUBJECT,
    add_account,
    csrf_of,
    landing_after_sign_in,
    running_console,
    seed_anomaly,
)

ACCOUNTS = {"po-gemeente": ("gemeente-amsterdam", "privacy-officer"), "po-bank": ("abn-amro", "privacy-officer"),
            "cpo-riec": ("riec-aa", "coordinating-privacy-officer"), "contact-riec": ("riec-aa", "contact-point"),
            "admin": ("riec-aa", "administrator")}


@pytest.fixture
def console(app: FastAPI, container: Container) -> Iterator[TestClient]:
    with running_console(app, container, seeded=True) as client:
        yield client


def account(client: TestClient, username: str) -> None:
    created: set[str] = client.app_state["accounts"]
    if username not in created:
        organisation, role = ACCOUNTS[username]
        add_account(client.app.state.container, username, organisation, [role])  # type: ignore[attr-defined]
        created.add(username)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, *, next_page: str = "/console"
            ) -> TestClient:
    account(client, username)
    form = client.get("/console/login")
    assert form.status_code == 200
    response = client.post("/console/login", data={"username": username, "password": password,
                                                   "csrf_token": csrf_of(form.text), "next": next_page},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    return client


def entry_indices(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/console/audit/entries/(\d+)"', html)]


def console_actions(container: Container) -> list[dict[str, object]]:
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.canonical).where(t.event_type == "console.action")
                                  .order_by(t.log_index)).scalars()
        return [json.loads(row)["event"] for row in rows]


def test_sign_in_lands_on_the_audit_log_with_a_hardened_cookie(console: TestClient) -> None:
    account(console, "po-gemeente")
    form = console.get("/console/login")
    response = console.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD,
                                                    "csrf_token": csrf_of(form.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/audit"
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    assert "Path=/console" in cookie
    page = console.get("/console/audit")
    assert page.status_code == 200
    assert "Signed in as po-gemeente (gemeente-amsterdam)" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"


def test_a_bad_console_setting_stops_the_start_and_never_fails_a_request(
        container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad ``WGS_CONSOLE_`` value is refused when the app is built, like any ``WGS_`` one; the console then
    uses what was read at start-up, so a request never meets a value that would fail it (500 before)."""
    from pydantic import ValidationError

    from gateway.app import create_app

    monkeypatch.setenv("WGS_CONSOLE_PAGE_SIZE", "1")
    with pytest.raises(ValidationError) as refused:
        create_app(container=container)
    assert refused.value.title == ConsoleSettings.__name__

    monkeypatch.delenv("WGS_CONSOLE_PAGE_SIZE")
    started = create_app(container=container)
    monkeypatch.setenv("WGS_CONSOLE_PAGE_SIZE", "1")  # e.g. a .env edited under the running process
    with TestClient(started, raise_server_exceptions=False) as client:
        assert client.get("/console/login").status_code == 200


def test_secure_cookie_by_default_except_on_plain_http_loopback(app: FastAPI, container: Container) -> None:
    install_console(container, ConsoleSettings())
    with TestClient(app, base_url="https://gateway.example") as client:
        assert "Secure" in client.get("/console/login").headers["set-cookie"]
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert "Secure" not in client.get("/console/login").headers["set-cookie"]
    with TestClient(app, base_url="http://gateway.example") as client:
        assert "Secure" in client.get("/console/login").headers["set-cookie"]


def test_wrong_password_is_refused_and_audited_without_the_username(console: TestClient,
                                                                     container: Container) -> None:
    account(console, "po-gemeente")
    form = console.get("/console/login")
    response = console.post("/console/login", data={"username": "po-gemeente", "password": "not the password",
                                                    "csrf_token": csrf_of(form.text)}, follow_redirects=False)
    assert response.status_code == 401
    assert "Username or password is wrong" in response.text
    assert console.get("/console/audit", follow_redirects=False).status_code == 303
    failed = [a for a in console_actions(container) if a["status"] == "error"]
    assert len(failed) == 1
    assert failed[0]["extra"] == {"action": "sign-in", "channel": "console", "reason": "wrong-credentials"}
    assert "po-gemeente" not in json.dumps(failed)
    assert "not the password" not in json.dumps(failed)


def test_failed_sign_ins_are_throttled_with_the_api(console: TestClient) -> None:
    account(console, "po-bank")
    for _ in range(5):
        form = console.get("/console/login")
        console.post("/console/login", data={"username": "po-bank", "password": "wrong password!",
                                             "csrf_token": csrf_of(form.text)})
    form = console.get("/console/login")
    response = console.post("/console/login", data={"username": "po-bank", "password": PASSWORD,
                                                    "csrf_token": csrf_of(form.text)})
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    # the same throttle guards the JSON login
    assert console.post("/v1/auth/login", json={"username": "po-bank", "password": PASSWORD}).status_code == 429


def test_post_without_the_csrf_token_is_refused(console: TestClient) -> None:
    account(console, "po-gemeente")
    form = console.get("/console/login")
    no_token = console.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD})
    assert no_token.status_code == 403
    wrong = console.post("/console/login", data={"username": "po-gemeente", "password": PASSWORD,
                                                 "csrf_token": csrf_of(form.text) + "x"})
    assert wrong.status_code == 403
    sign_in(console, "po-gemeente")
    assert console.post("/console/logout", data={}).status_code == 403
    assert console.post("/console/logout", data={"csrf_token": "forged"}).status_code == 403
    assert console.get("/console/audit").status_code == 200, "still signed in"
    sign_in(console, "contact-riec")
    assert console.post("/console/subjects", data={"pseudonym": SUBJECT}).status_code == 403


def test_the_csrf_token_changes_at_sign_in(console: TestClient) -> None:
    anonymous = csrf_of(console.get("/console/login").text)
    sign_in(console, "po-gemeente")
    assert csrf_of(console.get("/console/audit").text) != anonymous


def test_idle_session_expires_and_activity_keeps_it_alive(console: TestClient, clock: FixedClock) -> None:
    sign_in(console, "po-gemeente")
    clock.advance(timedelta(seconds=IDLE - 10))
    assert console.get("/console/audit").status_code == 200  # activity slides the idle window
    clock.advance(timedelta(seconds=IDLE - 10))
    assert console.get("/console/audit").status_code == 200
    clock.advance(timedelta(seconds=IDLE + 1))
    expired = console.get("/console/audit?event_type=disclosure", follow_redirects=False)
    assert expired.status_code == 303
    location = expired.headers["location"]
    assert location.startswith("/console/login?")
    assert "expired=1" in location
    assert "Your session has expired" in console.get(location).text


def test_requests_another_origin_starts_do_not_keep_the_session_alive(console: TestClient, clock: FixedClock) -> None:
    """SameSite=Strict does not keep the cookie from other origins of the same site: an image on a sibling
    subdomain's page, fetched every few minutes, kept the officer's forgotten session from ever going idle.
    Only what the console's own pages (or the person, typing an address) ask for slides the idle window now."""
    sign_in(console, "po-gemeente")
    for _ in range(3):
        clock.advance(timedelta(seconds=IDLE // 2))
        console.get("/console/register", headers={"Sec-Fetch-Site": "same-site", "Sec-Fetch-Dest": "image"})
    expired = console.get("/console/register", follow_redirects=False)
    assert expired.status_code == 303
    assert "expired=1" in expired.headers["location"]
    sign_in(console, "po-gemeente")
    for headers in ({"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}, {}):
        clock.advance(timedelta(seconds=IDLE - 10))
        assert console.get("/console/register", headers=headers).status_code == 200, headers


def test_notice_flags_set_to_0_show_no_notice(console: TestClient) -> None:
    """The console's yes/no query parameters read ``0`` as no: ``?expired=0`` says nothing about an expired
    session, ``?signed_out=0`` nothing about signing out. (The explorer's verification notice needs its session's
    tag: test_verify_the_log_now_records_the_run_and_the_panel_shows_it.)"""
    assert "Your session has expired" not in console.get("/console/login?expired=0").text
    assert "Your session has expired" in console.get("/console/login?expired=1").text
    assert "You have been signed out" not in console.get("/console/login?signed_out=0").text
    assert "You have been signed out" in console.get("/console/login?signed_out=1").text


def test_sign_in_returns_to_the_page_asked_for_but_never_off_site(console: TestClient) -> None:
    account(console, "po-gemeente")
    back = landing_after_sign_in(console, "po-gemeente", "/console/audit?partnership=fec")
    assert back == "/console/audit?partnership=fec"
    console.cookies.clear()
    for target in ("https://evil.example/", "//evil.example/console", "/console//evil.example", "/v1/audit"):
        assert landing_after_sign_in(console, "po-gemeente", target) == "/console/audit", target
        console.cookies.clear()


def test_sign_out_ends_the_session_even_for_a_copied_cookie(console: TestClient, container: Container) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    copied = console.cookies.get(COOKIE)
    assert copied
    response = console.post("/console/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?signed_out=1"
    assert console.get("/console/audit", follow_redirects=False).status_code == 303
    console.cookies.set(COOKIE, copied, path="/console")
    assert console.get("/console/audit", follow_redirects=False).status_code == 303, "signed-out cookie refused"
    actions = [a["extra"]["action"] for a in console_actions(container)]  # type: ignore[index]
    assert actions == ["sign-in", "sign-out"]


def test_a_tampered_cookie_is_ignored(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    value = console.cookies.get(COOKIE)
    assert value
    console.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"), path="/console")
    assert console.get("/console/audit", follow_redirects=False).status_code == 303


def test_a_disabled_account_loses_its_session_at_once(console: TestClient, container: Container) -> None:
    from gateway.auth.repository import set_account_active
    from gateway.db.engine import transaction

    sign_in(console, "po-gemeente")
    with transaction(container.sessions) as session:
        set_account_active(session, "po-gemeente", False)
    assert console.get("/console/audit", follow_redirects=False).status_code == 303


def test_officers_see_only_their_organisations_entries(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    municipality = entry_indices(console.get("/console/audit").text)
    # The register's change (every participant's), then the organisation's entries and its console actions.
    assert municipality[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    console.cookies.clear()
    sign_in(console, "po-bank")
    bank_page = console.get("/console/audit")
    bank = entry_indices(bank_page.text)
    assert bank[:3] == [0, 9, 10]
    assert set(bank) & set(municipality) == {0}
    assert "gemeente-amsterdam" not in bank_page.text.split("<table")[1]
    for index in municipality[1:9]:
        other = console.get(f"/console/audit/entries/{index}")
        assert other.status_code == 404, index
        assert "data-leaf" not in other.text
    assert console.get("/console/audit/entries/9").status_code == 200
    # filtering on another organisation does not widen the scope
    assert entry_indices(console.get("/console/audit?organisation=gemeente-amsterdam").text) == []
    statistics = console.get("/console/statistics")
    assert "riec-amsterdam-amstelland" not in statistics.text.split('id="statistics"')[1].split("</table>")[0]
    csv = console.get("/console/statistics.csv").text
    assert "gemeente-amsterdam" not in csv
    assert "abn-amro" in csv


def test_coordinating_officer_sees_the_whole_partnership(console: TestClient) -> None:
    sign_in(console, "cpo-riec")
    riec = console.get("/console/audit?partnership=riec-amsterdam-amstelland").text
    assert entry_indices(riec) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert entry_indices(console.get("/console/audit?partnership=fec").text) == []


def test_pages_are_scoped_by_role(console: TestClient) -> None:
    sign_in(console, "contact-riec")
    assert console.get("/console", follow_redirects=False).headers["location"] == "/console/register"
    for path in ("/console/audit", "/console/audit/entries/1", "/console/statistics", "/console/statistics.csv"):
        assert console.get(path).status_code == 403, path
    assert console.get("/console/subjects").status_code == 200
    assert 'href="/console/audit"' not in console.get("/console/register").text
    console.cookies.clear()
    sign_in(console, "po-gemeente")
    assert console.get("/console/subjects").status_code == 403
    subjects = console.post("/console/subjects", data={"pseudonym": SUBJECT,
                                                       "csrf_token": csrf_of(console.get("/console/audit").text)})
    assert subjects.status_code == 403
    console.cookies.clear()
    sign_in(console, "admin")
    assert console.get("/console/audit").status_code == 403
    register = console.get("/console/register")
    assert register.status_code == 200
    assert "Escalations" in register.text  # announced for the escalation pages


def test_paging_through_the_audit_log(console: TestClient, container: Container) -> None:
    install_console(container, ConsoleSettings(cookie_secure=False, page_size=5, default_language="en"))
    sign_in(console, "po-gemeente")
    first = console.get("/console/audit?partnership=riec-amsterdam-amstelland&decision=&event_type=")
    assert entry_indices(first.text) == [1, 2, 3, 4, 5]
    next_href = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert next_href
    second = console.get(next_href.group(1).replace("&amp;", "&"))
    assert entry_indices(second.text) == [6, 7, 8]
    assert 'rel="next"' not in second.text
    filtered = console.get("/console/audit?event_type=policy.decided&decision=deny")
    assert entry_indices(filtered.text) == [8]
    assert console.get("/console/audit?since=2026-11-26").text.count("/console/audit/entries/") == 0
    assert console.get("/console/audit?since=yesterday").status_code == 422


def test_indices_beyond_any_log_are_console_errors_not_500(console: TestClient) -> None:
    sign_in(console, "po-gemeente")
    for after in (str(2**53 + 1), str(2**63), str(2**64)):
        page = console.get("/console/audit", params={"after": after})
        assert page.status_code == 422, after
        assert page.headers["content-type"].startswith("text/html")  # the console's error page, not JSON
    assert console.get("/console/audit", params={"after": str(2**53)}).status_code == 200
    for index in (2**53 + 1, 2**63, 2**64):
        page = console.get(f"/console/audit/entries/{index}")
        assert page.status_code == 404, index
        assert page.headers["content-type"].startswith("text/html")


def test_entry_page_carries_a_proof_the_server_can_check_too(console: TestClient, container: Container) -> None:
    import base64

    from audit import NoteVerifier, open_checkpoint
    from audit.merkle import leaf_hash, verify_inclusion

    sign_in(console, "po-gemeente")
    page = console.get("/console/audit/entries/4").text

    def attribute(name: str) -> str:
        match = re.search(rf'data-{name}="([^"]*)"', page)
        assert match, name
        return match.group(1)

    canonical = base64.b64decode(attribute("canonical"))
    assert leaf_hash(canonical).hex() == attribute("leaf")
    note = base64.b64decode(attribute("note")).decode()
    checkpoint = open_checkpoint(note, NoteVerifier.from_vkey(attribute("vkey")))
    assert checkpoint.tree_size == int(attribute("tree-size"))
    proof = [bytes.fromhex(h) for h in attribute("proof").split()]
    verify_inclusion(4, checkpoint.tree_size, leaf_hash(canonical), proof, checkpoint.root_hash)
    assert '<script src="/console/static/proof.js" defer></script>' in page
    script = console.get("/console/static/proof.js")
    assert script.status_code == 200
    assert "crypto.subtle" in script.text
    assert console.get("/console/static/../endpoints.py").status_code == 404


def test_an_entry_newer_than_the_last_checkpoint_gets_one(console: TestClient) -> None:
    sign_in(console, "po-gemeente")  # its own console.action entry is newer than the seeded checkpoint
    newest = max(entry_indices(console.get("/console/audit?event_type=console.action").text))
    page = console.get(f"/console/audit/entries/{newest}")
    assert page.status_code == 200
    assert int(re.search(r'data-tree-size="(\d+)"', page.text).group(1)) > newest  # type: ignore[union-attr]


def verify_runs(container: Container) -> list[dict[str, object]]:
    return [a for a in console_actions(container) if a["extra"]["action"] == "verify-log"]  # type: ignore[index]


def last_verification(html: str) -> str:
    return html.split('id="last-verification"')[1].split("</dl>")[0]


def test_verify_the_log_now_records_the_run_and_the_panel_shows_it(console: TestClient,
                                                                   container: Container) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/audit")
    assert "The log has not been verified from the console yet." in page.text
    assert 'action="/console/audit/verify"' in page.text
    refused = console.post("/console/audit/verify", data={}, follow_redirects=False)
    assert refused.status_code == 403
    refused = console.post("/console/audit/verify", data={"csrf_token": "forged"}, follow_redirects=False)
    assert refused.status_code == 403
    assert verify_runs(container) == [], "no run without the form's CSRF token"

    size = audit_services(container).log.size()
    done = console.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    assert re.fullmatch(r"/console/audit\?done=verified&notice=[0-9a-f]{32}#integrity", done.headers["location"])
    [run] = verify_runs(container)
    extra = run["extra"]
    assert isinstance(extra, dict)
    assert extra["result"] == "ok"
    assert extra["entries"] == size
    assert extra["checkpoints"] >= 1
    assert re.fullmatch(r"[0-9a-f]{64}", extra["root_hash"])
    assert "index" not in extra
    assert run["status"] == "ok"
    assert run["requester"]["org"] == "gemeente-amsterdam"  # type: ignore[index]
    assert "po-gemeente" not in json.dumps(run), "an account id, never the username"

    shown = console.get(done.headers["location"])
    assert "The log has been verified; the result is below." in shown.text
    assert "The log has been verified" not in console.get("/console/audit?done=verified").text  # a link's: no tag
    panel = last_verification(shown.text)
    assert 'data-result="ok"' in panel
    assert ">intact</dd>" in panel
    assert f"<dd>{size}</dd>" in panel
    assert extra["root_hash"] in panel
    assert "2026-11-25 10:00:00" in panel

    # any officer's run counts, and it is read from the log (a fresh process shows it too)
    container.services.pop("console.verification")
    console.cookies.clear()
    sign_in(console, "po-bank")
    bank = console.get("/console/audit")
    assert f"<dd>{size}</dd>" in last_verification(bank.text)
    assert "gemeente-amsterdam" not in bank.text.split("<table")[1], "the entry itself stays out of scope"
    console.cookies.clear()
    sign_in(console, "contact-riec")
    token = csrf_of(console.get("/console/subjects").text)
    assert console.post("/console/audit/verify", data={"csrf_token": token}).status_code == 403
    assert len(verify_runs(container)) == 1


def test_a_tampered_log_fails_verification_at_its_index(console: TestClient, container: Container) -> None:
    t = audit_entries.c
    with container.engine.connect() as connection:
        target = connection.execute(select(func.min(t.log_index)).where(t.event_type == "policy.decided")).scalar()
    assert target is not None
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    assert console.post("/console/audit/verify", data={"csrf_token": token}).status_code == 200
    with triggers_disabled(container.engine) as connection:  # the attacker with database-owner rights
        canonical = connection.execute(select(t.canonical).where(t.log_index == target)).scalar_one()
        connection.execute(update(audit_entries).where(t.log_index == target)
                           .values(canonical=canonical.replace("rule.purpose-bound", "rule.purpose-found")))
    failed = console.post("/console/audit/verify", data={"csrf_token": token})
    assert failed.status_code == 200
    panel = last_verification(failed.text)
    assert 'data-result="failed"' in panel
    assert "NOT intact" in panel
    assert f"at index {target} (leaf-hash)" in panel
    runs = verify_runs(container)
    assert [r["extra"]["result"] for r in runs] == ["ok", "failed"]  # type: ignore[index]
    assert runs[1]["extra"]["index"] == target  # type: ignore[index]
    assert runs[1]["extra"]["failure"] == "leaf-hash"  # type: ignore[index]
    assert runs[1]["status"] == "error"
    dutch = last_verification(console.get("/console/audit?lang=nl").text)
    assert "NIET intact" in dutch
    assert f"bij index {target}" in dutch


def test_a_changed_search_column_fails_verification_at_its_index(console: TestClient, container: Container) -> None:
    """The entry's text and every hash untouched, its holder column changed: a search by holder would miss it.
    "Verify the log now" (a fast verification) says so, as a deep one would."""
    t = audit_entries.c
    with container.engine.connect() as connection:
        target = connection.execute(select(func.min(t.log_index)).where(t.holder_org.is_not(None))).scalar()
    assert target is not None
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    with triggers_disabled(container.engine) as connection:  # the attacker with database-owner rights
        connection.execute(update(audit_entries).where(t.log_index == target).values(holder_org="someone-else"))
    failed = console.post("/console/audit/verify", data={"csrf_token": token})
    assert failed.status_code == 200
    panel = last_verification(failed.text)
    assert 'data-result="failed"' in panel
    assert f"at index {target} (columns)" in panel
    [run] = verify_runs(container)
    assert (run["extra"]["failure"], run["extra"]["index"]) == ("columns", target)  # type: ignore[index]


def test_a_failure_at_a_size_beyond_json_s_exact_integers_is_recorded_and_shown(console: TestClient,
                                                                                 container: Container) -> None:
    """A checkpoint row planted at a size above 2**53 (an INSERT, which the triggers allow), its note garbled: the
    verification fails at that size, and its entry named it as a JSON integer, which the log refuses beyond
    2**53 - 1 (not exact for every reader). The run was a 500, left no entry, and the panel went on showing the
    previous run's "intact". The size is recorded as its decimal digits, and shown."""
    huge = 2**62
    sign_in(console, "po-gemeente")
    token = csrf_of(console.get("/console/audit").text)
    assert console.post("/console/audit/verify", data={"csrf_token": token}).status_code == 200
    with container.engine.begin() as connection:
        connection.execute(insert(audit_checkpoints).values(tree_size=huge, root_hash=bytes(32), note="garbled",
                                                            issued_at=datetime(2026, 11, 25, tzinfo=UTC)))
    failed = console.post("/console/audit/verify", data={"csrf_token": token})
    assert failed.status_code == 200, failed.text[:300]
    panel = last_verification(failed.text)
    assert 'data-result="failed"' in panel
    assert f"at index {huge} (signature)" in panel
    runs = verify_runs(container)
    assert [r["extra"]["result"] for r in runs] == ["ok", "failed"]  # type: ignore[index]
    assert runs[1]["extra"]["index"] == str(huge)  # type: ignore[index]
    assert runs[1]["extra"]["checkpoint_size"] == str(huge)  # type: ignore[index]


def test_statistics_csv_starts_with_the_byte_order_mark_spreadsheets_need(console: TestClient) -> None:
    """The accountability figures are opened in Excel too: the UTF-8 BOM and charset=utf-8, once."""
    sign_in(console, "po-gemeente")
    download = console.get("/console/statistics.csv")
    assert download.status_code == 200
    assert download.content.startswith(b"\xef\xbb\xbf")
    assert download.content.count(b"\xef\xbb\xbf") == 1
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    header = download.content.decode("utf-8-sig").splitlines()[0]
    assert header.startswith("partnership,purpose,participant,month,requests")


def test_statistics_csv_download_is_audited(console: TestClient, container: Container) -> None:
    sign_in(console, "po-gemeente")
    page = console.get("/console/statistics")
    assert page.status_code == 200
    assert page.text.count('role="img"') == 4
    download = console.get("/console/statistics.csv?partnership=riec-amsterdam-amstelland")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    header = download.content.decode("utf-8-sig").splitlines()[0]
    assert header.startswith("partnership,purpose,participant,month,requests")
    assert "riec-amsterdam-amstelland,bibob-integrity-check,gemeente-amsterdam" in download.text
    export = [a for a in console_actions(container) if a["extra"]["action"] == "export"]  # type: ignore[index]
    assert len(export) == 1
    assert export[0]["extra"] == {"action": "export", "channel": "console", "export": "statistics.csv", "rows": 1,
                                  "partnership": "riec-amsterdam-amstelland"}
    assert export[0]["requester"]["org"] == "gemeente-amsterdam"  # type: ignore[index]
    assert export[0]["requester"]["user"] != "po-gemeente"  # type: ignore[index]


def test_subject_lookup_for_the_contact_point_is_audited_without_the_pseudonym(console: TestClient,
                                                                                container: Container) -> None:
    sign_in(console, "contact-riec")
    form = console.get("/console/subjects")
    found = console.post("/console/subjects", data={"pseudonym": SUBJECT, "csrf_token": csrf_of(form.text)})
    assert found.status_code == 200
    assert "2 disclosure(s) found." in found.text  # the two RIEC disclosures; the bank's FEC entries are not
    bad = console.post("/console/subjects", data={"pseudonym": "Jan Jansen", "csrf_token": csrf_of(form.text)})
    assert bad.status_code == 422
    lookups = [a for a in console_actions(container) if a["extra"]["action"] == "subject-lookup"]  # type: ignore[index]
    assert len(lookups) == 1
    assert lookups[0]["extra"]["disclosures"] == 2  # type: ignore[index]
    assert SUBJECT not in json.dumps(lookups)
    assert lookups[0]["data_subject"] is None


def test_register_page_shows_partnerships_categories_and_history(console: TestClient) -> None:
    sign_in(console, "po-bank")
    page = console.get("/console/register")
    assert page.status_code == 200
    for text in ("RIEC", "bibob-integrity-check", "criminal_intelligence", "Version history", "2026.11.1"):
        assert text in page.text, text


@pytest.mark.parametrize("language", ["nl", "en"])
def test_every_page_renders_in_both_languages(console: TestClient, language: str) -> None:
    sign_in(console, "po-gemeente")
    for path in ("/console/audit", "/console/audit/entries/1", "/console/statistics", "/console/register",
                 "/console/subjects"):
        page = console.get(f"{path}?lang={language}")
        assert f'<html lang="{language}">' in page.text, path
    expected = {"nl": "Afmelden", "en": "Sign out"}[language]
    assert expected in console.get("/console/register").text, "the choice is remembered"


def test_language_follows_accept_language(console: TestClient) -> None:
    console.cookies.clear()
    dutch = console.get("/console/login", headers={"Accept-Language": "nl-NL,nl;q=0.9,en;q=0.8"})
    assert "Aanmelden" in dutch.text
    english = console.get("/console/login", headers={"Accept-Language": "de-DE, en;q=0.5, nl;q=0.1"})
    assert "Sign in" in english.text


def test_catalogue_is_complete_in_both_languages() -> None:
    for key, (english, dutch) in MESSAGES.items():
        assert english.strip(), key
        assert dutch.strip(), key
        assert re.findall(r"{(\w+)}", english) == re.findall(r"{(\w+)}", dutch), key


def test_the_api_is_unchanged_for_the_console_routes(console: TestClient) -> None:
    schema = console.get("/openapi.json").json()
    assert not [path for path in schema["paths"] if path.startswith("/console")]


def test_the_console_shows_gateway_wide_entries_to_the_officers_they_concern(console: TestClient,
                                                                             container: Container) -> None:
    """A failed sign-in on a username that is no account names nobody: in the coordinating officer's audit
    explorer (the partnership's monitoring), not in an ordinary officer's; the register's change in both."""
    form = console.get("/console/login")
    assert console.post("/console/login", data={"username": "nobody-here", "password": "guess",
                                                "csrf_token": csrf_of(form.text)}).status_code == 401
    t = audit_entries.c
    with container.engine.connect() as connection:
        rows = connection.execute(select(t.log_index, t.event_type).where(
            t.requester_org.is_(None), t.holder_org.is_(None), t.partnership.is_(None))).all()
    nobodys = {row.log_index: row.event_type for row in rows}
    sign_ins = {i for i, kind in nobodys.items() if kind == "console.action"}
    changes = {i for i, kind in nobodys.items() if kind == "register.changed"}
    assert sign_ins
    assert changes
    sign_in(console, "cpo-riec")
    seen = set(entry_indices(console.get("/console/audit").text))
    assert sign_ins | changes <= seen
    assert console.get(f"/console/audit/entries/{min(sign_ins)}").status_code == 200
    console.cookies.clear()
    sign_in(console, "po-gemeente")
    seen = set(entry_indices(console.get("/console/audit").text))
    assert changes <= seen
    assert not sign_ins & seen
    assert console.get(f"/console/audit/entries/{min(sign_ins)}").status_code == 404


def test_the_statistics_export_entry_says_which_period_was_exported(console: TestClient,
                                                                   container: Container) -> None:
    """An export's entry says what left the gateway: the period is as much a part of that as the partnership
    (the legal-gap export records every filter; this one left the dates out)."""
    sign_in(console, "po-gemeente")
    download = console.get("/console/statistics.csv?purpose=bibob-integrity-check&since=2026-11-01&until=2026-12-01")
    assert download.status_code == 200
    [export] = [a for a in console_actions(container) if a["extra"]["action"] == "export"]  # type: ignore[index]
    assert export["extra"] == {"action": "export", "channel": "console", "export": "statistics.csv", "rows": 1,
                               "purpose": "bibob-integrity-check", "since": "2026-11-01", "until": "2026-12-01"}


def test_the_subject_filter_is_bounded_as_in_the_api_with_the_same_message(console: TestClient,
                                                                            container: Container) -> None:
    """``/v1/audit/entries`` refuses a ``subject`` longer than 1024 characters (a pseudonym is at most that);
    the console's explorer took any length into the query. Both refuse it now, naming the same limit (the
    console's from its POSTed form: the subject is never in its addresses; in the page's language)."""
    sign_in(console, "po-gemeente")
    too_long, longest = "p" * 1025, "p" * 1024
    token = csrf_of(console.get("/console/audit").text)
    page = console.post("/console/audit", data={"subject": too_long, "csrf_token": token})
    assert page.status_code == 422
    officer = bearer(person_token(console, container, "po-api", "gemeente-amsterdam", ["privacy-officer"]))
    api = console.get("/v1/audit/entries", params={"subject": too_long}, headers=officer)
    assert api.status_code == 422
    assert "at most 1024 characters" in api.json()["detail"]
    assert "body.subject: at most 1024 characters." in page.text  # the same limit, from the form
    assert too_long not in page.text  # the input is not echoed
    assert console.post("/console/audit", data={"subject": longest, "csrf_token": token}).status_code == 200
    assert console.get("/v1/audit/entries", params={"subject": longest}, headers=officer).status_code == 200


_MALFORMED_FILTERS = ["x" * 8_000, '"><script>alert(1)</script>', "RIEC-Amsterdam", "fec'--"]


@pytest.mark.parametrize(("path", "name"), [
    ("/console/audit", "partnership"), ("/console/audit", "purpose"), ("/console/audit", "organisation"),
    ("/console/audit", "event_type"), ("/console/audit", "decision"), ("/console/statistics", "partnership"),
    ("/console/statistics", "purpose"), ("/console/statistics.csv", "partnership"),
    ("/console/statistics.csv", "purpose")])
def test_filters_are_bounded_as_in_the_api_and_never_shown_back(console: TestClient, container: Container,
                                                                 path: str, name: str) -> None:
    """The explorer's and statistics' filters are ids (or words) as the API's: an over-long or malformed one is
    the 422 page naming what the API names (in the page's language), without the value; the form's empty
    choice is still "all"."""
    sign_in(console, "po-gemeente")
    officer = bearer(person_token(console, container, "po-api", "gemeente-amsterdam", ["privacy-officer"]))
    api_path = "/v1/audit/statistics" if "statistics" in path else "/v1/audit/entries"
    for value in _MALFORMED_FILTERS:
        page = console.get(path, params={name: value})
        assert page.status_code == 422, (name, value[:40])
        assert "<script>" not in page.text
        assert value not in page.text
        api = console.get(api_path, params={name: value}, headers=officer)
        assert api.status_code == 422
        assert f"query.{name}: " in page.text  # what is wrong, where the API says it is
        if len(value) > 64:
            assert "at most 64 characters" in api.json()["detail"]
            assert f"query.{name}: at most 64 characters." in page.text
    fine = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "organisation": "gemeente-amsterdam", "event_type": "policy.decided", "decision": "allow"}[name]
    assert console.get(path, params={name: fine}).status_code == 200
    assert console.get(path, params={name: ""}).status_code == 200


def test_an_over_long_next_page_is_ignored_at_sign_in(console: TestClient) -> None:
    """A ``next`` of more than 2,048 characters is not followed (nor carried in the form): the person signs in
    all the same and lands on the home page; one of that length still returns to the page."""
    longest = "/console/escalations?partnership=fec&x=" + "a" * 2048
    longest = longest[:2048]
    form = console.get("/console/login", params={"next": longest + "a"})
    assert form.status_code == 200
    assert "a" * 2040 not in form.text
    for target, landing in ((longest + "a", "/console/audit"), (longest, longest)):
        account(console, "po-gemeente")
        assert landing_after_sign_in(console, "po-gemeente", target) == landing
        console.cookies.clear()


def test_anomaly_flags_name_their_metric_in_the_pages_language(console: TestClient, container: Container,
                                                                clock: FixedClock) -> None:
    """A flag's metric was shown as the API names it (``volume``, ``denial-rate``, ``out-of-hours``) on the Dutch
    page as on the English one."""
    seed_anomaly(container, clock)
    sign_in(console, "cpo-riec")
    dutch = console.get("/console/statistics?lang=nl").text.split('id="anomalies"')[1]
    assert "politie-riec-desk" in dutch
    assert "<td>aantal verzoeken</td>" in dutch
    english = console.get("/console/statistics?lang=en").text.split('id="anomalies"')[1]
    assert "<td>request volume</td>" in english
    assert {f"metric.{metric}" for metric in ("volume", "denial-rate", "out-of-hours")} <= set(MESSAGES)


def _refusal_codes() -> dict[str, set[str]]:
    """Every refusal code the gateway can raise, for the console to word, with the names of the values every
    raise of it gives (those its words may use): the class-level codes of the escalation workflow's refusals
    (no values), the ``code=`` of every refusal raised (``gateway``, ``escalation``), and the console's own
    403s (``refused``/``from_own_page`` with a code, or a module constant naming one; no values)."""
    import ast
    from pathlib import Path

    from escalation import comments, legal_gaps  # noqa: F401  (their refusals are subclasses)
    from escalation.cases import EscalationError
    from escalation.states import InvalidTransition
    from gateway import errors

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set(cls.__subclasses__())
        return found.union(*(subclasses(sub) for sub in found)) if found else found

    def strings(node: ast.expr | None) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, ast.IfExp):
            return strings(node.body) | strings(node.orelse)
        return set()

    codes: dict[str, set[str]] = {}

    def given(code: str, values: set[str]) -> None:
        codes[code] = codes[code] & values if code in codes else values

    refusals = subclasses(EscalationError) | {EscalationError, InvalidTransition}
    for cls in refusals:
        if code := getattr(cls, "code", None):
            given(code, set())
    raised = {cls.__name__ for cls in refusals | subclasses(errors.GatewayError)}
    root = Path(__file__).resolve().parents[2]
    for source in [*(root / "gateway").rglob("*.py"), *(root / "escalation").rglob("*.py")]:
        tree = ast.parse(source.read_text(encoding="utf-8"))
        constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "from_own_page":
                for default in node.args.defaults:
                    for code in strings(default):
                        given(code, set())
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
            keywords = {k.arg: k.value for k in node.keywords}
            if name in raised and "code" in keywords:
                values = keywords.get("values")
                keys = ({key for found in map(strings, values.keys) for key in found} if isinstance(values, ast.Dict)
                        else set())
                for code in strings(keywords["code"]):
                    given(code, keys)
            elif name in {"refused", "from_own_page"} and node.args:
                argument = node.args[0]
                for code in strings(argument) | ({constants.get(argument.id, "")} - {""}
                                                 if isinstance(argument, ast.Name) else set()):
                    given(code, set())
    return codes


def test_every_refusal_code_has_words_in_both_languages() -> None:
    """A refusal the console shows is worded by its code (``refusal.<code>``), in Dutch as in English, naming
    only values every raise of it gives; a code without words (or with words its raise cannot fill) would
    show the service's English on a Dutch page."""
    codes = _refusal_codes()
    assert {"four-eyes", "not-decider", "stale-version", "gap-stale-version", "csrf-failed", "page-elsewhere",
            "download-elsewhere", "contact-point-only", "subject-in-address", "allow-not-requested",
            "allow-without-categories"} <= set(codes)  # the scan finds them
    for code, values in sorted(codes.items()):
        english, dutch = MESSAGES.get(f"refusal.{code}", ("", ""))
        assert english.strip(), f"refusal.{code} has no words"
        assert dutch.strip(), f"refusal.{code} has no Dutch words"
        assert english != dutch, f"refusal.{code} is not translated"
        assert set(re.findall(r"{(\w+)}", english)) <= values, f"refusal.{code} names values not given"
    assert {key.removeprefix("refusal.") for key in MESSAGES if key.startswith("refusal.")} == set(codes), (
        "words for a code nothing raises")


def test_refusals_on_dutch_pages_are_in_dutch(console: TestClient) -> None:
    """The error page of a refusal speaks the page's language: the service's reasons (by their code), the
    console's own (CSRF, the subject in the address), and what is wrong with a field (validation)."""
    sign_in(console, "po-gemeente")
    console.get("/console/audit?lang=nl")  # remembered: the pages below are Dutch
    subjects = console.get("/console/subjects")  # the contact point's page
    assert subjects.status_code == 403
    assert "<p>Alleen het contactpunt beantwoordt inzageverzoeken.</p>" in subjects.text
    in_address = console.get("/console/audit", params={"subject": "pseudo"})
    assert in_address.status_code == 422
    assert "Het filter op de betrokkene komt alleen uit het formulier van de verkenner" in in_address.text
    too_long = console.get("/console/audit", params={"partnership": "x" * 65})
    assert too_long.status_code == 422
    assert "<p>query.partnership: ten hoogste 64 tekens.</p>" in too_long.text
    not_a_day = console.get("/console/audit", params={"since": "someday"})
    assert not_a_day.status_code == 422
    assert "<p>since: geen datum (JJJJ-MM-DD).</p>" in not_a_day.text
    forged = console.post("/console/audit/verify", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert "<p>Het formulier is verlopen of kwam niet van deze console. Laad de pagina opnieuw.</p>" in forged.text
    for page in (subjects, in_address, too_long, not_a_day, forged):
        assert '<html lang="nl">' in page.text
        assert '<p lang="en">' not in page.text
        for english in ("only", "should", "invalid", "expired"):
            assert english not in page.text
    console.cookies.clear()
    login = console.post("/console/login?lang=nl", data={"username": "po-gemeente", "password": PASSWORD})
    assert login.status_code == 403
    assert "Het formulier is verlopen" in login.text


def test_a_refusal_the_console_has_no_words_for_is_marked_english(console: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A reason without a code in the catalogue (a newer service's) is shown as the service gave it, marked
    ``lang="en"`` on a Dutch page (a screen reader reads it as English); the page around it stays Dutch."""
    from gateway.console import endpoints
    from gateway.errors import Forbidden

    def refuse(_person: object) -> None:
        raise Forbidden("a reason from a newer service")

    monkeypatch.setattr(endpoints, "_contact_point", refuse)
    sign_in(console, "contact-riec")
    page = console.get("/console/subjects?lang=nl")
    assert page.status_code == 403
    assert '<p lang="en">a reason from a newer service</p>' in page.text
    assert "U mag deze pagina niet zien." in page.text


def test_a_validation_complaint_without_words_is_invalid_in_the_pages_language() -> None:
    """Pydantic's complaint types the catalogue has no words for read "<field>: invalid" in the page's language;
    the limits a complaint names are numbers only (never what was typed)."""
    from gateway.console.i18n import validation_text

    assert validation_text("nl", "gap_id", "a_newer_pydantic_type", None) == "gap_id: ongeldig."
    assert validation_text("en", "gap_id", "a_newer_pydantic_type", None) == "gap_id: invalid."
    assert validation_text("nl", "note", "string_too_long", {"max_length": 4000}) == "note: ten hoogste 4000 tekens."
    assert validation_text("nl", "note", "string_too_long", {"max_length": "<b>"}) == "note: ongeldig."


"""A request whose client goes away (its task cancelled from outside, as uvicorn or a stopping server does) after
its write-ahead entries are in the log ends in the log too: one ``request.failed`` entry, reason
``request-cancelled``, after the entries it has. Found by a review: the log showed a request about to be answered
and nothing after it, for good. Before the write-ahead nothing of the request is in the log, and nothing is added;
a request that already logged its failure as a defect does not get a second ending; and when the audit log is
down, the cancellation goes on and a log line says which request's ending is missing.

The holder is a real HTTP server that takes the question and does not answer; the request's own task is
cancelled from the test's thread while the gateway waits for that holder."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import select
from structlog.testing import capture_logs

from audit import AuditEvent, EventType, Receipt
from gateway.exchange.service import ExchangeService
from gateway.exchange.setup import exchange_service
from gateway.exchange.tables import daily_request_counts, exchange_claims
from tests.request_cancellation import cancel_request, noting_request_tasks, written_late
from tests.stack import Stack, inserts_refused, stack_with_holder

REQUESTER = "gemeente-amsterdam-vth"
BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "signal": {"type": "bibob-application", "reference": "B-79"}}
HANGS_AT_MOST = 20.0  # seconds the holder keeps a question unanswered (the gateway's timeout is longer)


class _SilentHolder:
    """The KvK's system as a holder that takes every question (query or discovery) and does not answer until
    released, or for ``HANGS_AT_MOST`` seconds."""

    def __init__(self) -> None:
        self.asked = threading.Event()  # set once a question reached it
        self.released = threading.Event()
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.hang)
        self.app.post("/holder/v1/discover")(self.hang)

    async def hang(self) -> Any:
        self.asked.set()
        deadline = time.monotonic() + HANGS_AT_MOST
        while not self.released.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return JSONResponse({"detail": "gave up"}, status_code=503)


@pytest.fixture(scope="module")
def holder() -> _SilentHolder:
    return _SilentHolder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, holder: _SilentHolder) -> Iterator[Stack]:
    with stack_with_holder(Path(tmp_path_factory.mktemp("cancelled")), holder.app, ["kvk-handelsregister"],
                           {"connector_timeout_seconds": HANGS_AT_MOST + 10, "connector_retries": 0}) as running:
        yield running


@pytest.fixture(autouse=True)
def silent(holder: _SilentHolder) -> Iterator[None]:
    """Each test starts with a holder not yet asked, and leaves it answering no question still open."""
    holder.asked.clear()
    holder.released.clear()
    yield
    holder.released.set()


class _RequestTask:
    """The task of the next request that reads rule 6's count (before its write-ahead, in the request's own
    task), so that the test can cancel it from its thread as when the client goes away; with ``hang``, the
    request waits there until it is cancelled."""

    def __init__(self, service: ExchangeService, monkeypatch: pytest.MonkeyPatch, *, hang: bool = False) -> None:
        self.found = threading.Event()
        self._task: asyncio.Task[Any] | None = None
        reading = service._requests_today

        async def found(*args: Any) -> int:
            self._task = asyncio.current_task()
            self.found.set()
            if hang:
                await asyncio.sleep(HANGS_AT_MOST)
            return await reading(*args)

        monkeypatch.setattr(service, "_requests_today", found)

    def cancel(self) -> None:
        assert self.found.wait(10)
        assert self._task is not None
        self._task.get_loop().call_soon_threadsafe(self._task.cancel)


def _cancelled_once(stack: Stack, path: str, body: dict[str, Any], reached: threading.Event,
                    task: _RequestTask) -> None:
    """Post ``body``, cancel the request's task once ``reached`` is set, and check that the cancellation went on:
    the server's own 500 for a task that ended cancelled (or the connection dropped), not a problem of the
    gateway's."""
    stack.token(REQUESTER)  # fetched beforehand: the request goes out at once
    with ThreadPoolExecutor(1) as pool:
        posted = pool.submit(stack.post, REQUESTER, path, body)
        assert reached.wait(10)
        task.cancel()
        try:
            response = posted.result(timeout=30)
        except httpx.HTTPError:  # the server may drop the connection of a cancelled request
            return
    assert response.status_code == 500, response.text
    assert not response.headers["content-type"].startswith("application/problem+json")


def _body(stack: Stack, path: str, case: str) -> dict[str, Any]:
    subjects = [{"ref": stack.world.scenarios()["bibob-applicant"][0]}]
    extra = {"holders": ["kvk"]} if path == "/v1/exchanges" else {}
    return BIBOB | extra | {"case_reference": case, "subjects": subjects, "categories": ["company_registration"]}


def _failures(entries: list[dict[str, Any]]) -> list[tuple[str, str, list[str], str]]:
    return [(e["exchange_id"], e["status"], e["reasons"], e["extra"]["error_type"])
            for e in entries if e["event_type"] == "request.failed"]


def _attempts_left(stack: Stack, service: ExchangeService) -> None:
    """Nothing of the ended request is kept: no claim on a key, no count held, none of its state."""
    with stack.container.engine.connect() as connection:
        assert list(connection.execute(select(exchange_claims))) == []
    assert (service._counted_in, service._logged_ahead, service._ending_handed, service._ahead_handed,
            service._commits_under_way) == ({}, set(), set(), {}, {})


@pytest.mark.parametrize(("path", "first"), [("/v1/exchanges", "exchange.requested"),
                                             ("/v1/discovery", "discovery.queried")])
def test_a_request_cancelled_while_its_holder_is_asked_ends_with_one_request_failed(
        stack: Stack, holder: _SilentHolder, monkeypatch: pytest.MonkeyPatch, path: str, first: str) -> None:
    service = exchange_service(stack.container)
    task = _RequestTask(service, monkeypatch)
    case = f"RIEC-AA-2026-C{path.rsplit('/', 1)[-1][:4]}"
    _cancelled_once(stack, path, _body(stack, path, case), holder.asked, task)  # asked: logged ahead by then
    entries = stack.logged_for_case(case)
    assert entries[0]["event_type"] == first
    assert len({e["exchange_id"] for e in entries}) == 1
    assert _failures(entries) == [(entries[0]["exchange_id"], "error", ["request-cancelled"], "CancelledError")]
    assert entries[-1]["event_type"] == "request.failed"  # the request's last word in the log
    assert entries[-1]["decision"] is None
    assert entries[-1]["categories"] == ["company_registration"]
    assert "disclosure" not in [e["event_type"] for e in entries]
    _attempts_left(stack, service)


@pytest.mark.parametrize("path", ["/v1/exchanges", "/v1/discovery"])
def test_a_request_cancelled_before_its_write_ahead_logs_nothing(
        stack: Stack, holder: _SilentHolder, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    service = exchange_service(stack.container)
    task = _RequestTask(service, monkeypatch, hang=True)
    case = f"RIEC-AA-2026-B{path.rsplit('/', 1)[-1][:4]}"
    _cancelled_once(stack, path, _body(stack, path, case), task.found, task)
    assert not holder.asked.is_set()
    assert stack.logged_for_case(case) == []
    _attempts_left(stack, service)


def _cancelled_as_recorded(service: ExchangeService, monkeypatch: pytest.MonkeyPatch,
                           when: Callable[[list[AuditEvent]], bool],
                           adjust: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None, *,
                           again: bool = False) -> None:
    """The request's own task is cancelled as the request hands the audit writer the events ``when`` selects: the
    cancellation arrives while the writer commits them (it commits what it was handed all the same); with
    ``again``, once more 0.2 s later (while the request's end waits for that commit, when the writer begins it
    late). ``adjust``: what else goes with those events (their companion), changed for the test. (The events may be
    handed in a task of their own, ``ExchangeService._awaited_by_end``: the request's task is the one that entered
    ``_failing_closed``, as uvicorn's task of the request does.)"""
    recording = service._record

    async def cancelled(events: list[AuditEvent], *args: Any) -> list[Receipt]:
        if when(events):
            cancel_request()
            if again:
                asyncio.get_running_loop().call_later(0.2, cancel_request)
            if adjust is not None:
                args = adjust(args)
        return await recording(events, *args)

    monkeypatch.setattr(service, "_record", cancelled)
    noting_request_tasks(service, monkeypatch)


def _logged_once(stack: Stack, case: str, done: Callable[[list[dict[str, Any]]], object]) -> list[dict[str, Any]]:
    """The case's entries once ``done`` holds of them (or after 10 s): a caller cancelled while its entries are
    written does not wait for their commit, so the answer may come before they are in the log."""
    entries = stack.logged_for_case(case)
    deadline = time.monotonic() + 10
    while not done(entries) and time.monotonic() < deadline:
        time.sleep(0.02)
        entries = stack.logged_for_case(case)
    return entries


async def _cancelled_inside(*_: Any) -> Any:
    """A cancellation nobody asked for, raised inside the holder call (a defect, not the request's own)."""
    raise asyncio.CancelledError


@pytest.mark.parametrize("client", ["stays", "goes away while the failure is logged"])
def test_a_request_whose_defect_is_logged_gets_no_second_ending(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, client: str) -> None:
    """The defect's ``request.failed`` is the request's ending: a cancellation of the request's own that
    arrives while it is written (the client gone meanwhile) adds none; neither does the cancellation the defect
    was (raised inside the request's work)."""
    service = exchange_service(stack.container)
    monkeypatch.setattr(stack.container.services["connectors"].get("kvk-handelsregister"), "query",
                        _cancelled_inside)
    if client != "stays":
        _cancelled_as_recorded(service, monkeypatch,
                               lambda events: any(e.event_type == EventType.REQUEST_FAILED for e in events))
    case = f"RIEC-AA-2026-D{len(client)}"
    try:
        response = stack.post(REQUESTER, "/v1/exchanges", _body(stack, "/v1/exchanges", case))
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        assert client != "stays"
    else:
        assert response.status_code == 500, response.text
        assert response.headers["content-type"].startswith("application/problem+json") == (client == "stays")
    entries = _logged_once(stack, case, _failures)
    assert _failures(entries) == [(entries[0]["exchange_id"], "error", ["gateway-error"], "CancelledError")]
    _attempts_left(stack, service)


@pytest.mark.parametrize(("path", "keyed", "twice"), [
    ("/v1/exchanges", True, False), ("/v1/exchanges", False, False), ("/v1/discovery", False, False),
    ("/v1/exchanges", True, True), ("/v1/exchanges", False, True)])
def test_a_request_cancelled_while_its_answer_is_logged_gets_no_failure_after_it(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, path: str, keyed: bool, twice: bool) -> None:
    """The commit of the answer (the disclosures, and an exchange's outcome with them) is the request's ending:
    handed to the audit writer, it is written whether or not the request waits for it, so a cancellation that
    arrives meanwhile adds no ``request.failed`` after it. An exchange's answer is then stored: a retry with
    its Idempotency-Key gets it, and it stays counted in rule 6's daily count (as a discovery always does).

    Here the writer begins the answer's transaction late, as a busy writer does. Found by CI, where that
    happened by chance: the cancelled attempt gave its key's claim up at once, before the answer's commit,
    which then failed (its claim lost): the holders' answers were not logged and no answer was stored. Now the
    release waits for that commit to settle. Found by a review after it: the attempt's end gave the stored
    exchange's count back (with a key or without), so the day's count was one too low; now the count stays
    once the outcome's commit is made, whether or not the attempt waits for it. Cancelled ``twice``, again while the
    attempt waits for that commit (a server stopping twice), that wait was cut short and the attempt's end gave
    the count back before the commit was made: the count was one too low; now the count's give-back waits for
    that commit in a shielded task of its own."""
    service = exchange_service(stack.container)
    _cancelled_as_recorded(service, monkeypatch,
                           lambda events: any(e.event_type == EventType.DISCLOSURE for e in events), again=twice)
    written_late(stack, monkeypatch, EventType.DISCLOSURE)
    case = f"RIEC-AA-2026-A{path.rsplit('/', 1)[-1][:4]}{'-k' if keyed else ''}{'-twice' if twice else ''}"
    body = _body(stack, path, case) | {"categories": ["police_incidents"]}
    if path == "/v1/exchanges":
        body["holders"] = ["politie"]
    key = {"Idempotency-Key": f"cancelled-while-answered-000{2 if twice else 1}"} if keyed else {}
    counted = _counted_today(stack)
    try:
        response = stack.post(REQUESTER, path, body, key)
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        pass
    else:
        assert response.status_code == 500, response.text
        assert not response.headers["content-type"].startswith("application/problem+json")
    entries = _logged_once(stack, case, lambda logged: "disclosure" in [e["event_type"] for e in logged])
    assert [e["event_type"] for e in entries][-1] == "disclosure"
    assert _failures(entries) == []
    _attempts_left(stack, service)
    assert _counted_today(stack) == counted + 1
    if keyed:
        monkeypatch.undo()
        again = stack.post(REQUESTER, path, body, key)
        assert again.status_code == 200, again.text
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["exchange_id"] == entries[0]["exchange_id"]


def _counted_today(stack: Stack) -> int:
    """Rule 6's count of the requester's BIBOB requests as the database holds it (every day's: the clock is
    fixed)."""
    with stack.container.engine.connect() as connection:
        return sum(connection.execute(select(daily_request_counts.c.requests).where(
            daily_request_counts.c.purpose == BIBOB["purpose"])).scalars())


def test_a_keyed_request_cancelled_while_its_outcome_and_cases_are_committed_keeps_both(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every target escalated by policy (a bulk request): no holder is asked, and the outcome commits with the
    cases it opens, giving the key's claim up. Cancelled while that commit waits in the writer's queue (begun
    late, as a busy writer does), the attempt gave its claim up first, so the commit failed (its claim lost):
    no outcome, no case, and no ending of the request in the log. Now the release waits for that commit: the
    outcome and its cases are stored, and a retry with the key gets them."""
    service = exchange_service(stack.container)
    storing = service._store_with_cases

    async def cancelled_while_stored(*args: Any) -> None:
        cancel_request()
        await storing(*args)

    noting_request_tasks(service, monkeypatch)
    monkeypatch.setattr(service, "_store_with_cases", cancelled_while_stored)
    written_late(stack, monkeypatch, EventType.ESCALATION_STEP)
    case = "RIEC-AA-2026-Obulk"
    body = BIBOB | {"case_reference": case, "holders": "all", "categories": ["police_incidents", "tax_debts"],
                    "subjects": [{"ref": p.subject_ref} for p in stack.world.persons[:40]]}
    key = {"Idempotency-Key": "cancelled-while-escalated-0001"}
    with contextlib.suppress(httpx.HTTPError):  # the server may drop the connection of a cancelled request
        stack.post(REQUESTER, "/v1/exchanges", body, key)
    entries = _logged_once(stack, case, lambda logged: "escalation.step" in [e["event_type"] for e in logged])
    assert [e["event_type"] for e in entries][-1] == "escalation.step"
    assert _failures(entries) == []
    _attempts_left(stack, service)
    monkeypatch.undo()
    again = stack.post(REQUESTER, "/v1/exchanges", body, key)
    assert again.status_code == 200, again.text
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert {t["outcome"] for t in again.json()["targets"]} == {"escalated"}
    assert again.json()["exchange_id"] == entries[0]["exchange_id"]


@pytest.fixture
def failures_refused(stack: Stack) -> Iterator[None]:
    """The audit log refuses ``request.failed`` entries (it is down just when the ending is written), and takes
    every other entry."""
    with inserts_refused(stack, "refuse_failures", "audit_entries", "NEW.event_type = 'request.failed'"):
        yield


@pytest.mark.usefixtures("failures_refused")
def test_a_cancelled_requests_ending_the_log_refuses_is_a_log_line_and_the_cancellation_goes_on(
        stack: Stack, holder: _SilentHolder, monkeypatch: pytest.MonkeyPatch) -> None:
    service = exchange_service(stack.container)
    task = _RequestTask(service, monkeypatch)
    case = "RIEC-AA-2026-C-down"
    with capture_logs() as logs:
        _cancelled_once(stack, "/v1/exchanges", _body(stack, "/v1/exchanges", case), holder.asked, task)
    entries = stack.logged_for_case(case)
    assert [e["event_type"] for e in entries] == ["exchange.requested", "policy.decided"]
    missing = [line for line in logs if line["event"] == "request_cancel_not_audited"]
    assert missing == [{"event": "request_cancel_not_audited", "log_level": "error",
                        "exchange_id": entries[0]["exchange_id"], "error_type": "ServiceUnavailable"}]
    _attempts_left(stack, service)


@pytest.mark.parametrize(("path", "first"), [("/v1/exchanges", "exchange.requested"),
                                             ("/v1/discovery", "discovery.queried")])
def test_a_request_cancelled_while_its_write_ahead_is_committed_ends_with_one_request_failed(
        stack: Stack, monkeypatch: pytest.MonkeyPatch, path: str, first: str) -> None:
    """Found by a review: the write-ahead handed to the audit writer is committed whether or not the request waits
    for it, but the request counted as logged ahead only once it had waited: cancelled meanwhile, it added no
    ending, and the log held a request about to be answered and nothing after it, for good. Now the cancellation
    waits (shielded) for that commit: committed, the request ends with ``request.failed`` (request-cancelled);
    refused, nothing of it is in the log and nothing is added."""
    service = exchange_service(stack.container)
    _cancelled_as_recorded(service, monkeypatch, lambda events: bool(events) and events[0].event_type.value == first)
    case = f"RIEC-AA-2026-W{path.rsplit('/', 1)[-1][:4]}"
    try:
        response = stack.post(REQUESTER, path, _body(stack, path, case))
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        pass
    else:
        assert response.status_code == 500, response.text
        assert not response.headers["content-type"].startswith("application/problem+json")
    entries = _logged_once(stack, case, _failures)
    assert entries[0]["event_type"] == first
    assert len({e["exchange_id"] for e in entries}) == 1
    assert _failures(entries) == [(entries[0]["exchange_id"], "error", ["request-cancelled"], "CancelledError")]
    assert entries[-1]["event_type"] == "request.failed"
    _attempts_left(stack, service)


def test_a_client_that_drops_its_connection_does_not_cancel_its_request(
        stack: Stack, holder: _SilentHolder) -> None:
    """What the docs say of a client that goes away: uvicorn does not cancel a request whose connection drops
    (it only marks it disconnected), so such a request runs on, its answer is logged and stored as usual, and
    no ``request-cancelled`` follows; that reason is for a request cancelled by a stopping server."""
    case = "RIEC-AA-2026-dropped"
    token = stack.token(REQUESTER)
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
        httpx.post(f"{stack.gateway_url}/v1/exchanges", json=_body(stack, "/v1/exchanges", case),
                   headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(10.0, read=2.0))
    assert holder.asked.is_set()  # the request was past its write-ahead when its client went
    holder.released.set()
    entries = _logged_once(stack, case, lambda logged: "holder.unavailable" in [e["event_type"] for e in logged])
    assert [e["event_type"] for e in entries] == ["exchange.requested", "policy.decided", "holder.unavailable"]
    assert _failures(entries) == []


def test_a_keyed_request_cancelled_while_its_write_ahead_is_committed_leaves_its_key_free(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: cancelled while the write-ahead that claims its Idempotency-Key waited to be committed,
    the attempt gave its claim up at once — before the claim's own commit, which the writer makes all the same —
    so the release found nothing, the claim was committed after it, and a retry with the key was refused (409)
    until the claim's lease ran out (minutes). Now the release waits for that commit first. (Here the writer
    begins the write-ahead's transaction late, holding no lock meanwhile, as a busy writer does; on PostgreSQL a
    DELETE never waits for an uncommitted INSERT.)"""
    service = exchange_service(stack.container)
    begun = written_late(stack, monkeypatch, EventType.EXCHANGE_REQUESTED, once=True)
    _cancelled_as_recorded(service, monkeypatch, lambda events: bool(events) and
                           events[0].event_type == EventType.EXCHANGE_REQUESTED and not begun())
    case = "RIEC-AA-2026-Wkeyd"
    key = {"Idempotency-Key": "cancelled-while-claimed-0001"}
    with contextlib.suppress(httpx.HTTPError):  # the server may drop the connection of a cancelled request
        stack.post(REQUESTER, "/v1/exchanges", _body(stack, "/v1/exchanges", case), key)
    _logged_once(stack, case, _failures)  # the first attempt has ended (its ending is in the log)
    retried = stack.post(REQUESTER, "/v1/exchanges", _body(stack, "/v1/exchanges", case), key)
    assert retried.status_code == 200, retried.text
    _attempts_left(stack, service)

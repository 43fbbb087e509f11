"""Records a requester provides (S2: the Belastingdienst hands the KvK the dissolution grounds) are a
disclosure to the holder. When the holder call then fails, the log must still say so if the holder may hold
them: a holder that kept them and then stalled past the timeout is logged as handed them (``received``
unknown, status ``error``: the call did not complete); so is a holder whose call was cut off after it had them
(cancelled, or failed by a defect of the gateway's); a holder that refused the call with a 4xx is not."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text
from structlog.testing import capture_logs

from audit import AuditEvent, EventType, Receipt
from gateway.exchange.setup import exchange_service
from gateway.exchange.tables import daily_request_counts
from tests.request_cancellation import cancel_request, noting_request_tasks, written_late
from tests.stack import Stack, inserts_refused, stack_with_holder


class _Holder:
    """Keeps every provided record it is sent, then answers as ``mode`` says."""

    def __init__(self) -> None:
        self.mode = "stall"
        self.kept: list[dict[str, Any]] = []
        self.received = threading.Event()  # set once it has kept what it was sent
        self.app = FastAPI()
        self.app.post("/holder/v1/query")(self.query)

    async def query(self, request: Request) -> Any:
        if self.mode == "refuse-call":
            return JSONResponse({"detail": "not accepted"}, status_code=403)
        if self.mode.startswith("received="):  # answers at once, claiming to have taken in that many
            self.kept += (await request.json()).get("provided", [])
            return {"status": "answered", "records": [], "received": int(self.mode.removeprefix("received="))}
        if self.mode in {"echo-other", "unasked-only"}:  # another request's answer, saying it took one in
            asked = await request.json()
            self.kept += asked.get("provided", [])
            record = {"record_id": "r-1", "record_type": "registration", "subject": "subj-somebody-else-0001",
                      "category": "company_registration", "fields": {"n": 1}}
            if self.mode == "echo-other":
                return {"request_id": "another-exchange:kvk", "status": "answered", "received": 1,
                        "records": [record | {"subject": asked["subjects"][0]}]}
            return {"status": "answered", "received": 1, "records": [record]}
        self.kept += (await request.json()).get("provided", [])
        self.received.set()
        await asyncio.sleep(2.0)  # past the gateway's timeout
        return {"status": "answered", "records": [], "received": 1}


@pytest.fixture(scope="module")
def holder() -> _Holder:
    return _Holder()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, holder: _Holder) -> Iterator[Stack]:
    with stack_with_holder(Path(tmp_path_factory.mktemp("provided")), holder.app, ["kvk-handelsregister"],
                           {"connector_timeout_seconds": 0.5, "connector_retries": 0}) as running:
        yield running


def _s2(stack: Stack, case: str) -> dict[str, Any]:
    subject = stack.world.scenarios()["malafide-dissolution"][0]
    return {"partnership": "riec-amsterdam-amstelland", "purpose": "malafide-company-dissolution",
            "legal_basis": "WGS (RIEC) with BW 2:19a", "case_reference": case,
            "signal": {"type": "missing-returns", "reference": "BD-SIG-90"}, "subjects": [{"ref": subject}],
            "holders": ["kvk"], "categories": ["company_registration"],
            "provide": [{"subject": subject, "category": "tax_compliance", "fields": {"missing_returns": ["2024"]}}]}


def test_a_holder_that_kept_the_records_and_then_timed_out_is_logged_as_handed_them(stack: Stack,
                                                                                     holder: _Holder) -> None:
    holder.mode, holder.kept = "stall", []
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, "BD-2026-91"))
    assert response.status_code == 200, response.text
    assert response.json()["targets"][0]["outcome"] == "holder-unavailable"
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]  # it does hold them
    handed = [e for e in stack.logged_for_case("BD-2026-91") if e["event_type"] == "disclosure"]
    assert [(e["holder"], e["extra"]["direction"], e["extra"]["received"], e["categories"], e["status"])
            for e in handed] == [("kvk", "requester-to-holder", None, ["tax_compliance"], "error")]


def test_a_holder_that_refused_the_call_is_not_logged_as_handed_anything(stack: Stack, holder: _Holder) -> None:
    holder.mode, holder.kept = "refuse-call", []
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, "BD-2026-92"))
    assert response.status_code == 200, response.text
    assert response.json()["targets"][0]["outcome"] == "holder-unavailable"
    entries = stack.logged_for_case("BD-2026-92")
    assert [e["event_type"] for e in entries if e["event_type"] == "disclosure"] == []
    assert [e["event_type"] for e in entries][-1] == "holder.unavailable"


@pytest.mark.parametrize("received", [2, 2**60])
def test_a_holder_claiming_more_records_than_it_was_handed_is_no_answer(stack: Stack, holder: _Holder,
                                                                        received: int) -> None:
    """Found by a review: a holder's ``received`` was logged as it came. Beyond 2**53 the audit entry refused
    it and the whole exchange failed with 500 (every other holder's answer lost); below, the log said the
    holder took in more records than it was handed. An answer that does not add up is no answer: the holder is
    unavailable, and logged as handed the records with ``received`` unknown, as after a failed call."""
    holder.mode, holder.kept = f"received={received}", []
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, f"BD-2026-R{received}"))
    assert response.status_code == 200, response.text
    target = response.json()["targets"][0]
    assert (target["outcome"], target["records"]) == ("holder-unavailable", [])
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]
    entries = stack.logged_for_case(f"BD-2026-R{received}")
    handed = [e for e in entries if e["event_type"] == "disclosure"]
    assert [(e["extra"]["direction"], e["extra"]["records"], e["extra"]["received"]) for e in handed] == [
        ("requester-to-holder", 1, None)]
    assert [e["extra"] for e in entries if e["event_type"] == "holder.unavailable"] == [
        {"error_type": "HolderProtocolError"}]


@pytest.mark.parametrize(("mode", "reason", "unavailable"), [
    ("echo-other", "answer-mismatch", {"error_type": "HolderAnswerMismatch"}),
    ("unasked-only", "holder-answered-unasked-subjects", {"dropped_overshared": 1})])
def test_a_holder_answering_another_request_is_logged_as_handed_the_records_with_received_unknown(
        stack: Stack, holder: _Holder, mode: str, reason: str, unavailable: dict[str, Any]) -> None:
    """An answer to another request (it echoes another request id, or its records are all about subjects not
    asked) says nothing of this one, its ``received`` included: the holder is unavailable for the requester,
    and logged as handed the records it may hold with ``received`` unknown, not with another request's count."""
    holder.mode, holder.kept = mode, []
    case = f"BD-2026-{mode}"
    response = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, case))
    assert response.status_code == 200, response.text
    target = response.json()["targets"][0]
    assert (target["outcome"], target["records"], [r["code"] for r in target["reasons"]]) == (
        "holder-unavailable", [], [reason])
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]
    entries = stack.logged_for_case(case)
    handed = [e for e in entries if e["event_type"] == "disclosure"]
    assert [(e["extra"]["direction"], e["extra"]["records"], e["extra"]["received"]) for e in handed] == [
        ("requester-to-holder", 1, None)]
    assert [(e["reasons"], e["extra"]) for e in entries if e["event_type"] == "holder.unavailable"] == [
        ([reason], unavailable)]


_Query = Callable[[Any], Awaitable[Any]]


def _cut_off(holder: _Holder, query: _Query, how: str) -> _Query:
    """The gateway's call to the holder, cut off once the holder has kept the provided records: ``cancelled
    inside`` (the call's own task cancelled by code of the gateway's, as a library may), ``request cancelled``
    (the request's task cancelled, as when its client goes away), or ``defect`` (an exception no code expects)."""
    async def cut_off(question: Any) -> Any:
        call = asyncio.ensure_future(query(question))
        assert await asyncio.to_thread(holder.received.wait, 10.0)
        if how == "request cancelled":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        else:
            call.cancel()
        if how == "defect":
            raise RuntimeError("the connector failed after sending")
        return await call  # raises the cancellation
    return cut_off


@pytest.mark.parametrize("how", ["cancelled inside", "request cancelled", "defect"])
def test_a_holder_whose_call_was_cut_off_after_it_had_the_records_is_logged_as_handed_them(
        stack: Stack, holder: _Holder, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Found by a review: only an answer, or a connector failure that says the records may have arrived, logged
    them; a call cancelled or failed by a defect after the holder had them left no entry, so the log did not
    say what had left the gateway. Now they are logged as handed, ``received`` unknown, status ``error``."""
    kvk = stack.container.services["connectors"].get("kvk-handelsregister")
    monkeypatch.setattr(kvk, "query", _cut_off(holder, kvk.query, how))
    holder.mode, holder.kept = "stall", []
    holder.received.clear()
    case = f"BD-2026-cut-{how.replace(' ', '-')}"
    try:
        response: httpx.Response | None = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, case))
    except httpx.HTTPError:  # the server may drop the connection of a cancelled request
        response = None
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]  # it does hold them
    entries = stack.logged_for_case(case)
    handed = [e for e in entries if e["event_type"] == "disclosure"]
    assert [(e["holder"], e["extra"]["direction"], e["extra"]["received"], e["categories"], e["status"])
            for e in handed] == [("kvk", "requester-to-holder", None, ["tax_compliance"], "error")]
    ending = [e["event_type"] for e in entries][-1]
    status = None if response is None else response.status_code
    if how == "defect":  # failed closed for that holder: the answer goes on without it
        assert (status, ending) == (200, "holder.unavailable")
        assert response is not None
        assert response.json()["targets"][0]["outcome"] == "holder-unavailable"
    elif how == "cancelled inside":  # a defect of the whole request: its provision, then its failure
        assert (status, ending) == (500, "request.failed")
    else:  # the request's own cancellation: its provision, then its ending (no failure of the gateway's)
        assert status is None or status >= 500
        assert [(e["event_type"], e["reasons"]) for e in entries][-2:] == [
            ("disclosure", []), ("request.failed", ["request-cancelled"])]


@pytest.fixture
def holder_failures_refused(stack: Stack) -> Iterator[None]:
    """The audit log refuses ``holder.unavailable`` entries (it fails just as the holders' answers are logged), and
    takes every other entry: the provision that went with them is left for the attempt's end to log alone."""
    with stack.container.engine.begin() as connection:
        connection.execute(text("CREATE TRIGGER refuse_unavailable BEFORE INSERT ON audit_entries "
                                "WHEN NEW.event_type = 'holder.unavailable' "
                                "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
    try:
        yield
    finally:
        with stack.container.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER IF EXISTS refuse_unavailable"))


@pytest.mark.usefixtures("holder_failures_refused")
def test_a_request_cancelled_again_as_it_ends_still_logs_its_provision_and_keeps_none_of_its_state(
        stack: Stack, holder: _Holder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a review: the attempt's end awaits in turn the release of a re-run's decision, the give-back of
    rule 6's count and the log of the provisions left, each shielded; a cancellation that reached the request while
    it waited for one of them (a second one, or the first) skipped the others, so the count was never given back
    and the attempt's entries stayed in ``_counted_in`` and ``_provisions`` for good (a leak under load), and the
    records the holder was handed were in no entry. Now each of them runs, and the cancellation goes on after."""
    service = exchange_service(stack.container)
    ended = service._rerun_ended

    async def cancelled_again(exchange_id: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # arrives while the attempt's end waits (here: for a re-run's decision to be given back)
        await ended(exchange_id)
        await asyncio.sleep(0)

    monkeypatch.setattr(service, "_rerun_ended", cancelled_again)
    holder.mode, holder.kept = "stall", []
    case = "BD-2026-cancelled-again"
    with capture_logs():
        try:
            response: httpx.Response | None = stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, case))
        except httpx.HTTPError:  # the server may drop the connection of a cancelled request
            response = None
    assert response is None or response.status_code >= 500
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]  # it does hold them
    entries = stack.logged_for_case(case)
    deadline = time.monotonic() + 10
    while "disclosure" not in [e["event_type"] for e in entries] and time.monotonic() < deadline:
        time.sleep(0.02)
        entries = stack.logged_for_case(case)
    handed = [e for e in entries if e["event_type"] == "disclosure"]
    assert [(e["holder"], e["extra"]["direction"], e["extra"]["received"], e["status"]) for e in handed] == [
        ("kvk", "requester-to-holder", None, "error")]
    assert (service._counted_in, service._provisions) == ({}, {})


def _counted_today(stack: Stack) -> int:
    """Rule 6's count of the S2 purpose's requests as the database holds it (every day's: the clock is fixed)."""
    with stack.container.engine.connect() as connection:
        return sum(connection.execute(select(daily_request_counts.c.requests).where(
            daily_request_counts.c.purpose == "malafide-company-dissolution")).scalars())


@pytest.mark.parametrize("cancelled", ["once", "again while the answer is committed"])
def test_a_request_cancelled_while_its_answer_fails_to_commit_logs_its_provision_and_its_ending(
        stack: Stack, holder: _Holder, monkeypatch: pytest.MonkeyPatch, cancelled: str) -> None:
    """The holder answered; the request is cancelled (its server stopping) while the commit of that answer —
    the disclosures, the provision and the outcome row together — waits in the audit writer's queue, and that
    commit then fails (the database refuses the outcome row). Nothing of it is in the log, so the request's
    ending must say what the holder was handed, and that the request ended.

    Found by a review of the previous session's leftovers: cancelled meanwhile, the attempt dropped the
    provision (the writer might still commit it), so it was in no entry when the commit failed; and cancelled
    a second time while it waited for that commit, the request took the commit for its ending and logged none
    at all. Now the commit's own task says whether it logged the provision, and the cancellation's ending, the
    count's give-back and the provisions' log wait for it, each in a shielded task of its own."""
    service = exchange_service(stack.container)
    recording = service._record
    first = [True]

    async def cancelled_as_answer_recorded(events: list[AuditEvent], *args: Any) -> list[Receipt]:
        if first[0] and any(e.event_type == EventType.DISCLOSURE for e in events):
            first[0] = False
            cancel_request()
            if cancelled != "once":  # arrives while the attempt waits for that commit before it ends
                asyncio.get_running_loop().call_later(0.2, cancel_request)
        return await recording(events, *args)

    noting_request_tasks(service, monkeypatch)
    monkeypatch.setattr(service, "_record", cancelled_as_answer_recorded)
    written_late(stack, monkeypatch, EventType.DISCLOSURE, once=True)
    holder.mode, holder.kept = "received=1", []
    case = f"BD-2026-answer-refused-{cancelled.split()[0]}"
    counted = _counted_today(stack)
    with inserts_refused(stack, "refuse_outcomes", "exchanges"), capture_logs():
        with contextlib.suppress(httpx.HTTPError):  # the server may drop the connection of a cancelled request
            stack.post("belastingdienst-ivs", "/v1/exchanges", _s2(stack, case))
        entries = stack.logged_for_case(case)
        deadline = time.monotonic() + 10
        while "request.failed" not in [e["event_type"] for e in entries] and time.monotonic() < deadline:
            time.sleep(0.02)
            entries = stack.logged_for_case(case)
        time.sleep(0.7)  # anything still to come (a second ending, a late commit) would be in by now
        entries = stack.logged_for_case(case)
    assert [r["category"] for r in holder.kept] == ["tax_compliance"]  # it does hold them
    assert [(e["event_type"], e["holder"], e["extra"].get("direction"), e["reasons"]) for e in entries][2:] == [
        ("disclosure", "kvk", "requester-to-holder", []), ("request.failed", None, None, ["request-cancelled"])]
    assert _counted_today(stack) == counted  # no outcome stored: its count given back
    assert (service._counted_in, service._provisions, service._ending_handed, service._commits_under_way) == (
        {}, {}, set(), {})

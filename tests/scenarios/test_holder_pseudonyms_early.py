"""The holders' pseudonyms of a pseudonymous request are computed while its write-ahead commits
(``gateway.exchange.early``), over real HTTP — and still no holder is asked before the request and its decisions
are durable, an attempt whose write-ahead fails leaves no work behind, and a failure of that work fails its holder
closed as before."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from audit.errors import AuditWriteError
from audit.events import EventType
from connectors.http_connector import HttpConnector
from gateway.exchange.setup import exchange_service
from tests.stack import Stack, running_stack

RIEC = "riec-amsterdam-amstelland"
MUNICIPALITY = "gemeente-amsterdam-vth"
BIBOB = {"partnership": RIEC, "purpose": "bibob-integrity-check", "legal_basis": "WGS (RIEC) with Wet Bibob",
         "case_reference": "RIEC-AA-2026-510", "signal": {"type": "bibob-application", "reference": "BIBOB-2026-510"},
         "holders": ["kvk"], "categories": ["company_registration"]}
BOUND_SECONDS = 5.0  # how long the write-ahead waits for the holders' pseudonyms to be under way


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("early")) as running:
        enrolled = asyncio.run(running.enrol_all())
        assert enrolled["kvk-handelsregister"] > 0, enrolled
        yield running


def _body(stack: Stack) -> dict[str, Any]:
    ref = stack.world.scenarios()["bibob-applicant"][0]
    return BIBOB | {"subjects": [{"ref": p} for p in asyncio.run(stack.own_pseudonyms(MUNICIPALITY, RIEC, [ref]))]}


@pytest.fixture
def steps(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What happens, in order: the holder's pseudonyms computed, the write-ahead durable, the holder asked. The
    write-ahead waits (bounded) until the pseudonyms are under way, so the order says whether they were
    started before it committed, not which thread was faster."""
    service = exchange_service(stack.container)
    translator = service.deps.pseudonyms
    assert translator is not None
    happened: list[str] = []
    under_way = threading.Event()
    to_holder_all = translator.to_holder_all

    def computing(*args: Any) -> list[str]:
        happened.append("holder pseudonyms computed")
        under_way.set()
        return to_holder_all(*args)

    record = service._record

    async def recording(events: list[Any], *args: Any) -> Any:
        if events[0].event_type != EventType.EXCHANGE_REQUESTED:
            return await record(events, *args)
        await asyncio.to_thread(under_way.wait, BOUND_SECONDS)
        receipts = await record(events, *args)
        happened.append("write-ahead durable")
        return receipts

    query = HttpConnector.query

    async def asking(connector: HttpConnector, *args: Any) -> Any:
        happened.append("holder asked")
        return await query(connector, *args)

    monkeypatch.setattr(translator, "to_holder_all", computing)
    monkeypatch.setattr(service, "_record", recording)
    monkeypatch.setattr(HttpConnector, "query", asking)
    return happened


def test_the_holders_pseudonyms_are_computed_while_the_write_ahead_commits(stack: Stack, steps: list[str]) -> None:
    body = _body(stack)
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert answer.status_code == 200, answer.text
    (target,) = answer.json()["targets"]
    assert target["outcome"] == "allowed"
    assert target["records"]  # the holder recognised its pseudonym: the one computed early was the right one
    assert steps == ["holder pseudonyms computed", "write-ahead durable", "holder asked"]
    assert len(exchange_service(stack.container)._early) == 0


def test_a_failed_write_ahead_asks_no_holder_and_leaves_no_work(stack: Stack, steps: list[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    service = exchange_service(stack.container)
    record = service._record

    async def failing(events: list[Any], *args: Any) -> Any:
        if events[0].event_type == EventType.EXCHANGE_REQUESTED:
            raise AuditWriteError("the disk is full")
        return await record(events, *args)

    monkeypatch.setattr(service, "_record", failing)
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", _body(stack))
    assert answer.status_code == 503, answer.text
    assert "holder asked" not in steps
    assert len(service._early) == 0


def test_a_failure_computing_a_holders_pseudonyms_early_fails_that_holder_closed(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    service = exchange_service(stack.container)
    translator = service.deps.pseudonyms
    assert translator is not None
    taken: list[tuple[str, bool]] = []
    take = service._early.take

    def taking(attempt: str, key: str) -> Any:
        work = take(attempt, key)
        taken.append((key, work is not None))
        return work

    def broken(*_: Any) -> list[str]:
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(service._early, "take", taking)
    monkeypatch.setattr(translator, "to_holder_all", broken)
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", _body(stack))
    assert answer.status_code == 200, answer.text
    (target,) = answer.json()["targets"]
    assert target["outcome"] == "holder-unavailable"
    assert target["records"] == []
    assert "gateway-error" in [r["code"] for r in target["reasons"]]
    assert ("kvk", True) in taken  # the early work's failure, not a second computation's
    assert [key for key, _ in taken].count("kvk") == 1
    assert len(service._early) == 0


def test_references_start_no_early_work(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opaque references are passed to the holder as they are: no thread, no early work."""
    started: list[str] = []
    service = exchange_service(stack.container)
    monkeypatch.setattr(service._early, "start", lambda *args: started.append(args[1]))
    body = BIBOB | {"subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}]}
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["targets"][0]["outcome"] == "allowed"
    assert started == []


def test_a_lone_target_is_served_without_a_task_of_its_own(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving several targets wraps each in a task (and a loop iteration); one target is awaited as it is.
    Two targets are still served at once, each in a task of its own."""
    tasks: list[str] = []
    ensure_future = asyncio.ensure_future

    def counting(awaitable: Any, **kwargs: Any) -> Any:
        if getattr(getattr(awaitable, "cr_code", None), "co_name", "") == "_serve_target":
            tasks.append("_serve_target")
        return ensure_future(awaitable, **kwargs)

    monkeypatch.setattr(asyncio, "ensure_future", counting)
    ref = stack.world.scenarios()["bibob-applicant"][0]
    one = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | {"subjects": [{"ref": ref}]})
    assert one.status_code == 200, one.text
    assert [t["outcome"] for t in one.json()["targets"]] == ["allowed"]
    assert tasks == []
    both = {"subjects": [{"ref": ref}], "holders": ["kvk", "politie"],
            "categories": ["company_registration", "police_incidents"]}
    two = stack.post(MUNICIPALITY, "/v1/exchanges", BIBOB | both)
    assert two.status_code == 200, two.text
    assert len(two.json()["targets"]) == 2
    assert tasks == ["_serve_target", "_serve_target"]


def test_the_subjects_as_logged_are_computed_while_the_policy_decides(stack: Stack,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The partnership's pseudonyms the log names the subjects by (needed for the write-ahead, not for the
    decision) are computed while the policy decides: here the computation waits (bounded) until the policy is
    asked, so it ends after the policy was asked only if it was under way by then."""
    service = exchange_service(stack.container)
    translator = service.deps.pseudonyms
    assert translator is not None
    happened: list[str] = []
    asked = threading.Event()
    to_partnership = translator.to_partnership

    def computing(*args: Any) -> str:
        asked.wait(BOUND_SECONDS)
        happened.append("subjects as logged computed")
        return to_partnership(*args)

    decide = service._decide

    async def deciding(*args: Any) -> Any:
        happened.append("policy asked")
        asked.set()
        return await decide(*args)

    monkeypatch.setattr(translator, "to_partnership", computing)
    monkeypatch.setattr(service, "_decide", deciding)
    answer = stack.post(MUNICIPALITY, "/v1/exchanges", _body(stack))
    assert answer.status_code == 200, answer.text
    assert answer.json()["targets"][0]["outcome"] == "allowed"
    assert happened[:2] == ["policy asked", "subjects as logged computed"]
    assert len(service._early) == 0

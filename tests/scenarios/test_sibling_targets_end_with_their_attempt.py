"""No holder call outlives its request: when serving one target fails in a way not turned into its outcome
(here a cancellation escaping a holder's connector, injected), the other targets of the same request are ended
before the request's attempt ends, not left running after it. Found by a review: the targets were served with
a plain ``gather``, which raised the first failure at once and left the others running; once the attempt had
ended (its state dropped, rule 6's count and the Idempotency-Key given back), another target still asked its
holder for an answer nobody would log or read."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.exchange.setup import exchange_service
from tests.stack import Stack, running_stack

BOUND = 20.0  # seconds: only reached when the test fails
BIBOB = {"partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
         "legal_basis": "WGS (RIEC) with Wet Bibob", "case_reference": "RIEC-AA-2026-202",
         "signal": {"type": "bibob-application", "reference": "BIBOB-2026-79"}}
_Q = TypeVar("_Q")
_A = TypeVar("_A")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(Path(tmp_path_factory.mktemp("siblings"))) as running:
        yield running


class _Race:
    """One holder call held in flight (until released, by an event) while another holder's call fails with a
    cancellation of its own, which escapes the target's fail-closed handling (it catches ``Exception``).
    ``happened`` is the order of events; the held call is released by the end of the attempt only."""

    def __init__(self) -> None:
        self.happened: list[str] = []
        self.held_asked = asyncio.Event()  # bound to the gateway's loop on first use there
        self.release = asyncio.Event()
        self.held_over = threading.Event()

    def held(self, ask: Callable[[_Q], Awaitable[_A]]) -> Callable[[_Q], Awaitable[_A]]:
        async def held_call(question: _Q) -> _A:
            self.happened.append("held call started")
            self.held_asked.set()
            try:
                await asyncio.wait_for(self.release.wait(), BOUND)
                self.happened.append("held call resumed")
                answer = await ask(question)
                self.happened.append("held holder asked")
                return answer
            except asyncio.CancelledError:
                self.happened.append("held call cancelled")
                raise
            finally:
                self.held_over.set()
        return held_call

    async def failing(self, _: Any) -> Any:
        await asyncio.wait_for(self.held_asked.wait(), BOUND)
        self.happened.append("other call failed")
        raise asyncio.CancelledError

    def ended(self) -> None:
        self.happened.append("attempt ended")
        self.release.set()

    def assert_nothing_outlived_the_attempt(self, response: httpx.Response | None) -> None:
        assert self.held_over.wait(BOUND)
        assert self.happened == ["held call started", "other call failed", "held call cancelled", "attempt ended"]
        assert response is None or response.status_code >= 500, response.text
        assert response is None or "records" not in response.text


def _post(stack: Stack, path: str, body: dict[str, Any]) -> httpx.Response | None:
    try:
        return stack.post("gemeente-amsterdam-vth", path, body)
    except httpx.HTTPError:  # a cancellation may end the connection without an answer: no disclosure either
        return None


def _last_index(stack: Stack) -> int:
    with stack.container.engine.connect() as connection:
        return int(connection.execute(select(audit_entries.c.log_index).order_by(audit_entries.c.log_index.desc())
                                      .limit(1)).scalar() or 0)


def test_an_exchange_target_failing_uncaught_ends_the_others_before_the_attempt_ends(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the fix the attempt ended first, which released the KvK's call, and it went on to ask the KvK."""
    connectors = stack.container.services["connectors"]
    police, kvk = connectors.get("politie-bvh"), connectors.get("kvk-handelsregister")
    service = exchange_service(stack.container)
    race = _Race()
    uncount = service._uncount

    async def attempt_ended(attempt: str) -> None:  # the last step of the attempt's ``finally``
        await uncount(attempt)
        race.ended()

    monkeypatch.setattr(kvk, "query", race.held(kvk.query))
    monkeypatch.setattr(police, "query", race.failing)
    monkeypatch.setattr(service, "_uncount", attempt_ended)
    before = _last_index(stack)
    response = _post(stack, "/v1/exchanges", BIBOB | {
        "subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]], "holders": ["politie", "kvk"],
        "categories": ["company_registration", "directorships", "police_incidents"]})
    race.assert_nothing_outlived_the_attempt(response)
    with stack.container.engine.connect() as connection:  # nothing disclosed, so nothing logged as disclosed
        types = connection.execute(select(audit_entries.c.event_type)
                                   .where(audit_entries.c.log_index > before)).scalars().all()
    assert "disclosure" not in types


def test_a_discovery_target_failing_uncaught_ends_the_others_before_the_discovery_ends(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    connectors = stack.container.services["connectors"]
    kvk, fiod = connectors.get("kvk-handelsregister"), connectors.get("fiod-ois")
    service = exchange_service(stack.container)
    race = _Race()
    discovery = service.discovery

    async def discovery_ended(*args: Any) -> Any:
        try:
            return await discovery(*args)
        finally:
            race.ended()

    monkeypatch.setattr(fiod, "discover", race.held(fiod.discover))
    monkeypatch.setattr(kvk, "discover", race.failing)
    monkeypatch.setattr(service, "discovery", discovery_ended)
    response = _post(stack, "/v1/discovery", BIBOB | {
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
        "categories": ["company_registration", "tax_debts", "ongoing_investigation"]})
    race.assert_nothing_outlived_the_attempt(response)


def test_without_the_failure_every_target_is_answered(stack: Stack) -> None:
    """The control: the same requests answer every holder once nothing is injected."""
    response = stack.post("gemeente-amsterdam-vth", "/v1/exchanges", BIBOB | {
        "subjects": [{"ref": r} for r in stack.world.scenarios()["bibob-applicant"]], "holders": ["politie", "kvk"],
        "categories": ["company_registration", "directorships", "police_incidents"]})
    assert response.status_code == 200, response.text
    assert {t["holder"]: t["outcome"] for t in response.json()["targets"]} == {"politie": "allowed",
                                                                                "kvk": "allowed"}
    response = stack.post("gemeente-amsterdam-vth", "/v1/discovery", BIBOB | {
        "subjects": [{"ref": stack.world.scenarios()["bibob-applicant"][0]}],
        "categories": ["company_registration", "tax_debts", "ongoing_investigation"]})
    assert response.status_code == 200, response.text
    outcomes = {t["holder"]: t["outcome"] for t in response.json()["targets"]}
    assert (outcomes["kvk"], outcomes["fiod"]) == ("hit", "hit")

"""How the webhook notifier treats its receiver's answers, over real HTTP (a uvicorn receiver on loopback that
answers each organisation's hook from a script): a 4xx is the receiver saying the request itself is wrong
(a bad signature, an unknown hook, a revoked endpoint) — sending the same body again cannot succeed, so it is
not retried, except 408, 425 and 429, which say "later"; 429 (and 503) honour ``Retry-After`` up to a bound,
and one beyond it gives up rather than retry early. Every delivery that ends records why, and one receiver
that makes the notifier wait holds up no other organisation's notification.

The notifier's pause is injected (``sleep``): the tests see how long it would have waited, and never wait."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fastapi import FastAPI, Request, Response

from gateway.escalations.notifications import ATTEMPTS, MAX_RETRY_AFTER_SECONDS, WebhookNotifier
from gateway.settings import WebhookTarget
from tests.servers import serve_app

SECRET = "0123456789abcdef0123"
PAYLOAD = {"event": "escalation.step", "case_id": "case-1", "state": "open", "tier": 1}


class Receiver:
    """Answers ``POST /hooks/{organisation}`` with the next answer scripted for that organisation (200 when
    the script is used up) and counts what arrived."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.received: list[str] = []
        self.app = FastAPI()

        @self.app.post("/hooks/{organisation}")
        async def hook(organisation: str, request: Request) -> Response:
            await request.body()
            self.received.append(organisation)
            script = self.scripts.get(organisation) or []
            status, headers = script.pop(0) if script else (200, {})
            return Response(status_code=status, headers=headers)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    the_receiver = Receiver()
    with serve_app(the_receiver.app) as base:
        yield the_receiver, base


class Pauses:
    """The notifier's sleep: records each pause and returns at once (or waits for ``release`` when held)."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self.held = False
        self.release = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        if self.held:
            await self.release.wait()


def _notifier(base: str, pauses: Pauses, *organisations: str) -> WebhookNotifier:
    return WebhookNotifier({org: WebhookTarget(url=f"{base}/hooks/{org}", secret=SECRET) for org in organisations},
                           sleep=pauses)


async def _deliver(notifier: WebhookNotifier, *organisations: str) -> None:
    notifier.notify(set(organisations), PAYLOAD)
    await notifier.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
async def test_a_4xx_is_not_retried_and_says_why(receiver: tuple[Receiver, str], status: int) -> None:
    the_receiver, base = receiver
    the_receiver.scripts["politie"] = [(status, {})]
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"]  # once: the same body cannot fare better a second time
    assert pauses.asked == []
    [result] = notifier.results
    assert (result.organisation, result.case_id, result.delivered, result.attempts, result.status) == (
        "politie", "case-1", False, 1, status)
    assert f"HTTP {status}" in result.reason
    assert "not retried" in result.reason


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
async def test_408_425_429_and_5xx_are_retried(receiver: tuple[Receiver, str], status: int) -> None:
    the_receiver, base = receiver
    the_receiver.scripts["politie"] = [(status, {}), (status, {})]  # the third attempt succeeds
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"] * 3
    assert len(pauses.asked) == 2
    [result] = notifier.results
    assert (result.delivered, result.attempts, result.status) == (True, 3, 200)


async def test_a_receiver_that_keeps_failing_is_given_up_after_the_last_attempt(
        receiver: tuple[Receiver, str]) -> None:
    the_receiver, base = receiver
    the_receiver.scripts["politie"] = [(503, {})] * ATTEMPTS
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"] * ATTEMPTS
    assert len(pauses.asked) == ATTEMPTS - 1  # no pause after the last attempt: nothing follows it
    [result] = notifier.results
    assert (result.delivered, result.attempts, result.status) == (False, ATTEMPTS, 503)
    assert "HTTP 503" in result.reason
    assert f"{ATTEMPTS} attempts" in result.reason


async def test_429_waits_as_long_as_retry_after_says(receiver: tuple[Receiver, str]) -> None:
    the_receiver, base = receiver
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    the_receiver.scripts["politie"] = [(429, {"Retry-After": "7"}), (429, {"Retry-After": when})]
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"] * 3
    assert pauses.asked[0] == 7
    assert 15 <= pauses.asked[1] <= 20  # an HTTP date: the seconds until then
    assert notifier.results[0].delivered


async def test_429_asking_for_more_than_the_bound_is_given_up_not_retried_early(
        receiver: tuple[Receiver, str]) -> None:
    the_receiver, base = receiver
    asked = int(MAX_RETRY_AFTER_SECONDS) + 1
    the_receiver.scripts["politie"] = [(429, {"Retry-After": str(asked)})]
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"]
    assert pauses.asked == []
    [result] = notifier.results
    assert (result.delivered, result.status) == (False, 429)
    assert f"Retry-After of {asked} s" in result.reason


async def test_an_unreadable_retry_after_falls_back_to_the_notifiers_own_pause(
        receiver: tuple[Receiver, str]) -> None:
    the_receiver, base = receiver
    the_receiver.scripts["politie"] = [(429, {"Retry-After": "soon"}), (429, {"Retry-After": "-5"})]
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"] * 3
    assert all(0 < pause <= MAX_RETRY_AFTER_SECONDS for pause in pauses.asked), pauses.asked
    assert notifier.results[0].delivered


async def test_a_retry_after_of_other_digits_than_ascii_falls_back_too_and_the_delivery_is_recorded(
        receiver: tuple[Receiver, str]) -> None:
    """``"²"`` (a latin-1 header byte) is a digit to ``str.isdigit`` but no number to ``float``: it used to
    raise out of the delivery, which then ended with no result recorded and no log line, and no retry."""
    the_receiver, base = receiver
    the_receiver.scripts["politie"] = [(503, {"Retry-After": "\u00b2"})]
    pauses = Pauses()
    notifier = _notifier(base, pauses, "politie")
    await _deliver(notifier, "politie")
    assert the_receiver.received == ["politie"] * 2
    assert len(pauses.asked) == 1
    assert 0 < pauses.asked[0] <= MAX_RETRY_AFTER_SECONDS
    [result] = notifier.results
    assert (result.delivered, result.attempts, result.status) == (True, 2, 200)


async def test_a_receiver_that_makes_the_notifier_wait_holds_up_no_other_organisation(
        receiver: tuple[Receiver, str]) -> None:
    the_receiver, base = receiver
    the_receiver.scripts["abn-amro"] = [(429, {"Retry-After": "5"})]
    the_receiver.scripts["riec-aa"] = [(404, {})]
    pauses = Pauses()
    pauses.held = True  # the bank's pause lasts until released
    notifier = _notifier(base, pauses, "abn-amro", "politie", "riec-aa")
    notifier.notify({"abn-amro", "politie", "riec-aa"}, PAYLOAD)
    async with asyncio.timeout(10):  # the others are done while the bank's delivery still waits
        while len(notifier.results) < 2:
            await asyncio.sleep(0.01)
    assert {(r.organisation, r.delivered) for r in notifier.results} == {("politie", True), ("riec-aa", False)}
    assert pauses.asked == [5]
    pauses.release.set()
    await notifier.aclose()
    assert sorted(the_receiver.received) == ["abn-amro", "abn-amro", "politie", "riec-aa"]
    assert {(r.organisation, r.delivered) for r in notifier.results} == {
        ("politie", True), ("riec-aa", False), ("abn-amro", True)}

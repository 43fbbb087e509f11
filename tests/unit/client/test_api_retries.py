"""The typed partner client on its own (httpx.MockTransport, a recorded fake sleep): retries keep the
Idempotency-Key, unsafe POSTs are not repeated, the busy-409 wait has its own bound, failures are typed,
Retry-After and backoff, one token for concurrent calls, kid-less keys, token reuse with short lifetimes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import OKPKey

from gateway.client.api import (
    GatewayBusy,
    GatewayClient,
    GatewayClientError,
    GatewayThrottled,
    GatewayUnavailable,
    InvalidResponse,
)
from gateway.client.models import DiscoveryRequest, ExchangeRequest
from tests.client_payloads import EXCHANGE_REQUEST, EXCHANGE_RESULT

KEY = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()
REQUEST, RESULT = EXCHANGE_REQUEST, EXCHANGE_RESULT
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """What the fake gateway saw, and how long the client slept."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.keys: list[str | None] = []
        self.request_ids: list[str | None] = []  # the X-Request-ID of every API request
        self.sleeps: list[float] = []
        self.token_headers: list[dict[str, Any]] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def _auth(request: httpx.Request, seen: Recorder, expires_in: int = 300) -> httpx.Response | None:
    if request.url.path == "/.well-known/oauth-authorization-server":
        seen.paths.append("metadata")
        return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
    if request.url.path == "/oauth/token":
        seen.paths.append("token")
        assertion = dict(httpx.QueryParams(request.content.decode()))["client_assertion"]
        seen.token_headers.append(jws.extract_compact(assertion.encode()).protected)
        return httpx.Response(200, json={"access_token": "T", "expires_in": expires_in, "token_type": "Bearer"})
    return None


def _client(seen: Recorder, api: Handler, *, key: OKPKey = KEY, clock: Callable[[], float] = lambda: NOW,
            expires_in: int = 300, **options: Any) -> GatewayClient:
    def handler(request: httpx.Request) -> httpx.Response:
        answer = _auth(request, seen, expires_in)
        if answer is not None:
            return answer
        seen.paths.append(request.url.path)
        seen.keys.append(request.headers.get("idempotency-key"))
        seen.request_ids.append(request.headers.get("x-request-id"))
        return api(request)
    return GatewayClient("https://gw", "sys-a", key, clock=clock, sleep=seen.sleep,
                         transport=httpx.MockTransport(handler), **options)


def _sequence(*answers: httpx.Response | type[httpx.TransportError]) -> Handler:
    """Answers in turn (the last one repeats); an exception class is raised as a transport failure."""
    queue = list(answers)

    def api(request: httpx.Request) -> httpx.Response:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("simulated", request=request)
    return api


def _busy() -> httpx.Response:
    return httpx.Response(409, json={"status": 409, "detail": "still being answered"}, headers={"Retry-After": "1"})


def _request() -> ExchangeRequest:
    return ExchangeRequest.model_validate(REQUEST)


# -- 1. the busy-409 wait has its own bound; the key is on every error -------------------------------------
async def test_a_retry_that_finds_the_first_attempt_busy_waits_beyond_the_transport_retries() -> None:
    seen = Recorder()
    api = _sequence(httpx.ReadTimeout, *[_busy() for _ in range(10)], httpx.Response(200, json=RESULT))
    async with _client(seen, api, retries=2) as client:
        result = await client.exchange(_request(), idempotency_key="sys-a:key-1")
    assert result.exchange_id == "ex-1"
    assert seen.keys == ["sys-a:key-1"] * 12, "every attempt of one exchange sends the same key"
    assert seen.sleeps[1:] == [1.0] * 10, "Retry-After honoured each time"


async def test_the_busy_wait_is_bounded_and_the_error_carries_the_key_to_resume_with() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_busy()), busy_wait=5.0) as client:
        with pytest.raises(GatewayBusy) as busy:
            await client.exchange(_request())
    assert isinstance(busy.value, GatewayClientError)
    assert busy.value.status == 409
    assert sum(seen.sleeps) == pytest.approx(5.0)
    assert busy.value.idempotency_key is not None
    assert set(seen.keys) == {busy.value.idempotency_key}


async def test_a_failed_exchange_can_be_resumed_with_the_key_on_the_error() -> None:
    seen = Recorder()
    api = _sequence(httpx.ReadTimeout, httpx.ReadTimeout, httpx.ReadTimeout, httpx.Response(200, json=RESULT))
    async with _client(seen, api) as client:
        with pytest.raises(GatewayUnavailable) as failed:
            await client.exchange(_request())
        key = failed.value.idempotency_key
        assert key is not None
        assert key.startswith("sys-a:")
        resumed = await client.exchange(_request(), idempotency_key=key)
    assert resumed.exchange_id == "ex-1"
    assert seen.keys == [key] * 4


async def test_errors_of_rerun_carry_the_key() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(409, json={"status": 409, "detail": "decision used"}))
                       ) as client:
        with pytest.raises(GatewayClientError) as refused:
            await client.rerun(_request(), "decision-1")
    assert refused.value.idempotency_key is not None
    assert seen.keys == [refused.value.idempotency_key]


# -- 2. typed errors instead of raw ones; the token fetch is retried --------------------------------------
async def test_connection_refused_is_a_typed_error_with_the_transport_error_as_cause() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.ConnectError)) as client:
        with pytest.raises(GatewayUnavailable) as got:
            await client.get_exchange("ex-1")
        with pytest.raises(GatewayUnavailable) as posted:
            await client.discovery(DiscoveryRequest.model_validate(REQUEST))
    for error in (got.value, posted.value):
        assert error.status == 0
        assert isinstance(error.__cause__, httpx.ConnectError)
    assert seen.paths.count("/v1/exchanges/ex-1") == 3
    assert seen.paths.count("/v1/discovery") == 3, "nothing was sent: even a keyless POST may be repeated"


@pytest.mark.parametrize(("answer", "error", "status"), [
    (httpx.Response(200, text="<html>maintenance</html>"), InvalidResponse, 200),
    (httpx.Response(200, json={"issuer": "https://gw"}), InvalidResponse, 200),
    (httpx.Response(503, json={"status": 503, "detail": "db down"},
                    headers={"content-type": "application/problem+json"}), GatewayUnavailable, 503),
    (httpx.Response(503, text="upstream unavailable"), GatewayUnavailable, 503),
    (httpx.Response(404, json={"status": 404, "detail": "no metadata"}), GatewayClientError, 404),
])
async def test_an_unusable_metadata_answer_is_a_typed_error(answer: httpx.Response, error: type[Exception],
                                                            status: int) -> None:
    seen = Recorder()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.paths.append(request.url.path)
        return answer
    client = GatewayClient("https://gw", "sys-a", KEY, sleep=seen.sleep, transport=httpx.MockTransport(handler))
    async with client:
        with pytest.raises(error) as raised:
            await client.get_exchange("ex-1")
    assert type(raised.value) is error
    assert isinstance(raised.value, GatewayClientError)
    assert raised.value.status == status
    assert len(seen.paths) == (3 if status == 503 else 1)


async def test_a_token_endpoint_timeout_is_retried_and_then_typed() -> None:
    seen = Recorder()
    token_attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            token_attempts.append("token")
            if len(token_attempts) < 3:
                raise httpx.ReadTimeout("timed out", request=request)
            return httpx.Response(200, json={"access_token": "T", "token_type": "Bearer", "expires_in": 300})
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": "https://gw", "token_endpoint": "https://gw/oauth/token"})
        return httpx.Response(200, json=[])
    async with GatewayClient("https://gw", "sys-a", KEY, sleep=seen.sleep,
                             transport=httpx.MockTransport(handler)) as client:
        assert await client.escalation_feed() == []
        client._token = None  # expire it
        token_attempts.clear()

        def down(request: httpx.Request) -> httpx.Response:
            raise httpx.ReadTimeout("timed out", request=request)
        client._http = httpx.AsyncClient(base_url="https://gw", transport=httpx.MockTransport(down))
        with pytest.raises(GatewayUnavailable) as failed:
            await client.discovery(DiscoveryRequest.model_validate(REQUEST))  # a keyless POST: token is safe
    assert isinstance(failed.value.__cause__, httpx.ReadTimeout)
    assert len(seen.sleeps) == 2 + 2


async def test_undecodable_answers_are_typed() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(200, text="not json"))) as client:
        with pytest.raises(InvalidResponse):
            await client.get_exchange("ex-1")
        with pytest.raises(InvalidResponse):
            await client.escalation_feed()
        with pytest.raises(InvalidResponse) as exchanged:
            await client.exchange(_request(), idempotency_key="sys-a:k")
    assert exchanged.value.idempotency_key == "sys-a:k"


# -- the rule: what may be repeated ---------------------------------------------------------------------
async def test_a_keyless_post_is_not_repeated_once_it_may_have_reached_the_server() -> None:
    for failure in (httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.WriteError):
        seen = Recorder()
        async with _client(seen, _sequence(failure)) as client:
            with pytest.raises(GatewayUnavailable):
                await client.discovery(DiscoveryRequest.model_validate(REQUEST))
        assert seen.paths.count("/v1/discovery") == 1, failure
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(503, json={"status": 503}))) as client:
        with pytest.raises(GatewayUnavailable):
            await client.discovery(DiscoveryRequest.model_validate(REQUEST))
    assert seen.paths.count("/v1/discovery") == 1


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500])
async def test_4xx_other_than_busy_or_throttled_and_500_are_never_retried(status: int) -> None:
    seen = Recorder()
    answer = httpx.Response(status, json={"status": status, "detail": "no"})
    async with _client(seen, _sequence(answer)) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.exchange(_request())
        with pytest.raises(GatewayClientError):
            await client.get_exchange("ex-1")
    assert raised.value.status == status
    assert seen.paths == ["metadata", "token", "/v1/exchanges", "/v1/exchanges/ex-1"]
    assert seen.sleeps == []


def _throttled(seconds: str = "2") -> httpx.Response:
    return httpx.Response(429, json={"status": 429, "title": "Too many requests"}, headers={"Retry-After": seconds})


async def test_a_429_is_waited_out_and_repeated_even_for_a_keyless_post() -> None:
    """The rate limit refuses before anything is done, so even discovery (no key) may be sent again."""
    seen = Recorder()
    discovered = {"discovery_id": "d-1", "partnership": "riec-aa", "purpose": "bibob-check", "policy_version": "1",
                  "register_version": "1", "targets": [], "receipt": {"exchange_id": "d-1"}}
    async with _client(seen, _sequence(_throttled("3"), httpx.Response(200, json=discovered))) as client:
        await client.discovery(DiscoveryRequest.model_validate(REQUEST))
    assert seen.paths.count("/v1/discovery") == 2
    assert seen.sleeps == [3.0]


async def test_a_429_keeps_the_exchanges_key_and_is_typed_once_the_wait_allowed_is_spent() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_throttled()), retries=2, busy_wait=4.0) as client:
        with pytest.raises(GatewayThrottled) as raised:
            await client.exchange(_request())
    assert raised.value.status == 429
    assert raised.value.retry_after == 2.0
    assert raised.value.idempotency_key == seen.keys[0]
    assert len(seen.keys) == 3
    assert len(set(seen.keys)) == 1
    assert seen.sleeps == [2.0, 2.0]


async def test_a_429_after_an_attempt_that_may_have_arrived_is_not_called_harmless() -> None:
    """A read timeout first: that attempt may be running. The 429s after it say nothing about it, so the
    caller gets GatewayUnavailable (resume with the key), not GatewayThrottled ("not acted on")."""
    seen = Recorder()
    async with _client(seen, _sequence(httpx.ReadTimeout, _throttled()), retries=2) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.exchange(_request())
    assert type(raised.value) is GatewayUnavailable
    assert raised.value.status == 429
    assert raised.value.idempotency_key == seen.keys[0]
    assert len(set(seen.keys)) == 1


async def test_a_token_endpoint_429_after_an_attempt_that_may_have_arrived_is_not_called_harmless() -> None:
    """The exchange times out; its token has run out meanwhile and the token endpoint throttles: still unknown
    whether the exchange happened, so GatewayUnavailable, not GatewayThrottled."""
    seen = Recorder()
    now = [NOW]
    refusing = [False]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token" and refusing[0]:
            return _throttled()
        answer = _auth(request, seen, expires_in=60)
        if answer is not None:
            return answer
        now[0] += 120  # the token expires while the exchange is on its way
        refusing[0] = True
        raise httpx.ReadTimeout("simulated", request=request)
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: now[0], sleep=seen.sleep, retries=2,
                             transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.exchange(_request())
    assert type(raised.value) is GatewayUnavailable
    assert raised.value.status == 429


async def test_the_public_token_call_waits_out_a_429_too() -> None:
    seen = Recorder()
    refusals = iter([_throttled("4")])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token" and (refusal := next(refusals, None)) is not None:
            return refusal
        answer = _auth(request, seen)
        assert answer is not None
        return answer
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: NOW, sleep=seen.sleep,
                             transport=httpx.MockTransport(handler)) as client:
        assert await client.token() == "T"
    assert seen.sleeps == [4.0]


async def test_a_429_from_the_token_endpoint_is_waited_out() -> None:
    seen = Recorder()
    tokens = iter([_throttled("4")])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token" and (refusal := next(tokens, None)) is not None:
            seen.paths.append("token refused")
            return refusal
        answer = _auth(request, seen)
        if answer is not None:
            return answer
        seen.paths.append(request.url.path)
        return httpx.Response(200, json=RESULT)
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: NOW, sleep=seen.sleep,
                             transport=httpx.MockTransport(handler)) as client:
        await client.get_exchange("ex-1")
    assert seen.paths == ["metadata", "token refused", "token", "/v1/exchanges/ex-1"]
    assert seen.sleeps == [4.0]


async def test_a_409_with_retry_after_to_a_keyless_call_is_not_waited_on() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(_busy())) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.discovery(DiscoveryRequest.model_validate(REQUEST))
    assert type(raised.value) is GatewayClientError
    assert raised.value.status == 409
    assert seen.paths.count("/v1/discovery") == 1


# -- 3. Retry-After and backoff -----------------------------------------------------------------------
async def test_retry_after_in_seconds_is_honoured_on_503() -> None:
    seen = Recorder()
    unavailable = httpx.Response(503, json={"status": 503}, headers={"Retry-After": "5"})
    async with _client(seen, _sequence(unavailable, unavailable, httpx.Response(200, json=RESULT))) as client:
        await client.exchange(_request())
    assert seen.sleeps == [5.0, 5.0]
    assert len(set(seen.keys)) == 1
    assert len(seen.keys) == 3


async def test_retry_after_as_an_http_date_is_honoured() -> None:
    seen = Recorder()
    when = format_datetime(datetime.fromtimestamp(NOW + 7, UTC), usegmt=True)
    unavailable = httpx.Response(502, text="bad gateway", headers={"Retry-After": when})
    async with _client(seen, _sequence(unavailable, httpx.Response(200, json=RESULT))) as client:
        await client.get_exchange("ex-1")
    assert seen.sleeps == [pytest.approx(7.0)]


async def test_backoff_grows_with_jitter_and_is_capped() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.ConnectError), retries=6, backoff=0.5, max_delay=10.0) as client:
        with pytest.raises(GatewayUnavailable):
            await client.get_exchange("ex-1")
    assert len(seen.sleeps) == 6
    for n, slept in enumerate(seen.sleeps[:5]):
        assert 0.5 * 2**n / 2 <= slept <= 0.5 * 2**n
    assert 8.0 <= seen.sleeps[5] <= 10.0  # 16 s with jitter (8-16 s), capped at max_delay
    # max_delay caps the backoff, not the gateway's Retry-After: asked earlier, the answer would be the same.
    # That is bounded by the call's deadline instead: one that cannot be waited out within it is raised at once.
    seen = Recorder()
    unavailable = httpx.Response(504, json={"status": 504}, headers={"Retry-After": "3600"})
    async with _client(seen, _sequence(unavailable), max_delay=10.0) as client:
        with pytest.raises(GatewayUnavailable) as failed:
            await client.get_exchange("ex-1")
    assert seen.sleeps == []  # an hour does not fit the default deadline of 180 s
    assert (failed.value.status, failed.value.retry_after) == (504, 3600)
    seen = Recorder()
    async with _client(seen, _sequence(unavailable), max_delay=10.0, deadline=None) as client:
        with pytest.raises(GatewayUnavailable) as failed:
            await client.get_exchange("ex-1")
    assert seen.sleeps == [3600.0, 3600.0]  # no deadline: as long as asked
    assert failed.value.status == 504


# -- 4. one token for concurrent calls ------------------------------------------------------------------
async def test_concurrent_calls_on_a_fresh_client_fetch_metadata_and_token_once() -> None:
    seen = Recorder()

    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.01)  # a little latency, so the calls overlap
        return _auth(request, seen) or httpx.Response(200, json=[])
    async with GatewayClient("https://gw", "sys-a", KEY, clock=lambda: NOW,
                             transport=httpx.MockTransport(handler)) as client:
        await asyncio.gather(*(client.escalation_feed() for _ in range(10)))
    assert seen.paths == ["metadata", "token"]


# -- 5. keys without kid ---------------------------------------------------------------------------------
async def test_a_key_without_kid_gets_a_token_and_a_key_with_one_names_it() -> None:
    seen = Recorder()
    async with _client(seen, _sequence(httpx.Response(200, json=[])),
                       key=OKPKey.generate_key("Ed25519")) as client:
        assert await client.token() == "T"
    async with _client(seen, _sequence(httpx.Response(200, json=[]))) as client:
        assert await client.token() == "T"
    assert [("kid" in header, header.get("kid")) for header in seen.token_headers] == [(False, None), (True, "k1")]


# -- 6. token reuse with the shortest lifetime -----------------------------------------------------------
async def test_a_30_second_token_is_reused_until_half_its_lifetime() -> None:
    seen = Recorder()
    now = [NOW]
    async with _client(seen, _sequence(httpx.Response(200, json=[])), clock=lambda: now[0],
                       expires_in=30) as client:
        for _ in range(5):
            await client.escalation_feed()
        assert seen.paths.count("token") == 1
        now[0] += 14
        await client.escalation_feed()
        assert seen.paths.count("token") == 1
        now[0] += 2
        await client.escalation_feed()
    assert seen.paths.count("token") == 2

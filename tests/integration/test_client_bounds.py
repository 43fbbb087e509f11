"""The partner client's bounds against a real HTTP server standing in for the gateway (uvicorn on loopback):
every call has a deadline — the client's (finite by default) or its own — that covers the token fetch, every
attempt, the pauses between them and the calls it makes, and ends it with ``DeadlineExceeded`` naming every
request and the exchange's key; and a keyless request that met a kept-alive connection the server had closed
is sent again, once, on another connection — never one the server may have read (a proxy in front of the
stand-in closes the connections and counts what reached it)."""

from __future__ import annotations

import asyncio
import inspect
import math
import pickle
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from joserfc.jwk import OKPKey
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.client.api import DeadlineExceeded, GatewayClient, GatewayUnavailable
from gateway.client.deadlines import DEFAULT_DEADLINE
from gateway.client.models import DiscoveryRequest, ExchangeRequest
from gateway.client.pseudonyms import RecipientKey
from gateway.pseudonyms.pep import Scalar
from tests.client_payloads import EXCHANGE_REQUEST, EXCHANGE_RESULT
from tests.servers import STAND_IN_TOKEN, KeepAliveCloser, serve_app, stand_in_gateway

KEY = OKPKey.generate_key("Ed25519")
REQUEST, RESULT = EXCHANGE_REQUEST, EXCHANGE_RESULT
DISCOVERED = {"discovery_id": "d-1", "partnership": "riec-aa", "purpose": "bibob-check", "policy_version": "1",
              "register_version": "1", "targets": [], "receipt": {"exchange_id": "d-1"}}


@dataclass
class StandIn:
    """A stand-in gateway that notes the ``X-Request-ID`` of every request (``ids``, by path) and the exchanges'
    keys. ``delays`` holds a path's answer that long (seconds; the first ``held`` requests of it only, None:
    all) unless the client went away; ``unavailable`` makes ``GET /v1/exchanges/...`` answer 503 with
    ``Retry-After: 20``; ``together`` holds that many ``GET /v1/exchanges/...`` until all have come."""

    delays: dict[str, float] = field(default_factory=dict)
    held: int | None = None
    unavailable: bool = False
    together: int = 1
    ids: dict[str, list[str]] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    gateway_key: str = field(default_factory=lambda: Scalar.random().times_base().encode())
    recipient_key: str = field(default_factory=lambda: RecipientKey(Scalar.random(), 1).encode())

    async def _seen(self, request: Request) -> None:
        path = request.url.path
        delay = self.delays.get(path.rsplit("/", 1)[0] if path.startswith("/v1/exchanges/") else path, 0.0)
        if self.held is not None and len(self.ids[path]) > self.held:
            return
        ends = time.monotonic() + delay
        while time.monotonic() < ends and not await request.is_disconnected():
            await asyncio.sleep(0.02)

    def app(self) -> ASGIApp:
        """The stand-in, noting each request's id before any route (also the metadata's) sees it."""
        app = self._routes()

        async def noted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                sent = dict(scope["headers"]).get(b"x-request-id", b"").decode()
                self.ids.setdefault(scope["path"], []).append(sent)
            await app(scope, receive, send)

        return noted

    def _routes(self) -> FastAPI:
        app = stand_in_gateway()
        arrived = asyncio.Condition()

        @app.post("/oauth/token")
        async def token(request: Request) -> Response:
            await self._seen(request)
            return JSONResponse(STAND_IN_TOKEN)

        @app.get("/v1/exchanges/{exchange_id}")
        async def get_exchange(request: Request) -> Response:
            await self._seen(request)
            async with arrived:  # answered once ``together`` of them are in flight: each on a connection
                arrived.notify_all()
                await asyncio.wait_for(arrived.wait_for(
                    lambda: len(self.ids[request.url.path]) >= self.together), 10)
            if self.unavailable:
                return JSONResponse({"status": 503, "title": "Service Unavailable"}, status_code=503,
                                    headers={"Retry-After": "20"})
            return JSONResponse(RESULT)

        @app.post("/v1/exchanges")
        async def exchange(request: Request) -> Response:
            self.keys.append(request.headers.get("idempotency-key", ""))
            await self._seen(request)
            return JSONResponse(RESULT)

        @app.post("/v1/discovery")
        async def discovery(request: Request) -> Response:
            await self._seen(request)
            return JSONResponse(DISCOVERED)

        @app.get("/v1/pseudonyms/key")
        async def gateway_key(request: Request) -> Response:
            await self._seen(request)
            return JSONResponse({"public_key": self.gateway_key})

        @app.get("/v1/pseudonyms/recipient-key")
        async def recipient_key(request: Request) -> Response:
            await self._seen(request)
            return JSONResponse({"recipient_key": self.recipient_key})

        return app


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    double = StandIn()
    with serve_app(double.app()) as url:
        yield double, url


def _discovery() -> DiscoveryRequest:
    return DiscoveryRequest.model_validate(REQUEST)


# -- the deadline --------------------------------------------------------------------------------------------
def test_every_call_is_bounded_by_default_and_the_bound_leaves_room_for_back_pressure() -> None:
    parameters = inspect.signature(GatewayClient).parameters
    assert parameters["deadline"].default == DEFAULT_DEADLINE
    assert math.isfinite(DEFAULT_DEADLINE)
    assert parameters["busy_wait"].default < DEFAULT_DEADLINE, "a busy exchange can still be waited for"
    with pytest.raises(ValueError, match="deadline"):
        GatewayClient("https://gw", "sys-a", KEY, deadline=math.inf)


async def test_a_calls_own_deadline_bounds_the_token_fetch_and_names_every_request_made(
        stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.delays["/oauth/token"] = 30.0
    async with GatewayClient(url, "sys-a", KEY, deadline=None, timeout=60.0) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as raised:
            await client.get_exchange("ex-1", deadline=1.0)
        elapsed = time.monotonic() - started
        with pytest.raises(ValueError, match="deadline"):
            await client.get_exchange("ex-1", deadline=0)
    error = raised.value
    assert isinstance(error, GatewayUnavailable)
    assert (error.status, error.deadline) == (0, 1.0)
    made = double.ids["/.well-known/oauth-authorization-server"] + double.ids["/oauth/token"]
    assert list(error.request_ids) == made, "every request of the call, the metadata's and the token's"
    assert error.request_id == made[-1]
    assert "deadline of 1 s" in str(error)
    assert elapsed < 5, "neither the 60 s timeout nor the token's 30 s"


async def test_an_exchange_past_its_deadline_carries_its_key_and_requests_and_resumes(
        stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.delays["/v1/exchanges"], double.held = 30.0, 1  # the first attempt only
    async with GatewayClient(url, "sys-a", KEY, deadline=2.0) as client:
        with pytest.raises(DeadlineExceeded) as raised:
            await client.exchange(ExchangeRequest.model_validate(REQUEST))
        error = raised.value
        assert error.idempotency_key == double.keys[0]
        assert error.request_ids[-1] == double.ids["/v1/exchanges"][0], "the request the gateway may answer"
        carried = pickle.loads(pickle.dumps(error))  # to a worker that resumes it
        assert (type(carried), carried.request_ids, carried.idempotency_key) == (
            DeadlineExceeded, error.request_ids, error.idempotency_key)
        resumed = await client.exchange(ExchangeRequest.model_validate(REQUEST),
                                        idempotency_key=error.idempotency_key)
    assert resumed.exchange_id == RESULT["exchange_id"]
    assert double.keys == [error.idempotency_key] * 2


async def test_a_pause_that_would_pass_the_calls_deadline_is_not_slept(stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.unavailable = True  # 503, Retry-After: 20
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    async with GatewayClient(url, "sys-a", KEY, deadline=None, retries=3, sleep=sleep) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1", deadline=5.0)
    assert raised.value.status == 503, "the error the pause would have waited out, at once"
    assert slept == []
    assert len(double.ids["/v1/exchanges/ex-1"]) == 1


async def test_a_call_may_lift_the_clients_deadline(stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.delays["/v1/exchanges"] = 1.0
    async with GatewayClient(url, "sys-a", KEY, deadline=0.3) as client:
        with pytest.raises(DeadlineExceeded):
            await client.get_exchange("ex-1")
        result = await client.get_exchange("ex-1", deadline=None)
    assert result.exchange_id == RESULT["exchange_id"]


async def test_a_call_that_lifts_the_deadline_lifts_it_for_the_requests_it_makes(stand_in: tuple[StandIn, str]) -> None:
    """``pseudonym_client`` (and ``enrol``, ``own_pseudonyms``) make their requests as calls of their own; with
    ``deadline=None`` none of them may fall back to the client's deadline (before, each did: a caller lifting the
    bound for a slow enrolment still got ``DeadlineExceeded`` after the client's)."""
    double, url = stand_in
    double.delays["/v1/pseudonyms/key"] = 1.0
    async with GatewayClient(url, "sys-a", KEY, deadline=0.3) as client:
        keys = await client.pseudonym_client("riec-aa", deadline=None)
    assert keys.gateway_public_key == double.gateway_key


async def test_the_requests_of_a_call_share_its_one_deadline(stand_in: tuple[StandIn, str]) -> None:
    """The partnership's keys are two requests (each a call of its own inside ``pseudonym_client``): each takes
    less than the deadline, both together more."""
    double, url = stand_in
    double.delays |= {"/v1/pseudonyms/key": 1.0, "/v1/pseudonyms/recipient-key": 1.0}
    async with GatewayClient(url, "sys-a", KEY, deadline=1.6) as client:  # 0.6 s to spare for the first
        with pytest.raises(DeadlineExceeded) as raised:
            await client.pseudonym_client("riec-aa")
        keys = await client.pseudonym_client("riec-aa", deadline=5.0)
    assert keys.gateway_public_key == double.gateway_key
    ids = raised.value.request_ids
    assert ids[-2:] == (double.ids["/v1/pseudonyms/key"][0], double.ids["/v1/pseudonyms/recipient-key"][0])


# -- a kept-alive connection the server had closed -------------------------------------------------------------
@pytest.fixture
async def closer(stand_in: tuple[StandIn, str]) -> AsyncIterator[tuple[StandIn, KeepAliveCloser, str]]:
    double, url = stand_in
    proxy = KeepAliveCloser(url)
    async with proxy.serving() as proxied:
        yield double, proxy, proxied


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_discovery_that_met_a_closed_kept_alive_connection_is_sent_again(
        closer: tuple[StandIn, KeepAliveCloser, str], reset: bool) -> None:
    double, proxy, url = closer
    proxy.reset = reset
    async with GatewayClient(url, "sys-a", KEY, retries=0) as client:
        await client.token()  # metadata and token over one connection, which is kept
        proxy.closing = 1
        result = await client.discovery(_discovery())
    assert result.discovery_id == DISCOVERED["discovery_id"]
    assert proxy.closed_unforwarded == 1, "the first attempt met the closed connection"
    assert len(double.ids["/v1/discovery"]) == 1, "the gateway got the discovery once"


async def test_a_token_request_that_met_a_closed_kept_alive_connection_is_sent_again(
        closer: tuple[StandIn, KeepAliveCloser, str]) -> None:
    double, proxy, url = closer
    now = [1_800_000_000.0]
    async with GatewayClient(url, "sys-a", KEY, retries=0, clock=lambda: now[0]) as client:
        await client.token()
        proxy.closing = 1
        now[0] += 300  # past the stand-in token's lifetime: it is renewed, over the kept connection
        result = await client.get_exchange("ex-1")
    assert result.exchange_id == RESULT["exchange_id"]
    assert proxy.closed_unforwarded == 1
    assert len(double.ids["/oauth/token"]) == 2, "the first token, and its renewal once"


async def test_a_discovery_is_sent_again_once_only(closer: tuple[StandIn, KeepAliveCloser, str]) -> None:
    double, proxy, url = closer
    double.together = 2
    async with GatewayClient(url, "sys-a", KEY, retries=3) as client:
        await asyncio.gather(client.get_exchange("ex-1"), client.get_exchange("ex-1"))  # two kept connections
        proxy.closing = 10
        with pytest.raises(GatewayUnavailable) as raised:
            await client.discovery(_discovery())
    assert raised.value.status == 0
    assert proxy.closed_unforwarded == 2, "again on the other kept connection, which was closed too; no more"
    assert "/v1/discovery" not in double.ids


async def test_a_discovery_the_gateway_may_have_read_is_not_sent_again(
        closer: tuple[StandIn, KeepAliveCloser, str]) -> None:
    """A connection opened for the discovery, closed after the server read it (and answered): no kept-alive
    connection was closed under it, and the gateway has logged it."""
    double, proxy, url = closer
    proxy.unanswered = {2}
    new_connections = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))
    async with GatewayClient(url, "sys-a", KEY, token_audience=f"{url}/oauth/token", retries=3,
                             transport=new_connections) as client:
        await client.token()  # connection 1
        with pytest.raises(GatewayUnavailable) as raised:
            await client.discovery(_discovery())  # connection 2
    assert raised.value.status == 0
    assert proxy.closed_unanswered == 1
    assert len(double.ids["/v1/discovery"]) == 1, "not sent again"

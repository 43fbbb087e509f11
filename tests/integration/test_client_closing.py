"""A partner client closed (``aclose()``, the end of its ``async with``) in one task while another task's call
is under way, over real HTTP (a stand-in gateway on loopback): the call ends with the client's own typed error
— ``ClosedInFlight`` for a request waiting for its answer, ``ClientClosed`` for a call pausing between
attempts — at once, carrying the exchange's key, and no retry is begun after the close."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from joserfc.jwk import OKPKey

from gateway.client.api import ClientClosed, ClosedInFlight, GatewayClient, GatewayUnavailable
from gateway.client.models import ExchangeRequest
from tests.client_payloads import EXCHANGE_REQUEST
from tests.servers import STAND_IN_TOKEN, serve_app, stand_in_gateway

KEY = OKPKey.generate_key("Ed25519")
REQUEST = ExchangeRequest.model_validate(EXCHANGE_REQUEST)
BOUND = 10.0  # seconds any wait of these tests may take before it counts as a failure


@dataclass
class Held:
    """A stand-in gateway whose token endpoint (``hold_token``) or exchange endpoint holds each request until
    ``release`` is set (or ``BOUND`` passes), after setting ``arrived``; ``unavailable`` makes the exchange
    endpoint answer 503 with a Retry-After at once instead. Records what reached it."""

    hold_token: bool = False
    unavailable: bool = False
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    token_requests: int = 0
    exchanges: list[tuple[str, str]] = field(default_factory=list)  # (request id, Idempotency-Key)

    def app(self) -> FastAPI:
        app = stand_in_gateway()

        @app.post("/oauth/token")
        async def token() -> Response:
            self.token_requests += 1
            if self.hold_token:
                self.arrived.set()
                await asyncio.to_thread(self.release.wait, BOUND)
            return JSONResponse(STAND_IN_TOKEN)

        @app.post("/v1/exchanges")
        async def exchange(request: Request) -> Response:
            self.exchanges.append((request.headers["x-request-id"], request.headers["idempotency-key"]))
            if self.unavailable:
                return JSONResponse({"title": "Service unavailable", "status": 503}, status_code=503,
                                    headers={"Retry-After": "60"})
            self.arrived.set()
            await asyncio.to_thread(self.release.wait, BOUND)
            return JSONResponse({"title": "Not found", "status": 404}, status_code=404)

        return app


@pytest.fixture
def held() -> Iterator[tuple[Held, str]]:
    double = Held()
    with serve_app(double.app()) as url:
        try:
            yield double, url
        finally:
            double.release.set()


async def _arrived(double: Held) -> None:
    assert await asyncio.to_thread(double.arrived.wait, BOUND), "the request did not reach the stand-in"


async def test_an_exchange_in_flight_when_the_client_is_closed_ends_typed_with_its_key_and_no_retry(
        held: tuple[Held, str], caplog: pytest.LogCaptureFixture) -> None:
    double, url = held
    client = GatewayClient(url, "sys-a", KEY, retries=3, backoff=0.01)
    call = asyncio.create_task(client.exchange(REQUEST, idempotency_key="resume-me-0001"))
    await _arrived(double)
    with caplog.at_level(logging.INFO, logger="gateway.client"):
        await client.aclose()
        with pytest.raises(ClosedInFlight) as closed:
            await asyncio.wait_for(call, BOUND)
    error = closed.value
    assert isinstance(error, ClientClosed), "caught as a closed client"
    assert isinstance(error, GatewayUnavailable), "and as no answer (resume with the key)"
    assert error.status == 0
    assert error.idempotency_key == "resume-me-0001"
    assert [request_id for request_id, _ in double.exchanges] == [error.request_id], "the abandoned request's id"
    assert error.request_id is not None
    assert "in flight" in str(error)
    assert error.request_id in str(error)
    assert isinstance(error.__cause__, httpx.HTTPError | RuntimeError), "what httpx raised is the cause"
    assert len(double.exchanges) == 1, "no retry with the same Idempotency-Key after the close"
    assert not [r for r in caplog.records if "attempt" in r.getMessage()], "no retry was announced either"


async def test_leaving_async_with_during_a_token_fetch_ends_the_waiting_call_typed(held: tuple[Held, str]) -> None:
    double, url = held
    double.hold_token = True
    async with GatewayClient(url, "sys-a", KEY, retries=3, backoff=0.01) as client:
        call = asyncio.create_task(client.get_exchange("ex-1"))
        await _arrived(double)
        waiting = asyncio.create_task(client.get_exchange("ex-2"))  # for the token the first call fetches
        await asyncio.sleep(0)
    with pytest.raises(ClosedInFlight):
        await asyncio.wait_for(call, BOUND)
    with pytest.raises(ClientClosed) as closed:
        await asyncio.wait_for(waiting, BOUND)
    assert not isinstance(closed.value, ClosedInFlight), "the waiting call had no request in flight"
    assert double.token_requests == 1, "the token request was not made again"
    assert double.exchanges == []


async def test_a_call_pausing_between_attempts_ends_at_once_when_the_client_is_closed(
        held: tuple[Held, str]) -> None:
    double, url = held
    double.unavailable = True
    pausing = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the real wait the client would make (Retry-After: 60)
        pausing.set()
        await asyncio.sleep(seconds)

    client = GatewayClient(url, "sys-a", KEY, retries=3, sleep=sleep)
    call = asyncio.create_task(client.exchange(REQUEST, idempotency_key="resume-me-0002"))
    await asyncio.wait_for(pausing.wait(), BOUND)
    await client.aclose()
    with pytest.raises(ClientClosed) as closed:
        await asyncio.wait_for(call, BOUND)  # not the 60 s of the pause
    assert not isinstance(closed.value, ClosedInFlight), "no request was in flight"
    assert closed.value.idempotency_key == "resume-me-0002"
    assert isinstance(closed.value.__cause__, GatewayUnavailable)
    assert closed.value.__cause__.status == 503
    assert len(double.exchanges) == 1, "the retry the pause was for was not made"


def test_closed_in_flight_survives_pickling() -> None:
    import pickle

    error = ClosedInFlight(request_id="abc-1")
    error.idempotency_key = "k-00000001"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ClosedInFlight
    assert str(copy) == str(error)
    assert copy.idempotency_key == "k-00000001"

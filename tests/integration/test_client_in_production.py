"""The typed partner client as a partner system runs it in production, against a real HTTP server standing in
for the gateway (uvicorn on loopback): every error names the request it came from (``X-Request-ID``, which
the gateway logs), also when no answer came; the calls waiting for a token fetch that fails share its failure
instead of each fetching in turn; timeouts are configurable per phase; a cancelled call closes its
connection and leaves the client usable."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from joserfc.jwk import OKPKey

from gateway.client.api import GatewayClient, GatewayClientError, GatewayUnavailable, InvalidResponse
from gateway.client.models import ExchangeRequest
from tests.client_payloads import EXCHANGE_RESULT
from tests.servers import STAND_IN_TOKEN, serve_app, stand_in_gateway

KEY = OKPKey.generate_key("Ed25519")
RESULT = EXCHANGE_RESULT
CLIENT_ID = re.compile(r"[0-9a-f]{16}-[0-9]+")  # what the client sends: the call's id, the request's number


@dataclass
class StandIn:
    """A stand-in gateway that records the request ids it got. ``token_delay`` makes the token endpoint hang;
    ``api_delay`` the API; ``answer`` is what the API answers (echoing the request id, as the gateway does,
    unless it is a ``Response`` of its own: a proxy's); ``token_refusal`` what the token endpoint answers
    instead of a token."""

    token_delay: float = 0.0
    token_refusal: Response | None = None
    api_delay: float = 0.0
    answer: Response | None = None
    token_requests: int = 0
    request_ids: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = stand_in_gateway()

        @app.post("/oauth/token")
        async def token() -> Response:
            self.token_requests += 1
            await asyncio.sleep(self.token_delay)
            if self.token_refusal is not None:
                return self.token_refusal
            return JSONResponse(STAND_IN_TOKEN)

        @app.get("/v1/exchanges/{exchange_id}")
        async def exchange(request: Request) -> Response:
            sent = request.headers.get("x-request-id", "")
            self.request_ids.append(sent)
            ends = time.monotonic() + self.api_delay
            while time.monotonic() < ends:
                if await request.is_disconnected():
                    self.disconnected.append(sent)
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
            if self.answer is not None:
                return self.answer
            return JSONResponse({"type": "https://wgs-gateway.example/problems/not-found", "title": "Not found",
                                 "status": 404, "detail": "no such exchange"}, status_code=404,
                                media_type="application/problem+json", headers={"X-Request-ID": sent})

        return app


@pytest.fixture
def stand_in() -> Iterator[tuple[StandIn, str]]:
    double = StandIn()
    with serve_app(double.app()) as url:
        yield double, url


# -- the request id on every error ----------------------------------------------------------------------------
async def test_a_refusal_names_the_request_the_gateway_logged_it_under(stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(GatewayClientError) as raised:
            await client.get_exchange("ex-1")
    error = raised.value
    assert (error.status, error.title, error.detail) == (404, "Not found", "no such exchange")
    assert error.request_id == double.request_ids[-1]
    assert CLIENT_ID.fullmatch(error.request_id)
    assert error.request_id in str(error), "in the message, which is what ends up in the partner's log"


async def test_no_answer_still_names_the_request_and_the_attempts_of_a_call_share_its_id(
        stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.api_delay = 5.0
    async with GatewayClient(url, "sys-a", KEY, timeout=0.3, retries=1, backoff=0.01) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 0
    first, second = double.request_ids
    assert raised.value.request_id == second, "the last attempt's id: the gateway may have logged it"
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0], "one call: one id for all its requests"


async def test_a_proxys_html_error_is_typed_and_names_the_request_it_was_sent_with(
        stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.answer = Response("<html><body>502 Bad Gateway</body></html>", status_code=502, media_type="text/html")
    async with GatewayClient(url, "sys-a", KEY, retries=1, backoff=0.01) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 502
    assert raised.value.title == "non-JSON error"
    assert "html" not in str(raised.value).lower()
    assert raised.value.request_id == double.request_ids[-1]


async def test_a_redirect_is_named_as_one_and_not_followed(stand_in: tuple[StandIn, str]) -> None:
    """Something in front of the gateway redirects (http to https, a moved host). Before, the redirect was
    read as the answer: "1 invalid field(s): : Invalid JSON: EOF while parsing"."""
    double, url = stand_in
    double.answer = RedirectResponse("https://elsewhere.example/v1/exchanges/ex-1", status_code=301)
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 301
    assert "redirected" in str(raised.value)
    assert "base_url" in str(raised.value)
    assert "elsewhere" not in str(raised.value)
    assert len(double.request_ids) == 1, "neither followed nor repeated"


async def test_a_redirected_token_request_is_named_as_one(stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.token_refusal = RedirectResponse("https://elsewhere.example/oauth/token", status_code=307)
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 307
    assert "redirected" in str(raised.value)
    assert double.token_requests == 1
    assert double.request_ids == [], "no call without a token"


# -- one token fetch for all waiting calls, also when it fails ---------------------------------------------
async def test_calls_waiting_for_a_token_fetch_that_times_out_share_its_failure(
        stand_in: tuple[StandIn, str]) -> None:
    """Before: each waiting call fetched again in turn under the lock, so the n-th call waited n timeouts and
    the token endpoint got n requests (8 calls, 0.3 s timeout: 8 requests, ~2.4 s)."""
    double, url = stand_in
    double.token_delay = 3.0
    async with GatewayClient(url, "sys-a", KEY, timeout=0.3, retries=0) as client:
        started = time.monotonic()
        outcomes = await asyncio.gather(*[client.get_exchange("ex-1") for _ in range(8)], return_exceptions=True)
        took = time.monotonic() - started
    assert all(isinstance(outcome, GatewayUnavailable) for outcome in outcomes)
    assert double.token_requests == 1
    assert took < 1.5, "no call waited for the other calls' fetches"
    errors = [outcome for outcome in outcomes if isinstance(outcome, GatewayUnavailable)]
    assert len({id(error) for error in errors}) == 8, "each call has an error of its own to annotate"


async def test_after_a_shared_failure_the_next_fetch_serves_every_call(stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.token_delay = 3.0
    async with GatewayClient(url, "sys-a", KEY, timeout=0.3, retries=0) as client:
        await asyncio.gather(*[client.get_exchange("ex-1") for _ in range(4)], return_exceptions=True)
        double.token_delay = 0.0
        outcomes = await asyncio.gather(*[client.get_exchange("ex-1") for _ in range(4)], return_exceptions=True)
    assert all(isinstance(outcome, GatewayClientError) and outcome.status == 404 for outcome in outcomes)
    assert double.token_requests == 2


async def test_a_token_refusal_is_shared_and_each_exchange_keeps_its_own_key(stand_in: tuple[StandIn, str]) -> None:
    """The system's key was revoked: one assertion is refused, not one per waiting call; each call's error is
    its own, carrying the Idempotency-Key that call would have used (not another call's)."""
    double, url = stand_in
    double.token_delay = 0.3
    double.token_refusal = JSONResponse({"title": "invalid_client", "status": 401, "error": "invalid_client",
                                         "detail": "client authentication failed"}, status_code=401)
    request = ExchangeRequest.model_validate({
        "partnership": "riec-aa", "purpose": "bibob-check", "legal_basis": "x", "case_reference": "C-1",
        "signal": {"type": "bibob-application", "reference": "S-1"}, "subjects": [{"ref": "subj-12345678a"}],
        "categories": ["company_registration"]})
    keys = [f"sys-a:key-{n}" for n in range(5)]
    async with GatewayClient(url, "sys-a", KEY) as client:
        outcomes = await asyncio.gather(*[client.exchange(request, idempotency_key=key) for key in keys],
                                        return_exceptions=True)
    assert double.token_requests == 1
    assert all(isinstance(outcome, GatewayClientError) and outcome.status == 401 for outcome in outcomes)
    assert [outcome.idempotency_key for outcome in outcomes if isinstance(outcome, GatewayClientError)] == keys


# -- timeouts per phase; cancellation -------------------------------------------------------------------------
async def test_connect_and_read_timeouts_are_set_apart(stand_in: tuple[StandIn, str]) -> None:
    """A partner wants to fail over fast when the gateway cannot be reached (connect) while letting an
    exchange that asks several holders take its time (read)."""
    double, url = stand_in
    double.api_delay = 0.6
    async with GatewayClient(url, "sys-a", KEY, timeout=httpx.Timeout(0.2, connect=1.0), retries=0) as client:
        with pytest.raises(GatewayUnavailable) as raised:
            await client.get_exchange("ex-1")
    assert isinstance(raised.value.__cause__, httpx.ReadTimeout)
    async with GatewayClient(url, "sys-a", KEY, timeout=httpx.Timeout(5.0, connect=0.2), retries=0) as client:
        with pytest.raises(GatewayClientError) as answered:
            await client.get_exchange("ex-1")
    assert answered.value.status == 404


async def test_a_call_cancelled_mid_request_closes_its_connection_and_the_client_goes_on(
        stand_in: tuple[StandIn, str]) -> None:
    double, url = stand_in
    double.api_delay = 5.0
    async with GatewayClient(url, "sys-a", KEY) as client:
        call = asyncio.create_task(client.get_exchange("ex-1"))
        while not double.request_ids:
            await asyncio.sleep(0.02)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(100):
            if double.disconnected:
                break
            await asyncio.sleep(0.02)
        assert double.disconnected == double.request_ids, "the gateway sees the request abandoned"
        double.api_delay = 0.0
        with pytest.raises(GatewayClientError) as answered:
            await asyncio.wait_for(client.get_exchange("ex-1"), 5)
    assert answered.value.status == 404
    assert double.token_requests == 1, "the token fetched before the cancel is kept"


@pytest.mark.parametrize("key", ["sys-a:key\r\nX-Injected: 1", "sys-a:key with spaces", "sys-a:sleutel-\u00e9\u00e9n"])
async def test_an_idempotency_key_that_cannot_be_a_header_is_refused_before_anything_is_sent(
        stand_in: tuple[StandIn, str], key: str) -> None:
    """Before: a line break was a transport error (LocalProtocolError) repeated with backoff and then raised
    as GatewayUnavailable, "no answer" — which tells the caller to resume with this same key; a non-ASCII
    character was a bare UnicodeEncodeError."""
    double, url = stand_in
    request = ExchangeRequest.model_validate({
        "partnership": "riec-aa", "purpose": "bibob-check", "legal_basis": "x", "case_reference": "C-1",
        "signal": {"type": "bibob-application", "reference": "S-1"}, "subjects": [{"ref": "subj-12345678a"}],
        "categories": ["company_registration"]})
    async with GatewayClient(url, "sys-a", KEY) as client:
        with pytest.raises(ValueError, match="idempotency_key") as refused:
            await client.exchange(request, idempotency_key=key)
        with pytest.raises(ValueError, match="idempotency_key"):
            await client.rerun(request, "decision-1", idempotency_key=key)
    assert key not in str(refused.value)
    assert double.token_requests == 0, "nothing was sent"

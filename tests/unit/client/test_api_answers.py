"""Answers the partner client must not take as they come (httpx.MockTransport): a token answer that is not a
Bearer token with a lifetime is the client's ``InvalidResponse``, never a TypeError or a later 401, and never
quotes a value."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.client.api import GatewayClient, InvalidResponse
from tests.unit.client.test_api_retries import KEY, RESULT, Recorder

GOOD_TOKEN = {"access_token": "eyJhbGciOiJFZERTQSJ9.e30.c2ln", "token_type": "Bearer", "expires_in": 300}
BSN = "111222333"  # passes the eleven-test


def _gateway(seen: Recorder, token_answer: Any, api: Any = None) -> GatewayClient:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.paths.append(path)
        if path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"token_endpoint": "http://gw/oauth/token"})
        if path == "/oauth/token":
            return httpx.Response(200, json=token_answer)
        if api is not None:
            answer: httpx.Response = api(request)
            return answer
        return httpx.Response(200, json=RESULT)
    return GatewayClient("http://gw", "sys-a", KEY, sleep=seen.sleep, transport=httpx.MockTransport(handler))


# -- the token answer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER"])
async def test_a_bearer_token_is_taken_whatever_the_case_of_its_type(token_type: str) -> None:
    seen = Recorder()
    async with _gateway(seen, {**GOOD_TOKEN, "token_type": token_type}) as client:
        assert await client.token() == GOOD_TOKEN["access_token"]
        await client.get_exchange("ex-1")
    assert seen.paths.count("/oauth/token") == 1, "the token is kept for its lifetime"


@pytest.mark.parametrize("changes", [
    {"token_type": "mac"}, {"token_type": "DPoP"}, {"token_type": None}, {"token_type": ["Bearer"]},
    {"access_token": None}, {"access_token": 42}, {"access_token": ""}, {"access_token": "a b"},
    {"access_token": "T\r\nX-Injected: 1"},
    {"expires_in": None}, {"expires_in": "300"}, {"expires_in": True}, {"expires_in": 0}, {"expires_in": -5},
    {"expires_in": [300]},
])
async def test_a_token_answer_that_is_no_bearer_token_with_a_lifetime_is_an_invalid_response(
        changes: dict[str, Any]) -> None:
    seen = Recorder()
    answer = {key: value for key, value in {**GOOD_TOKEN, **changes}.items() if value is not None}
    async with _gateway(seen, answer) as client:
        with pytest.raises(InvalidResponse) as raised:
            await client.get_exchange("ex-1")
    assert raised.value.status == 200
    assert "token answer" in str(raised.value)
    assert "/v1/exchanges/ex-1" not in seen.paths, "no call is made with what the answer gave"
    for value in changes.values():
        if isinstance(value, str) and value:
            assert value not in str(raised.value), "the answer's values are not quoted"


async def test_an_infinite_lifetime_is_refused() -> None:
    seen = Recorder()

    def handler(request: httpx.Request) -> httpx.Response:  # JSON readers in Python accept Infinity
        if request.url.path == "/oauth/token":
            return httpx.Response(200, content=b'{"access_token": "T", "token_type": "Bearer", '
                                               b'"expires_in": Infinity}', headers={"content-type": "application/json"})
        return httpx.Response(200, json={"token_endpoint": "http://gw/oauth/token"})
    async with GatewayClient("http://gw", "sys-a", KEY, sleep=seen.sleep,
                             transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(InvalidResponse):
            await client.token()

"""The partner client refuses to send its tokens over plain HTTP to another machine.

A client over ``http://`` hands every network hop the bearer token (good for an hour, for any call of the
system) and the answers' personal data. Refused when the client is built, before a token is asked for; allowed
to this machine, and anywhere when the caller says so explicitly (containers on a network it trusts)."""

from __future__ import annotations

import httpx
import pytest

from gateway.client.api import GatewayClient
from tests.unit.client.test_api_retries import KEY, NOW, RESULT, Recorder, _auth, _request


@pytest.mark.parametrize("url", ["http://gateway.example:8000", "http://10.0.0.5", "http://gw/",
                                 "HTTP://gateway.example", "http://[2001:db8::1]:8000"])
def test_plain_http_to_another_machine_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https://"):
        GatewayClient(url, "sys-a", KEY)


@pytest.mark.parametrize("url", ["ftp://gateway.example", "gateway.example", "https://", "file:///tmp/socket"])
def test_anything_but_an_http_url_with_a_host_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="base_url must be an https:// URL"):
        GatewayClient(url, "sys-a", KEY)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.3.4.5", "http://localhost:8000",
                                 "http://LOCALHOST", "http://[::1]:8000", "https://gateway.example"])
async def test_https_and_this_machine_are_accepted(url: str) -> None:
    async with GatewayClient(url, "sys-a", KEY) as client:
        assert client.system_id == "sys-a"


async def test_plain_http_elsewhere_works_only_when_allowed_explicitly() -> None:
    seen = Recorder()
    sent_to: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent_to.append(str(request.url))
        answer = _auth(request, seen)
        return answer if answer is not None else httpx.Response(200, json=RESULT)

    with pytest.raises(ValueError, match="allow_insecure_http"):
        GatewayClient("http://gateway:8000", "sys-a", KEY, transport=httpx.MockTransport(handler))
    assert sent_to == [], "refused before anything was sent"
    async with GatewayClient("http://gateway:8000", "sys-a", KEY, clock=lambda: NOW, allow_insecure_http=True,
                             issuer="https://gw", transport=httpx.MockTransport(handler)) as client:
        result = await client.exchange(_request())
    assert result.exchange_id == RESULT["exchange_id"]
    assert sent_to
    assert all(url.startswith("http://gateway:8000/") for url in sent_to)

"""The entry point's proxy handling (:mod:`gateway.peer`): who connected is kept, and ``X-Forwarded-For`` is
believed from the proxies uvicorn would believe by default."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from gateway.peer import TCP_PEER, behind_proxies


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    request = Request(scope, receive)
    client = request.client.host if request.client else None
    await JSONResponse({"client": client, "peer": scope.get(TCP_PEER)})(scope, receive, send)


@pytest.mark.parametrize("proxy", ["127.0.0.1", "::1"])
def test_a_local_proxy_is_believed_by_default_over_ipv4_and_ipv6(monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    http = TestClient(behind_proxies(_echo), client=(proxy, 40000))  # no lifespan: _echo answers HTTP only
    seen = http.get("/", headers={"X-Forwarded-For": "198.51.100.7"}).json()
    assert seen == {"client": "198.51.100.7", "peer": proxy}


def test_a_caller_that_is_no_proxy_names_no_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    http = TestClient(behind_proxies(_echo), client=("203.0.113.9", 40000))
    seen = http.get("/", headers={"X-Forwarded-For": "127.0.0.1"}).json()
    assert seen == {"client": "203.0.113.9", "peer": "203.0.113.9"}

"""The address a request's TCP connection came from, kept before ``X-Forwarded-For`` replaces the ASGI ``client``.

uvicorn's ``ProxyHeadersMiddleware`` (``FORWARDED_ALLOW_IPS``) replaces ``scope["client"]`` with the caller's
address a trusted proxy forwarded, which the sign-in throttle and the rate limiter need. A header only a proxy
may set (the client certificate it verified: :mod:`gateway.auth.certificate_binding`) needs the opposite: who
*connected*. uvicorn keeps no copy, and its middleware wraps the application from outside; so the entry point
(:mod:`gateway.asgi`) applies that middleware itself, inside :class:`RecordTcpPeer`, and ``wgs-gateway serve``
tells uvicorn not to apply it again.

An application not wrapped (the tests' ``TestClient``, an app built by hand) has its ``client`` as the peer:
there nothing replaced it.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

TCP_PEER = "wgs.tcp_peer"
"""The scope key of the connection's address (a string, or None when the server gave none)."""

DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
"""uvicorn's default for ``FORWARDED_ALLOW_IPS`` (``uvicorn.config.Config``): a proxy on the same machine, over
IPv4 or IPv6. With ``::1`` left out, a local proxy connecting over IPv6 had its ``X-Forwarded-For`` ignored once
the app applied the header itself: every caller one address to the sign-in throttle and the rate limiter."""


class RecordTcpPeer:
    """Keeps ``scope["client"]``'s address, as the server reported it, under :data:`TCP_PEER`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            scope[TCP_PEER] = str(client[0]) if client else None
        await self.app(scope, receive, send)


def behind_proxies(app: ASGIApp, forwarded_allow_ips: str | None = None) -> ASGIApp:
    """``app`` as the entry point serves it: the TCP peer recorded, then ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` believed from ``forwarded_allow_ips`` (default: ``FORWARDED_ALLOW_IPS``, as uvicorn
    reads it)."""
    trusted = (forwarded_allow_ips if forwarded_allow_ips is not None
               else os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS))
    inner: Any = app  # uvicorn types ASGI apps with its own (stricter) scope types
    proxied: ASGIApp = ProxyHeadersMiddleware(inner, trusted_hosts=trusted)  # type: ignore[assignment]
    return RecordTcpPeer(proxied)


def tcp_peer(scope: Scope) -> str | None:
    """The address the request's connection came from (see the module's docstring)."""
    if TCP_PEER in scope:
        peer = scope[TCP_PEER]
        return peer if isinstance(peer, str) else None
    client = scope.get("client")
    return str(client[0]) if client else None

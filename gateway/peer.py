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
from contextlib import AbstractContextManager
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway.environment import environment_variable

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


UVICORN_PROXY_HEADERS = "WGS_UVICORN_PROXY_HEADERS"
"""``off`` declares that the server does not apply ``X-Forwarded-For`` itself (``wgs-gateway serve`` sets it for
its workers; whoever starts ``uvicorn gateway.asgi:app --no-proxy-headers`` by hand sets it too)."""


def uvicorn_proxy_handling_off() -> AbstractContextManager[None]:
    """Declare, for the server processes started inside (``serve``'s uvicorn), that uvicorn's own proxy
    handling is off (:data:`UVICORN_PROXY_HEADERS`); the variable is as it was afterwards."""
    return environment_variable(UVICORN_PROXY_HEADERS, "off")


def binding_refusal(certificate_header: str | None) -> str | None:
    """Why certificate binding must not run in this process, or None: it is configured (``certificate_header``)
    while the server may apply its own proxy handling. uvicorn's is on unless told otherwise, and it replaces the
    connecting address before :class:`RecordTcpPeer` notes it: where ``FORWARDED_ALLOW_IPS`` trusts an address a
    caller can connect from, that caller names a listed proxy in ``X-Forwarded-For`` and its own certificate
    header is believed — a copied bound token would work without the certificate's key. Fail closed: no start."""
    if certificate_header is None or os.environ.get(UVICORN_PROXY_HEADERS, "").lower() == "off":
        return None
    return (f"WGS_CLIENT_CERT_HEADER is set, but the server may apply its own X-Forwarded-For handling before the "
            f"gateway sees who connected: start with `wgs-gateway serve`, or run uvicorn with --no-proxy-headers "
            f"and {UVICORN_PROXY_HEADERS}=off")


def tcp_peer(scope: Scope) -> str | None:
    """The address the request's connection came from (see the module's docstring)."""
    if TCP_PEER in scope:
        peer = scope[TCP_PEER]
        return peer if isinstance(peer, str) else None
    client = scope.get("client")
    return str(client[0]) if client else None

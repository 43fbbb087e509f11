"""Per-client rate limits: a token bucket per caller, answered with 429 problem+json and ``Retry-After``.

Who the caller is: the *verified* access token's principal (``kind:sub``) — checked with the same
:class:`~gateway.auth.tokens.AccessTokenService` the routes use (signature, issuer, audience, expiry; no
database), so nobody can spend another client's budget, or escape their own, by sending a made-up ``sub``.
Requests without a valid bearer token (the token endpoint, people's login, the console, bad tokens) are
keyed by the peer address. The token service remembers tokens it verified (by their text, while the key set is
unchanged), so a busy client does not pay for the signature check on every request; nothing is remembered
here, so a token signed by a key retired a moment ago (``keys retire``) is no identity from the next request on.
The verification is handed on to the route in the request's scope (``VERIFIED_IN_SCOPE``, with the token's text),
so the route does not verify the same token again a few microseconds later; the route still asks whether the
token, its client or its account was revoked or disabled, and checks a bound token's certificate, itself.

A revoked token is no identity either: one of a client that was disabled or re-keyed since, or of a disabled
account (:class:`~gateway.auth.revocation.DisabledPrincipals`, the routes' own in-memory list, no database) is
keyed by the peer address like a bad token. Why: such a token still verifies, so it used to spend the budget of
the client it was issued to: whoever kept a copy after the client was re-keyed over a leak could throttle that
client by replaying it, at no cost of their own, and every copy kept its place in a cache of verified tokens.
Now it spends its sender's address's budget and keeps nothing. When the list cannot be read (the routes answer
503 then) every token is keyed by its address too: fail closed, nobody's budget is spent on their behalf. A
person's token ended by a new password or a changed role is only known from the account itself, which the routes
read and this check does not: such a token still counts against its person's budget until it expires. The list
lags a ``users enable`` by up to ``revocation_refresh_seconds``: a person who signs in right after it is keyed by
address until then. A certificate-bound token (RFC 8705,
:mod:`gateway.auth.certificate_binding`) names its system only over its certificate, checked on every request
and never remembered: a copy of it without the certificate's key is refused by the routes, and must not spend
the system's budget either (a stolen bound token would otherwise throttle the partner it was taken from).

Limits are per gateway process (each worker has its own buckets): with N workers behind a load balancer a
client gets up to N times the configured rate. ``WGS_RATE_LIMIT_PER_SECOND=0`` switches the limiter off.
Health probes are never limited (a load balancer must always learn whether the gateway is up).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.certificate_binding import check_presented
from gateway.auth.setup import AuthServices
from gateway.auth.tokens import VERIFIED_IN_SCOPE
from gateway.container import Container
from gateway.errors import GatewayError
from gateway.logging import scrub_text
from gateway.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPE_BASE

log = structlog.get_logger("gateway.ratelimit")

EXEMPT_PREFIXES = ("/health/",)
MAX_BUCKETS = 100_000  # idle buckets beyond this are dropped (a full bucket holds no state worth keeping)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """``rate`` requests per second on average, bursts of up to ``burst``, per key. Thread-safe."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = MAX_BUCKETS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_buckets = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0.0 if granted, else the seconds until one will be available."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = _Bucket(float(self.burst), now)
                self._buckets[key] = bucket
                self._evict(now)
            else:
                self._buckets.move_to_end(key)
                bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate

    def _evict(self, now: float) -> None:
        """Drop least recently used buckets over the cap; only ones that would be full again anyway."""
        while len(self._buckets) > self._max_buckets:
            key, oldest = next(iter(self._buckets.items()))
            if oldest.tokens + (now - oldest.updated) * self.rate < self.burst:
                return  # the oldest is still draining: keep it (the cap is soft)
            del self._buckets[key]


class RateLimitMiddleware:
    """Pure ASGI: refuse a request over its client's budget before any handler (or body parsing) runs."""

    def __init__(self, app: ASGIApp, *, per_second: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limiter = TokenBucketLimiter(per_second, max(burst, 1), clock) if per_second > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limiter is None or scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        key = self.client_key(scope)
        wait = self.limiter.acquire(key)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        log.info("request_rejected", status=429, problem="rate-limited", client=key.split(":", 1)[0],
                 retry_after=retry_after)
        await _reject(send, retry_after, scope["path"])

    def client_key(self, scope: Scope) -> str:
        """``system:<sub>`` / ``person:<sub>`` for a verified bearer token that is not revoked, else
        ``ip:<peer address>``."""
        token = _bearer(scope)
        if token:
            principal = _verify(scope, token)
            if principal is not None:
                return principal
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def _verify(scope: Scope, token: str) -> str | None:
    """The verified principal's key, or None: a bad token, a revoked one (or the list that says so unread), the
    auth service not started yet, or a bound token without its certificate (see the module's docstring)."""
    app: Any = scope.get("app")
    container = getattr(getattr(app, "state", None), "container", None)
    if not isinstance(container, Container):
        return None
    auth = container.services.get("auth")
    if not isinstance(auth, AuthServices):
        return None
    try:
        principal = auth.tokens.verify(token)
        scope[VERIFIED_IN_SCOPE] = (token, principal)  # the route's check takes it from here
        auth.disabled.check(principal)
        if principal.certificate_thumbprint is not None:
            check_presented(Request(scope), container.settings, principal.certificate_thumbprint)
    except GatewayError:
        return None
    return f"{principal.kind}:{principal.subject}"


async def _reject(send: Send, retry_after: int, path: str) -> None:
    """The 429 problem, its ``instance`` masked as ``gateway.problems`` masks every problem's: a path may
    carry what the caller put in it (a BSN where an id belongs), and a refusal must not echo it back."""
    body = {"type": PROBLEM_TYPE_BASE + "too-many-requests", "title": "Too many requests", "status": 429,
            "detail": f"This client's request rate is over its limit; retry after {retry_after} s.",
            "instance": scrub_text(path)}
    payload = json.dumps(body).encode()
    start: Message = {"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(payload)).encode()),
        (b"retry-after", str(retry_after).encode())]}
    await send(start)
    await send({"type": "http.response.body", "body": payload})

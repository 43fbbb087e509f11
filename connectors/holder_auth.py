"""Partner side of authentication: only the gateway may query a holder.

A request's bearer JWT must be signed by a key of the gateway's published JWKS, name this partner system as
its audience (``aud``) and be unexpired. Checklist, in order:

1. the header names an allowed asymmetric algorithm (never ``none`` or HMAC);
2. its ``kid`` is in the gateway's key set — on an unknown ``kid`` the set is re-read once (the gateway
   rotated), at most every ``REFRESH_INTERVAL`` seconds so forged ``kid``s cannot make us hammer the gateway;
   while no key set could be read at all, a new attempt is made at most every ``REFRESH_INTERVAL`` seconds
   too (until then every token is refused), so forged tokens cannot turn each request into a fetch;
3. the signature verifies;
4. ``aud`` is this system's id (a string, not a list naming it among others) and ``exp`` is present and not
   past (30 s leeway); ``nbf`` and ``iat``, when present, are not in the future (same leeway); ``iss`` equals
   the gateway's issuer when the holder is told it (``issuer``) — a partner should: the keys then vouch only
   for tokens the gateway issued as itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from joserfc.jwt import JWTClaimsRegistry

from connectors.transport import compressed, verifying_tls

ALGORITHMS = ["Ed25519", "ES256"]
REFRESH_INTERVAL = 10.0
LEEWAY_SECONDS = 30
MAX_ACCESS_TOKEN_SECONDS = 3600
"""The longest an access token of the gateway may still be valid (its ``WGS_ACCESS_TOKEN_TTL_SECONDS`` is at most
this): a token that claims to be valid for longer was not made by a gateway as configured — a leaked signing key's
long-lived forgery, or a mis-issued token — and a captured one would otherwise open the holder for that long."""


MAX_JWKS_BYTES = 256 * 1024
"""The largest key set the gateway may publish: a handful of keys take a few kilobytes, and rotation keeps a
few at a time. Like the gateway's limit on a holder's answer (``connectors.http_connector.MAX_ANSWER_BYTES``):
whatever answers at the JWKS URL — a misconfigured proxy, an attacker on the path of a plain-http URL — must
not fill the holder's memory, nor hold every token check (they wait on the fetch) for longer than
``FETCH_SECONDS``."""
FETCH_SECONDS = 5.0
"""The whole fetch of the key set (connect, send, wait, read), not each socket operation."""


class TokenRefused(Exception):
    """The bearer token is missing, forged, expired, for another system, or cannot be checked."""


class JwksSource:
    """The gateway's public keys: fetched from a URL (``/.well-known/jwks.json``), read from a file, or given.

    The parsed key set is cached; ``refresh`` re-reads the URL or file, rate-limited to one re-read per
    ``REFRESH_INTERVAL`` (the first load does not count, so a rotation just after start is picked up). A load
    that failed while no key set is cached is not retried for ``REFRESH_INTERVAL`` either: anyone can send a
    token, so without that bound every request would make the holder fetch (and wait on) the gateway's keys.

    An ``https`` URL is verified against the system's trust store or, with ``ca_file``, against the
    partnership's own CA bundle (as the gateway's connectors verify holders: their ``ca_file``). A fetched key
    set is read as sent (no compression, which could inflate past the limit) and at most ``max_bytes`` of it,
    within ``FETCH_SECONDS`` as a whole.
    """

    def __init__(self, url: str | None = None, jwks: dict[str, Any] | None = None, file: Path | None = None,
                 *, ca_file: str | Path | None = None, max_bytes: int = MAX_JWKS_BYTES) -> None:
        """Raises ``OSError`` or ``ssl.SSLError`` for a ``ca_file`` that cannot be read as a CA bundle: at
        start-up, rather than as refused tokens later."""
        self._url = url
        self._file = file
        self._jwks = jwks
        self._tls = verifying_tls(ca_file)
        self._max_bytes = max_bytes
        self._keyset: KeySet | None = None
        self._refreshed_at = float("-inf")
        self._failed_at = float("-inf")  # when loading failed while no key set was cached
        self._lock = threading.Lock()

    def point_to(self, url: str) -> None:
        """Set the JWKS URL once the gateway's address is known (partners may start before the gateway)."""
        with self._lock:
            self._url = url
            self._jwks = None
            self._keyset = None
            self._refreshed_at = float("-inf")
            self._failed_at = float("-inf")

    def keys(self, refresh: bool = False) -> KeySet:
        """The current key set; may block on a fetch (use ``akeys`` on an event loop)."""
        with self._lock:
            if self._keyset is None:
                if time.monotonic() - self._failed_at <= REFRESH_INTERVAL:
                    raise TokenRefused("the gateway's keys are unavailable; retried shortly")
                try:
                    self._keyset = self._read()
                except TokenRefused:
                    self._failed_at = time.monotonic()
                    raise
            elif refresh and time.monotonic() - self._refreshed_at > REFRESH_INTERVAL:
                self._refreshed_at = time.monotonic()
                self._keyset = self._read()
            return self._keyset

    async def akeys(self, refresh: bool = False) -> KeySet:
        """``keys`` without blocking the event loop when a fetch is needed."""
        cached = self._keyset
        if cached is not None and not refresh:
            return cached
        return await asyncio.to_thread(self.keys, refresh)

    def _read(self) -> KeySet:
        if self._url:
            try:
                self._jwks = json.loads(self._fetch(self._url))
            except (httpx.HTTPError, ValueError) as exc:
                raise TokenRefused("the gateway's keys could not be fetched") from exc
        elif self._file:
            try:
                self._jwks = json.loads(self._file.read_text())
            except (OSError, ValueError) as exc:
                raise TokenRefused("the gateway's key file could not be read") from exc
        if self._jwks is None:
            raise TokenRefused("no gateway keys configured")
        try:
            return KeySet.import_key_set(self._jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise TokenRefused("the gateway's key set is malformed") from exc


    def _fetch(self, url: str) -> bytes:
        """The body of a 2xx answer at ``url``: uncompressed, at most ``max_bytes``, within ``FETCH_SECONDS`` as a
        whole. On an event loop of its own (``keys`` runs on a worker thread, ``akeys`` puts it on one), because
        only a cancellation bounds the whole of it: httpx's timeouts are per socket operation, and an answer that
        sends its headers a byte at a time would otherwise hold the fetch, and every token check waiting on it,
        for as long as it kept sending."""
        return asyncio.run(self._fetch_within(url, FETCH_SECONDS))

    async def _fetch_within(self, url: str, seconds: float) -> bytes:
        try:
            async with asyncio.timeout(seconds), httpx.AsyncClient(timeout=seconds, verify=self._tls) as client, \
                    client.stream("GET", url, headers={"Accept-Encoding": "identity"}) as response:
                response.raise_for_status()
                if compressed(response.headers):
                    raise TokenRefused("the gateway's keys came compressed, which was not asked for")
                length = response.headers.get("Content-Length")
                if length is not None and int(length) > self._max_bytes:
                    raise TokenRefused(f"the gateway's key set is larger than {self._max_bytes} bytes")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise TokenRefused(f"the gateway's key set is larger than {self._max_bytes} bytes")
                return bytes(body)
        except TimeoutError as exc:
            raise TokenRefused("the gateway's keys took too long to fetch") from exc


DECISION_TYPE = "wgs-decision+jwt"
"""``typ`` of the gateway's signed escalation decisions; an access token must not pass for one, nor back."""


def _kid(token: str, typ: str = "JWT") -> str | None:
    try:
        header = extract_compact(token.encode()).headers()
    except _MALFORMED as exc:
        raise TokenRefused("the token is not a compact JWS") from exc
    if header.get("alg") not in ALGORITHMS:
        raise TokenRefused("the token uses a disallowed algorithm")
    if header.get("typ", "JWT") != typ:
        raise TokenRefused("the token is of the wrong type")
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def _knows(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys.keys)


_MALFORMED = (JoseError, ValueError, TypeError, KeyError, AttributeError)
"""What checking a token someone sent may raise: a header member of the wrong JSON type (``crit: 5``) fails inside
joserfc with a ``TypeError`` before any signature is checked — a refusal (401), not a failure of the holder's."""


def _issuer_claim(issuer: str | None) -> dict[str, Any]:
    """The ``iss`` rule of the claims registry: pinned when the gateway's issuer is configured."""
    return {"iss": {"essential": True, "value": issuer}} if issuer else {}


def make_verifier(system: str, source: JwksSource, now: Callable[[], float] = time.time,
                  issuer: str | None = None) -> Callable[[str], Awaitable[None]]:
    """An async check of a bearer token for ``system`` (issued by ``issuer``, when given); raises
    ``TokenRefused`` with a reason safe to return."""

    async def verify(token: str) -> None:
        kid = _kid(token)
        keys = await source.akeys()
        if not _knows(keys, kid):
            keys = await source.akeys(refresh=True)
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            JWTClaimsRegistry(now=lambda: int(now()), leeway=LEEWAY_SECONDS,
                              aud={"essential": True, "value": system},
                              exp={"essential": True}, **_issuer_claim(issuer)).validate(decoded.claims)
        except _MALFORMED as exc:
            raise TokenRefused("the gateway token was not accepted") from exc
        if decoded.claims["aud"] != system:  # one audience, this holder: a list naming it among others is refused
            raise TokenRefused("the gateway token was not accepted")
        if decoded.claims["exp"] > now() + MAX_ACCESS_TOKEN_SECONDS + LEEWAY_SECONDS:
            raise TokenRefused("the gateway token was not accepted")

    return verify


def make_decision_verifier(system: str, source: JwksSource, now: Callable[[], float] = time.time,
                           issuer: str | None = None) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """An async check of a binding escalation decision signed by the gateway for ``system``: returns its
    claims (decision id, request id, categories) or raises ``TokenRefused``."""

    async def verify(token: str) -> dict[str, Any]:
        kid = _kid(token, DECISION_TYPE)
        keys = await source.akeys()
        if not _knows(keys, kid):
            keys = await source.akeys(refresh=True)
        try:
            decoded = jwt.decode(token, keys, algorithms=ALGORITHMS)
            JWTClaimsRegistry(now=lambda: int(now()), leeway=LEEWAY_SECONDS,
                              aud={"essential": True, "value": system}, exp={"essential": True},
                              decision_id={"essential": True}, request_id={"essential": True},
                              categories={"essential": True}, **_issuer_claim(issuer)).validate(decoded.claims)
        except _MALFORMED as exc:
            raise TokenRefused("the escalation decision was not accepted") from exc
        if decoded.claims["aud"] != system:  # as for the gateway's tokens: one audience, this holder
            raise TokenRefused("the escalation decision was not accepted")
        return dict(decoded.claims)

    return verify

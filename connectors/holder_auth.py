"""Partner side of authentication: only the gateway may query a holder.

A request's bearer JWT must be signed by a key of the gateway's published JWKS, name this partner system as
its audience (``aud``) and be unexpired. Checklist, in order:

1. the header names an allowed asymmetric algorithm (never ``none`` or HMAC);
2. its ``kid`` is in the gateway's key set — on an unknown ``kid`` the set is re-read once (the gateway
   rotated), at most every ``REFRESH_INTERVAL`` seconds so forged ``kid``s cannot make us hammer the gateway;
   while no key set could be read at all, a new attempt is made at most every ``REFRESH_INTERVAL`` seconds
   too (until then every token is refused), so forged tokens cannot turn each request into a fetch. The set
   is also re-read once it is older than its maximum age (``max_age``, or less when the gateway's answer says
   ``Cache-Control: max-age``): a key the gateway retired after it leaked (``wgs-gateway keys retire``) is
   no longer in its JWKS, and a holder that re-read only on unknown ``kid``s would never meet one and accept
   the retired key's tokens until it restarted. A re-read that fails keeps the old set for ``stale_grace``
   seconds at most (logged), then every token is refused until one succeeds (fail closed);
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
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import extract_compact
from joserfc.jwt import JWTClaimsRegistry

from connectors.transport import compressed, verifying_tls

ALGORITHMS = ["Ed25519", "ES256"]
REFRESH_INTERVAL = 10.0
"""The least time between two reads of the key set after the first (on unknown ``kid``s, on expiry, after a
failure): the bound on how often tokens anyone can send make the holder fetch the gateway's keys."""
MAX_AGE_SECONDS = 300.0
"""How long a read key set is used, by default, before it is read again (``max_age``): the longest a holder
accepts the tokens of a key the gateway retired. The gateway's ``Cache-Control: max-age`` may shorten it
(never below ``REFRESH_INTERVAL``), never lengthen it."""
STALE_GRACE_SECONDS = 300.0
"""How long past its maximum age a key set is still used while it cannot be read again (``stale_grace``): a
short outage of the gateway's JWKS does not stop the holder; a long one, or an attacker who keeps the holder
from reading the set, does not keep a retired key accepted for longer than this."""
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


log = structlog.get_logger("connectors.holder_auth")

_UNREADABLE = (ValueError, RecursionError)
"""What reading a key set as JSON may raise: ``RecursionError`` for one nested deeper than the parser recurses
(within ``MAX_JWKS_BYTES``), which must be a refusal like any other malformed set — escaping, it failed every
token check (a 500, or the connection dropped) and, not counted as a failed read, made each one fetch the keys
again."""


class TokenRefused(Exception):
    """The bearer token is missing, forged, expired, for another system, or cannot be checked."""


class JwksSource:
    """The gateway's public keys: fetched from a URL (``/.well-known/jwks.json``), read from a file, or given.

    The parsed key set is cached; ``refresh`` re-reads the URL or file, rate-limited to one re-read per
    ``REFRESH_INTERVAL`` (the first load does not count, so a rotation just after start is picked up). A load
    that failed while no key set is cached is not retried for ``REFRESH_INTERVAL`` either: anyone can send a
    token, so without that bound every request would make the holder fetch (and wait on) the gateway's keys.

    A set read from the URL or file expires: it is read again once it is ``max_age`` seconds old (or the
    ``Cache-Control: max-age`` of the answer, when shorter, but at least ``REFRESH_INTERVAL``), so a key
    removed from the gateway's JWKS stops being accepted within that time. Until a re-read succeeds, the old
    set is kept for at most ``stale_grace`` seconds past its age, with a new attempt at most every
    ``REFRESH_INTERVAL`` and a log line for each failure; after that no token passes (fail closed). A set
    given as ``jwks`` alone cannot be read again and does not expire. ``clock`` (monotonic seconds) is for
    tests.

    An ``https`` URL is verified against the system's trust store or, with ``ca_file``, against the
    partnership's own CA bundle (as the gateway's connectors verify holders: their ``ca_file``). A fetched key
    set is read as sent (no compression, which could inflate past the limit) and at most ``max_bytes`` of it,
    within ``FETCH_SECONDS`` as a whole.
    """

    def __init__(self, url: str | None = None, jwks: dict[str, Any] | None = None, file: Path | None = None,
                 *, ca_file: str | Path | None = None, max_bytes: int = MAX_JWKS_BYTES,
                 max_age: float = MAX_AGE_SECONDS, stale_grace: float = STALE_GRACE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Raises ``OSError`` or ``ssl.SSLError`` for a ``ca_file`` that cannot be read as a CA bundle, and
        ``ValueError`` for a ``max_age`` that is not positive or a negative ``stale_grace``: at start-up,
        rather than as refused tokens later."""
        if not max_age > 0 or not stale_grace >= 0:  # NaN too
            raise ValueError("the key set's max age must be positive and its grace not negative")
        self._url = url
        self._file = file
        self._jwks = jwks
        self._tls = verifying_tls(ca_file)
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._stale_grace = stale_grace
        self._clock = clock
        self._keyset: KeySet | None = None
        self._read_at = float("-inf")  # when the cached key set was read
        self._fresh_until = float("-inf")  # then it is read again
        self._refreshed_at = float("-inf")  # the last read (or attempt) after the first load
        self._failed_at = float("-inf")  # the last attempt that failed, since the last that succeeded
        self._lock = threading.Lock()

    def point_to(self, url: str) -> None:
        """Set the JWKS URL once the gateway's address is known (partners may start before the gateway)."""
        with self._lock:
            self._url = url
            self._jwks = None
            self._keyset = None
            self._read_at = self._fresh_until = float("-inf")
            self._refreshed_at = float("-inf")
            self._failed_at = float("-inf")

    def keys(self, refresh: bool = False) -> KeySet:
        """The current key set; may block on a fetch (use ``akeys`` on an event loop)."""
        with self._lock:
            now = self._clock()
            if self._keyset is None:
                if now - self._failed_at <= REFRESH_INTERVAL:
                    raise TokenRefused("the gateway's keys are unavailable; retried shortly")
                try:
                    self._load(now)
                except TokenRefused:
                    self._failed_at = now
                    raise
            elif now >= self._fresh_until:
                self._renew(now)
            elif refresh and now - self._refreshed_at > REFRESH_INTERVAL:
                self._refreshed_at = now
                self._load(now)
            assert self._keyset is not None
            return self._keyset

    async def akeys(self, refresh: bool = False) -> KeySet:
        """``keys`` without blocking the event loop when a fetch is needed."""
        cached = self._keyset
        if cached is not None and not refresh and self._usable_as_is(self._clock()):
            return cached
        return await asyncio.to_thread(self.keys, refresh)

    def _usable_as_is(self, now: float) -> bool:
        """Whether the cached set is used without a read: fresh, or stale within its grace with no new attempt
        due (read without the lock: at worst ``keys`` decides on a worker thread)."""
        return now < self._fresh_until or (now - self._failed_at <= REFRESH_INTERVAL
                                           and now < self._fresh_until + self._stale_grace)

    def _renew(self, now: float) -> None:
        """Read an expired set again (at most every ``REFRESH_INTERVAL`` while that fails); keep the old one
        within its grace, refuse every token past it."""
        stale_until = self._fresh_until + self._stale_grace
        if now - self._failed_at > REFRESH_INTERVAL:
            self._refreshed_at = now
            try:
                self._load(now)
                return
            except TokenRefused as exc:
                self._failed_at = now
                log.warning("jwks_refresh_failed", reason=str(exc), keys_age_seconds=round(now - self._read_at),
                            kept_for_seconds=max(0, round(stale_until - now)))
        if now >= stale_until:
            log.error("jwks_expired", keys_age_seconds=round(now - self._read_at),
                      detail="no token is accepted until the gateway's keys can be read again")
            self._keyset = None
            raise TokenRefused("the gateway's keys are out of date and could not be read again")

    def _load(self, now: float) -> None:
        """Read the set (raises ``TokenRefused``) and cache it with its expiry."""
        keyset, served_max_age = self._read()
        self._keyset = keyset
        self._read_at = now
        self._failed_at = float("-inf")
        if not (self._url or self._file):
            self._fresh_until = float("inf")  # given, not read: nothing to read again
            return
        age = self._max_age if served_max_age is None else min(self._max_age, max(served_max_age, REFRESH_INTERVAL))
        self._fresh_until = now + age

    def _read(self) -> tuple[KeySet, float | None]:
        """The key set and the ``Cache-Control: max-age`` it was served with (None: none, or not fetched)."""
        served_max_age = None
        if self._url:
            try:
                body, served_max_age = self._fetch(self._url)
                self._jwks = json.loads(body)
            except (httpx.HTTPError, *_UNREADABLE) as exc:
                raise TokenRefused("the gateway's keys could not be fetched") from exc
        elif self._file:
            try:
                self._jwks = json.loads(self._file.read_text())
            except (OSError, *_UNREADABLE) as exc:
                raise TokenRefused("the gateway's key file could not be read") from exc
        if self._jwks is None:
            raise TokenRefused("no gateway keys configured")
        try:
            return KeySet.import_key_set(self._jwks), served_max_age  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise TokenRefused("the gateway's key set is malformed") from exc

    def _fetch(self, url: str) -> tuple[bytes, float | None]:
        """The body of a 2xx answer at ``url`` (uncompressed, at most ``max_bytes``, within ``FETCH_SECONDS`` as a
        whole) and its ``Cache-Control: max-age``. On an event loop of its own (``keys`` runs on a worker thread,
        ``akeys`` puts it on one), because only a cancellation bounds the whole of it: httpx's timeouts are per
        socket operation, and an answer that sends its headers a byte at a time would otherwise hold the fetch,
        and every token check waiting on it, for as long as it kept sending."""
        return asyncio.run(self._fetch_within(url, FETCH_SECONDS))

    async def _fetch_within(self, url: str, seconds: float) -> tuple[bytes, float | None]:
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
                return bytes(body), cache_max_age(response.headers.get("Cache-Control"))
        except TimeoutError as exc:
            raise TokenRefused("the gateway's keys took too long to fetch") from exc


def cache_max_age(cache_control: str | None) -> float | None:
    """The seconds a ``Cache-Control`` value lets an answer be kept: its ``max-age``, 0 for ``no-cache`` or
    ``no-store``, None when it says neither (or is malformed: then the holder's own maximum applies)."""
    if cache_control is None:
        return None
    directives = [part.strip().lower() for part in cache_control.split(",")]
    if "no-cache" in directives or "no-store" in directives:
        return 0.0
    for directive in directives:
        name, _, value = directive.partition("=")
        if name.strip() == "max-age" and value.strip().strip('"').isdigit():
            return float(value.strip().strip('"'))
    return None


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

"""Typed async client of the gateway's exchange API, for partner systems.

* Tokens: OAuth2 client credentials with ``private_key_jwt`` (RFC 7523): a fresh, single-use signed
  assertion per token request (``kid`` in its header only when the key has one); the access token is
  reused until shortly before it expires (``min(30 s, expires_in / 2)`` before). Concurrent calls on a
  fresh client share one metadata and one token request.
* Retries: every exchange carries an ``Idempotency-Key`` (generated if the caller gives none) and every
  retry of it sends the same key, so a retry after a timeout or a 502/503/504 cannot disclose or log twice.
  Transport failures and 502/503/504 answers are retried ``retries`` times, after
  ``max(exponential backoff with jitter, Retry-After)`` (capped at ``max_delay``; ``Retry-After`` in
  seconds or as an HTTP date) — but only where repeating is safe: GETs, POSTs with an Idempotency-Key,
  and a POST without one only when it was certainly not sent (connect error, connect or pool timeout;
  not e.g. a read timeout).
  The metadata and token requests happen inside the same loop and are always safe to repeat.
  A 429 (the gateway's rate limit) is retried the same way, for every call: the limit refuses a call
  before anything of it is done, so repeating it is always safe; ``GatewayThrottled`` once the retries are
  spent (``GatewayUnavailable`` with status 429 when an earlier attempt may have reached the gateway).
  Other 4xx answers and 500 are never retried, with one exception: a 409 with ``Retry-After`` to an exchange
  means the first attempt with that key is still being answered (the gateway holds the key's claim for
  up to 2 minutes). The client then waits as ``Retry-After`` says and asks again, for at most
  ``busy_wait`` seconds in total (default 120), a bound separate from ``retries``; it gets the first
  attempt's answer, not a second exchange.
* Errors: ``GatewayClientError`` (the base of all) with ``status`` and the problem document (RFC 9457)
  the gateway sent. Subclasses: ``GatewayUnavailable`` (no answer — connection failure or timeout,
  ``status == 0`` and the transport exception as ``__cause__`` — or 502/503/504 after the retries),
  ``GatewayBusy`` (the first attempt was still being answered after ``busy_wait``) and ``InvalidResponse``
  (an answer that is not what the API promises, e.g. not JSON; ``status`` is its HTTP status, 0 when
  httpx could not read it at all).
* Resuming: every error ``exchange()`` and ``rerun()`` raise carries ``idempotency_key``, the key the
  attempts were sent with. When it is unclear whether the exchange happened (``GatewayUnavailable``,
  ``GatewayBusy``), call ``exchange(same request, idempotency_key=error.idempotency_key)`` to get the
  first attempt's answer; a new key would be a new exchange, i.e. a second disclosure.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from gateway.client.models import DiscoveryRequest, DiscoveryResult, ExchangeRequest, ExchangeResult
from gateway.client.pseudonyms import PseudonymClient, RecipientKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RETRY_STATUSES = {502, 503, 504}
# The only transport failures after which a request certainly did not reach the server (no connection was
# made, or none was free); after any other (e.g. ReadTimeout) it may have been received and acted on.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_T = TypeVar("_T")


class GatewayClientError(Exception):
    """The gateway refused or failed a call; ``problem`` is its problem+json body. ``status`` is the HTTP
    status, or 0 when no answer came (see ``GatewayUnavailable``). ``idempotency_key`` is set on errors of
    ``exchange()``/``rerun()``: pass it back to resume that exchange. ``retry_after`` is the answer's
    ``Retry-After`` in seconds, where it had one."""

    def __init__(self, status: int, problem: dict[str, Any], *, idempotency_key: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title') or 'error'}")
        self.status = status
        self.problem = problem
        self.idempotency_key = idempotency_key
        self.retry_after = retry_after


class GatewayUnavailable(GatewayClientError):
    """No answer (connection failure or timeout: ``status == 0``, the transport exception is the
    ``__cause__``) or 502/503/504 once the retries are spent. Whether an exchange happened is unknown:
    resume it with its ``idempotency_key``."""


class GatewayThrottled(GatewayClientError):
    """429 once the retries are spent: the gateway's rate limit refused every attempt. The limit refuses a
    call before anything of it is done, so it was not acted on; ``retry_after`` says when to try again.
    When an earlier attempt of the same call may have reached the gateway (a timeout, a 5xx, a busy 409),
    the last 429 proves nothing about it: that ends as ``GatewayUnavailable`` (status 429), to be resumed
    with the ``idempotency_key``."""


class GatewayBusy(GatewayClientError):
    """The first attempt of this exchange was still being answered (409 with ``Retry-After``) when
    ``busy_wait`` ran out; resume it later with its ``idempotency_key``."""


class InvalidResponse(GatewayClientError):
    """An answer the API does not promise (not JSON, fields missing); ``status`` is its HTTP status."""


class GatewayClient:
    def __init__(self, base_url: str, system_id: str, key: OKPKey | ECKey, *, token_audience: str | None = None,
                 timeout: float = 30.0, retries: int = 2, busy_wait: float = 120.0, backoff: float = 0.5,
                 max_delay: float = 30.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._base = base_url.rstrip("/")
        self.system_id = system_id
        self._key = key
        self._alg = "Ed25519" if isinstance(key, OKPKey) else "ES256"
        self._audience = token_audience
        self._retries = retries
        self._busy_wait = busy_wait
        self._backoff = backoff
        self._max_delay = max_delay
        self._clock = clock
        self._sleep = sleep
        self._http = httpx.AsyncClient(base_url=self._base, timeout=timeout, transport=transport)
        self._token: tuple[str, float] | None = None  # (access token, renew at)
        self._token_lock = asyncio.Lock()
        self._pseudonym_clients: dict[str, PseudonymClient] = {}

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- tokens -------------------------------------------------------------------------------------
    async def token(self) -> str:
        """The access token: the cached one, or a new one (with the transport retries)."""
        failures = 0
        while True:
            try:
                return await self._current_token()
            except (httpx.TransportError, GatewayUnavailable, GatewayThrottled) as exc:
                failures = await self._retry_or_raise(exc, failures, safe=True)
            except httpx.HTTPError as exc:
                raise _unusable(exc) from exc

    async def _current_token(self) -> str:
        """The cached token, or one fetched under a lock so that concurrent calls share one request. Raises
        httpx.TransportError as is (the caller retries it) and typed errors for answers."""
        if self._token and float(self._clock()) < self._token[1]:
            return self._token[0]
        async with self._token_lock:
            now = float(self._clock())
            if self._token and now < self._token[1]:
                return self._token[0]
            claims = {"iss": self.system_id, "sub": self.system_id, "aud": await self._audience_url(),
                      "iat": int(now), "exp": int(now) + 60, "jti": str(uuid.uuid4())}
            header = {"alg": self._alg} | ({"kid": self._key.kid} if self._key.kid else {})
            assertion = jwt.encode(header, claims, self._key, algorithms=[self._alg])
            response = await self._http.post("/oauth/token", data={
                "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": assertion})
            body = _answer(response, float(self._clock()))
            try:
                token, expires_in = str(body["access_token"]), float(body["expires_in"])
            except (KeyError, TypeError, ValueError) as exc:
                raise _invalid(response, "the token answer has no access_token/expires_in") from exc
            self._token = (token, now + expires_in - min(30.0, expires_in / 2))
            return token

    async def _audience_url(self) -> str:
        if self._audience is None:
            response = await self._http.get("/.well-known/oauth-authorization-server")
            body = _answer(response, float(self._clock()))
            endpoint = body.get("token_endpoint")
            if not isinstance(endpoint, str):
                raise _invalid(response, "the authorization server metadata has no token_endpoint")
            self._audience = endpoint
        return self._audience

    # -- retries ------------------------------------------------------------------------------------
    def _delay(self, failures: int, retry_after: float | None) -> float:
        """Before retry number ``failures`` (1, 2, ...): exponential backoff with jitter, at least
        Retry-After, at most ``max_delay``."""
        backoff = self._backoff * 2.0 ** (failures - 1) * random.uniform(0.5, 1.0)
        return min(max(backoff, retry_after or 0.0), self._max_delay)

    async def _retry_or_raise(self, failure: httpx.TransportError | GatewayClientError, failures: int, *,
                              safe: bool) -> int:
        """Waits before the next attempt and returns the failure count, or raises the typed error when the
        call may not (``safe`` false) or can no longer be repeated."""
        if not safe or failures >= self._retries:
            if isinstance(failure, GatewayClientError):
                raise failure
            raise GatewayUnavailable(0, {"title": "no answer from the gateway",
                                         "detail": f"{type(failure).__name__}: {failure}"}) from failure
        failures += 1
        retry_after = failure.retry_after if isinstance(failure, GatewayClientError) else None
        await self._sleep(self._delay(failures, retry_after))
        return failures

    async def _send(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
                    params: dict[str, str] | None = None) -> httpx.Response:
        repeatable = method == "GET" or bool(idempotency_key)
        failures, busy_waited = 0, 0.0
        reached = False  # whether an attempt may have reached the API's handlers (then a 429 proves nothing)
        while True:
            sending = False
            try:
                headers = {"Authorization": f"Bearer {await self._current_token()}"}
                if idempotency_key:
                    headers["Idempotency-Key"] = idempotency_key
                sending = True
                response = await self._http.request(method, path, json=json, headers=headers, params=params)
            except httpx.TransportError as exc:
                # Safe: nothing of this call was sent yet (token phase, or connect failure), or it may repeat.
                safe = not sending or repeatable or isinstance(exc, _NOT_SENT)
                reached = reached or (sending and not isinstance(exc, _NOT_SENT))
                failures = await self._retry_or_raise(exc, failures, safe=safe)
                continue
            except (GatewayUnavailable, GatewayThrottled) as exc:  # from the metadata or token endpoint
                failures = await self._retry_or_raise(_unless_reached(exc, reached), failures, safe=True)
                continue
            except httpx.HTTPError as exc:  # an answer httpx could not read (decoding, redirects): not retried
                raise _unusable(exc) from exc
            if response.status_code == 429:  # refused before anything was done with it: always safe to repeat
                failures = await self._retry_or_raise(
                    _unless_reached(_throttled(response, float(self._clock())), reached), failures, safe=True)
                continue
            reached = True
            if response.status_code in _RETRY_STATUSES:
                failures = await self._retry_or_raise(
                    GatewayUnavailable(response.status_code, _problem(response), retry_after=_retry_after(
                        response, float(self._clock()))), failures, safe=repeatable)
                continue
            busy = _retry_after(response, float(self._clock())) if response.status_code == 409 else None
            if busy is not None and idempotency_key:
                # The first attempt (which timed out here) is still being answered: its answer, not a new
                # exchange, is what the retry will get once it is done.
                if busy_waited >= self._busy_wait:
                    raise GatewayBusy(409, _problem(response))
                pause = min(max(busy, 0.1), self._max_delay, self._busy_wait - busy_waited)
                busy_waited += pause
                await self._sleep(pause)
                continue
            if response.status_code >= 400:
                raise GatewayClientError(response.status_code, _problem(response))
            return response

    # -- calls --------------------------------------------------------------------------------------
    async def exchange(self, request: ExchangeRequest, *, idempotency_key: str | None = None) -> ExchangeResult:
        """Ask the holders; with ``idempotency_key`` of an earlier attempt (e.g. from an error's
        ``idempotency_key``), get that attempt's answer instead of a new exchange."""
        key = idempotency_key or f"{self.system_id}:{uuid.uuid4()}"
        try:
            response = await self._send("POST", "/v1/exchanges", json=request.model_dump(mode="json"),
                                        idempotency_key=key)
            return _decoded(response, lambda r: ExchangeResult.model_validate_json(r.content))
        except GatewayClientError as exc:
            exc.idempotency_key = key
            raise

    async def discovery(self, request: DiscoveryRequest) -> DiscoveryResult:
        response = await self._send("POST", "/v1/discovery", json=request.model_dump(mode="json"))
        return _decoded(response, lambda r: DiscoveryResult.model_validate_json(r.content))

    async def get_exchange(self, exchange_id: str) -> ExchangeResult:
        response = await self._send("GET", f"/v1/exchanges/{exchange_id}")
        return _decoded(response, lambda r: ExchangeResult.model_validate_json(r.content))

    # -- pseudonyms ---------------------------------------------------------------------------------
    async def pseudonym_client(self, partnership: str) -> PseudonymClient:
        """Makes polymorphic pseudonyms under the gateway's key and opens this partner's own pseudonyms in
        ``partnership`` (the recipient key is fetched once and kept in memory only)."""
        if partnership not in self._pseudonym_clients:
            response = await self._send("GET", "/v1/pseudonyms/key")
            key = _decoded(response, lambda r: str(r.json()["public_key"]))
            response = await self._send("GET", "/v1/pseudonyms/recipient-key", params={"partnership": partnership})
            recipient = _decoded(response, lambda r: RecipientKey.decode(r.json()["recipient_key"]))
            self._pseudonym_clients[partnership] = PseudonymClient(key, recipient_key=recipient)
        return self._pseudonym_clients[partnership]

    async def own_pseudonyms(self, partnership: str, identifiers: list[tuple[str, str]]) -> list[str]:
        """This partner's pseudonyms in ``partnership`` for (kind, number) identifiers it knows — what it puts
        in ``subjects`` of a request. The identifiers never leave this process."""
        pseudonyms = await self.pseudonym_client(partnership)
        body = {"partnership": partnership,
                "subjects": [{"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number)}
                             for kind, number in identifiers]}
        response = await self._send("POST", "/v1/pseudonyms", json=body)
        encrypted = _decoded(response, lambda r: list(r.json()["pseudonyms"]))
        return [pseudonyms.open(e) for e in encrypted]

    async def enrol(self, partnership: str, subjects: list[tuple[str, str, list[str], list[str]]]) -> list[str]:
        """Enrol subjects held: (kind, number, record types, categories) → own pseudonyms, in order; the
        gateway's hit/no-hit index learns which record types this partner holds on them."""
        pseudonyms = await self.pseudonym_client(partnership)
        body = {"partnership": partnership, "subjects": [
            {"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number), "record_types": types,
             "categories": categories} for kind, number, types, categories in subjects]}
        response = await self._send("POST", "/v1/enrolments", json=body)
        encrypted = _decoded(response, lambda r: list(r.json()["pseudonyms"]))
        return [pseudonyms.open(e) for e in encrypted]

    async def rerun(self, request: ExchangeRequest, decision_id: str, *,
                    idempotency_key: str | None = None) -> ExchangeResult:
        """Re-run ``request`` (exactly as first sent) citing an escalation decision that allowed it; only
        the decision's holder is asked, and only in the decided categories. Errors carry
        ``idempotency_key`` as those of ``exchange`` do."""
        return await self.exchange(request.model_copy(update={"escalation_decision": decision_id}),
                                   idempotency_key=idempotency_key)

    async def escalation_feed(self) -> list[dict[str, Any]]:
        """Cases awaiting this system's organisation; ``awaiting == "rerun"`` items carry the decision id
        (``case["decision"]["id"]``) to pass to ``rerun``."""
        response = await self._send("GET", "/v1/escalations/feed")
        items = _decoded(response, lambda r: r.json())
        return items if isinstance(items, list) else []

    async def object_to(self, exchange_id: str, holder: str, motivation: str) -> dict[str, Any]:
        """Open an escalation case against a denial or narrowing of one target of our exchange."""
        response = await self._send("POST", "/v1/escalations", json={
            "exchange_id": exchange_id, "holder": holder, "motivation": motivation})
        body = _decoded(response, lambda r: r.json())
        return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date, relative to ``now``),
    or None without a usable one."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT
        return None
    return max(0.0, when.timestamp() - now)


def _throttled(response: httpx.Response, now: float) -> GatewayThrottled:
    return GatewayThrottled(429, _problem(response), retry_after=_retry_after(response, now))


def _unless_reached(error: GatewayUnavailable | GatewayThrottled, reached: bool) -> GatewayClientError:
    """A 429 says nothing about an earlier attempt that may have reached the gateway: once one may have,
    the call ends as GatewayUnavailable (resume with the key), never as GatewayThrottled ("not acted on")."""
    if reached and isinstance(error, GatewayThrottled):
        return GatewayUnavailable(429, error.problem, retry_after=error.retry_after)
    return error


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"title": "non-JSON error", "status": response.status_code}
    return body if isinstance(body, dict) else {"detail": str(body)}


def _invalid(response: httpx.Response, detail: str) -> InvalidResponse:
    return InvalidResponse(response.status_code, {"title": "invalid answer from the gateway", "detail": detail,
                                                  "status": response.status_code})


def _answer(response: httpx.Response, now: float) -> dict[str, Any]:
    """The JSON object of a metadata or token answer (200), or the typed error for any other answer."""
    if response.status_code in _RETRY_STATUSES:
        raise GatewayUnavailable(response.status_code, _problem(response), retry_after=_retry_after(response, now))
    if response.status_code == 429:
        raise _throttled(response, now)
    if response.status_code != 200:
        raise GatewayClientError(response.status_code, _problem(response))
    body = _decoded(response, lambda r: r.json())
    if not isinstance(body, dict):
        raise _invalid(response, f"{response.request.url.path} did not answer a JSON object")
    return body


def _unusable(exc: httpx.HTTPError) -> InvalidResponse:
    return InvalidResponse(0, {"title": "invalid answer from the gateway", "detail": f"{type(exc).__name__}: {exc}"})


def _decoded(response: httpx.Response, read: Callable[[httpx.Response], _T]) -> _T:
    """``read(response)``, with an answer it cannot decode (not JSON, fields missing or invalid) raised as
    ``InvalidResponse``."""
    try:
        return read(response)
    except (ValueError, KeyError, TypeError) as exc:
        raise _invalid(response, f"{response.request.url.path}: {type(exc).__name__}: {exc}"[:500]) from exc

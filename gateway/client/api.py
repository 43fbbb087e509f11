"""Typed async client of the gateway's exchange API, for partner systems.

* Tokens: OAuth2 client credentials with ``private_key_jwt`` (RFC 7523): a fresh, single-use signed
  assertion per token request (``kid`` in its header only when the key has one); the access token is
  reused until shortly before it expires (``min(30 s, expires_in / 2)`` before). Concurrent calls on a
  fresh client share one metadata and one token request — and its failure, which each of them handles as
  its own (rather than each asking again in turn under the lock). A 401 to a call (the gateway's signing keys were
  replaced, the token was revoked) drops that token and repeats the call once with a new one — once: a
  second 401 is the caller's ``GatewayClientError``. The authentication check refuses before anything of
  the call is done, so this is safe for every call. The assertion's audience, the token endpoint, is read
  from the metadata only when that is the expected gateway's (RFC 8414 section 3.3: ``issuer`` identical to
  ``issuer=``, else ``base_url``; ``token_endpoint`` on its origin), else ``MetadataMismatch`` before anything
  is signed; ``token_audience=`` names it instead.
* Retries: every exchange carries an ``Idempotency-Key`` (generated if the caller gives none) and every
  retry of it sends the same key, so a retry after a timeout or a 502/503/504 cannot disclose or log twice.
  Transport failures and 502/503/504 answers are retried ``retries`` times, after exponential backoff with
  jitter capped at ``max_delay``, or the answer's ``Retry-After`` (seconds or an HTTP date) where that is
  longer — up to the call's deadline, not ``max_delay`` — but only where repeating is safe: GETs, POSTs with
  an Idempotency-Key, and a POST without one only when it was certainly not sent (connect error, connect or
  pool timeout; not e.g. a read timeout). A request that met a kept-alive connection the gateway had already closed
  (reused, closed or reset before any byte of an answer: ``gateway.client.connections``) is sent again at
  once on another connection, once per call, whatever its method: not counted in ``retries``.
  The metadata and token requests happen inside the same loop and are always safe to repeat.
* Back-pressure: two answers say "not now, come back in Retry-After seconds" rather than "failed", and are
  waited out for at most ``busy_wait`` seconds in total per call (default 120), a bound separate from
  ``retries``: a 429 with ``Retry-After`` (the gateway's rate limit refuses a call before anything of it is
  done, so repeating it is safe for every call), and a 409 with ``Retry-After`` to an exchange (the first
  attempt with that key is still being answered; the gateway holds the key's claim for up to 2 minutes; the
  client gets the first attempt's answer, not a second exchange). A 429 while waiting for a busy first
  attempt is therefore no failure either. A 429 without ``Retry-After`` counts as a failure (``retries``).
  Each wait is as long as asked (``max_delay`` caps the pauses after failures, not these), and one that does
  not fit what is left of ``busy_wait`` is not begun: asking early would meet the same refusal.
  Once spent: ``GatewayThrottled`` (``GatewayUnavailable`` with status 429 when an earlier attempt may have
  reached the gateway) or ``GatewayBusy``, with ``retry_after``. Other 4xx answers and 500 are never retried.
* Deadline: ``deadline`` (seconds, default 180; per call ``deadline=``, None for no bound) bounds a whole
  call — metadata and token requests, attempts, backoff and back-pressure waits, and the calls a call makes
  (``enrol``'s key fetch); ``enrol_filters`` bounds each batch. A wait that would end after it is not begun
  (the error it would have waited out is raised at once), and a request still running when it passes is
  abandoned: ``DeadlineExceeded``, a ``GatewayUnavailable`` (status 0) with every request id of the call
  and, from ``exchange()``/``rerun()``, the ``idempotency_key`` to resume with.
* TLS client certificate: ``client_cert``/``client_key`` are presented to a gateway whose proxy asks for one
  (certificate-bound tokens, RFC 8705: the gateway then gives this system tokens only over that certificate).
* TLS: the gateway's certificate is always verified — against the system's CAs, the ``ca_file`` given, or an
  ``ssl_context`` that must itself verify (one that does not is refused, so verification cannot be switched
  off by accident). Plain ``http://`` is refused unless the gateway is on this machine (a loopback address or
  ``localhost``) or the caller says ``allow_insecure_http=True``: over plain HTTP anyone on the path reads the
  bearer token (valid for up to an hour, good for any call of this system) and the personal data answered. A
  gateway on this machine is reached directly, never through a proxy the environment names (``HTTP_PROXY``).
* Errors: ``GatewayClientError`` (the base of all) with ``status`` and the problem document (RFC 9457)
  the gateway sent (``type``, ``title``, ``detail``). Subclasses: ``GatewayUnavailable`` (no answer —
  connection failure, timeout or the deadline (``DeadlineExceeded``): ``status == 0`` — or 502/503/504
  after the retries), ``GatewayThrottled``, ``GatewayBusy`` and ``InvalidResponse`` (an answer that is not
  what the API promises, e.g. not JSON, or a token answer whose ``token_type`` is not Bearer; ``status`` is its HTTP
  status, 0 when httpx could not read it at all), with its subclass ``UnopenablePseudonym`` (a pseudonym of
  ``own_pseudonyms``/``enrol``'s answer this partner cannot open, by its ``index``) and ``MetadataMismatch``
  (the metadata of another authorisation server), and ``ClientClosed`` (a call after ``aclose()``, or one
  pausing between attempts then: ``status == 0``, nothing more sent; ``ClosedInFlight``, also a
  ``GatewayUnavailable``, when its request was waiting for an answer). Messages carry the
  problem's title or detail only, never an answer's body or the values it failed on, and the ``request_id``:
  every HTTP request carries an ``X-Request-ID`` (the call's id and the request's number), which the gateway
  logs under and echoes; an error names the one of its request.
* Logs (``gateway.client``, standard logging): a warning per repeated attempt, info per back-pressure wait
  and per token renewal after a 401 — route template, status or failure kind, wait, request id; no content —
  and a warning with how many records ``enrol_filters`` left out (no reference, no field).
* Newer gateways: answers are read leniently where the API may grow — fields this version does not know
  are ignored, and an exchange outcome it does not know is kept as an ``Outcome`` whose ``known`` is false
  (treat it as not allowed), a fuzzy discovery's per-subject value as a ``SubjectMatch`` likewise, instead of
  failing the whole answer.
* Resuming: every error ``exchange()`` and ``rerun()`` raise carries ``idempotency_key``, the key the
  attempts were sent with. When it is unclear whether the exchange happened (``GatewayUnavailable``,
  ``GatewayBusy``), call ``exchange(same request, idempotency_key=error.idempotency_key)`` to get the
  first attempt's answer; a new key would be a new exchange, i.e. a second disclosure. A caller that may
  cancel a call itself (rather than setting ``deadline``) should pass its own key, since a cancelled call
  raises no error to carry one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import re
import secrets
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, TypeVar
from urllib.parse import quote

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from gateway.client import deadlines
from gateway.client.connections import RequestProgress
from gateway.client.deadlines import DEFAULT_DEADLINE, CallDeadline, Default
from gateway.client.errors import (
    ClientClosed,
    ClosedInFlight,
    DeadlineExceeded,
    GatewayBusy,
    GatewayClientError,
    GatewayThrottled,
    GatewayUnavailable,
    InvalidResponse,
    MetadataMismatch,
    UnopenablePseudonym,
    copied,
    invalid,
    problem,
    request_id,
    retry_after,
    sent_request_id,
    throttled,
    undecodable,
    unopenable,
    unusable,
)
from gateway.client.escalations import CaseDetail, FeedItem
from gateway.client.fuzzy import (
    MAX_FILTER_BATCH,
    FilterEnrolment,
    FilterEnrolmentAnswer,
    FuzzyDiscoveryRequest,
    FuzzyDiscoveryResult,
    RecordType,
)
from gateway.client.fuzzy_requests import (
    EnrolmentPlan,
    FilterEnrolmentResult,
    FilterRecordToEnrol,
    UnsearchableSubjects,
    enrolment_plan,
    refused_subjects,
)
from gateway.client.models import (
    ANSWER_CONTEXT,
    DiscoveryRequest,
    DiscoveryResult,
    ExchangeRequest,
    ExchangeResult,
)
from gateway.client.pseudonyms import Point, PseudonymClient, PseudonymError, RecipientKey, WrongKey
from gateway.urls import is_loopback_host

__all__ = ["ClientClosed", "ClosedInFlight", "DeadlineExceeded", "Enrolled", "EnrolledSubject", "GatewayBusy",
           "GatewayClient", "GatewayClientError", "GatewayThrottled", "GatewayUnavailable", "InvalidResponse",
           "MetadataMismatch", "UnopenablePseudonym", "UnsearchableSubjects"]


class EnrolledSubject(NamedTuple):
    """A subject to enrol: identifier, the record types and categories held, and what the partner would
    refuse discovery on — a subject it keeps confidential, a minor (under 18 by its own data). The gateway
    answers discovery from its index without asking, so it refuses there for the partner as the partner would.
    A plain ``(kind, number, record types, categories)`` tuple is the same with neither flag."""

    kind: str
    number: str
    record_types: list[str]
    categories: list[str]
    confidential: bool = False
    minor: bool = False

    def __repr__(self) -> str:  # never the number: a repr ends up in debug lines and error trackers' locals
        return (f"EnrolledSubject(kind={self.kind!r}, number=..., record_types={self.record_types!r}, "
                f"categories={self.categories!r}, confidential={self.confidential!r}, minor={self.minor!r})")


class Enrolled(list[str]):
    """What ``enrol`` answers: this partner's own pseudonyms of the subjects sent, in order — a list, as it always
    was — and the gateway's counts of what the batch did to the hit/no-hit index: ``indexed``, the subjects
    indexed (one row per distinct subject with record types; a subject sent twice is one), and ``removed``, the
    subjects withdrawn (sent without record types)."""

    def __init__(self, pseudonyms: Sequence[str], *, indexed: int, removed: int) -> None:
        super().__init__(pseudonyms)
        self.indexed = indexed
        self.removed = removed


class _EnrolmentCounts(BaseModel):
    """The counts of ``POST /v1/enrolments``' answer (its ``pseudonyms`` are read by ``_opened``)."""

    indexed: int = Field(ge=0)
    removed: int = Field(ge=0)


ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_RETRY_STATUSES = {502, 503, 504}
# The only transport failures after which a request certainly did not reach the server (no connection was
# made, or none was free); after any other (e.g. ReadTimeout) it may have been received and acted on.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_MIN_PAUSE = 0.1  # a Retry-After of 0 still pauses: every wait spends some of busy_wait, so waiting ends
_HEADER_VALUE = re.compile(r"[!-~]+")  # visible ASCII: what a header value can carry as it is
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750's b64token: what an Authorization: Bearer carries
_T = TypeVar("_T")
_FEED = TypeAdapter(list[FeedItem])
# The standard library's logging, not structlog: partner systems configure their own. Lines name the route
# (its template: no id a caller passed), the status or the transport failure's kind, the wait and the request
# id — never a body, a problem's text or a header value.
log = logging.getLogger("gateway.client")


class _Sending(TypedDict):
    """What goes with each HTTP request of a call (``_Call.next_request``)."""

    headers: dict[str, str]
    extensions: dict[str, Any]


@dataclass
class _Call:
    """What one call has spent of its bounds so far."""

    end: float | None  # the loop time of its deadline
    what: str = "token"  # method and route template, for log lines
    failures: int = 0  # of ``retries``
    waited: float = 0.0  # of ``busy_wait``
    refreshed: bool = False  # a 401 was answered with a new token (once only)
    reconnected: bool = False  # a request met a kept-alive connection the gateway had closed (once only)
    reached: bool = False  # an attempt may have reached the API's handlers (then a 429 proves nothing)
    ids: str = field(default_factory=lambda: secrets.token_hex(8))  # the call's part of its requests' ids
    sent: int = 0  # HTTP requests made
    request_id: str | None = None  # the X-Request-ID of the last of them
    sent_ids: list[str] = field(default_factory=list)  # all of them (the deadline's, shared by its calls)
    progress: RequestProgress = field(default_factory=RequestProgress)  # what httpcore reported of the last

    @classmethod
    def within_deadline(cls, what: str) -> _Call:
        """A call within the deadline of the call running (``deadlines.within``), if there is one."""
        bound = deadlines.running()
        if bound is None:
            return cls(end=None, what=what)
        return cls(end=bound.end, what=what, sent_ids=bound.request_ids)

    def next_request(self) -> _Sending:
        """The headers and extensions of the call's next HTTP request. The ``X-Request-ID`` header is the
        call's id and the request's number (``3f9c…-2``), so the gateway's operators find one request, or all
        of a call, in their logs; the ``trace`` extension notes the request's progress (``progress``)."""
        self.sent += 1
        self.request_id = f"{self.ids}-{self.sent}"
        self.sent_ids.append(self.request_id)
        self.progress = RequestProgress()
        return {"headers": {"X-Request-ID": self.request_id}, "extensions": {"trace": self.progress}}

    def reconnect(self, failure: httpx.TransportError) -> bool:
        """Whether to send the last request again at once: it met a kept-alive connection the gateway had
        closed (``gateway.client.connections``), and none of the call's requests did before."""
        if self.reconnected or not self.progress.closed_before_answering(failure):
            return False
        self.reconnected = True
        log.info("gateway call %s: %s on a kept-alive connection before any answer; once more on another "
                 "(request %s)", self.what, type(failure).__name__, self.request_id)
        return True


class GatewayClient:
    """One partner system's connection to the gateway: its tokens, its HTTP connections and the keys of its
    pseudonyms, shared by all calls made with it (make one per process and use it from many tasks; see the
    module's docstring for what every call does about tokens, retries, back-pressure and errors). Close it
    with ``async with`` or ``aclose()``: its connections stay open until then."""

    def __init__(self, base_url: str, system_id: str, key: OKPKey | ECKey, *, token_audience: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, retries: int = 2, busy_wait: float = 120.0,
                 backoff: float = 0.5, max_delay: float = 30.0, deadline: float | None = DEFAULT_DEADLINE,
                 ca_file: str | os.PathLike[str] | None = None, ssl_context: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 transport: httpx.AsyncBaseTransport | None = None, allow_insecure_http: bool = False,
                 client_cert: str | os.PathLike[str] | None = None,
                 client_key: str | os.PathLike[str] | None = None, issuer: str | None = None) -> None:
        """``base_url``: the gateway (``https://``; see ``allow_insecure_http``). ``system_id`` and ``key``:
        this system's OAuth client id and the private key (Ed25519 or P-256) whose public half is registered
        for it. ``token_audience``: the token endpoint's URL, if not to be read from the gateway's metadata.
        ``issuer``: the gateway's issuer identifier (its ``WGS_ISSUER``) where that is not ``base_url`` (a
        gateway reached at an internal address): the metadata must name exactly it, and a token endpoint on its
        origin, or no assertion is signed (``MetadataMismatch``); not needed with ``token_audience``.

        ``timeout``: seconds for each phase of each HTTP request (connect, send, each wait for data, a free
        connection), or an ``httpx.Timeout`` to set them apart — e.g. ``httpx.Timeout(60, connect=5)`` to
        fail over fast when the gateway cannot be reached while an exchange that asks several holders takes
        its time. It bounds no request as a whole (a slow answer that keeps sending is not cut off):
        ``deadline`` (seconds, default 180; None: no bound) bounds a whole call, and every call takes its own
        ``deadline=`` to override it. ``retries``, ``backoff`` and ``max_delay``:
        failures repeated (where safe) and the pauses between; ``busy_wait``: seconds of back-pressure (429,
        busy 409) waited out per call. ``ca_file``/``ssl_context``: a private CA. ``client_cert`` (PEM, the
        chain after it if any) and ``client_key`` (PEM; left out when the key is in ``client_cert``): this
        system's TLS client certificate, for a gateway whose proxy asks for one (a client registered
        certificate-bound gets tokens only over it, RFC 8705); with ``ssl_context``, load it into the context
        instead. ``clock``, ``sleep`` and ``transport`` are for tests."""
        self._base = _checked_base_url(base_url, allow_insecure_http)
        self.system_id = system_id
        self._key = key
        self._alg = _signing_algorithm(key)
        self._audience = token_audience
        self._issuer = _checked_issuer(issuer) if issuer is not None else self._base
        self._retries = retries
        self._busy_wait = busy_wait
        self._backoff = backoff
        self._max_delay = max_delay
        self._deadline = deadlines.checked(deadline)
        self._clock = clock
        self._sleep = sleep
        tls = _with_client_certificate(_verification(ca_file, ssl_context), client_cert, client_key,
                                       ssl_context is not None, httpx.URL(self._base).scheme)
        self._http = httpx.AsyncClient(base_url=self._base, timeout=timeout, transport=transport, verify=tls,
                                       mounts=_direct_to_this_machine(httpx.URL(self._base).host))
        self._closed = asyncio.Event()  # set by aclose(): ends the pauses between attempts
        self._token: tuple[str, float] | None = None  # (access token, renew at)
        self._token_lock = asyncio.Lock()
        self._token_fetches = 0  # token fetches ended (the lock's waiters compare it: see _current_token)
        self._token_failure: Exception | None = None  # how the last one failed, None if it did not
        self._pseudonym_clients: dict[str, PseudonymClient] = {}
        self._pseudonym_locks: dict[str, asyncio.Lock] = {}  # one key fetch per partnership, as for tokens

    def __repr__(self) -> str:  # never the key (nor the token): reprs end up in logs and tracebacks
        return f"GatewayClient({self._base!r}, system_id={self.system_id!r})"

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client's connections (``async with`` does this on leaving). The client cannot be used
        after it. Calls still running end with ``ClientClosed``: ``ClosedInFlight`` for one whose request was
        waiting for its answer, and one pausing between attempts at once, without its next attempt."""
        self._closed.set()
        await self._http.aclose()

    def _open(self) -> httpx.AsyncClient:
        """The HTTP client, or ``ClientClosed`` once it is closed. Asked before every request (not only when a
        call starts): a call that was pausing between attempts when the client was closed meets it at its next
        attempt, and httpx's own error there is a bare RuntimeError, which no caller of this client expects."""
        if self._http.is_closed:
            raise ClientClosed
        return self._http

    async def _request(self, call: _Call, method: str, path: str, *, sending: _Sending | None = None,
                       **arguments: Any) -> httpx.Response:
        """One HTTP request of ``call`` (``sending``: its request id and trace, made here unless the caller made
        them first to add headers). ``ClosedInFlight`` when the client was closed (by another task) while it
        was in flight, whatever httpx raised then: that failure is no network's, and retrying it — after a pause,
        with the same Idempotency-Key — would only meet the closed client, or be begun on it."""
        http = self._open()
        sent = sending or call.next_request()
        headers = arguments.pop("headers", {}) | sent["headers"]
        try:
            return await http.request(method, path, headers=headers, extensions=sent["extensions"], **arguments)
        except Exception as exc:
            if http.is_closed:
                raise ClosedInFlight(request_id=call.request_id) from exc
            raise

    # -- tokens -------------------------------------------------------------------------------------
    async def token(self, *, deadline: CallDeadline = Default.CLIENT) -> str:
        """The access token: the cached one, or a new one (with the retries, back-pressure and deadline)."""
        return await self._bounded(deadline, lambda: self._token_attempts(_Call.within_deadline("token")))

    async def _token_attempts(self, call: _Call) -> str:
        while True:
            try:
                return await self._current_token(call)
            except httpx.TransportError as exc:
                if not call.reconnect(exc):
                    await self._after_failure(call, exc, safe=True)
            except GatewayThrottled as exc:
                await self._after_throttling(call, exc)
            except GatewayUnavailable as exc:
                await self._after_failure(call, exc, safe=True)
            except httpx.HTTPError as exc:
                raise unusable(exc) from exc

    async def _current_token(self, call: _Call) -> str:
        """The cached token, or one fetched under a lock so that concurrent calls share one request. Raises
        httpx.TransportError as is (the caller retries it) and typed errors for answers.

        Why a failed fetch is shared too: the calls that waited for it would otherwise each fetch again, one
        after the other under the lock — with the token endpoint hanging, the n-th waiter would wait n
        timeouts before its own first try, and a recovering gateway would get a queue of token requests.
        Each waiter gets the fetch's failure instead and handles it as its own (backoff with jitter, its own
        bounds), so the next fetch is again one for all the calls that come meanwhile."""
        if self._token and float(self._clock()) < self._token[1]:
            return self._token[0]
        fetches = self._token_fetches
        async with self._token_lock:
            self._open()  # closed while waiting for the lock: no fetch, and not the fetch's ClosedInFlight either
            now = float(self._clock())
            if self._token and now < self._token[1]:
                return self._token[0]
            failure = self._token_failure
            if self._token_fetches != fetches and failure is not None:
                call.progress = RequestProgress()  # the failure is of another call's request, not its last
                raise copied(failure) if isinstance(failure, GatewayClientError) else failure
            self._token_failure = None
            try:
                return await self._fetch_token(call, now)
            except Exception as exc:
                self._token_failure = exc
                raise
            finally:  # also when cancelled: then no failure is shared, and the next waiter fetches itself
                self._token_fetches += 1

    async def _fetch_token(self, call: _Call, now: float) -> str:
        """A new access token from the token endpoint (under the lock), cached until shortly before it expires."""
        claims = {"iss": self.system_id, "sub": self.system_id, "aud": await self._audience_url(call),
                  "iat": int(now), "exp": int(now) + 60, "jti": str(uuid.uuid4())}
        header = {"alg": self._alg} | ({"kid": self._key.kid} if self._key.kid else {})
        assertion = jwt.encode(header, claims, self._key, algorithms=[self._alg])
        response = await self._request(call, "POST", "/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion})
        token, expires_in = _bearer_token(response, _answer(response, float(self._clock())))
        self._token = (token, now + expires_in - min(30.0, expires_in / 2))
        return token

    def _forget(self, token: str) -> None:
        """Drop ``token`` if it is still the cached one (a concurrent call may have replaced it already: that
        new token is kept, so many calls refused at once still share one new token)."""
        if self._token is not None and self._token[0] == token:
            self._token = None

    async def _audience_url(self, call: _Call) -> str:
        """The token endpoint's URL, the audience of the client assertion: given, or from the gateway's
        authorization server metadata (RFC 8414), fetched until one passes ``_metadata_endpoint``, then kept.

        For a gateway under a path, a 404 at RFC 8414's address is asked again at the address the client used
        before (the well-known path appended to ``base_url``): a proxy that forwards only the gateway's path
        prefix does not pass the host-root request on. Safe, since the answer must still name the issuer."""
        if self._audience is None:
            address = metadata_url(self._base)
            response = await self._request(call, "GET", address)
            fallback = self._base.rstrip("/") + METADATA_SUFFIX
            if response.status_code == 404 and fallback != address:
                response = await self._request(call, "GET", fallback)
            self._audience = _metadata_endpoint(response, _answer(response, float(self._clock())), self._issuer)
        return self._audience

    # -- retries ------------------------------------------------------------------------------------
    async def _bounded(self, deadline: CallDeadline, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()`` within ``deadline`` (the client's unless the call gave its own), abandoned with
        ``DeadlineExceeded`` when it passes; inside another call, within that call's deadline."""
        return await deadlines.within(self._deadline if deadline is Default.CLIENT else deadline, call)

    def _delay(self, failures: int, retry_after: float | None) -> float:
        """Before retry number ``failures`` (1, 2, ...): exponential backoff with jitter, at most ``max_delay``
        — or the answer's Retry-After where that is longer, whatever ``max_delay`` says: a 503 that names when
        the gateway will be back is asked again then, not earlier (which would spend the retries on answers
        certain to be the same). The call's deadline bounds it: a pause that would end after it is not begun
        (``_pause`` raises the error at once)."""
        backoff = self._backoff * 2.0 ** (failures - 1) * random.uniform(0.5, 1.0)
        return max(min(backoff, self._max_delay), retry_after or 0.0)

    async def _pause(self, call: _Call, seconds: float, error: GatewayClientError, *, failure: bool) -> None:
        """Sleep before the next attempt; when the deadline would pass meanwhile, raise ``error`` now.

        Logged (a ``failure`` as a warning, back-pressure as info): the caller sees only the call's end, and a
        gateway that needs retries to answer is something a partner's operators should see before it fails."""
        if call.end is not None and asyncio.get_running_loop().time() + seconds > call.end:
            raise error
        why = str(error.status) if error.status else type(error.__cause__ or error).__name__
        if failure:
            log.warning("gateway call %s: %s; attempt %d of %d in %.1f s (request %s)", call.what, why,
                        call.failures + 1, self._retries + 1, seconds, error.request_id)
        else:
            log.info("gateway call %s: %s; asked to wait, again in %.1f s (request %s)", call.what, why, seconds,
                     error.request_id)
        await self._sleep_unless_closed(seconds, error)

    async def _sleep_unless_closed(self, seconds: float, error: GatewayClientError) -> None:
        """``sleep(seconds)``, or ``ClientClosed`` (``error``, the failure waited out, as its cause) as soon as
        the client is closed: the attempt the pause is for would not be made, and the caller — whose program
        closed the client, perhaps to stop — would otherwise wait up to ``max_delay``, or a whole Retry-After,
        to learn so."""
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleeping, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            closing.cancel()
        if self._closed.is_set():
            raise ClientClosed from error
        await sleeping

    async def _after_failure(self, call: _Call, failure: httpx.TransportError | GatewayClientError, *,
                             safe: bool) -> None:
        """Waits before the next attempt, or raises the typed error when the call may not (``safe`` false)
        or can no longer be repeated."""
        error = failure if isinstance(failure, GatewayClientError) else _no_answer(failure)
        if (not safe or isinstance(failure, ClientClosed) or call.failures >= self._retries
                or _certificate_refused(failure)):
            raise error
        call.failures += 1
        await self._pause(call, self._delay(call.failures, error.retry_after), error, failure=True)

    async def _after_throttling(self, call: _Call, refusal: GatewayThrottled) -> None:
        """A 429: back-pressure, waited out as it says (without Retry-After, a failure like any other)."""
        error = _unless_reached(refusal, call.reached)
        if refusal.retry_after is None:
            await self._after_failure(call, error, safe=True)
        else:
            await self._wait_as_asked(call, refusal.retry_after, error)

    async def _wait_as_asked(self, call: _Call, seconds: float, error: GatewayClientError) -> None:
        """Waits ``seconds`` (the answer's Retry-After) out of what is left of ``busy_wait``, or raises
        ``error`` at once when that is not enough.

        Never a shorter wait: asking again before the time the gateway named only meets the same refusal — the
        daily pseudonym quota names the next midnight, hours away, and cutting that into ``max_delay`` pieces
        (which bounds the pauses after failures, not these) spent ``busy_wait`` on refusals certain to come.
        The error carries ``retry_after`` for the caller to come back then."""
        pause = max(seconds, _MIN_PAUSE)
        if pause > self._busy_wait - call.waited:
            raise error
        call.waited += pause
        await self._pause(call, pause, error, failure=False)

    async def _send(self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None,
                    params: dict[str, str] | None = None, route: str | None = None,
                    deadline: CallDeadline = Default.CLIENT) -> httpx.Response:
        """One request of a call: its attempts within the deadline. ``route`` is ``path``'s template where
        ``path`` holds a value the caller gave (an id), for log lines."""
        async def attempts() -> httpx.Response:
            return await self._attempts(_Call.within_deadline(f"{method} {route or path}"), method, path,
                                        json=json, idempotency_key=idempotency_key, params=params)
        return await self._bounded(deadline, attempts)

    async def _attempts(self, call: _Call, method: str, path: str, *, json: Any, idempotency_key: str | None,
                        params: dict[str, str] | None) -> httpx.Response:
        repeatable = method == "GET" or bool(idempotency_key)
        while True:
            sending, token = False, ""
            try:
                token = await self._current_token(call)
                sent = call.next_request()
                headers = {"Authorization": f"Bearer {token}"} | sent["headers"]
                if idempotency_key:
                    headers["Idempotency-Key"] = idempotency_key
                sending = True
                response = await self._request(call, method, path, json=json, headers=headers, params=params,
                                               sending=sent)
            except httpx.TransportError as exc:
                call.reached = call.reached or (sending and not isinstance(exc, _NOT_SENT))
                if call.reconnect(exc):  # the gateway never saw it, whether or not the call has a key
                    continue
                # Safe: nothing of this call was sent yet (token phase, or connect failure), or it may repeat.
                safe = not sending or repeatable or isinstance(exc, _NOT_SENT)
                await self._after_failure(call, exc, safe=safe)
                continue
            except GatewayThrottled as exc:  # from the metadata or token endpoint
                await self._after_throttling(call, exc)
                continue
            except GatewayUnavailable as exc:  # from the metadata or token endpoint
                await self._after_failure(call, exc, safe=True)
                continue
            except httpx.HTTPError as exc:  # an answer httpx could not read (decoding, redirects): not retried
                raise unusable(exc) from exc
            now = float(self._clock())
            if response.status_code == 401 and not call.refreshed:
                # The token was refused before anything was done with the call: one new token, one more try.
                call.refreshed = True
                log.info("gateway call %s: 401, the token was refused; once more with a new one (request %s)",
                         call.what, request_id(response))
                self._forget(token)
                continue
            if response.status_code == 429:  # refused before anything was done with it: always safe to repeat
                await self._after_throttling(call, throttled(response, now))
                continue
            call.reached = True
            if response.status_code in _RETRY_STATUSES:
                await self._after_failure(call, GatewayUnavailable(
                    response.status_code, problem(response), retry_after=retry_after(response, now),
                    request_id=request_id(response)), safe=repeatable)
                continue
            busy = retry_after(response, now) if response.status_code == 409 else None
            if busy is not None and idempotency_key:
                # The first attempt (which timed out here) is still being answered: its answer, not a new
                # exchange, is what the retry will get once it is done.
                await self._wait_as_asked(call, busy, GatewayBusy(409, problem(response), retry_after=busy,
                                                                   request_id=request_id(response)))
                continue
            if response.status_code >= 400:
                raise GatewayClientError(response.status_code, problem(response), request_id=request_id(response))
            _refuse_redirect(response)
            return response

    # -- calls --------------------------------------------------------------------------------------
    async def exchange(self, request: ExchangeRequest, *, idempotency_key: str | None = None,
                       deadline: CallDeadline = Default.CLIENT) -> ExchangeResult:
        """Ask the holders; with ``idempotency_key`` of an earlier attempt (e.g. from an error's
        ``idempotency_key``), get that attempt's answer instead of a new exchange. ``deadline``: seconds for
        the whole call (None: no bound), instead of the client's."""
        if idempotency_key and not _HEADER_VALUE.fullmatch(idempotency_key):
            # Refused here: a line break or a non-ASCII character cannot be sent at all — it passed for "no
            # answer from the gateway" after the retries, an error that tells the caller to resume with this
            # very key — and a space or control character the gateway refuses anyway. Not quoted: the caller
            # chose it.
            raise ValueError("idempotency_key must be visible ASCII without spaces (the gateway's format: "
                             "[A-Za-z0-9._:-]{8,128})")
        key = idempotency_key or f"{self.system_id}:{uuid.uuid4()}"
        try:
            response = await self._send("POST", "/v1/exchanges", json=request.model_dump(mode="json"),
                                        idempotency_key=key, deadline=deadline)
            result = _decoded(response, lambda r: ExchangeResult.model_validate_json(r.content,
                                                                                     context=ANSWER_CONTEXT))
        except GatewayClientError as exc:
            exc.idempotency_key = key
            raise
        result._replayed = response.headers.get("idempotent-replayed", "").strip().lower() == "true"
        return result

    async def discovery(self, request: DiscoveryRequest, *,
                        deadline: CallDeadline = Default.CLIENT) -> DiscoveryResult:
        """Hit/no-hit per holder for ``request``'s subjects (no data). Not repeated after an attempt that may
        have reached the gateway: a discovery is logged, and has no Idempotency-Key (one that met a kept-alive
        connection the gateway had closed is: see ``gateway.client.connections``)."""
        response = await self._send("POST", "/v1/discovery", json=request.model_dump(mode="json"),
                                    deadline=deadline)
        return _decoded(response, lambda r: DiscoveryResult.model_validate_json(r.content, context=ANSWER_CONTEXT))

    async def fuzzy_discovery(self, request: FuzzyDiscoveryRequest, *,
                              deadline: CallDeadline = Default.CLIENT) -> FuzzyDiscoveryResult:
        """Hit/no-hit per holder and subject for subjects without a shared number (build ``request`` with
        ``gateway.client.fuzzy_requests.fuzzy_request``, which encodes what you know of them here).
        ``UnsearchableSubjects``, before anything is sent, for subjects whose filter the gateway would refuse
        (very long names): a filter that dense would match almost anyone."""
        refused = refused_subjects(request)
        if refused:
            raise UnsearchableSubjects(refused)
        response = await self._send("POST", "/v1/discovery/fuzzy", json=request.model_dump(mode="json"),
                                    deadline=deadline)
        return _decoded(response, lambda r: FuzzyDiscoveryResult.model_validate_json(r.content,
                                                                                     context=ANSWER_CONTEXT))

    async def enrol_filters(self, partnership: str, record_type: RecordType, secret: bytes,
                            records: Sequence[FilterRecordToEnrol], *, remove: Sequence[str] = (),
                            replace: bool = False, confidential_reason: str | None = None,
                            blocking: bool = True,
                            deadline: CallDeadline = Default.CLIENT) -> FilterEnrolmentResult:
        """Encode ``records`` with the partnership's CLK ``secret`` (here: the fields never leave this process)
        and enrol their filters under their references, in batches; ``replace`` withdraws what this partner
        enrolled of ``record_type`` before, ``remove`` withdraws references. Each batch is stored whole or
        not at all; a failure raises with the earlier batches stored (sending them again is harmless) — except
        for ``replace``: a replacement larger than one batch takes effect whole with its last batch
        (``enrolment_plan``), so a failure raises with the earlier set still enrolled and answering (call
        again to replace it; the batches kept aside are abandoned and removed by the gateway).
        ``deadline`` bounds each batch, not the whole enrolment: how long that takes grows with the records,
        and a batch is what is stored or not. Every batch is checked as the gateway checks it before the first
        is sent (``ValueError``): a record the gateway would refuse enrols nothing, not the batches before it.

        Except for one refusal, which is a property of real data rather than a mistake: a record whose filter
        the gateway would refuse as implausible (very long names encode too densely: such a filter would match
        almost anyone, as a probe would) is left out, by the gateway's own rule, and the others are enrolled —
        the gateway would refuse the whole batch for it. The result's ``left_out`` lists each (reference and
        reason), and one warning logs how many (no reference, no field). Those subjects lose fuzzy matching
        only: exact discovery by pseudonym (``enrol``) finds them as before."""
        stored = removed = 0
        enrolled: int | None = None
        plan = await asyncio.to_thread(_checked_plan, partnership, record_type, secret, records, remove=remove,
                                       replace=replace, confidential_reason=confidential_reason, blocking=blocking)
        if plan.left_out:
            log.warning("enrol_filters: %d of %d record(s) left out, their filters being implausible to the "
                        "gateway (very long names); the result's left_out names them", len(plan.left_out),
                        len(records))
        for body in plan.bodies:
            response = await self._send("POST", "/v1/enrolments/filters", json=body, deadline=deadline)
            answer = _decoded(response, lambda r: FilterEnrolmentAnswer.model_validate_json(r.content))
            stored, removed, enrolled = stored + answer.stored, removed + answer.removed, answer.enrolled
        return FilterEnrolmentResult(record_type=record_type, stored=stored, removed=removed, enrolled=enrolled,
                                     left_out=plan.left_out)

    async def get_exchange(self, exchange_id: str, *,
                           deadline: CallDeadline = Default.CLIENT) -> ExchangeResult:
        """The outcome of this system's exchange ``exchange_id`` again (without the records)."""
        response = await self._send("GET", f"/v1/exchanges/{_segment(exchange_id)}",
                                    route="/v1/exchanges/{exchange_id}", deadline=deadline)
        return _decoded(response, lambda r: ExchangeResult.model_validate_json(r.content, context=ANSWER_CONTEXT))

    # -- pseudonyms ---------------------------------------------------------------------------------
    async def pseudonym_client(self, partnership: str, *,
                               deadline: CallDeadline = Default.CLIENT) -> PseudonymClient:
        """Makes polymorphic pseudonyms under the gateway's key and opens this partner's own pseudonyms in
        ``partnership`` (the recipient key is fetched once and kept in memory only). Calls made at the same
        time on a fresh client (a partner enrolling in many tasks at start) share one fetch."""
        return await self._bounded(deadline, lambda: self._pseudonym_keys(partnership))

    async def _pseudonym_keys(self, partnership: str) -> PseudonymClient:
        keys = self._pseudonym_clients.get(partnership)
        if keys is not None:
            return keys
        async with self._pseudonym_locks.setdefault(partnership, asyncio.Lock()):
            keys = self._pseudonym_clients.get(partnership)
            if keys is None:
                response = await self._send("GET", "/v1/pseudonyms/key")
                key = _decoded(response, lambda r: Point.decode(r.json()["public_key"]))
                response = await self._send("GET", "/v1/pseudonyms/recipient-key",
                                            params={"partnership": partnership})
                recipient = _decoded(response, lambda r: RecipientKey.decode(r.json()["recipient_key"]))
                keys = self._pseudonym_clients[partnership] = PseudonymClient(key, recipient_key=recipient)
            return keys

    async def own_pseudonyms(self, partnership: str, identifiers: list[tuple[str, str]], *,
                             deadline: CallDeadline = Default.CLIENT) -> list[str]:
        """This partner's pseudonyms in ``partnership`` for (kind, number) identifiers it knows — what it puts
        in ``subjects`` of a request. The identifiers never leave this process."""
        def body(pseudonyms: PseudonymClient) -> dict[str, Any]:
            return {"partnership": partnership,
                    "subjects": [{"type": kind, "polymorphic": pseudonyms.polymorphic(kind, number)}
                                 for kind, number in identifiers]}
        opened, _ = await self._bounded(deadline, lambda: self._pseudonyms_call(partnership, "/v1/pseudonyms", body,
                                                                               len(identifiers)))
        return opened

    async def enrol(self, partnership: str,
                    subjects: Sequence[EnrolledSubject | tuple[str, str, list[str], list[str]]], *,
                    confidential_reason: str | None = None,
                    deadline: CallDeadline = Default.CLIENT) -> Enrolled:
        """Enrol subjects held (``EnrolledSubject``s, or (kind, number, record types, categories)) → own
        pseudonyms, in order (an ``Enrolled``: a list, with the gateway's ``indexed`` and ``removed`` counts);
        the gateway's hit/no-hit index learns which record types this partner holds on them, and which of them
        it keeps confidential (refusing with the code ``confidential_reason``) or knows to be minors. A subject
        sent without record types is withdrawn from the index."""
        items = [EnrolledSubject(*subject) for subject in subjects]

        def body(pseudonyms: PseudonymClient) -> dict[str, Any]:
            sent: dict[str, Any] = {"partnership": partnership, "subjects": [
                {"type": s.kind, "polymorphic": pseudonyms.polymorphic(s.kind, s.number),
                 "record_types": s.record_types, "categories": s.categories, "confidential": s.confidential,
                 "minor": s.minor} for s in items]}
            if confidential_reason is not None:
                sent["confidential_reason"] = confidential_reason
            return sent
        opened, response = await self._bounded(
            deadline, lambda: self._pseudonyms_call(partnership, "/v1/enrolments", body, len(items)))
        counts = _decoded(response, lambda r: _EnrolmentCounts.model_validate_json(r.content))
        return Enrolled(opened, indexed=counts.indexed, removed=counts.removed)

    async def _pseudonyms_call(self, partnership: str, path: str,
                               body: Callable[[PseudonymClient], dict[str, Any]], sent: int
                               ) -> tuple[list[str], httpx.Response]:
        """POST ``body`` (made with the partnership's keys) to ``path``; the answer's pseudonyms opened, and the
        answer.

        Why the second look at the keys: the keys are fetched once and kept, and the gateway rotates its own
        (``wgs-gateway pseudonyms rotate``) while partner processes keep running. After a rotation the gateway
        still accepts the old public key but answers for the new recipient key; once the old version is
        retired it refuses the old public key (422, ``pseudonym-key-unknown``). Either way this client fetches the
        keys again, once, and only when they did change: it opens the same answer with the new recipient key
        (nothing is sent twice), or sends the refused call again under the new public key (a refused call made
        and stored nothing, and enrolling again replaces). Anything else is raised as it was — another 422 (a
        category the register does not know, a field refused) says nothing about the keys, and looking at them
        for it cost two requests for nothing."""
        pseudonyms = await self.pseudonym_client(partnership)
        try:
            response = await self._send("POST", path, json=body(pseudonyms))
        except GatewayClientError as exc:
            if not _about_keys(exc) or (fresh := await self._changed_keys(partnership, pseudonyms, exc)) is None:
                raise
            pseudonyms = fresh
            response = await self._send("POST", path, json=body(pseudonyms))
        try:
            return self._opened(response, partnership, pseudonyms, sent), response
        except UnopenablePseudonym as exc:
            wrong_key = isinstance(exc.__cause__, WrongKey)
            if not wrong_key or (fresh := await self._changed_keys(partnership, pseudonyms, exc)) is None:
                raise
            return self._opened(response, partnership, fresh, sent), response

    async def _changed_keys(self, partnership: str, used: PseudonymClient,
                            failure: GatewayClientError) -> PseudonymClient | None:
        """The partnership's keys fetched again, or None when the gateway's public key is the one ``used``.

        When the fetch itself fails, ``failure`` (what made the client look) is raised, with the fetch's error
        as its context: the look is the client's own idea, and its 503 or 429 in the caller's hands would say
        "not known whether it happened, try again" about a call the gateway refused (422: nothing stored) or
        answered (a pseudonym this partner cannot open)."""
        self._pseudonym_clients.pop(partnership, None)
        try:
            fresh = await self.pseudonym_client(partnership)
        except GatewayClientError:
            raise failure  # noqa: B904 -- the look's failure stays its context; failure keeps its own cause
        return None if fresh.gateway_public_key == used.gateway_public_key else fresh

    def _opened(self, response: httpx.Response, partnership: str, pseudonyms: PseudonymClient,
                sent: int) -> list[str]:
        """The answer's ``pseudonyms`` (one per subject sent, in order), opened with the recipient key.

        One this partner cannot open is the client's ``UnopenablePseudonym`` (an ``InvalidResponse``), not
        the pseudonym layer's ``WrongKey``/``InvalidPseudonym``, which a caller of the client does not
        expect. On ``WrongKey`` the keys of ``partnership`` are forgotten: the gateway's may have changed
        (a new key version), and ``_pseudonyms_call`` fetches them again to see."""
        encrypted = _decoded(response, lambda r: r.json()["pseudonyms"])
        if not isinstance(encrypted, list) or len(encrypted) != sent:
            raise invalid(response, f"{response.request.url.path}: not a list of {sent} pseudonym(s), one per "
                                    "subject sent")
        opened = []
        for index, value in enumerate(encrypted):
            try:
                opened.append(pseudonyms.open(value))
            except PseudonymError as exc:
                wrong_key = isinstance(exc, WrongKey)
                if wrong_key:
                    self._pseudonym_clients.pop(partnership, None)
                raise unopenable(response, index, wrong_key) from exc
        return opened

    async def rerun(self, request: ExchangeRequest, decision_id: str, *, idempotency_key: str | None = None,
                    deadline: CallDeadline = Default.CLIENT) -> ExchangeResult:
        """Re-run ``request`` (exactly as first sent) citing an escalation decision that allowed it; only
        the decision's holder is asked, and only in the decided categories. Errors carry
        ``idempotency_key`` as those of ``exchange`` do."""
        return await self.exchange(request.model_copy(update={"escalation_decision": decision_id}),
                                   idempotency_key=idempotency_key, deadline=deadline)

    async def escalation_feed(self, *, deadline: CallDeadline = Default.CLIENT) -> list[FeedItem]:
        """Cases awaiting this system's organisation, most urgent first; an item ``awaiting == "rerun"``
        carries the decision to pass to ``rerun`` (``item.case.decision_id``). An answer that is not a list of
        feed items is an ``InvalidResponse``: an empty feed in its place would hide every case waiting."""
        response = await self._send("GET", "/v1/escalations/feed", deadline=deadline)
        return _decoded(response, lambda r: _FEED.validate_json(r.content, context=ANSWER_CONTEXT))

    async def object_to(self, exchange_id: str, holder: str, motivation: str, *,
                        categories: list[str] | None = None,
                        deadline: CallDeadline = Default.CLIENT) -> CaseDetail:
        """Open an escalation case against a denial or narrowing of one target of our exchange; the case
        opened (its ``id`` and ``version`` name it in later steps). ``categories``: more categories the
        objection is about, beside those the outcome permitted or removed (which it is always about); each must
        be one the holder supplies for the purpose."""
        body: dict[str, Any] = {"exchange_id": exchange_id, "holder": holder, "motivation": motivation}
        if categories is not None:
            body["categories"] = categories
        response = await self._send("POST", "/v1/escalations", json=body, deadline=deadline)
        return _case(response)

    async def escalation(self, case_id: str, *, deadline: CallDeadline = Default.CLIENT) -> CaseDetail:
        """One case this system's organisation may see, as it is now: its state, tier, deadline, history
        and comments (the feed shows only the cases awaiting us)."""
        return _case(await self._send("GET", f"/v1/escalations/{_segment(case_id)}", route="/v1/escalations/{case_id}",
                                      deadline=deadline))

    async def withdraw_escalation(self, case_id: str, expected_version: int, motivation: str, *,
                                  deadline: CallDeadline = Default.CLIENT) -> CaseDetail:
        """Withdraw a case our organisation opened (an objection no longer needed). ``expected_version`` is
        the case's ``version`` as last seen: a case that moved on meanwhile is a 409, not withdrawn unseen."""
        return _case(await self._send("POST", f"/v1/escalations/{_segment(case_id)}/withdraw", json={
            "expected_version": expected_version, "motivation": motivation},
            route="/v1/escalations/{case_id}/withdraw", deadline=deadline))


def _signing_algorithm(key: OKPKey | ECKey) -> str:
    """The JOSE algorithm this system's client assertions are signed with, for ``key``: refused when the client
    is made (a ``ValueError`` naming no key material) unless it is the private half of an Ed25519 or P-256 key.
    Why here: the public half (what the operator registers, easily picked up instead), a key-agreement curve or
    another EC curve failed only at the first call, as the JOSE library's own error — no
    ``GatewayClientError``, and shared by every call waiting for the token — after the partner system had
    started and taken work."""
    wanted = {OKPKey: ("Ed25519", "Ed25519"), ECKey: ("P-256", "ES256")}.get(type(key))
    if wanted is None or key.curve_name != wanted[0] or not key.is_private:
        raise ValueError("key must be the private half of an Ed25519 or P-256 key (its public half is what the "
                         "gateway's operator registers for this system)")
    return wanted[1]


def _checked_plan(partnership: str, record_type: RecordType, secret: bytes, records: Sequence[FilterRecordToEnrol], *,
                  remove: Sequence[str], replace: bool, confidential_reason: str | None,
                  blocking: bool) -> EnrolmentPlan:
    """``enrolment_plan`` with every batch checked (``_checked_batches``). Run on a worker thread by
    ``enrol_filters``: both take about 50 µs a record, seconds for a partner's whole file, and on the event loop
    they held up every other call of the process (one client is shared by all its tasks), whose timeouts and
    deadlines ran out meanwhile."""
    plan = enrolment_plan(partnership, record_type, secret, records, remove=remove, replace=replace,
                          confidential_reason=confidential_reason, blocking=blocking)
    _checked_batches(plan.bodies)
    return plan


def _checked_batches(bodies: list[dict[str, Any]]) -> None:
    """Every batch as the gateway reads it (``FilterEnrolment``), before the first is sent: a batch is stored whole
    or not at all, so a record the gateway refuses in a later batch would otherwise fail the call half-way, the
    earlier batches enrolled (bad input, partial write). A ``ValueError`` naming the batch and the field, never a
    value (the model hides its input)."""
    for number, body in enumerate(bodies, start=1):
        try:
            FilterEnrolment.model_validate(body)
        except ValidationError as exc:
            raise ValueError(f"batch {number} of {len(bodies)} (its records start at record "
                             f"{(number - 1) * MAX_FILTER_BATCH}): {exc}") from None


def _verification(ca_file: str | os.PathLike[str] | None, context: ssl.SSLContext | None) -> ssl.SSLContext | bool:
    """What httpx verifies the gateway's certificate with. Never nothing: a context that does not check the
    certificate and the host name is refused rather than used."""
    if context is not None:
        if ca_file is not None:
            raise ValueError("give ca_file or ssl_context, not both")
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            raise ValueError("the gateway's certificate must be verified: ssl_context needs "
                             "verify_mode CERT_REQUIRED and check_hostname")
        return context
    if ca_file is not None:
        return ssl.create_default_context(cafile=os.fspath(ca_file))
    return True


def _with_client_certificate(verify: ssl.SSLContext | bool, certificate: str | os.PathLike[str] | None,
                             key: str | os.PathLike[str] | None, context_given: bool, scheme: str
                             ) -> ssl.SSLContext | bool:
    """``verify`` with this system's client certificate loaded, when one is given. Refused at construction
    rather than left unused: a key without a certificate, a certificate over plain ``http://`` (no TLS to
    present it in) and one next to a caller's ``ssl_context`` (whose certificate is the caller's to load)."""
    if certificate is None:
        if key is not None:
            raise ValueError("client_key was given without client_cert")
        return verify
    if context_given:
        raise ValueError("give client_cert or ssl_context, not both: load the certificate into the context "
                         "(ssl_context.load_cert_chain)")
    if scheme != "https":
        raise ValueError("a client certificate is presented over https:// only")
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context()
    try:
        context.load_cert_chain(os.fspath(certificate), os.fspath(key) if key is not None else None)
    except (OSError, ssl.SSLError) as exc:  # the message names the file, never its content
        raise ValueError(f"the client certificate or its key could not be loaded ({type(exc).__name__}: "
                         f"{getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or 'unreadable'})"
                         ) from exc
    return context


def _checked_issuer(issuer: str) -> str:
    """The ``issuer=`` given, without a trailing slash (the gateway names its issuer without one): an
    ``http(s)://`` URL with a host and no query or fragment (RFC 8414 section 2), refused at construction."""
    url = httpx.URL(issuer)
    if url.scheme not in {"http", "https"} or not url.host or url.query or url.fragment:
        raise ValueError("issuer must be the gateway's issuer identifier: an https:// URL without query or fragment")
    return issuer.rstrip("/")


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


METADATA_SUFFIX = "/.well-known/oauth-authorization-server"


def metadata_url(base_url: str) -> str:
    """Where the authorization server metadata of the gateway at ``base_url`` is, by RFC 8414 section 3.1: the
    well-known path between the host and the path component, any trailing ``/`` of which is dropped first
    (``https://gw.example/wgs`` → ``https://gw.example/.well-known/oauth-authorization-server/wgs``); without a
    path component, the well-known path on the host (as before). Why not appended to ``base_url``, as the
    client did: that is OpenID Connect Discovery's rule, not RFC 8414's, and a gateway published under a path
    serves its metadata where RFC 8414 puts it (``gateway.auth.endpoints``)."""
    url = httpx.URL(base_url)
    path = url.path.rstrip("/")
    return str(url.copy_with(path=METADATA_SUFFIX + path, query=None, fragment=None))


def _metadata_endpoint(response: httpx.Response, body: dict[str, Any], issuer: str) -> str:
    """The token endpoint of the authorization server metadata ``body``, if the metadata is that of ``issuer``:
    its ``issuer`` identical to it (RFC 8414 section 3.3, compared as strings) and its ``token_endpoint`` an
    URL on the issuer's origin — else ``MetadataMismatch``, naming what was expected, never what was answered.

    Why both: the endpoint becomes the audience of the assertion this system signs (RFC 7523), so a metadata
    document of another server, or one naming another server's token endpoint (the gateway of another
    environment where the same key is registered), would have the client sign an assertion good there, and
    send it to whoever answered here."""
    if body.get("issuer") != issuer:
        raise _mismatch(response, f"the authorization server metadata names another issuer than {issuer} (RFC 8414 "
                                  "section 3.3): give the gateway's issuer as issuer=, or its token endpoint as "
                                  "token_audience=")
    endpoint = body.get("token_endpoint")
    if not isinstance(endpoint, str):
        raise invalid(response, "the authorization server metadata has no token_endpoint")
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is None or not url.is_absolute_url or _origin(url) != _origin(httpx.URL(issuer)) or url.userinfo:
        raise _mismatch(response, f"the authorization server metadata names a token endpoint off the issuer's "
                                  f"origin ({issuer}): give the token endpoint as token_audience= if it is right")
    return endpoint


def _mismatch(response: httpx.Response, detail: str) -> MetadataMismatch:
    return MetadataMismatch(response.status_code, {"title": "invalid answer from the gateway", "detail": detail,
                                                   "status": response.status_code}, request_id=request_id(response))


def _checked_base_url(base_url: str, allow_insecure_http: bool) -> str:
    """``base_url`` without a trailing slash, if the client may send tokens to it: ``https://``, or ``http://``
    to this machine, or ``http://`` anywhere when the caller allowed it (a network it trusts, e.g. between
    containers of one compose project). Refused at construction, before any token is asked for."""
    url = httpx.URL(base_url)
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("base_url must be an https:// URL of the gateway")
    if url.scheme == "http" and not allow_insecure_http and not is_loopback_host(url.host):
        raise ValueError(f"plain http:// to {url.host} would send this system's tokens and the answers' data "
                         "unencrypted: use https://, or pass allow_insecure_http=True on a network you trust")
    return base_url.rstrip("/")


def _direct_to_this_machine(host: str) -> dict[str, None] | None:
    """No proxy for a gateway on this machine (a loopback address or ``localhost``), whatever the environment
    says. Why: httpx takes its proxies from the environment (``HTTP_PROXY``, ``ALL_PROXY``, as networks of
    government bodies set them for everything) and excludes a loopback host only when ``NO_PROXY`` names it.
    Plain ``http://`` to this machine is allowed because nothing of it crosses the network
    (``_checked_base_url``); through such a proxy the client assertion, the bearer token and the answers went
    over the network in clear text — to a proxy that, besides, reaches its own loopback, not this machine's."""
    if not is_loopback_host(host):
        return None
    return {f"all://[{host}]" if ":" in host else f"all://{host}": None}


def _case(response: httpx.Response) -> CaseDetail:
    return _decoded(response, lambda r: CaseDetail.model_validate_json(r.content, context=ANSWER_CONTEXT))


def _segment(value: str) -> str:
    """``value`` as one path segment: an id with ``/``, ``?``, ``#`` or dot segments in it would otherwise
    address another route (``../escalations/feed``) with this system's token."""
    if value in {"", ".", ".."}:
        raise ValueError("not an id")
    return quote(value, safe="")


def _certificate_refused(failure: BaseException) -> bool:
    """The gateway's certificate failed verification: a matter of configuration (CA, host name), which
    asking again does not change."""
    seen: BaseException | None = failure
    for _ in range(5):  # httpx.ConnectError <- httpcore.ConnectError <- ssl.SSLCertVerificationError
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


KEY_REFUSED = "pseudonym-key-unknown"
"""The last segment of the problem type of a 422 refusing a polymorphic pseudonym made under none of the
gateway's public keys (one retired since the client fetched it)."""
_KEY_REFUSED_BEFORE = "under the gateway's key"  # how gateways before that problem type said it, in the detail


def _about_keys(error: GatewayClientError) -> bool:
    """Whether ``error`` is the gateway refusing a pseudonym for the key it was made under: then the keys may
    have been rotated, and are worth fetching again. A gateway of an earlier version gave that refusal the
    general ``unprocessable`` type; its detail said so."""
    if error.status != 422:
        return False
    kind = (error.type or "").rsplit("/", 1)[-1]
    return kind == KEY_REFUSED or (kind == "unprocessable" and _KEY_REFUSED_BEFORE in (error.detail or ""))


def _no_answer(failure: httpx.TransportError) -> GatewayUnavailable:
    error = GatewayUnavailable(0, {"title": "no answer from the gateway",
                                   "detail": f"{type(failure).__name__}: {failure}"},
                               request_id=sent_request_id(failure))
    error.__cause__ = failure
    return error


def _unless_reached(error: GatewayThrottled, reached: bool) -> GatewayClientError:
    """A 429 says nothing about an earlier attempt that may have reached the gateway: once one may have,
    the call ends as GatewayUnavailable (resume with the key), never as GatewayThrottled ("not acted on")."""
    if reached:
        return GatewayUnavailable(429, error.problem, retry_after=error.retry_after, request_id=error.request_id)
    return error


def _answer(response: httpx.Response, now: float) -> dict[str, Any]:
    """The JSON object of a metadata or token answer (200), or the typed error for any other answer."""
    if response.status_code in _RETRY_STATUSES:
        raise GatewayUnavailable(response.status_code, problem(response), retry_after=retry_after(response, now),
                                 request_id=request_id(response))
    if response.status_code == 429:
        raise throttled(response, now)
    _refuse_redirect(response)
    if response.status_code != 200:
        raise GatewayClientError(response.status_code, problem(response), request_id=request_id(response))
    body = _decoded(response, lambda r: r.json())
    if not isinstance(body, dict):
        raise invalid(response, f"{response.request.url.path} did not answer a JSON object")
    return body


def _refuse_redirect(response: httpx.Response) -> None:
    """A redirect is an ``InvalidResponse`` saying so. Not followed: the API never redirects, so one comes
    from something in front of it (an http-to-https rule, a moved host), and following it would send the
    call (and, to the same host, the token) to an address the partner did not configure. Before, it was
    read as the answer and failed as "Invalid JSON: EOF", which pointed nowhere near ``base_url``."""
    if 300 <= response.status_code < 400:
        raise invalid(response, f"{response.request.url.path}: redirected ({response.status_code}) instead of "
                                "answered; redirects are not followed: check that base_url is the gateway's address")


def _bearer_token(response: httpx.Response, body: dict[str, Any]) -> tuple[str, float]:
    """The access token and its lifetime in seconds from a token answer (RFC 6749 section 5.1), checked
    here: a ``token_type`` other than Bearer (compared case-insensitively, RFC 6749 section 5.1), an
    ``access_token`` that cannot be sent as a Bearer token or an ``expires_in`` that is no positive number
    is an ``InvalidResponse`` at once, not a 401 of every call made with it nor a TypeError. Never quotes
    the values."""
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise invalid(response, "the token answer's token_type is not Bearer")
    token = body.get("access_token")
    if not isinstance(token, str) or not _B64TOKEN.fullmatch(token):
        raise invalid(response, "the token answer has no access_token usable as a Bearer token")
    expires_in = body.get("expires_in")
    if (isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not math.isfinite(expires_in)
            or expires_in <= 0):
        raise invalid(response, "the token answer's expires_in is not a positive number of seconds")
    return token, float(expires_in)


def _decoded(response: httpx.Response, read: Callable[[httpx.Response], _T]) -> _T:
    """``read(response)``, with an answer it cannot decode (not JSON, fields missing or invalid) raised as
    ``InvalidResponse``."""
    try:
        return read(response)
    except (ValueError, KeyError, TypeError) as exc:
        raise undecodable(response, exc) from exc

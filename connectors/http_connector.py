"""The gateway's HTTP client for holder systems (aiohttp), implementing ``HolderConnector``.

Why aiohttp and not httpx (which the partner-side ``gateway.client`` uses): this client sits on the
exchange's hot path, once per holder per request. Measured against a simulated partner at 16 concurrent
calls, httpx 0.28 spent about 4 to 6 ms of CPU per call (its pool polls every idle connection's socket on
each request, and httpcore retries a failing ``import sniffio`` every time), aiohttp about 0.5 ms.

Timeouts: every attempt is bounded as a whole by ``timeout`` seconds (connect, send, wait and read
together), not only per socket operation, so a holder that trickles bytes cannot hold an exchange hostage.

Retries (``retries`` extra attempts, exponential backoff from ``backoff`` seconds) happen on connection
errors, timeouts and 5xx, and only where repeating the call is safe:

- ``discover`` and ``health`` read nothing but hit/no-hit and liveness: always retried;
- ``query`` discloses, so it is retried only when it carries a ``request_id``; the holder deduplicates by that
  id (a retry gets the first answer back — no second disclosure, no second intake of provided records; the
  simulators implement this in ``connectors.dedup``). A query without a request id is sent exactly once.

Answers are read as sent: the connector asks for ``Accept-Encoding: identity`` and refuses a compressed answer
(``HolderProtocolError``) instead of inflating it, because the size limit must bound what lands in memory, and
a few hundred kilobytes of gzip inflate to gigabytes.

An answer that echoes a request id (``request_id``, optional in protocol v1) must echo the call's: one naming
another answers another request (a cached or replayed answer, a proxy mixing up responses) and is a
``HolderAnswerMismatch``, not retried.

TLS: an ``https`` holder's certificate is always verified, against the system's trust store or, with
``ca_file``, against the partnership's own CA bundle (partners commonly run a private PKI); a certificate that
fails verification is not retried — it fails the same way each time. Plain ``http://`` is refused when the
connector is made (``gateway.urls.holder_url``) unless the holder is on this machine or ``allow_insecure_http``
says the network is trusted: every call carries a bearer token and a query's answer personal data.

The bearer token goes to the registered origin only: each call's URL is the registered base URL and a fixed
path, and a redirect is never followed (``allow_redirects=False``; a 3xx is a ``HolderProtocolError``) — a
holder, or whoever answers in its name, cannot send the token on to another origin, nor the request body.

4xx answers are never retried. aiohttp's exceptions are converted here, at the edge (``raise ... from``), into
the tree of ``connectors.errors`` — any other exception of an attempt too (aiohttp refusing to make the request:
``HolderUnavailable``, not retried, logged with its type); messages name the partner system and the request
id, never a subject or the holder's address (they reach the requester as reasons). The bearer token comes from
an injected ``token_provider(audience)``, audience = the partner system id; it is asked again on every attempt
so that a token that expired during backoff is replaced.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError

from connectors.errors import (
    ConnectorError,
    HolderAnswerMismatch,
    HolderProtocolError,
    HolderRejectedRequest,
    HolderUnavailable,
)
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery
from connectors.transport import compressed, verifying_tls
from gateway.urls import holder_url

TokenProvider = Callable[[str], Awaitable[str]]
"""``async (audience) -> bearer token``; the audience is the partner system id."""

Answer = TypeVar("Answer", bound=BaseModel)
Echoing = TypeVar("Echoing", HolderAnswer, DiscoveryAnswer)
log = structlog.get_logger("connectors.http")

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The largest answer a holder may give: a hundred subjects' records fit many times over; a holder answering
without end must not fill the gateway's memory."""
MAX_DISCOVERY_ANSWER_BYTES = 1024 * 1024
"""The largest discovery answer (at most ``max_answer_bytes`` either): hit/no-hit for at most ``MAX_SUBJECTS``
subjects, with their record types, takes some kilobytes. Read up to a query's limit, 16 MiB of hits for
made-up subjects held the gateway's event loop for seconds while they were parsed and compared with the
subjects asked; refused by their length, they are never parsed."""
MAX_CONNECTIONS_PER_HOLDER = 64
"""Connections the gateway keeps open to one holder at most (calls beyond wait for one, within their timeout)."""
_JSON = {"Content-Type": "application/json"}
_IDENTITY = {"Accept-Encoding": "identity"}  # no compression: see the module docstring
_TRACE_ID, _HOLDER_TRACE_ID = (token.var for token in contextvars.copy_context().run(
    lambda: structlog.contextvars.bind_contextvars(trace_id=None, holder_trace_id=None)).values())
"""The context variables behind structlog's bound ``trace_id`` and ``holder_trace_id`` (set per request by
the gateway's middleware; the second only when the caller sent its own trace, which holders must not see).
structlog keeps one variable per key and hands it out only through the token of a bind; binding once in a
throwaway context gets them without touching any real one. Read directly, they cost no dict per call, unlike
``get_contextvars()``. Their values are strings inside a request and ``...``/None outside one."""
_KEEPALIVE_SECONDS = 4.0
"""Idle connections are dropped before the common server-side keep-alive of 5 s (uvicorn's default) ends,
so that a request is not sent on a connection the holder is closing."""


def _failure(exc: BaseException) -> str:
    """A short, address-free description of a transport failure."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed (certificate not trusted?)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError):
        return "connection broken"
    return f"transport error ({type(exc).__name__})"


class SharedSession:
    """One aiohttp session (connection pool), opened on first use, and a second one that never reuses a
    connection, for retries (the registry gives each holder one: see ``ConnectorRegistry``).

    Lazily, because an aiohttp session belongs to the event loop it is created in, and connectors are built
    during start-up, possibly before that loop runs.

    Retries go out on a fresh connection because the pooled one that carried the failure may be closing: a
    holder that fails with a 500 often closes its side right after answering (uvicorn does when the app
    raised), and a retry written on that connection fails with "Cannot write to closing transport", spending
    the attempt. aiohttp gives a small answer's connection back to the pool as soon as it is parsed, before
    the caller sees the status, so the connection cannot be singled out afterwards; a retry is rare enough
    for one new connection to cost nothing that matters.
    """

    def __init__(self, *, max_connections: int, ca_file: str | Path | None = None) -> None:
        self._max_connections = max_connections
        # Built now, so that an unreadable CA file fails at start-up rather than at the first holder call.
        self._tls = verifying_tls(ca_file)
        self._pooled: aiohttp.ClientSession | None = None
        self._unpooled: aiohttp.ClientSession | None = None

    def get(self, *, fresh_connection: bool = False) -> aiohttp.ClientSession:
        """The session for a first attempt (pooled) or, with ``fresh_connection``, for a retry."""
        if fresh_connection:
            if self._unpooled is None or self._unpooled.closed:
                self._unpooled = self._open(force_close=True)
            return self._unpooled
        if self._pooled is None or self._pooled.closed:
            self._pooled = self._open(force_close=False)
        return self._pooled

    def _open(self, *, force_close: bool) -> aiohttp.ClientSession:
        keepalive = {"force_close": True} if force_close else {"keepalive_timeout": _KEEPALIVE_SECONDS}
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._tls, **keepalive)
        # auto_decompress off: an inflated body would escape ``max_answer_bytes`` (a decompression bomb)
        return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)

    async def aclose(self) -> None:
        for session in (self._pooled, self._unpooled):
            if session is not None:
                await session.close()
        self._pooled = self._unpooled = None


class HttpConnector:
    """One holder system over HTTP (holder protocol v1)."""

    def __init__(self, system: str, base_url: str, token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2, backoff: float = 0.05, session: SharedSession | None = None,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, ca_file: str | Path | None = None,
                 allow_insecure_http: bool = False) -> None:
        """``ca_file``: the CA bundle to verify an https holder against, when this connector makes its own
        session (a shared ``session`` brings its own). ValueError (naming ``system``, not the URL: it may hold
        a password) for a ``base_url`` that is no http(s) URL, or plain http to another machine unless
        ``allow_insecure_http``."""
        try:
            holder_url(base_url, allow_insecure_http=allow_insecure_http)
        except ValueError as exc:
            raise ValueError(f"{system}: {exc}") from None
        self.system = system
        self._max_answer_bytes = max_answer_bytes
        self._base = base_url.rstrip("/")
        self._token = token_provider
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._owns_session = session is None
        self._session = session or SharedSession(max_connections=MAX_CONNECTIONS_PER_HOLDER, ca_file=ca_file)
        self.attempts = 0  # HTTP attempts made, observable for tests and metrics

    async def __aenter__(self) -> HttpConnector:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session if this connector created it (a registry's shared one is the registry's)."""
        if self._owns_session:
            await self._session.aclose()

    async def query(self, query: HolderQuery) -> HolderAnswer:
        body = await self._send("POST", "/holder/v1/query", query, request_id=query.request_id,
                                idempotent=query.request_id is not None)
        answer = self._answering(self._decode(body, HolderAnswer, query.request_id), query.request_id)
        if answer.received > len(query.provided):
            # It cannot have taken in more than it was handed; the gateway logs ``received``, and a count past
            # 2**53 would fail the audit entry (a 500 for the whole exchange, not only this holder).
            raise HolderProtocolError(self.system, f"inconsistent answer: more records received than provided "
                                      f"(request {query.request_id or '-'})")
        return answer

    async def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer:
        body = await self._send("POST", "/holder/v1/discover", discovery, request_id=discovery.request_id,
                                idempotent=True, limit=min(self._max_answer_bytes, MAX_DISCOVERY_ANSWER_BYTES))
        return self._answering(self._decode(body, DiscoveryAnswer, discovery.request_id), discovery.request_id)

    async def health(self) -> None:
        await self._send("GET", "/health", None, request_id=None, idempotent=True, authenticated=False)

    async def _send(self, method: str, path: str, body: BaseModel | None, *, request_id: str | None,
                    idempotent: bool, authenticated: bool = True, limit: int | None = None) -> bytes:
        """One call with the retries its idempotency allows; returns a 2xx response's body (at most ``limit``
        bytes, default ``max_answer_bytes``) or raises."""
        limit = self._max_answer_bytes if limit is None else limit
        payload = body.model_dump_json().encode() if body is not None else None
        label = f"request {request_id}" if request_id else "no request id"
        attempts = self._retries + 1 if idempotent else 1
        failure = "no attempt made"
        arrived = False  # whether any attempt may have reached the holder (not: could not connect)
        trace_id = _HOLDER_TRACE_ID.get()  # W3C trace context: the gateway's trace, a new span for this call
        if type(trace_id) is not str:
            trace_id = _TRACE_ID.get()  # the trace the gateway started itself
        traceparent = f"00-{trace_id}-{random.getrandbits(64) or 1:016x}-01" if type(trace_id) is str else None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
                log.info("holder_retry", system=self.system, request_id=request_id, attempt=attempt + 1,
                         after=failure)
            self.attempts += 1
            headers = _JSON | _IDENTITY if payload is not None else dict(_IDENTITY)
            if traceparent is not None:
                headers["traceparent"] = traceparent
            if authenticated:
                headers["Authorization"] = f"Bearer {await self._token(self.system)}"
            try:
                async with asyncio.timeout(self._timeout):
                    status, content = await self._exchange(method, path, payload, headers, retry=attempt > 0,
                                                           limit=limit)
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = _failure(exc)
                arrived = arrived or not isinstance(exc, aiohttp.ClientConnectorError)
                if attempt + 1 == attempts or isinstance(exc, aiohttp.ClientSSLError):
                    made = attempt + 1
                    self._log_unavailable(request_id, failure, made)
                    raise HolderUnavailable(self.system, f"holder unavailable: {failure} "
                                            f"({made} attempt{'s' * (made > 1)}, {label})",
                                            may_have_arrived=arrived) from exc
                continue
            except ConnectorError:
                raise  # our own verdict on the answer (``_exchange``)
            except Exception as exc:
                # aiohttp refused to make or send the request (a ValueError or TypeError of its own: a header
                # value it will not write, a URL it will not take): no transport failure, and the same on every
                # attempt, so not retried. Converted here, at the edge, so the exchange fails this holder closed
                # as unavailable instead of failing as a defect of the gateway (``gateway-error``). Only the
                # type is told: aiohttp's text may quote the URL or the header.
                failure, made = f"request not made ({type(exc).__name__})", attempt + 1
                self._log_unavailable(request_id, failure, made)
                raise HolderUnavailable(self.system, f"holder unavailable: {failure} "
                                        f"({made} attempt{'s' * (made > 1)}, {label})") from exc
            if status >= 500:
                failure, arrived = f"answered {status}", True
                continue
            if status >= 400:
                # Only the status: the holder's problem detail is its free text, which may name a person
                # and would travel on to the requester in the outcome's reasons.
                raise HolderRejectedRequest(self.system, f"refused the call with {status} ({label})", status,
                                            may_have_arrived=arrived)
            if status >= 300 or status < 200:
                raise HolderProtocolError(self.system, f"unexpected status {status} ({label})")
            return content
        self._log_unavailable(request_id, failure, attempts)
        raise HolderUnavailable(self.system, f"holder unavailable: {failure} "
                                f"({attempts} attempt{'s' * (attempts > 1)}, {label})", may_have_arrived=arrived)

    async def _exchange(self, method: str, path: str, payload: bytes | None, headers: dict[str, str], *,
                        retry: bool, limit: int) -> tuple[int, bytes]:
        """One HTTP attempt: status and the whole body (read inside the caller's timeout), at most ``limit``
        bytes of it: a holder answering without end would otherwise fill the gateway's memory.
        A retry goes out on a fresh connection (see ``SharedSession``)."""
        session = self._session.get(fresh_connection=retry)
        async with session.request(method, f"{self._base}{path}", data=payload, headers=headers,
                                   allow_redirects=False) as response:
            if compressed(response.headers):
                # not echoed: the header is the holder's free text, and the message reaches the requester
                raise HolderProtocolError(self.system, "compressed answer, which was not asked for")
            length = response.content_length
            if length is not None and length <= limit:
                return response.status, await response.read()
            if length is not None:
                raise HolderProtocolError(self.system, f"answer of {length} bytes, more than {limit}")
            body = bytearray()
            async for chunk in response.content.iter_chunked(65536):
                body += chunk
                if len(body) > limit:
                    raise HolderProtocolError(self.system, f"answer of more than {limit} bytes")
            return response.status, bytes(body)

    def _decode(self, body: bytes, answer_type: type[Answer], request_id: str | None) -> Answer:
        """The answer as the protocol's model reads it (which also refuses a number that is not finite: see
        ``HolderAnswer``), or ``HolderProtocolError``."""
        try:
            return answer_type.model_validate_json(body)
        except (ValidationError, ValueError) as exc:
            raise HolderProtocolError(self.system, f"malformed answer (request {request_id or '-'})") from exc

    def _answering(self, answer: Echoing, request_id: str | None) -> Echoing:
        """``answer``, unless it names another request id than the call's (``request_id``; None: the call named
        none, so any id it names is another's): then ``HolderAnswerMismatch``, not retried — it is an answer,
        only to another request, and its content is never read. An answer that names none is taken (protocol
        v1). The holder's id is neither logged nor told: it is the holder's text."""
        if answer.request_id is None or answer.request_id == request_id:
            return answer
        log.warning("holder_answer_mismatch", system=self.system, request_id=request_id)
        raise HolderAnswerMismatch(self.system, f"answer to another request (request {request_id or '-'})")

    def _log_unavailable(self, request_id: str | None, failure: str, attempts: int) -> None:
        log.warning("holder_unavailable", system=self.system, base_url=self._base, request_id=request_id,
                    failure=failure, attempts=attempts)


class ConnectorRegistry:
    """System id → connector, built from the configured endpoints (``Settings.connector_endpoints``).

    Each holder has a connection pool of its own (``MAX_CONNECTIONS_PER_HOLDER``): with one pool for all, a
    holder that keeps its calls open — slow, or a tarpit — took every connection, and the calls to the other
    holders waited for one until they timed out. ``aclose`` closes them all.
    """

    def __init__(self, endpoints: dict[str, str], token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2, backoff: float = 0.05, ca_file: str | Path | None = None,
                 allow_insecure_http: bool = False) -> None:
        self.timeout, self.retries, self.backoff = timeout, retries, backoff  # every connector's, for the caller
        self._sessions = {system: SharedSession(max_connections=MAX_CONNECTIONS_PER_HOLDER, ca_file=ca_file)
                          for system in endpoints}
        self._connectors = {system: HttpConnector(system, url, token_provider, timeout=timeout, retries=retries,
                                                  backoff=backoff, session=self._sessions[system],
                                                  allow_insecure_http=allow_insecure_http)
                            for system, url in endpoints.items()}

    def get(self, system: str) -> HttpConnector | None:
        """The connector of ``system``, or None when no endpoint is configured for it."""
        return self._connectors.get(system)

    def __getitem__(self, system: str) -> HttpConnector:
        return self._connectors[system]

    def __contains__(self, system: object) -> bool:
        return system in self._connectors

    def systems(self) -> list[str]:
        return sorted(self._connectors)

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.aclose()

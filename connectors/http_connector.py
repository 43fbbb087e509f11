"""The gateway's HTTP client for holder systems (httpx), implementing ``HolderConnector``.

Timeouts: every attempt is bounded as a whole by ``timeout`` seconds (connect, send, wait and read
together), not only per socket operation, so a holder that trickles bytes cannot hold an exchange hostage.

Retries (``retries`` extra attempts, exponential backoff from ``backoff`` seconds) happen on connection
errors, timeouts and 5xx, and only where repeating the call is safe:

- ``discover`` and ``health`` read nothing but hit/no-hit and liveness: always retried;
- ``query`` discloses, so it is retried only when it carries a ``request_id``; the holder deduplicates by that
  id (a retry gets the first answer back — no second disclosure, no second intake of provided records; the
  simulators implement this in ``connectors.dedup``). A query without a request id is sent exactly once.

4xx answers are never retried. httpx's exceptions are converted here, at the edge (``raise ... from``), into
the tree of ``connectors.errors``; messages name the partner system and the request id, never a subject or the
holder's address (they reach the requester as reasons). The bearer token comes from an injected
``token_provider(audience)``, audience = the partner system id; it is asked again on every attempt so that a
token that expired during backoff is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from connectors.errors import HolderProtocolError, HolderRejectedRequest, HolderUnavailable
from connectors.protocol import DiscoveryAnswer, HolderAnswer, HolderDiscovery, HolderQuery

TokenProvider = Callable[[str], Awaitable[str]]
"""``async (audience) -> bearer token``; the audience is the partner system id."""

Answer = TypeVar("Answer", bound=BaseModel)
log = structlog.get_logger("connectors.http")

_DETAIL_LIMIT = 200


def _failure(exc: BaseException) -> str:
    """A short, address-free description of a transport failure."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "connection broken"
    return f"transport error ({type(exc).__name__})"


def _problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    detail = body.get("detail") if isinstance(body, dict) else None
    return f": {detail[:_DETAIL_LIMIT]}" if isinstance(detail, str) and detail else ""


class HttpConnector:
    """One holder system over HTTP (holder protocol v1)."""

    def __init__(self, system: str, base_url: str, token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2, backoff: float = 0.05, client: httpx.AsyncClient | None = None) -> None:
        self.system = system
        self._base = base_url.rstrip("/")
        self._token = token_provider
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout),
                                                   limits=httpx.Limits(max_connections=64))
        self.attempts = 0  # HTTP attempts made, observable for tests and metrics

    async def __aenter__(self) -> HttpConnector:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this connector created it (a registry's shared client is the registry's)."""
        if self._owns_client:
            await self._client.aclose()

    async def query(self, query: HolderQuery) -> HolderAnswer:
        response = await self._send("POST", "/holder/v1/query", query, request_id=query.request_id,
                                    idempotent=query.request_id is not None)
        return self._decode(response, HolderAnswer, query.request_id)

    async def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer:
        response = await self._send("POST", "/holder/v1/discover", discovery, request_id=discovery.request_id,
                                    idempotent=True)
        return self._decode(response, DiscoveryAnswer, discovery.request_id)

    async def health(self) -> None:
        await self._send("GET", "/health", None, request_id=None, idempotent=True, authenticated=False)

    async def _send(self, method: str, path: str, body: BaseModel | None, *, request_id: str | None,
                    idempotent: bool, authenticated: bool = True) -> httpx.Response:
        """One call with the retries its idempotency allows; returns a 2xx response or raises."""
        payload: dict[str, Any] | None = body.model_dump(mode="json") if body is not None else None
        label = f"request {request_id}" if request_id else "no request id"
        attempts = self._retries + 1 if idempotent else 1
        failure = "no attempt made"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
                log.info("holder_retry", system=self.system, request_id=request_id, attempt=attempt + 1,
                         after=failure)
            self.attempts += 1
            headers = {"Authorization": f"Bearer {await self._token(self.system)}"} if authenticated else {}
            try:
                async with asyncio.timeout(self._timeout):
                    response = await self._client.request(method, f"{self._base}{path}", json=payload,
                                                          headers=headers)
            except (TimeoutError, httpx.TransportError) as exc:
                failure = _failure(exc)
                if attempt + 1 == attempts:
                    self._log_unavailable(request_id, failure, attempts)
                    raise HolderUnavailable(self.system, f"holder unavailable: {failure} "
                                            f"({attempts} attempt{'s' * (attempts > 1)}, {label})") from exc
                continue
            if response.status_code >= 500:
                failure = f"answered {response.status_code}"
                continue
            if response.status_code >= 400:
                raise HolderRejectedRequest(self.system, f"refused the call with {response.status_code}"
                                            f"{_problem_detail(response)} ({label})", response.status_code)
            if response.status_code >= 300 or response.status_code < 200:
                raise HolderProtocolError(self.system, f"unexpected status {response.status_code} ({label})")
            return response
        self._log_unavailable(request_id, failure, attempts)
        raise HolderUnavailable(self.system, f"holder unavailable: {failure} "
                                f"({attempts} attempt{'s' * (attempts > 1)}, {label})")

    def _decode(self, response: httpx.Response, answer_type: type[Answer], request_id: str | None) -> Answer:
        try:
            return answer_type.model_validate_json(response.content)
        except ValidationError as exc:
            raise HolderProtocolError(self.system, f"malformed answer (request {request_id or '-'})") from exc

    def _log_unavailable(self, request_id: str | None, failure: str, attempts: int) -> None:
        log.warning("holder_unavailable", system=self.system, base_url=self._base, request_id=request_id,
                    failure=failure, attempts=attempts)


class ConnectorRegistry:
    """System id → connector, built from the configured endpoints (``Settings.connector_endpoints``).

    All connectors share one connection pool; ``aclose`` closes it.
    """

    def __init__(self, endpoints: dict[str, str], token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2, backoff: float = 0.05) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=128))
        self._connectors = {system: HttpConnector(system, url, token_provider, timeout=timeout, retries=retries,
                                                  backoff=backoff, client=self._client)
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
        await self._client.aclose()

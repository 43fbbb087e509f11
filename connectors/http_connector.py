"""The gateway's HTTP client for one holder system (httpx), implementing ``HolderConnector``.

Retry rules: ``discover`` and ``health`` are idempotent and retried on connection errors, timeouts and
5xx with a short exponential backoff. ``query`` is retried only because every query carries a
``request_id`` the holder deduplicates (a retry returns the first answer, never a second disclosure).
4xx answers are never retried. httpx exceptions are converted here (``raise ... from``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import structlog
from pydantic import BaseModel, ValidationError

from connectors.protocol import (
    DiscoveryAnswer,
    HolderAnswer,
    HolderDiscovery,
    HolderProtocolError,
    HolderQuery,
    HolderRejectedRequest,
    HolderUnavailable,
)

TokenProvider = Callable[[str], Awaitable[str]]
Answer = TypeVar("Answer", bound=BaseModel)
log = structlog.get_logger("connectors.http")


class HttpConnector:
    def __init__(self, system: str, base_url: str, token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2, backoff: float = 0.05, client: httpx.AsyncClient | None = None) -> None:
        self.system = system
        self._base = base_url.rstrip("/")
        self._token = token_provider
        self._retries = retries
        self._backoff = backoff
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout),
                                                   limits=httpx.Limits(max_connections=64))
        self.attempts = 0  # observable for tests and metrics

    async def aclose(self) -> None:
        await self._client.aclose()

    async def query(self, query: HolderQuery) -> HolderAnswer:
        return await self._call("/holder/v1/query", query, HolderAnswer, request_id=query.request_id)

    async def discover(self, discovery: HolderDiscovery) -> DiscoveryAnswer:
        return await self._call("/holder/v1/discover", discovery, DiscoveryAnswer, request_id=discovery.request_id)

    async def health(self) -> None:
        try:
            response = await self._client.get(f"{self._base}/health")
        except httpx.HTTPError as exc:
            raise HolderUnavailable(self.system, f"health check failed ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise HolderUnavailable(self.system, f"health check answered {response.status_code}")

    async def _call(self, path: str, body: BaseModel, answer_type: type[Answer], *, request_id: str) -> Answer:
        payload: dict[str, Any] = body.model_dump()
        last_error = "no attempt made"
        for attempt in range(self._retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            self.attempts += 1
            try:
                token = await self._token(self.system)
                response = await self._client.post(f"{self._base}{path}", json=payload,
                                                    headers={"Authorization": f"Bearer {token}"})
            except httpx.TimeoutException as exc:
                last_error = "timed out"
                if attempt == self._retries:
                    raise HolderUnavailable(self.system, f"{last_error} (request {request_id})") from exc
                continue
            except httpx.HTTPError as exc:
                last_error = f"unreachable ({type(exc).__name__})"
                if attempt == self._retries:
                    raise HolderUnavailable(self.system, f"{last_error} (request {request_id})") from exc
                continue
            if response.status_code >= 500:
                last_error = f"answered {response.status_code}"
                log.info("holder_retry", system=self.system, request_id=request_id, status=response.status_code)
                continue
            if response.status_code >= 400:
                raise HolderRejectedRequest(self.system, f"refused the call with {response.status_code} "
                                            f"(request {request_id})", response.status_code)
            try:
                return answer_type.model_validate_json(response.content)
            except ValidationError as exc:
                raise HolderProtocolError(self.system, f"malformed answer (request {request_id})") from exc
        raise HolderUnavailable(self.system, f"{last_error} after {self._retries + 1} attempts (request {request_id})")


class ConnectorRegistry:
    """System id → connector, built from the configured endpoints."""

    def __init__(self, endpoints: dict[str, str], token_provider: TokenProvider, *, timeout: float = 5.0,
                 retries: int = 2) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=httpx.Limits(max_connections=128))
        self._connectors = {system: HttpConnector(system, url, token_provider, timeout=timeout, retries=retries,
                                                  client=self._client)
                            for system, url in endpoints.items()}

    def get(self, system: str) -> HttpConnector | None:
        return self._connectors.get(system)

    def systems(self) -> list[str]:
        return sorted(self._connectors)

    async def aclose(self) -> None:
        await self._client.aclose()

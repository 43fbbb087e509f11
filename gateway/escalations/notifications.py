"""Webhook notifications of escalation steps, signed so the receiver can trust them.

The body names the case, the step and the tier — references only, never personal data or motivations.
``event`` is ``escalation.step`` for a step, or ``escalation.final_deadline_missed`` when a tier-3 case let
its last deadline pass (sent once, with ``roles``: whom in the organisation to route it to).
The signature header follows the common "timestamp + HMAC" scheme: ``WGS-Signature: t=<unix>,v1=<hex>``
with ``v1 = HMAC-SHA256(secret, f"{t}.{body}")``; receivers reject old timestamps to stop replays.
Delivery is best-effort with retries in the background: a receiver that is down never blocks a case.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import structlog

from gateway.settings import WebhookTarget

log = structlog.get_logger("gateway.escalations.webhooks")
SIGNATURE_HEADER = "WGS-Signature"
ATTEMPTS = 3


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, body: bytes, header: str, *, now: float | None = None,
                     tolerance_seconds: int = 300) -> bool:
    """The receiver's check (used by tests and the partner simulators): right secret, fresh timestamp."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header)


class WebhookNotifier:
    def __init__(self, targets: dict[str, WebhookTarget], timeout: float = 5.0) -> None:
        self._targets = targets
        self._timeout = timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def notify(self, organisations: set[str], payload: dict[str, Any]) -> None:
        """Queue a delivery to each organisation that configured a webhook; returns at once."""
        for organisation in sorted(organisations):
            target = self._targets.get(organisation)
            if target is None:
                continue
            task = asyncio.get_running_loop().create_task(self._deliver(organisation, target,
                                                                        payload | {"organisation": organisation}))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, organisation: str, target: WebhookTarget, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        for attempt in range(1, ATTEMPTS + 1):
            headers = {"content-type": "application/json",
                       SIGNATURE_HEADER: sign(target.secret, body, int(time.time()))}
            try:
                response = await self._client.post(target.url, content=body, headers=headers)
                if response.status_code < 300:
                    log.info("webhook_delivered", organisation=organisation, case_id=payload.get("case_id"))
                    return
                log.warning("webhook_rejected", organisation=organisation, status=response.status_code)
            except httpx.HTTPError as exc:
                log.warning("webhook_failed", organisation=organisation, error_type=type(exc).__name__,
                            attempt=attempt)
            await asyncio.sleep(0.2 * 2 ** attempt)

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        if self._client is not None:
            await self._client.aclose()

"""Webhook notifications of escalation steps, signed so the receiver can trust them.

The body names the case, the step and the tier — references only, never personal data or motivations.
``event`` is ``escalation.step`` for a step (an expired decision's with its ``decision_id``, sent to the
deciders of the tier that took it too), or ``escalation.final_deadline_missed`` when a tier-3 case let
its last deadline pass (sent once, with ``roles``: whom in the organisation to route it to), or
``escalation.decision_refused_by_holder`` / ``escalation.decision_holder_unavailable`` when a re-run citing an
allow got nothing from its holder (with the re-run's exchange id and the reason's code).
The signature header follows the common "timestamp + HMAC" scheme: ``WGS-Signature: t=<unix>,v1=<hex>``
with ``v1 = HMAC-SHA256(secret, f"{t}.{body}")``; receivers reject old timestamps to stop replays.
Delivery is best-effort with retries in the background: a receiver that is down never blocks a case, and
each delivery is its own task, so a receiver that is slow or asks to wait holds up no other organisation's.
Which answers are retried (``_retry_delay``): a network failure, a 5xx, and of the 4xx only 408, 425 and 429,
which say "later"; any other 4xx says the request itself is wrong (a bad signature, an unknown or revoked
hook) and the same body would fare no better, so it is given up at once. ``Retry-After`` is honoured up to
``MAX_RETRY_AFTER_SECONDS``; a receiver asking for longer is given up rather than retried before it said.
Every delivery that ends is recorded with why (``results``, and a log line without the body).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from gateway.settings import WebhookTarget

log = structlog.get_logger("gateway.escalations.webhooks")
SIGNATURE_HEADER = "WGS-Signature"
ATTEMPTS = 3
BACKOFF_SECONDS = 0.4  # doubled after each failed attempt
RETRIED_CLIENT_ERRORS = frozenset({408, 425, 429})  # timeout, too early, too many requests: "try later"
MAX_RETRY_AFTER_SECONDS = 30.0
"""The longest ``Retry-After`` waited for: deliveries in flight are waited for at shutdown and by the CLI's
scan, so a receiver must not hold them for an hour; the feed stays the source of truth."""
RESULTS_KEPT = 200


@dataclass(frozen=True)
class DeliveryResult:
    """How one delivery ended, and why (no body, no secret: references and status codes only)."""

    organisation: str
    case_id: str | None
    event: str | None
    delivered: bool
    attempts: int
    status: int | None  # the receiver's last answer; None when none came (a network failure)
    reason: str


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait (RFC 9110: delay-seconds or an HTTP date); None when absent or
    unreadable (the notifier's own pause applies then). A date in the past is 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # str.isdigit takes "²" too, which float() refuses
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # an HTTP date is GMT; one without a zone is unreadable, not local time
        return None
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


def _retry_delay(response: httpx.Response, attempt: int) -> tuple[float | None, str]:
    """How long to wait before trying ``response``'s delivery again, or None not to retry; and why."""
    status = response.status_code
    if status < 400:  # a redirect: a webhook URL is configured as it is meant, and a body is not re-posted
        return None, f"the receiver answered HTTP {status} (a redirect, not followed): not retried"
    if status < 500 and status not in RETRIED_CLIENT_ERRORS:
        return None, f"the receiver refused it with HTTP {status}: not retried (the same body cannot succeed)"
    backoff = BACKOFF_SECONDS * 2 ** (attempt - 1)
    asked = retry_after_seconds(response.headers.get("retry-after"))
    if asked is None:
        return backoff, f"the receiver answered HTTP {status}"
    if asked > MAX_RETRY_AFTER_SECONDS:
        return None, (f"the receiver answered HTTP {status} with a Retry-After of {asked:.0f} s, longer than "
                      f"the {MAX_RETRY_AFTER_SECONDS:.0f} s the notifier waits: given up")
    return asked, f"the receiver answered HTTP {status} (Retry-After {asked:.0f} s)"


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
    def __init__(self, targets: dict[str, WebhookTarget], timeout: float = 5.0,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._targets = targets
        self._timeout = timeout
        self._sleep = sleep
        self.results: deque[DeliveryResult] = deque(maxlen=RESULTS_KEPT)
        """How the latest deliveries ended (newest last): for operators' diagnostics and the tests."""
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
        status: int | None = None
        reason = ""
        for attempt in range(1, ATTEMPTS + 1):
            headers = {"content-type": "application/json",
                       SIGNATURE_HEADER: sign(target.secret, body, int(time.time()))}
            delay: float | None
            try:
                response = await self._client.post(target.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                status, delay = None, BACKOFF_SECONDS * 2 ** (attempt - 1)
                reason = f"no answer ({type(exc).__name__})"
            except (httpx.InvalidURL, ValueError) as exc:  # the URL cannot be requested: no retry helps
                self._ended(organisation, payload, False, attempt, None, f"not sent ({type(exc).__name__})")
                return
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._ended(organisation, payload, True, attempt, status, "delivered")
                    return
                delay, reason = _retry_delay(response, attempt)
            if delay is None:
                self._ended(organisation, payload, False, attempt, status, reason)
                return
            if attempt == ATTEMPTS:
                break
            log.warning("webhook_retrying", organisation=organisation, case_id=payload.get("case_id"),
                        status=status, attempt=attempt, wait_seconds=round(delay, 1))
            await self._sleep(delay)
        self._ended(organisation, payload, False, ATTEMPTS, status, f"{reason}; given up after {ATTEMPTS} attempts")

    def _ended(self, organisation: str, payload: dict[str, Any], delivered: bool, attempts: int,
               status: int | None, reason: str) -> None:
        result = DeliveryResult(organisation, payload.get("case_id"), payload.get("event"), delivered, attempts,
                                status, reason)
        self.results.append(result)
        if delivered:
            log.info("webhook_delivered", organisation=organisation, case_id=result.case_id, attempts=attempts)
        else:
            log.warning("webhook_abandoned", organisation=organisation, case_id=result.case_id, status=status,
                        attempts=attempts, reason=reason)

    async def drain(self) -> None:
        """Wait for deliveries in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        if self._client is not None:
            await self._client.aclose()

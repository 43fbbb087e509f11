"""Holder-side idempotency: a request id is answered once; a retry gets the first answer back.

Why: the gateway retries a query that timed out, and the first attempt may have been answered (and, with
``provided`` records, may have changed the holder's data). Deduplicating by ``request_id`` makes the retry
safe: no second disclosure, no second intake. A retry that arrives while the first attempt is still being
answered waits for that answer instead of computing its own. Reusing a request id for a different request
is refused (``RequestIdReused``), never answered with another request's data.

The window is the last ``size`` request ids of this process: enough for retries, which come within seconds.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Answer = TypeVar("Answer")


class RequestIdReused(Exception):
    """The request id was seen with a different request."""


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the request without its id, as canonical JSON."""
    body = {k: v for k, v in payload.items() if k != "request_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class _Entry(Generic[Answer]):
    fingerprint: str
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None


class ReplayCache(Generic[Answer]):
    """Thread-safe first-answer-wins cache keyed by request id (the simulators answer in worker threads)."""

    def __init__(self, size: int = 2048, wait_seconds: float = 30.0) -> None:
        self._size = size
        self._wait = wait_seconds
        self._entries: OrderedDict[str, _Entry[Answer]] = OrderedDict()
        self._lock = threading.Lock()

    def answer_once(self, request_id: str, request_fingerprint: str,
                    compute: Callable[[], Answer]) -> tuple[Answer, bool]:
        """The answer for ``request_id`` and whether it is a replay; ``compute`` runs at most once per id
        (again only if the earlier attempt raised)."""
        with self._lock:
            entry = self._entries.get(request_id)
            owner = entry is None
            if entry is None:
                entry = self._entries[request_id] = _Entry(request_fingerprint)
        if entry.fingerprint != request_fingerprint:
            raise RequestIdReused(request_id)
        if not owner:
            if not entry.done.wait(self._wait):
                raise TimeoutError(f"request {request_id} is still being answered")
            if entry.answer is not None:
                return entry.answer, True
            return self.answer_once(request_id, request_fingerprint, compute)  # the first attempt failed
        try:
            answer = compute()
        except BaseException:
            with self._lock:
                self._entries.pop(request_id, None)
            entry.done.set()
            raise
        entry.answer = answer
        entry.done.set()
        with self._lock:
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return answer, False

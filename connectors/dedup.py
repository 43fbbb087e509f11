"""Holder-side idempotency: a request id is answered once; a retry gets the first answer back.

Why: the gateway retries a query that timed out, and the first attempt may have been answered (and, with
``provided`` records, may have changed the holder's data). Deduplicating by ``request_id`` makes the retry
safe: no second disclosure, no second intake. A retry that arrives while the first attempt is still being
answered waits for that answer instead of computing its own. Reusing a request id for a different request
is refused (``RequestIdReused``), never answered with another request's data.

The window is the last ``size`` request ids of this process to be answered, plus every request id still
being answered: enough for retries, which come within seconds. Eviction never drops an id whose request is
still being answered — the oldest answered ids go first — or a replay arriving meanwhile would be answered
afresh, a second disclosure. Memory stays bounded all the same: at most ``size`` answered ids, and the ids
in flight, of which there are no more than requests being handled at once (the server's worker threads).
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
REPLAY_IDS = 2048
"""How many answered request ids a holder remembers by default."""


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

    def __init__(self, size: int = REPLAY_IDS, wait_seconds: float = 30.0) -> None:
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
        with self._lock:
            entry.done.set()
            if self._entries.get(request_id) is entry:
                self._entries.move_to_end(request_id)  # the window counts from the answer: retries follow it
            self._evict()
        return answer, False

    def _evict(self) -> None:
        """Drop the oldest answered ids beyond ``size``; ids still being answered stay (under the lock)."""
        excess = len(self._entries) - self._size
        if excess <= 0:
            return
        oldest: list[str] = []
        for rid, entry in self._entries.items():  # oldest first; stops at the excess
            if entry.done.is_set():
                oldest.append(rid)
                if len(oldest) == excess:
                    break
        for rid in oldest:
            del self._entries[rid]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

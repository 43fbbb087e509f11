""""Verify the log now" from the audit explorer, and the last verification the integrity panel shows.

A run is :func:`audit.verify_database` (``deep=False``: tree, leaf hashes, cached subtrees, checkpoint signatures
and consistency, and the columns searches use compared with the entries) with the verifier the CLI's
``audit verify`` builds from the checkpoint key, in a worker thread. The console records it as a
``console.action`` entry (``verify-log``: result, counts, root hash, where it failed; no personal data) through
the gateway's writer, and the panel reads the most recent such entry back from the log itself, so every gateway
process shows the same last run, across restarts.

Clicks that come while a run is going share that run (:func:`run_shared`): each waiting in a worker thread
for a run of its own took every worker thread of the process after a few clicks — the gateway answered nobody,
partner systems included, until those runs were done one after the other. A shared run is awaited without a
thread; it verifies the log as it was when it started.

Reading it back is one query, newest first, stopping at the first match. The log is append-only and its
indices are gap-free, so a process remembers how far it has looked and the next look only reads entries
appended since (no rescan of the whole log when nobody has verified yet).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool
from pydantic import JsonValue
from sqlalchemy import func, select

from audit import EventType, VerifyResult, verify_database
from audit.tables import audit_entries
from gateway.auditing.actions import position
from gateway.auditing.setup import audit_verifier
from gateway.container import Container

ACTION = "verify-log"
_MARKER = f'"action":"{ACTION}"'  # as it appears in an entry's RFC 8785 bytes
_run_lock = threading.Lock()  # one run at a time per process (the CLI's, a second event loop's)
_RUNNING = "console.verification.running"  # the container service holding this process's run, while it goes


@dataclass(frozen=True)
class LastVerification:
    """What the panel shows of the most recent ``verify-log`` entry."""

    index: int  # the console.action entry's own index
    at: datetime
    ok: bool
    entries: int
    checkpoints: int
    root_hash: str | None = None
    failure_kind: str | None = None
    failure_index: int | None = None
    failure_last_index: int | None = None


@dataclass
class _Seen:
    """How far this process has looked for ``verify-log`` entries, and the newest one found up to there."""

    through: int = -1
    last: LastVerification | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def run(container: Container) -> VerifyResult:
    """Verify the live log (blocking: call it in a worker thread)."""
    with _run_lock:
        return verify_database(container.engine, audit_verifier(container.settings), deep=False)


async def run_shared(container: Container) -> VerifyResult:
    """The result of the run going on in this process, or of a new one: a click during a run holds no worker
    thread and starts no second run. Shielded: a person who leaves the page does not cancel the others' run."""
    loop = asyncio.get_running_loop()
    running = container.services.get(_RUNNING)
    if not isinstance(running, asyncio.Future) or running.done() or running.get_loop() is not loop:
        running = asyncio.ensure_future(run_in_threadpool(run, container))
        container.services[_RUNNING] = running
    return await asyncio.shield(running)


def details(result: VerifyResult) -> dict[str, JsonValue]:
    """The audit entry's ``extra`` for a run: outcome, counts, root hash and the failing index; no content."""
    failure = result.failure
    found: dict[str, JsonValue] = {
        "result": "ok" if result.ok else "failed", "entries": result.entries, "checkpoints": result.checkpoints,
        "root_hash": result.root_hash.hex() if result.root_hash else None, "deep": False}
    if failure is not None:
        found |= {"failure": failure.kind.value, "index": position(failure.index)}
        if failure.last_index is not None:
            found["last_index"] = position(failure.last_index)
        if failure.checkpoint_size is not None:
            found["checkpoint_size"] = position(failure.checkpoint_size)
    return found


_DIGITS = re.compile(r"-?[0-9]{1,20}")
"""A position :func:`gateway.auditing.actions.position` wrote as text (every index and size of a log fits in a
BIGINT's 19 digits)."""


def _parse(index: int, at: datetime, canonical: str) -> LastVerification | None:
    event: dict[str, Any] = json.loads(canonical).get("event", {})
    extra = event.get("extra") or {}
    if event.get("event_type") != EventType.CONSOLE_ACTION.value or extra.get("action") != ACTION \
            or extra.get("channel") != "console":
        return None

    def number(name: str) -> int | None:
        value = extra.get(name)
        if isinstance(value, str) and _DIGITS.fullmatch(value):  # beyond JSON's exact integers (see position)
            return int(value)
        return value if isinstance(value, int) else None

    return LastVerification(index, at, extra.get("result") == "ok", number("entries") or 0,
                            number("checkpoints") or 0, extra.get("root_hash"), extra.get("failure"),
                            number("index"), number("last_index"))


def last(container: Container) -> LastVerification | None:
    """The most recent ``verify-log`` entry of the log (blocking: call it in a worker thread)."""
    seen = container.services.setdefault("console.verification", _Seen())
    assert isinstance(seen, _Seen)
    t = audit_entries.c
    with seen.lock, container.engine.connect() as connection:
        top = connection.execute(select(func.max(t.log_index))).scalar()
        if top is None or top <= seen.through:
            return seen.last
        rows = connection.execute(
            select(t.log_index, t.recorded_at, t.canonical)
            .where(t.log_index > seen.through, t.log_index <= top,
                   t.event_type == EventType.CONSOLE_ACTION.value, t.canonical.contains(_MARKER))
            .order_by(t.log_index.desc()))
        for row in rows:
            found = _parse(int(row.log_index), row.recorded_at, row.canonical)
            if found is not None:
                seen.last = found
                break
        seen.through = int(top)
    return seen.last

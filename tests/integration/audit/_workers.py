"""Code run in separate processes by the multi-writer test (kept import-light for fast ``spawn``)."""

from __future__ import annotations

import time
from typing import Any

from audit.log import AuditLog, CheckpointPolicy
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event


def append_from_process(url: str, worker: int, count: int, batch: int, barrier: Any, results: Any) -> None:
    """Wait for the other writers, append ``count`` events in transactions of ``batch``, report the indices."""
    engine = make_engine(url)
    try:
        log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=20, every_seconds=None))
        indices: list[int] = []
        # Connect before the race: gateway.db.engine's connect hook sets journal_mode=WAL, which SQLite
        # can refuse with "database is locked" while another process writes (connection setup, not audit).
        log.size()
        barrier.wait(60)
        for start in range(0, count, batch):
            receipts = log.append([make_event(worker * 10_000 + start + i) for i in range(batch)])
            indices.extend(r.index for r in receipts)
            time.sleep(0.002)  # like a gateway process between requests: lets the others take the lock
        results.put((worker, indices))
    except Exception as exc:
        results.put((worker, f"{type(exc).__name__}: {exc!r} / cause: {exc.__cause__!r}"))
        raise
    finally:
        engine.dispose()

"""Moves overdue cases up a tier on a timer, inside the gateway process.

Several gateway processes may each run it: a case moved by one is skipped by the others (optimistic lock),
so running it everywhere is safe and needs no leader election. ``wgs-gateway escalations scan`` does the
same once, for operators who prefer cron.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("gateway.escalations.scheduler")


class OverdueScheduler:
    def __init__(self, job: Callable[[], Awaitable[Any]], interval_seconds: float) -> None:
        self._job = job
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._job()
            except Exception as exc:  # a failed run must not stop later ones; it is retried next interval
                log.error("overdue_scan_failed", error_type=type(exc).__name__)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

"""A job run every few seconds on the app's event loop, for as long as the app runs.

One small class for the gateway's timers (overdue escalations, the list of disabled clients and accounts):
each run is awaited before the next interval starts, so runs never overlap, and a failed run is logged and
tried again at the next interval instead of ending the timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

log = structlog.get_logger("gateway.periodic")


class PeriodicJob:
    def __init__(self, job: Callable[[], Awaitable[Any]], interval_seconds: float, *, name: str) -> None:
        self._job = job
        self._interval = interval_seconds
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the timer (the first run is one interval from now); an interval of 0 means never."""
        if self._interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._job()
            except Exception as exc:  # a failed run must not stop later ones; it is retried next interval
                log.error(f"{self._name}_failed", error_type=type(exc).__name__)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

"""Runs the escalation scan on a timer, inside the gateway process: overdue cases move up a tier (or, at
the last tier, are reported once) and allow decisions past their validity expire.

Several gateway processes may each run it: a case moved by one is skipped by the others (optimistic lock),
so running it everywhere is safe and needs no leader election. ``wgs-gateway escalations scan`` does the
same once, for operators who prefer cron.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from gateway.periodic import PeriodicJob


class OverdueScheduler(PeriodicJob):
    def __init__(self, job: Callable[[], Awaitable[Any]], interval_seconds: float) -> None:
        super().__init__(job, interval_seconds, name="overdue_scan")

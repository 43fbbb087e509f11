"""A daily cap on the pseudonyms each partner system may have made.

Why: ``POST /v1/pseudonyms`` and ``POST /v1/enrolments`` turn any identifier a system can encrypt into that
system's own pseudonym. A requester that was given a related subject's pseudonym (a company's director, in
its own domain) could otherwise try every valid BSN, about 90 million of them, until one matches — a few hours
at the transformation rate of one core. A cap far above any participant's register size (the default is a
quarter of a million a day) leaves enrolment and look-ups alone and turns that search into a year's work.
The count is per gateway process and UTC day, like the rate limiter: N workers allow up to N times the cap.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from gateway.clock import Clock
from gateway.errors import TooManyRequests


class DailyPseudonymQuota:
    """``take(system, count)`` before making ``count`` pseudonyms; 429 (with ``Retry-After`` until the next
    UTC midnight) when that would pass ``limit`` today, and then nothing is counted. ``limit`` 0: no cap."""

    def __init__(self, clock: Clock, limit: int) -> None:
        self._clock = clock
        self._limit = limit
        self._day = ""
        self._used: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, system: str, count: int) -> None:
        if not self._limit:
            return
        now = self._clock.now().astimezone(UTC)
        with self._lock:
            if self._day != now.date().isoformat():  # a new day: yesterday's counts no longer matter
                self._day, self._used = now.date().isoformat(), {}
            used = self._used.get(system, 0)
            if used + count > self._limit:
                midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
                raise TooManyRequests(
                    f"this system may have {self._limit} pseudonyms made per day; {self._limit - used} are left "
                    "today", headers={"Retry-After": str(max(1, int((midnight - now).total_seconds())))})
            self._used[system] = used + count

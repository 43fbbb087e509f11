"""Log a failure that a loop retries every second: once when it starts, at most once a minute while it lasts, and
once when it ends.

The audit writer's idle loop tries a due checkpoint every idle second. A failure that lasts (the database away, a
fork the log refuses to sign) wrote the same warning every second: thousands of lines an hour that bury other
lines and carry nothing new. One line says that it started and with what error type; a line a minute says it is
still going on and how often it failed; one line says it is over, so an operator can tell a failure that lasts
from one that came back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

REPORT_EVERY_SECONDS = 60.0
"""At most one line this often while a failure lasts."""


class FailureReport:
    """The log lines for one repeated attempt (``what``, e.g. "periodic audit checkpoint"); not thread-safe: one
    loop calls it. ``clock`` is monotonic seconds (a fake one in tests)."""

    def __init__(self, logger: logging.Logger, what: str, *, every: float = REPORT_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._what = what
        self._every = every
        self._clock = clock
        self._failures = 0
        self._started = 0.0
        self._reported = 0.0

    def failed(self, exc: BaseException) -> None:
        """One more failed attempt: a warning when it is the first, or when the last was a minute ago. Only the
        error's type is logged: its message may quote what the attempt was about."""
        now = self._clock()
        self._failures += 1
        if self._failures == 1:
            self._started = self._reported = now
            self._logger.warning("%s failed: %s; retried while it lasts, reported at most once a minute",
                                 self._what, type(exc).__name__)
        elif now - self._reported >= self._every:
            self._reported = now
            self._logger.warning("%s still failing: %d failures in %.0f s, the last %s", self._what,
                                 self._failures, now - self._started, type(exc).__name__)

    def succeeded(self) -> None:
        """An attempt that did not fail: an info line if it ends a failure."""
        if self._failures:
            self._logger.info("%s recovered after %d failures in %.0f s", self._what, self._failures,
                              self._clock() - self._started)
            self._failures = 0

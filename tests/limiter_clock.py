"""An app's rate limiter on a clock the test moves, instead of ``time.monotonic``.

On the real clock every request of a burst refills part of a token, so how many of a burst are served, and
whether the next one is refused, depends on how long each request takes: on a loaded machine (60 ms a
request) the request after the first 429 was served again.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.ratelimit import RateLimitMiddleware


class FakeTime:
    """Monotonic seconds that only move when a test adds to ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter_clock(app: FastAPI) -> FakeTime:
    """Set the clock of ``app``'s rate limiter; before the app first starts (Starlette builds the middleware
    then, from the arguments ``add_middleware`` was given)."""
    ticks = FakeTime()
    (limiting,) = [middleware for middleware in app.user_middleware
                   if middleware.cls is RateLimitMiddleware]  # type: ignore[comparison-overlap]
    limiting.kwargs["clock"] = ticks
    return ticks

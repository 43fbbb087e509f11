"""``EarlyWork``: work started for an attempt is taken once, and what the attempt never takes ends with it —
cancelled while queued, its outcome read (so no failure of it is reported as never retrieved) once run."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

from gateway.exchange.early import EarlyWork


async def test_work_is_taken_once_and_gives_its_result() -> None:
    early = EarlyWork()
    early.start("attempt", "kvk", lambda a, b: a + b, 2, 3)
    work = early.take("attempt", "kvk")
    assert work is not None
    assert await work == 5
    assert early.take("attempt", "kvk") is None
    assert early.take("other", "kvk") is None
    early.drop("attempt")
    assert len(early) == 0


async def test_untaken_work_ends_with_its_attempt_and_no_failure_of_it_is_reported() -> None:
    """Running or queued work is cancelled (its thread's late outcome goes nowhere); work that failed before the
    attempt ended is not reported as a failure never retrieved."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    release = threading.Event()
    running = threading.Event()

    def blocking() -> None:
        running.set()
        release.wait(5)
        raise ZeroDivisionError("nobody took this")

    early = EarlyWork()
    early.start("attempt", "running", blocking)
    early.start("attempt", "failed", _fail)
    assert await asyncio.to_thread(running.wait, 5)
    running_work, failed_work = early._started["attempt"].values()
    await asyncio.wait([failed_work], timeout=5)
    assert failed_work.done()
    assert not running_work.done()
    early.drop("attempt")
    assert len(early) == 0
    assert running_work.cancelled()
    release.set()
    await asyncio.sleep(0)
    del running_work, failed_work
    gc.collect()
    assert reported == []


def _fail() -> None:
    raise ValueError("nor this")

"""Telling a task's own cancellation from a ``CancelledError`` that rose from something it awaited.

Why: both arrive as the same exception. A request (or a readiness probe) that is itself being cancelled — its
server stopping, its caller gone — must let the cancellation go on; a ``CancelledError`` raised inside its work
(a task it awaited was cancelled by its own code, a library raising one) is a failure to answer like any other:
failed closed and reported, not passed on as if someone had asked the request to stop."""

from __future__ import annotations

import asyncio
from typing import Any


def cancelled_from_outside() -> bool:
    """Whether the current task was asked to stop (``Task.cancel``, counted by ``Task.cancelling``): then a
    ``CancelledError`` it meets is its own. Outside a task, any cancellation counts as its own."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def retrieved(done: asyncio.Future[Any]) -> None:
    """A done callback for work left running when its waiter stopped waiting (cancelled, or past a bound): its
    outcome taken, so that a failure nobody waits for any more is not reported as never retrieved."""
    if not done.cancelled():
        done.exception()

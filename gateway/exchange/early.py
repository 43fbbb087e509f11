"""Work of an exchange started early, on a worker thread, so that it runs while the request waits for its
write-ahead commit instead of after it.

Why: a lone request is a chain — decide, commit the write-ahead (a ``fdatasync``), ask the holders, commit the
disclosures, answer — and while the audit writer commits, the event loop has nothing to do for it. The holders'
pseudonyms of the subjects (elliptic-curve work, ~70 µs a subject and key version, plus a hop to a thread) need
nothing the commit decides, and computing them tells no holder anything: the query is still built and sent only
once the request and its decisions are durable. Started when the decisions are known, they are ready (or nearly)
when the commit is.

Each piece of work belongs to one attempt and is taken at most once; what an attempt did not take (its holder
was denied after all, the write-ahead failed) is cancelled when the attempt ends (:meth:`EarlyWork.drop`), so
nothing outlives it and no failure of unused work is reported as unhandled.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")


class EarlyWork:
    """Blocking calls started on the loop's default executor, by attempt and key, until taken or dropped."""

    def __init__(self) -> None:
        self._started: dict[str, dict[str, asyncio.Future[Any]]] = {}

    def start(self, attempt: str, key: str, call: Callable[..., Result], *args: Any) -> None:
        """``call(*args)`` on a worker thread from now on, in a copy of the current context (as
        ``asyncio.to_thread``); submitted at once, not when the caller next yields to the loop."""
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, call, *args))
        self._started.setdefault(attempt, {})[key] = work

    def take(self, attempt: str, key: str) -> asyncio.Future[Any] | None:
        """The work started for ``attempt`` under ``key`` (to await: its result or its exception), or None if
        none was started; a second take gets None."""
        return self._started.get(attempt, {}).pop(key, None)

    def drop(self, attempt: str) -> None:
        """The attempt has ended: its work not taken is cancelled — not started if still queued, its outcome
        dropped if running (the thread finishes the call), and a failure it ended in already is not reported
        as never retrieved (``Future.cancel`` marks it read)."""
        for work in self._started.pop(attempt, {}).values():
            work.cancel()

    def __len__(self) -> int:
        """Attempts with work not yet dropped (for tests: nothing outlives its attempt)."""
        return len(self._started)


"""At most a few people's passwords checked at a time per process: a flood of sign-ins cannot starve the rest.

Why: anyone can post to ``/console/login`` or ``/v1/auth/login`` with made-up usernames, and every attempt
runs argon2 (for an unknown username too, against a fixed hash, so the time does not say which names exist):
a worker thread and 64 MiB for a fraction of a second each. The throttle counts per username (and caps the new
usernames of one address), not the attempts in flight, so a burst over many connections took every worker
thread of the pool, and the memory, and every other route that needs a worker thread (a person's token check,
database reads) waited behind it.

Each check now first takes one of ``password_checks`` slots (an asyncio semaphore, on the event loop: a waiting
sign-in holds no thread). One that cannot get a slot within ``password_check_wait_seconds`` is refused with
:class:`PasswordChecksBusy` (429, ``Retry-After``) before its username is read or counted: the callers account
for it as a throttled sign-in. Known and unknown usernames wait for the same slots and are checked the same
way, so the time still says nothing about which names exist. What a slot guards is the whole check (the
throttle's row and the account read as well as the hash): the database connections a flood can hold are
bounded too.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TypeVar

from fastapi.concurrency import run_in_threadpool

from gateway.errors import TooManyRequests

T = TypeVar("T")


class PasswordChecksBusy(TooManyRequests):
    """Every slot stayed taken while this sign-in waited; nothing of it was checked or counted."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many sign-ins at once; try again shortly", headers={"Retry-After": str(retry_after)})


class PasswordChecks:
    """The slots of one process (see the module's docstring)."""

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self._slots = slots
        self._wait = wait_seconds
        self._retry_after = max(1, math.ceil(wait_seconds))
        # One semaphore per event loop: an asyncio primitive belongs to the loop it first waited on, and a
        # process serves from one loop (tests may start an app's lifespan on a new loop more than once).
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        found = self._semaphores.get(loop)
        if found is None:
            self._semaphores = {known: semaphore for known, semaphore in self._semaphores.items()
                                if not known.is_closed()}
            found = self._semaphores[loop] = asyncio.Semaphore(self._slots)
        return found

    async def run(self, check: Callable[[], T]) -> T:
        """``check`` (blocking: a password check) in a worker thread once a slot is free; raises
        :class:`PasswordChecksBusy` when none is within the wait. The slot is held until the thread is done:
        a thread cannot be stopped, and anyio shields the wait for it from the request's cancellation, so a
        client that gives up does not free a slot its check still holds."""
        semaphore = self._semaphore()
        try:
            async with asyncio.timeout(self._wait):
                await semaphore.acquire()
        except TimeoutError:
            raise PasswordChecksBusy(self._retry_after) from None
        try:
            return await run_in_threadpool(check)
        finally:
            semaphore.release()

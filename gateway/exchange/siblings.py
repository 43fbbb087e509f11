"""A request's targets served at once, none of them outliving the request's attempt.

Why: each target's serving turns every failure of its holder call into its own outcome (fail closed, logged
next to its decision), so normally all of them return. What escapes one (a cancellation raised inside its
holder call, a failure before its outcome exists) fails the whole request: it is answered 500 with nothing
disclosed, and audited as a defect (``ExchangeService._failing_closed``). A plain ``asyncio.gather`` raised
that failure at once and left the other targets running: after the attempt had ended (its state dropped, rule
6's count and the Idempotency-Key given back, ``request.failed`` logged) they still asked their holders, with
the attempt's state gone, for answers nobody would log or read.

So the others are cancelled, and waited for until they have ended, before the failure is raised (the
semantics of ``asyncio.TaskGroup``, without its ``ExceptionGroup``: the caller tells a defect from a refusal
of its own by the exception's type). Cancelled rather than awaited to the end: their answers would be thrown
away with the request, and the requester would wait up to a holder's timeout for the 500. The log stays
truthful either way: each holder the request allowed is in it with its decision, logged ahead of any call;
nothing of a cancelled call's answer is disclosed, so nothing of it is logged as disclosed; and records the
requester provided, which a cancelled call may have handed its holder, are logged as handed to it with
``received`` unknown when the attempt ends (``ExchangeService._provisions_ended``). The same holds when the request
itself is cancelled (a client gone): ``gather`` cancelled the targets then, but ended as soon as the first of
them had, with the others still ending; here the request ends after all of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

_T = TypeVar("_T")


async def served_together(calls: Sequence[Awaitable[_T]]) -> list[_T]:
    """Each call's result in call order; or, when one fails, that failure, raised once every other call has
    been cancelled and has ended. One call, the usual request, is awaited as it is: no task of its own."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(call) for call in calls]
    failed: asyncio.Future[_T] | None = None
    try:
        pending: set[asyncio.Future[_T]] = set(tasks)
        while pending and failed is None:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            failed = next((t for t in tasks if t in done and (t.cancelled() or t.exception() is not None)), None)
    finally:  # also when this request is cancelled: no call outlives it
        for task in tasks:
            task.cancel()  # nothing for one that has ended
        await _ended(tasks)
    if failed is not None:
        failed.result()  # raises the failure itself, not the cancellation it caused in the others
    return [task.result() for task in tasks]


async def _ended(tasks: Sequence[asyncio.Future[_T]]) -> None:
    """Wait until every task has ended, even if the caller is cancelled meanwhile (it is, once they have)."""
    cancelled = False
    while unfinished := [t for t in tasks if not t.done()]:
        try:
            await asyncio.wait(unfinished)
        except asyncio.CancelledError:
            cancelled = True
    for task in tasks:  # retrieved: a second failure is not reported as never retrieved (the first is raised)
        if not task.cancelled():
            task.exception()
    if cancelled:
        raise asyncio.CancelledError

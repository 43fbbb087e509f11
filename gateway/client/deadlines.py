"""One call's deadline: a bound on everything a call of ``GatewayClient`` does — its metadata and token
requests, every attempt, every backoff and back-pressure wait — shared by all the HTTP requests it makes.

Why a bound of its own: ``timeout`` bounds each phase of one HTTP request, not a call. Retries, their
pauses, a 429's or a busy 409's waits and an answer that keeps trickling in add up to a call of no bound at
all, which a partner system's case worker (or its own request handler) sits waiting on.

Why a context variable: some calls make several HTTP requests (the partnership's keys, then the enrolment),
and one of them may be a call of its own (``pseudonym_client`` inside ``enrol``). The outermost call sets the
bound; a call made inside it runs within that bound instead of starting a fresh one. Each asyncio task has
its own context, so concurrent calls keep their own bounds.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias, TypeVar

from gateway.client.errors import DeadlineExceeded

DEFAULT_DEADLINE = 180.0
"""Seconds a call may take unless the client or the call says otherwise: above ``busy_wait``'s default 120 s
(the gateway holds a busy exchange's key for up to 2 minutes, and that wait should be possible) plus an
attempt, yet finite — an unbounded call is what this module exists to prevent."""
_T = TypeVar("_T")


class Default(Enum):
    """``deadline=`` left out of a call: the client's own (its constructor's ``deadline``) applies."""

    CLIENT = "client"


CallDeadline: TypeAlias = float | Default | None
"""A call's ``deadline=``: seconds, None for no bound, or (left out) ``Default.CLIENT``."""


@dataclass
class Bound:
    """The deadline of the call running: when it ends (the event loop's clock; None for a call whose caller
    lifted the bound, ``deadline=None``) and the ``X-Request-ID`` of every HTTP request made within it, for the
    error that ends it."""

    end: float | None
    request_ids: list[str] = field(default_factory=list)


_running: ContextVar[Bound | None] = ContextVar("gateway_client_deadline", default=None)


def checked(seconds: float | None) -> float | None:
    """``seconds`` if it can bound a call (positive and finite; None: no bound). Zero or less would fail
    every call, and NaN or infinity makes ``asyncio.timeout_at`` misbehave; refused at once instead."""
    if seconds is not None and (isinstance(seconds, bool) or not math.isfinite(seconds) or seconds <= 0):
        raise ValueError("deadline must be a positive, finite number of seconds (or None for no bound)")
    return seconds


def running() -> Bound | None:
    """The bound of the call running in this task, if it has one."""
    return _running.get()


async def within(seconds: float | None, call: Callable[[], Awaitable[_T]]) -> _T:
    """``call()``, abandoned after ``seconds`` with ``DeadlineExceeded`` (never asyncio's TimeoutError);
    inside another call's bound, within that bound (``seconds`` is then not used).

    Why ``seconds=None`` sets a bound too, one without an end: the calls made inside (``pseudonym_client``
    inside ``enrol``, each request of the keys' fetch) would otherwise find no bound running and each start
    the client's own, so a caller that lifted the deadline for a slow call still got ``DeadlineExceeded``."""
    checked(seconds)
    if _running.get() is not None:
        return await call()
    if seconds is None:
        unbounded = _running.set(Bound(None))
        try:
            return await call()
        finally:
            _running.reset(unbounded)
    bound = Bound(asyncio.get_running_loop().time() + seconds)
    scope = asyncio.timeout_at(bound.end)
    reset = _running.set(bound)
    try:
        async with scope:
            return await call()
    except TimeoutError as exc:
        if not scope.expired():  # not ours: a TimeoutError raised inside the call is passed on as it is
            raise
        raise DeadlineExceeded(seconds, tuple(bound.request_ids)) from exc
    finally:
        _running.reset(reset)

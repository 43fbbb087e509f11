"""Hand-over between asyncio callers and one writer thread: the two halves of a group commit.

Shared by the audit writer (:mod:`audit.writer`) and the gateway's batched inserts: both queue work from
request handlers, let one thread take whatever queued up into one transaction, and wake the callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

Item = TypeVar("Item")

Settlement = tuple["asyncio.Future[Any]", Any]
"""A caller's future and what it gets: a result, or an exception to raise."""


def take_queued(waiting: queue.SimpleQueue[Any], first: Item, limit: int, stop: object,
                weight: Callable[[Item], int] = lambda _item: 1) -> tuple[list[Item], bool]:
    """``first`` and everything queued right now, until the weights reach ``limit``; and whether the ``stop``
    sentinel was among it (the items before it are still returned, to be written)."""
    batch, total = [first], weight(first)
    while total < limit:
        try:
            item = waiting.get_nowait()
        except queue.Empty:
            break
        if item is stop:
            return batch, True
        batch.append(item)
        total += weight(item)
    return batch, False


def settle(settlements: Iterable[Settlement]) -> None:
    """Complete futures from the writer thread: one wake-up per event loop, not per future."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Settlement]] = {}
    for future, result in settlements:
        by_loop.setdefault(future.get_loop(), []).append((future, result))
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed already: nobody is waiting any more
            loop.call_soon_threadsafe(_settle_on_loop, group)


def _settle_on_loop(group: list[Settlement]) -> None:
    for future, result in group:
        if future.done():  # the caller was cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

"""Group commit for rows that many concurrent requests insert into one table.

Why: every exchange stores its outcome row before it answers. One transaction per request, each on a thread
of the pool, made N threads queue for SQLite's single write lock, and SQLite's busy handler waits in
growing sleeps (1, 2, 5, 10 ms ...) however short the holder's transaction is; under load most of a
request's time went there. Here one thread writes whatever rows queued up while it was busy, in one
transaction (``executemany`` of one compiled statement), and wakes the waiting requests once per batch.

Contract: ``await insert(row)`` returns only after the transaction holding the row committed. If a batch
fails, its rows are retried one per transaction, so that a bad row (e.g. a unique-key clash) fails only its
own caller with that row's exception; the others are written. ``insert(row, precondition)`` writes the row only
if ``precondition(connection)`` returns in its transaction (run before the rows are inserted, e.g. giving up a
claim the caller must still hold); if it raises, the row fails with that exception, as a bad row does.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Table

from audit.handoff import settle, take_queued
from audit.store import sqlite_writer_lock

_log = logging.getLogger(__name__)

_STOP = object()


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    future: asyncio.Future[None] = field(repr=False)
    precondition: Callable[[Connection], None] | None = None


class BatchedInsert:
    """Inserts into ``table`` through one writer thread, a transaction per batch of queued rows."""

    def __init__(self, engine: Engine, table: Table, *, max_batch: int = 256) -> None:
        self._engine = engine
        # On SQLite, queue with the audit log's writer in this process rather than in SQLite's busy handler.
        self._writer_lock: AbstractContextManager[Any] = (
            sqlite_writer_lock(engine) if engine.dialect.name == "sqlite" else nullcontext())
        self._statement = table.insert()
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()  # start and stop never race a row being queued
        self.transactions = 0  # for tests: how well the rows were batched

    async def insert(self, row: dict[str, Any], precondition: Callable[[Connection], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        pending = _Pending(row, loop.create_future(), precondition)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the writer of `{self._statement.table}` is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"insert-{self._statement.table}",
                                                daemon=True)
                self._thread.start()
            self._queue.put(pending)
        await pending.future

    async def aclose(self) -> None:
        """Write what is queued, then stop the thread; later inserts fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(_STOP)
        if thread is not None:
            await asyncio.to_thread(thread.join)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, _Pending)
            batch, stop = self._gather(item)
            self._write(batch)
            if stop:
                return

    def _gather(self, first: _Pending) -> tuple[list[_Pending], bool]:
        return take_queued(self._queue, first, self._max_batch, _STOP)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            self._commit(batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, [exc])
                return
            _log.warning("batch of %d rows into %s failed (%s); writing them one by one", len(batch),
                         self._statement.table, type(exc).__name__)
            results: list[BaseException | None] = []
            for pending in batch:
                try:
                    self._commit([pending])
                    results.append(None)
                except Exception as single:
                    results.append(single)
            _settle(batch, results)
            return
        _settle(batch, [None] * len(batch))

    def _commit(self, batch: list[_Pending]) -> None:
        with self._writer_lock, self._engine.begin() as connection:
            for pending in batch:
                if pending.precondition is not None:
                    pending.precondition(connection)
            connection.execute(self._statement, [pending.row for pending in batch])
        self.transactions += 1


def _settle(batch: list[_Pending], results: list[BaseException | None]) -> None:
    settle((pending.future, result) for pending, result in zip(batch, results, strict=True))

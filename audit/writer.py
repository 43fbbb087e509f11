"""Group commit: many concurrent ``await writer.record(...)`` calls share one database transaction.

A request may only be answered once its audit entries are durable, so every request waits for a
commit. One commit per request would make the commit rate (an fsync each on SQLite) the gateway's
throughput limit. Instead, requests hand their events to one background thread and wait on a future;
the thread takes everything that queued up while the previous transaction was committing and writes
it in the next one. Under load, batches grow by themselves; when idle, a lone request is written at
once (no artificial delay).

Contract for callers:

* ``record`` returns receipts only after the commit that made the events durable;
* if that transaction fails, every caller in the batch gets an :class:`~audit.errors.AuditWriteError`
  (chained to the cause) and must deny: the whole batch was rolled back;
* events are guarded and canonicalised in the caller's own call, so one caller's invalid event
  (:class:`~audit.errors.PersonalDataError`, :class:`~audit.errors.InvalidEvent`) fails only that
  caller and never a shared batch;
* a caller that is cancelled after handing over its events does not un-write them: an audit log
  errs on the side of recording;
* a caller may hand over a :class:`CompanionRow` with its events: a row of another table in the same
  database that commits in the same transaction as the events, so a request that must make both durable
  before it answers waits for one commit instead of two. If a batch holding companion rows fails, each of
  its callers is tried again in a transaction of its own: a row that cannot be written (a unique key taken,
  a precondition refused) then fails only its own caller, with nothing of that caller written; a fault of
  the database still fails them all.

While idle the thread applies the checkpoint policy's time limit, so a quiet log still gets its
checkpoint within ``every_seconds``. It retries a failing checkpoint every idle second, but logs the failure
once when it starts, at most once a minute while it lasts and once when it ends (:mod:`audit.failure_report`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy import Connection, Table

from audit.direct_insert import insert_rows
from audit.errors import AuditWriteError, CompanionRefused
from audit.events import AuditEvent
from audit.failure_report import FailureReport
from audit.handoff import Settlement, settle, take_queued
from audit.log import PreparedEvent, Receipt, prepare

_log = logging.getLogger(__name__)


class Appender(Protocol):
    """What the writer needs from a log (:class:`audit.log.AuditLog`, or a fake in tests)."""

    def append_prepared(self, prepared: Sequence[PreparedEvent],
                        within: Callable[[Connection, list[Receipt]], None] | None = None) -> list[Receipt]: ...

    def maybe_issue_checkpoint(self) -> object: ...

    def holding_connection(self) -> AbstractContextManager[None]: ...


@dataclass
class WriterStats:
    """Counters for tests and benchmarks: how well group commit is batching."""

    transactions: int = 0
    events: int = 0
    failed_transactions: int = 0
    largest_batch: int = 0


@dataclass(frozen=True, slots=True)
class CompanionRow:
    """A row for ``table`` that must commit together with a caller's events; ``build(receipts)`` gets
    those events' receipts (the row may cite their indices) and returns the row's column values. It runs
    on the writer thread inside the transaction, so it should only fill in what the receipts decide.

    ``precondition(connection)``, if given, runs in the same transaction before the row is inserted: a
    statement whose effect the row depends on (releasing a claim the caller must still hold, say). It
    raises to refuse; then nothing of its caller is written, as for a row that cannot be inserted. Without
    ``table`` and ``build`` the companion is the precondition alone: the events commit only if it holds."""

    table: Table | None
    build: Callable[[list[Receipt]], dict[str, Any]] | None
    precondition: Callable[[Connection], None] | None = None


@dataclass(slots=True)
class _Waiter:
    prepared: list[PreparedEvent]
    future: asyncio.Future[list[Receipt]] = field(repr=False)
    companion: CompanionRow | None = None


_STOP = object()


class AsyncAuditWriter:
    """Asyncio front end with one writer thread; use as ``async with AsyncAuditWriter(log) as writer``."""

    def __init__(self, log: Appender, *, max_batch_events: int = 5000, idle_interval: float | None = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` (monotonic seconds) paces the idle loop's failure lines; a fake one in tests."""
        self._log = log
        self._max_batch_events = max_batch_events
        self._idle_interval = idle_interval
        self._checkpoint_failures = FailureReport(_log, "periodic audit checkpoint", clock=clock)
        self._queue: queue.SimpleQueue[_Waiter | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._state_lock = threading.Lock()  # a record never slips in behind the stop request
        self.stats = WriterStats()

    async def __aenter__(self) -> AsyncAuditWriter:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self._closed:
            raise AuditWriteError("audit writer is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
            self._thread.start()

    async def aclose(self) -> None:
        """Write what is queued, then stop the thread; later ``record`` calls fail."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is not None:
                self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._fail_leftovers()

    async def record(self, events: Sequence[AuditEvent], companion: CompanionRow | None = None) -> list[Receipt]:
        """Durably log ``events`` (in order, consecutive indices) and return their receipts; with
        ``companion``, its row is committed in the same transaction. Without events nothing is written,
        so a companion needs at least one event."""
        prepared = [prepare(event) for event in events]
        if not prepared:
            if companion is not None:
                raise ValueError("a companion row needs at least one event to commit with")
            return []
        loop = asyncio.get_running_loop()
        waiter = _Waiter(prepared, loop.create_future(), companion)
        with self._state_lock:
            if self._closed or self._thread is None:
                raise AuditWriteError("audit writer is not running")
            self._queue.put(waiter)
        return await waiter.future

    async def record_one(self, event: AuditEvent) -> Receipt:
        return (await self.record([event]))[0]

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with self._log.holding_connection():  # one connection for all of this thread's commits
                self._serve()
        finally:  # however the thread ends, nobody may wait for it any more
            with self._state_lock:
                self._closed = True
            self._fail_leftovers()

    def _serve(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._idle_interval)
            except queue.Empty:
                self._idle()
                continue
            if item is _STOP:
                return
            assert isinstance(item, _Waiter)
            batch, stop = self._gather(item)
            self._commit(batch)
            if stop:
                return

    def _gather(self, first: _Waiter) -> tuple[list[_Waiter], bool]:
        """Everything queued right now, up to the batch limit; whether a stop request was among it."""
        return take_queued(self._queue, first, self._max_batch_events, _STOP, lambda waiter: len(waiter.prepared))

    def _commit(self, batch: list[_Waiter]) -> None:
        try:
            receipts = self._append(batch)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._fail(batch, exc)
                raise
            if len(batch) > 1 and any(waiter.companion is not None for waiter in batch):
                # A companion row may fail on its own account (a unique key another process took first):
                # each caller again in a transaction of its own, so only that caller is refused.
                self.stats.failed_transactions += 1
                _log.log(_level_of(exc, logging.WARNING),
                         "audit batch of %d callers with companion rows failed (%s); writing them one by one",
                         len(batch), type(exc).__name__)
                for waiter in batch:
                    try:
                        self._settle_written([waiter], self._append([waiter]))
                    except Exception as single:
                        self._fail([waiter], single)
                return
            self._fail(batch, exc)
            return
        self._settle_written(batch, receipts)

    def _append(self, batch: list[_Waiter]) -> list[Receipt]:
        flat = [prepared for waiter in batch for prepared in waiter.prepared]
        receipts = self._log.append_prepared(flat, _companions_of(batch))
        self.stats.transactions += 1
        self.stats.events += len(flat)
        self.stats.largest_batch = max(self.stats.largest_batch, len(flat))
        return receipts

    def _settle_written(self, batch: list[_Waiter], receipts: list[Receipt]) -> None:
        position, outcomes = 0, list[Settlement]()
        for waiter in batch:
            outcomes.append((waiter.future, receipts[position : position + len(waiter.prepared)]))
            position += len(waiter.prepared)
        settle(outcomes)

    def _fail(self, batch: list[_Waiter], exc: BaseException) -> None:
        self.stats.failed_transactions += 1
        companions = sorted({str(w.companion.table) for w in batch if w.companion and w.companion.table is not None})
        _log.log(_level_of(exc, logging.ERROR), "audit batch of %d events%s failed: %s",
                 sum(len(w.prepared) for w in batch),
                 f" with rows for {', '.join(companions)}" if companions else "", type(exc).__name__)
        failures: list[Settlement] = []
        for waiter in batch:
            error = AuditWriteError(f"audit log write failed ({type(exc).__name__}); deny the request")
            error.__cause__ = exc
            failures.append((waiter.future, error))
        settle(failures)

    def _idle(self) -> None:
        try:
            self._log.maybe_issue_checkpoint()
        except Exception as exc:  # keep writing entries even if a periodic checkpoint fails
            self._checkpoint_failures.failed(exc)
        else:
            self._checkpoint_failures.succeeded()

    def _fail_leftovers(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Waiter):
                settle([(item.future, AuditWriteError("audit writer closed before writing"))])


def _level_of(exc: BaseException, fault: int) -> int:
    """``fault``'s log level for a failure of the log, INFO for a caller's expected refusal: at a busy limit
    (rule 6's count moving) refusals are routine, and an error line for each would hide real faults."""
    return logging.INFO if isinstance(exc, CompanionRefused) else fault


def _companions_of(batch: list[_Waiter]) -> Callable[[Connection, list[Receipt]], None] | None:
    """What the log runs inside the batch's transaction: the companion rows, one ``executemany`` per table,
    each built from its own caller's slice of the receipts (or None when no caller brought one)."""
    if all(waiter.companion is None for waiter in batch):
        return None

    def write(connection: Connection, receipts: list[Receipt]) -> None:
        rows: defaultdict[Table, list[dict[str, Any]]] = defaultdict(list)
        position = 0
        for waiter in batch:
            mine = receipts[position : position + len(waiter.prepared)]
            position += len(waiter.prepared)
            companion = waiter.companion
            if companion is not None:
                if companion.precondition is not None:
                    companion.precondition(connection)
                if companion.table is not None and companion.build is not None:
                    rows[companion.table].append(companion.build(mine))
        for table, values in rows.items():
            insert_rows(connection, table, values)

    return write

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
  errs on the side of recording; one that must know even then whether they were written takes the commit's
  future (``handed``) and waits for it shielded;
* a caller may hand over a :class:`CompanionRow` with its events: a row of another table in the same
  database that commits in the same transaction as the events, so a request that must make both durable
  before it answers waits for one commit instead of two. Companions' preconditions run first in the
  transaction, before any entry is written. When one of them refuses in a batch of several callers, the
  transaction is rolled back before anything is written and the batch begun again with each caller's
  precondition in a savepoint of its own (:mod:`audit.savepoint`): a refusing caller is then left out alone,
  with nothing of it written, and the others commit in that one transaction (a retry of an answered
  ``Idempotency-Key`` is refused this way in every batch it joins). On PostgreSQL one transaction takes at most
  64 savepoints (:func:`audit.savepoint.per_transaction`): the callers past them are begun again in the next
  transaction, once the one before has committed and its callers are answered. If a transaction still fails (a
  row that cannot be inserted, a unique key taken), each of its callers not yet written is tried again in a
  transaction of its own: such a row then fails only its own caller; a fault of the database still fails them all.

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
from sqlalchemy.exc import SQLAlchemyError

from audit import savepoint, store
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
                        within: Callable[[Connection, list[Receipt]], None] | None = None, *,
                        admit: Callable[[Connection], Sequence[PreparedEvent]] | None = None) -> list[Receipt]: ...

    def maybe_issue_checkpoint(self) -> object: ...

    def holding_connection(self) -> AbstractContextManager[None]: ...


@dataclass
class WriterStats:
    """Counters for tests and benchmarks: how well group commit is batching."""

    transactions: int = 0
    events: int = 0
    failed_transactions: int = 0
    largest_batch: int = 0
    isolated_batches: int = 0
    """Batches begun again with a savepoint per caller, after a precondition refused (see the module's doc)."""
    refused_callers: int = 0
    """Callers left out of a committed batch by their own precondition."""


@dataclass(frozen=True, slots=True)
class CompanionRow:
    """A row for ``table`` that must commit together with a caller's events; ``build(receipts)`` gets
    those events' receipts (the row may cite their indices) and returns the row's column values. It runs
    on the writer thread inside the transaction, so it should only fill in what the receipts decide.

    ``precondition(connection)``, if given, runs in the same transaction, under the log's append lock, before
    any entry is written: a statement whose effect the row depends on (releasing a claim the caller must still
    hold, say). It raises to refuse; then nothing of its caller is written (what it did itself is undone), as
    for a row that cannot be inserted, and the callers of its batch are written without it. It may run up to
    three times (the batch, the batch begun again with savepoints, its caller alone; the earlier transactions
    rolled back), so it keeps no state of its own across runs. Without ``table`` and
    ``build`` the companion is the precondition alone: the events commit only if it holds."""

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
                 clock: Callable[[], float] = time.monotonic, max_savepoints: int | None = None) -> None:
        """``clock`` (monotonic seconds) paces the idle loop's failure lines; a fake one in tests.
        ``max_savepoints``: the savepoints one transaction of a batch begun again may take (at least 1); None: the
        database's own limit (:func:`audit.savepoint.per_transaction`)."""
        if max_savepoints is not None and max_savepoints < 1:
            raise ValueError("max_savepoints must be at least 1")
        self._log = log
        self._max_batch_events = max_batch_events
        self._max_savepoints = max_savepoints
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
        return await self.handed(events, companion)

    def handed(self, events: Sequence[AuditEvent], companion: CompanionRow | None = None
               ) -> asyncio.Future[list[Receipt]]:
        """``record`` without the wait: ``events`` handed over now, and the future of their commit (raises as
        ``record`` does). A caller cancelled while it waits for ``record`` cancels that future, and with it what
        the commit came to (the events are written all the same); one that must know it even then (whether an
        entry is in the log) waits for this future shielded (``asyncio.shield``), which leaves it to be settled."""
        prepared = [prepare(event) for event in events]
        loop = asyncio.get_running_loop()
        if not prepared:
            if companion is not None:
                raise ValueError("a companion row needs at least one event to commit with")
            nothing: asyncio.Future[list[Receipt]] = loop.create_future()
            nothing.set_result([])
            return nothing
        waiter = _Waiter(prepared, loop.create_future(), companion)
        with self._state_lock:
            if self._closed or self._thread is None:
                raise AuditWriteError("audit writer is not running")
            self._queue.put(waiter)
        return waiter.future

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
        """``batch`` written in one transaction; if a caller's precondition refused in a batch of several, the
        transaction was rolled back before any entry and is begun again with a savepoint per caller, in as many
        transactions as the savepoint limit needs. Each transaction's callers are answered once it commits, so a
        later one that fails leaves them written, and only the callers not yet written are tried again."""
        pending, isolate = batch, False
        while pending:
            try:
                written = self._write(_Batch(pending, isolate=isolate, max_savepoints=self._max_savepoints))
            except _Isolate:
                self.stats.isolated_batches += 1
                isolate = True
                continue
            except Exception as exc:
                self._failed(pending, exc)
                return
            except BaseException as exc:
                self._fail(pending, exc)
                raise
            self._settle_written(written)
            pending = written.deferred

    def _failed(self, batch: list[_Waiter], exc: Exception) -> None:
        """``batch``'s transaction failed: each caller again in a transaction of its own if any has a companion
        row, which may fail on its own account (a unique key another process took first), so that only its
        caller is refused; else they all fail with it."""
        if len(batch) > 1 and any(waiter.companion is not None for waiter in batch):
            self.stats.failed_transactions += 1
            _log.log(_level_of(exc, logging.WARNING),
                     "audit batch of %d callers with companion rows failed (%s); writing them one by one",
                     len(batch), type(exc).__name__)
            for waiter in batch:
                try:
                    self._settle_written(self._write(_Batch([waiter], isolate=False)))
                except Exception as single:
                    self._fail([waiter], single)
            return
        self._fail(batch, exc)

    def _write(self, work: _Batch) -> _Batch:
        flat = [prepared for waiter in work.waiters for prepared in waiter.prepared]
        if work.companions:
            work.receipts = self._log.append_prepared(flat, work.write, admit=work.admit)
        else:
            work.receipts = self._log.append_prepared(flat)
        self.stats.transactions += 1
        self.stats.events += len(work.receipts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(work.receipts))
        return work

    def _settle_written(self, work: _Batch) -> None:
        position, outcomes = 0, list[Settlement]()
        for waiter in work.admitted:
            outcomes.append((waiter.future, work.receipts[position : position + len(waiter.prepared)]))
            position += len(waiter.prepared)
        for waiter, refused in work.refused:
            self.stats.refused_callers += 1
            _log.log(_level_of(refused, logging.ERROR), "audit caller of %d events%s refused by its precondition "
                     "(%s); the others of its batch were written", len(waiter.prepared), _rows_for([waiter]),
                     type(refused).__name__)
            outcomes.append((waiter.future, _write_error(_as_the_log_raises(refused, work.database_errors))))
        settle(outcomes)

    def _fail(self, batch: list[_Waiter], exc: BaseException) -> None:
        self.stats.failed_transactions += 1
        _log.log(_level_of(exc, logging.ERROR), "audit batch of %d events%s failed: %s",
                 sum(len(w.prepared) for w in batch), _rows_for(batch), type(exc).__name__)
        settle([(waiter.future, _write_error(exc)) for waiter in batch])

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


def _rows_for(batch: list[_Waiter]) -> str:
    """The tables of the batch's companion rows, for a log line (names only, never values)."""
    tables = sorted({str(w.companion.table) for w in batch if w.companion and w.companion.table is not None})
    return f" with rows for {', '.join(tables)}" if tables else ""


def _as_the_log_raises(refusal: Exception, database_errors: tuple[type[Exception], ...]) -> Exception:
    """A database error of a precondition refused in a savepoint (SQLAlchemy's, or the driver's own for a statement
    sent to it directly: :func:`audit.store.database_errors`), wrapped as the log wraps it when it fails the whole
    transaction: callers see the same chain of causes either way. Why it matters: a caller tells its precondition's
    own refusal or defect from a failing log by the direct cause (the escalation desk answers a defect with a 500,
    a failing log with a 503); an expected refusal (:class:`CompanionRefused`) is no database error and stays."""
    if isinstance(refusal, database_errors):
        wrapped = AuditWriteError(f"audit log write failed ({type(refusal).__name__})")
        wrapped.__cause__ = refusal
        return wrapped
    return refusal


def _write_error(cause: BaseException) -> AuditWriteError:
    error = AuditWriteError(f"audit log write failed ({type(cause).__name__}); deny the request")
    error.__cause__ = cause
    return error


def _precondition_of(waiter: _Waiter) -> Callable[[Connection], None] | None:
    return waiter.companion.precondition if waiter.companion is not None else None


class _Isolate(Exception):
    """A companion's precondition refused in a batch of several callers: the transaction is rolled back (before
    any entry was written) and the batch begun again with a savepoint per caller."""


class _Batch:
    """One transaction's callers, and what the log runs inside it for their companions: the preconditions
    first (:meth:`admit`), then, after the entries, the rows, one ``executemany`` per table, each built from its
    own caller's slice of the receipts (:meth:`write`).

    ``isolate``: each precondition in a savepoint of its own, so a refusal leaves out only its caller (and what it
    did is undone); without, a refusal fails the transaction (:class:`_Isolate` in a batch of several callers,
    the refusal itself for a lone caller, which is refused with its transaction). Savepoints cost every caller
    of a batch two statements (a round trip each on PostgreSQL), refusals are rare: hence only on a retry.

    ``max_savepoints`` (None: :func:`audit.savepoint.per_transaction` of the database): once ``isolate`` has taken
    that many, the callers from the next one with a precondition on are left for another transaction
    (``deferred``), neither written nor refused."""

    __slots__ = ("admitted", "companions", "database_errors", "deferred", "isolate", "max_savepoints", "receipts",
                 "refused", "waiters")

    def __init__(self, waiters: list[_Waiter], *, isolate: bool, max_savepoints: int | None = None) -> None:
        self.waiters = waiters
        self.isolate = isolate
        self.max_savepoints = max_savepoints
        self.deferred: list[_Waiter] = []
        self.companions = any(waiter.companion is not None for waiter in waiters)
        self.admitted = waiters
        self.refused: list[tuple[_Waiter, Exception]] = []
        self.receipts: list[Receipt] = []
        # What the refusals' database errors are: known once a connection is (SQLAlchemy's alone until then).
        self.database_errors: tuple[type[Exception], ...] = (SQLAlchemyError,)

    def admit(self, connection: Connection) -> list[PreparedEvent]:
        self.admitted = self._isolated(connection) if self.isolate else self._shared(connection)
        return [prepared for waiter in self.admitted for prepared in waiter.prepared]

    def _shared(self, connection: Connection) -> list[_Waiter]:
        """Every precondition without a savepoint: a refusal fails the transaction (:class:`_Isolate` when others
        share it)."""
        for waiter in self.waiters:
            if (precondition := _precondition_of(waiter)) is not None:
                try:
                    precondition(connection)
                except Exception as exc:
                    if len(self.waiters) > 1:
                        raise _Isolate from exc
                    raise
        return self.waiters

    def _isolated(self, connection: Connection) -> list[_Waiter]:
        """Each precondition in a savepoint of its own, up to the limit: the callers whose preconditions held."""
        self.refused, self.deferred = [], []
        self.database_errors = store.database_errors(connection.dialect)
        limit = self.max_savepoints if self.max_savepoints is not None else savepoint.per_transaction(
            connection.dialect)
        admitted: list[_Waiter] = []
        opened = 0
        for position, waiter in enumerate(self.waiters):
            if (precondition := _precondition_of(waiter)) is None:
                admitted.append(waiter)
                continue
            if limit is not None and opened == limit:
                self.deferred = self.waiters[position:]
                break
            opened += 1
            if (refused := savepoint.refusal(connection, precondition)) is None:
                admitted.append(waiter)
            else:
                self.refused.append((waiter, refused))
        return admitted

    def write(self, connection: Connection, receipts: list[Receipt]) -> None:
        rows: defaultdict[Table, list[dict[str, Any]]] = defaultdict(list)
        position = 0
        for waiter in self.admitted:
            mine = receipts[position : position + len(waiter.prepared)]
            position += len(waiter.prepared)
            companion = waiter.companion
            if companion is not None and companion.table is not None and companion.build is not None:
                rows[companion.table].append(companion.build(mine))
        for table, values in rows.items():
            insert_rows(connection, table, values)

"""Group commit of outcome rows (gateway.db.batched_insert) on SQLite and PostgreSQL: rows from concurrent
callers share transactions, every caller returns only once its row is committed, and a bad row fails only
its own caller."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, func, select
from sqlalchemy.exc import IntegrityError

from audit.store import sqlite_writer_lock
from gateway.db.batched_insert import BatchedInsert
from gateway.db.engine import make_engine
from gateway.exchange.tables import exchanges


def _row(number: int, idempotency_key: str | None = None) -> dict[str, Any]:
    return {"id": f"ex-{number}", "kind": "exchange", "created_at": datetime(2026, 11, 25, 10, tzinfo=UTC),
            "requester_org": "gemeente-amsterdam", "requester_system": "gemeente-amsterdam-vth",
            "partnership": "riec-amsterdam-amstelland", "purpose": "bibob-integrity-check",
            "case_reference": "C-1", "register_version": "v1", "policy_version": "p1", "request_sha256": "0" * 64,
            "idempotency_key": idempotency_key, "outcome": {"targets": [], "number": number},
            "sealed_records": None, "sealed_until": None}


def _stored_ids(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(select(exchanges.c.id)).scalars())


async def test_concurrent_rows_are_all_committed_in_fewer_transactions(engine: Engine) -> None:
    writer = BatchedInsert(engine, exchanges)
    await asyncio.gather(*(writer.insert(_row(n)) for n in range(200)))
    assert _stored_ids(engine) == {f"ex-{n}" for n in range(200)}  # durable when the callers returned
    assert writer.transactions < 200  # they queued while the first transaction ran and shared the next
    await writer.aclose()


async def test_a_clashing_row_fails_only_its_own_caller(engine: Engine) -> None:
    writer = BatchedInsert(engine, exchanges)
    await writer.insert(_row(0, idempotency_key="key-1"))
    results = await asyncio.gather(*(writer.insert(_row(n, "key-1" if n == 5 else None)) for n in range(1, 10)),
                                   return_exceptions=True)
    assert isinstance(results[4], IntegrityError)  # the same idempotency key for the same system again
    assert [r for i, r in enumerate(results) if i != 4] == [None] * 8
    assert _stored_ids(engine) == {f"ex-{n}" for n in range(10)} - {"ex-5"}
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(exchanges)).scalar_one() == 9
    await writer.aclose()


async def test_a_row_whose_precondition_refuses_fails_alone_and_what_the_precondition_did_goes_with_it(
        engine: Engine) -> None:
    """A precondition runs in its row's transaction: the rows of a batch with a refusing one are written one by
    one, the refused row and its precondition's own writes are rolled back, the others commit with theirs."""
    writer = BatchedInsert(engine, exchanges)

    def deleting(number: int, refuse: bool) -> Callable[[Connection], None]:
        def precondition(connection: Connection) -> None:
            connection.execute(delete(exchanges).where(exchanges.c.id == f"old-{number}"))
            if refuse:
                raise LookupError(f"precondition of row {number}")
        return precondition

    await asyncio.gather(*(writer.insert(_row(n) | {"id": f"old-{n}"}) for n in range(1, 6)))
    results = await asyncio.gather(*(writer.insert(_row(n), deleting(n, refuse=n == 3)) for n in range(1, 6)),
                                   return_exceptions=True)
    assert isinstance(results[2], LookupError)  # the precondition's own exception, for its caller alone
    assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
    assert _stored_ids(engine) == {"ex-1", "ex-2", "old-3", "ex-4", "ex-5"}
    await writer.aclose()


async def test_a_closed_writer_refuses_rows_and_writes_nothing(engine: Engine) -> None:
    writer = BatchedInsert(engine, exchanges)
    await writer.insert(_row(1))
    await writer.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await writer.insert(_row(2))
    assert _stored_ids(engine) == {"ex-1"}


async def test_on_sqlite_rows_queue_behind_the_audit_writer_lock(sqlite_db_url: str) -> None:
    """The outcome writer and the audit log's appends of one SQLite file share one lock in this process, so
    a writer waits on the lock (and is woken at once) instead of in SQLite's sleeping busy handler."""
    engine, other_engine = make_engine(sqlite_db_url), make_engine(sqlite_db_url)
    assert sqlite_writer_lock(engine) is sqlite_writer_lock(other_engine)  # per file, not per engine object
    writer = BatchedInsert(engine, exchanges)
    lock = sqlite_writer_lock(other_engine)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    pending = asyncio.ensure_future(writer.insert(_row(1)))
    await asyncio.sleep(0.2)
    assert not pending.done()  # waiting for the lock ...
    assert _stored_ids(engine) == set()  # ... and nothing written yet
    release.set()
    await asyncio.wait_for(pending, 5)
    assert _stored_ids(engine) == {"ex-1"}
    holder.join()
    await writer.aclose()
    engine.dispose()
    other_engine.dispose()

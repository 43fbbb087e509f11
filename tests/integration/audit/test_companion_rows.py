"""Companion rows: a row of another table committed in the same transaction as a caller's audit entries.

The exchange stores its outcome row this way (one commit instead of two per request); what it relies on:
the row is written exactly when the entries are, it can cite the entries' indices, and a row that cannot be
written takes its own caller's entries down with it (that caller denies) but not those of the callers it
shared a batch with — never entries without their row or a row without its entries."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import IntegrityError

from audit.errors import AuditWriteError, CompanionRefused
from audit.log import AuditLog, CheckpointPolicy, Receipt
from audit.store import run_on_driver
from audit.tables import audit_entries
from audit.verify import verify_database
from audit.writer import AsyncAuditWriter, CompanionRow
from tests.audit_support import engine_with_tables, log_signer, make_event, writer_held

_metadata = MetaData()
outcomes = Table("companion_test_outcomes", _metadata, Column("id", String(16), primary_key=True),
                 Column("first_index", Integer, nullable=False), Column("entries", Integer, nullable=False))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with engine_with_tables(db_url, _metadata) as engine:
        yield engine


def _row(name: str) -> CompanionRow:
    def build(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": name, "first_index": receipts[0].index, "entries": len(receipts)}
    return CompanionRow(outcomes, build)


def _count(engine: Engine, table: Table) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


async def test_rows_commit_with_their_callers_entries_and_cite_their_indices(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    async with AsyncAuditWriter(log) as writer:
        calls = [writer.record([make_event(i * 2), make_event(i * 2 + 1)], _row(f"r{i}") if i % 3 else None)
                 for i in range(60)]
        results = await asyncio.gather(*calls)
    assert writer.stats.transactions < 60, "callers with and without companions should share transactions"
    assert writer.stats.isolated_batches == 0  # no refusal: no savepoints
    with engine.connect() as connection:
        stored = {row.id: row for row in connection.execute(select(outcomes))}
    assert sorted(stored) == sorted(f"r{i}" for i in range(60) if i % 3)
    for i, receipts in enumerate(results):
        if i % 3:
            assert (stored[f"r{i}"].first_index, stored[f"r{i}"].entries) == (receipts[0].index, 2)
    assert _count(engine, audit_entries) == 120


async def test_a_row_that_cannot_be_written_fails_only_its_own_caller_and_writes_nothing_of_it(
        engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def clashing(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": "taken", "first_index": receipts[0].index, "entries": 1}  # primary key clash

    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], _row("taken"))
        plain, clash, fresh = await asyncio.gather(
            writer.record([make_event(1)]), writer.record([make_event(2)], CompanionRow(outcomes, clashing)),
            writer.record([make_event(3)], _row("fresh")), return_exceptions=True)
    assert isinstance(clash, AuditWriteError)
    assert isinstance(plain, list)
    assert isinstance(fresh, list)  # the callers queued beside it were written, whether or not they shared
    assert _count(engine, audit_entries) == 3 == log.size()  # ... but nothing of the refused caller
    assert _count(engine, outcomes) == 2
    with engine.connect() as connection:
        assert connection.execute(select(outcomes.c.first_index).where(outcomes.c.id == "taken")).scalar_one() == 0
    result = verify_database(engine, log.verifier)
    assert result.ok, result.failure


async def test_callers_sharing_a_batch_with_a_clashing_row_are_written_one_by_one(engine: Engine) -> None:
    """Forced into one batch: the writer thread is held inside a transaction while the three queue up."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    held, go = threading.Event(), threading.Event()

    def hold(receipts: list[Receipt]) -> dict[str, Any]:
        held.set()
        go.wait(10)
        return {"id": "taken", "first_index": receipts[0].index, "entries": 1}

    def clashing(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": "taken", "first_index": receipts[0].index, "entries": 1}

    async with AsyncAuditWriter(log) as writer:
        first = asyncio.ensure_future(writer.record([make_event(0)], CompanionRow(outcomes, hold)))
        await asyncio.to_thread(held.wait, 10)
        queued = [asyncio.ensure_future(writer.record([make_event(1)])),
                  asyncio.ensure_future(writer.record([make_event(2)], CompanionRow(outcomes, clashing))),
                  asyncio.ensure_future(writer.record([make_event(3)], _row("fresh")))]
        await asyncio.sleep(0.05)
        go.set()
        await first
        plain, clash, fresh = await asyncio.gather(*queued, return_exceptions=True)
    # the shared batch of three failed, then each caller had a transaction of its own: two written, one failed
    assert (writer.stats.failed_transactions, writer.stats.transactions) == (2, 3)
    assert isinstance(clash, AuditWriteError)
    assert [r.index for r in plain] == [1]  # type: ignore[union-attr]
    assert [r.index for r in fresh] == [2]  # type: ignore[union-attr]
    assert _count(engine, audit_entries) == 3
    assert _count(engine, outcomes) == 2


async def _in_one_batch(writer: AsyncAuditWriter, calls: Sequence[tuple[int, CompanionRow | None]]) -> list[Any]:
    """``calls`` (an event number and a companion each) written in one batch (:func:`writer_held`). Their
    results, exceptions as they are."""
    async with writer_held(writer):
        queued = [asyncio.ensure_future(writer.record([make_event(n)], companion)) for n, companion in calls]
    return list(await asyncio.gather(*queued, return_exceptions=True))


class _Refused(CompanionRefused):
    pass


async def test_a_precondition_refusing_in_a_batch_leaves_out_its_caller_alone_and_the_others_commit_once(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """A caller refused by its precondition in a shared batch (a retry of an answered Idempotency-Key, every
    time): the batch is rolled back before any entry and begun again with a savepoint per caller, so the
    others commit in one transaction; before, the batch was redone caller by caller, a commit each. What the
    refused precondition did is undone, and so is a statement that failed in the database (on PostgreSQL that
    leaves the transaction unusable but for its savepoint); what the others' preconditions did stays."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def delete_then_refuse(connection: Connection) -> None:
        connection.execute(outcomes.delete().where(outcomes.c.id == "kept"))
        raise _Refused

    def clash(connection: Connection) -> None:  # an IntegrityError of the database, not a refusal of Python
        connection.execute(outcomes.insert().values(id="kept", first_index=0, entries=1))

    def delete_gone(connection: Connection) -> None:
        if connection.execute(outcomes.delete().where(outcomes.c.id == "gone")).rowcount != 1:
            raise _Refused

    caplog.set_level(logging.INFO, logger="audit.writer")
    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], _row("kept"))
        await writer.record([make_event(1)], _row("gone"))
        before = (writer.stats.transactions, writer.stats.failed_transactions)
        plain, refused, clashed, fresh, took = await _in_one_batch(writer, [
            (2, None), (3, CompanionRow(outcomes, _row("r3").build, delete_then_refuse)),
            (4, CompanionRow(outcomes, _row("r4").build, clash)), (5, _row("r5")),
            (6, CompanionRow(outcomes, _row("r6").build, delete_gone))])
        after = (writer.stats.transactions, writer.stats.failed_transactions)
    assert isinstance(refused, AuditWriteError)
    assert isinstance(refused.__cause__, _Refused)
    assert isinstance(clashed, AuditWriteError)
    assert isinstance(clashed.__cause__, AuditWriteError)  # as when a lone caller's transaction fails
    assert isinstance(clashed.__cause__.__cause__, IntegrityError)
    assert [[r.index for r in receipts] for receipts in (plain, fresh, took)] == [[3], [4], [5]]
    # the holder's transaction and the batch's, nothing failed, no caller written alone
    assert (after[0] - before[0], after[1] - before[1]) == (2, 0)
    assert (writer.stats.isolated_batches, writer.stats.refused_callers) == (1, 2)
    with engine.connect() as connection:
        assert set(connection.execute(select(outcomes.c.id)).scalars()) == {"kept", "r5", "r6"}
    assert _count(engine, audit_entries) == 6 == log.size()  # 0, 1, the holder's, 2, 5, 6: not 3 nor 4
    result = verify_database(engine, log.verifier)
    assert result.ok, result.failure
    lines = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "audit.writer"]
    assert not [line for line in lines if "one by one" in line[1]]
    assert (logging.INFO, "audit caller of 1 events with rows for companion_test_outcomes refused by its "
            "precondition (_Refused); the others of its batch were written") in lines
    assert [level for level, message in lines if "IntegrityError" in message] == [logging.ERROR]


def _causes(exc: BaseException) -> list[type[BaseException]]:
    """The types along ``exc``'s explicit causes, itself first."""
    chain: list[type[BaseException]] = []
    cause: BaseException | None = exc
    while cause is not None:
        chain.append(type(cause))
        cause = cause.__cause__
    return chain


async def test_a_driver_error_of_a_precondition_in_a_redone_batch_fails_its_caller_as_a_failing_log(
        engine: Engine) -> None:
    """A precondition that sends a statement straight to the driver (as rule 6's count and the claim statements
    do) fails with the driver's own error (``sqlite3.Error``, ``psycopg.Error``), not SQLAlchemy's. Refused in its
    savepoint in a redone batch, that error was the direct cause of its caller's AuditWriteError, where alone (and
    for SQLAlchemy's errors) the cause is the log's AuditWriteError: a caller that tells its precondition's own
    defect from a failing log by that cause (the escalation desk) took a failing database for a bug, a 500
    instead of the 503. Now the same chain either way; the callers beside it are written."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def clash_on_the_driver(connection: Connection) -> None:  # a unique key taken, found by the driver
        run_on_driver(connection, f"INSERT INTO {outcomes.name} (id, first_index, entries) VALUES ('kept', 0, 1)")

    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], _row("kept"))
        with pytest.raises(AuditWriteError) as alone:
            await writer.record([make_event(1)], CompanionRow(None, None, clash_on_the_driver))
        plain, clashed, fresh = await _in_one_batch(writer, [
            (2, None), (3, CompanionRow(None, None, clash_on_the_driver)), (4, _row("r4"))])
    assert writer.stats.isolated_batches == 1
    assert isinstance(clashed, AuditWriteError)
    assert _causes(clashed) == _causes(alone.value)
    assert _causes(clashed)[:2] == [AuditWriteError, AuditWriteError]
    assert issubclass(_causes(clashed)[2], engine.dialect.loaded_dbapi.Error)
    assert [[r.index for r in receipts] for receipts in (plain, fresh)] == [[2], [3]]
    with engine.connect() as connection:
        assert set(connection.execute(select(outcomes.c.id)).scalars()) == {"kept", "r4"}


async def test_a_batch_begun_again_takes_at_most_64_savepoints_a_transaction_on_postgresql(engine: Engine) -> None:
    """A redo takes a savepoint per caller with a precondition, released after it, so one is open at a time; but
    a released subtransaction that wrote keeps its id in its PostgreSQL backend's cache (64 of them) until the
    transaction ends, and past that every other session's snapshot pays for it. So on PostgreSQL 70 callers are
    begun again in two transactions, 64 and 6; SQLite, which has no such cache, keeps them in one."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def claim(name: str) -> Callable[[Connection], None]:  # a write, as rule 6's count and a claim are
        def precondition(connection: Connection) -> None:
            connection.execute(outcomes.insert().values(id=name, first_index=0, entries=0))
        return precondition

    def claim_then_refuse(connection: Connection) -> None:
        claim("p10")(connection)
        raise _Refused

    calls = [(n, CompanionRow(None, None, claim_then_refuse if n == 10 else claim(f"p{n}"))) for n in range(70)]
    async with AsyncAuditWriter(log) as writer:
        before = writer.stats.transactions
        results = await _in_one_batch(writer, calls)
        redone_in = writer.stats.transactions - before - 1  # the holder's own transaction aside
    assert redone_in == (2 if engine.dialect.name == "postgresql" else 1)
    assert writer.stats.isolated_batches == 1
    assert isinstance(results[10], AuditWriteError)
    assert isinstance(results[10].__cause__, _Refused)
    written = [n for n, result in enumerate(results) if isinstance(result, list)]
    assert written == [n for n in range(70) if n != 10]
    assert [result[0].index for result in results if isinstance(result, list)] == list(range(1, 70))  # in order
    with engine.connect() as connection:
        assert set(connection.execute(select(outcomes.c.id)).scalars()) == {f"p{n}" for n in written}
    assert _count(engine, audit_entries) == 70 == log.size()
    result = verify_database(engine, log.verifier)
    assert result.ok, result.failure


async def test_callers_past_the_savepoint_limit_go_to_the_next_transaction_and_a_failing_one_leaves_earlier_written(
        engine: Engine) -> None:
    """At four savepoints a transaction, ten callers are begun again four at a time (the refused one among the
    first four counts too). The first four commit and are answered; the second four fail on a row (a unique key
    taken): only the callers not yet written are tried again, each alone, so none is written twice, the clashing
    one fails alone, and the last two (never tried in a savepoint) are written too."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def holds(_connection: Connection) -> None:
        pass

    def refuse(_connection: Connection) -> None:
        raise _Refused

    def clashing(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": "kept", "first_index": receipts[0].index, "entries": 1}

    calls = [(n, CompanionRow(outcomes, clashing if n == 6 else _row(f"r{n}").build, refuse if n == 2 else holds))
             for n in range(10)]
    async with AsyncAuditWriter(log, max_savepoints=4) as writer:
        await writer.record([make_event(100)], _row("kept"))
        before = writer.stats.transactions
        results = await _in_one_batch(writer, calls)
        transactions = writer.stats.transactions - before - 1  # the holder's own transaction aside
    # the first four's, then 4, 5, 7, 8 and 9 alone (the second four's failed, and 6's alone)
    assert transactions == 6
    assert (writer.stats.isolated_batches, writer.stats.refused_callers) == (1, 1)
    assert isinstance(results[2], AuditWriteError)
    assert isinstance(results[2].__cause__, _Refused)
    assert isinstance(results[6], AuditWriteError)
    assert IntegrityError in _causes(results[6])
    written = {n: result[0].index for n, result in enumerate(results) if isinstance(result, list)}
    assert sorted(written) == [0, 1, 3, 4, 5, 7, 8, 9]
    assert sorted(written.values()) == list(range(2, 10))  # each once: nothing written twice
    with engine.connect() as connection:
        stored = {row.id: row.first_index for row in connection.execute(select(outcomes))}
    assert stored == {"kept": 0} | {f"r{n}": index for n, index in written.items()}
    assert _count(engine, audit_entries) == 10 == log.size()
    result = verify_database(engine, log.verifier)
    assert result.ok, result.failure


def test_a_writer_takes_at_least_one_savepoint_a_transaction(engine: Engine) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AsyncAuditWriter(AuditLog(engine, log_signer()), max_savepoints=0)


async def test_a_batch_whose_callers_are_all_refused_writes_nothing(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def refuse(connection: Connection) -> None:
        connection.execute(outcomes.insert().values(id="undone", first_index=0, entries=1))
        raise _Refused

    async with AsyncAuditWriter(log) as writer:
        results = await _in_one_batch(writer, [(n, CompanionRow(None, None, refuse)) for n in (1, 2, 3)])
        assert all(isinstance(result, AuditWriteError) for result in results)
        # left out of one transaction, which then had nothing to write; none tried alone
        assert (writer.stats.failed_transactions, writer.stats.refused_callers) == (0, 3)
        assert len(await writer.record([make_event(4)], _row("after"))) == 1  # the writer carries on
    assert _count(engine, audit_entries) == 2 == log.size()  # the holder's and the last
    assert _count(engine, outcomes) == 1


async def test_a_build_that_raises_fails_the_batch_and_writes_nothing(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def broken(receipts: list[Receipt]) -> dict[str, Any]:
        raise TypeError("a bug in the row builder")

    async with AsyncAuditWriter(log) as writer:
        with pytest.raises(AuditWriteError):
            await writer.record([make_event(0)], CompanionRow(outcomes, broken))
        assert _count(engine, audit_entries) == 0
        assert len(await writer.record([make_event(1)], _row("after"))) == 1  # the writer carries on
    assert (_count(engine, audit_entries), _count(engine, outcomes)) == (1, 1)


async def test_a_refused_precondition_fails_only_its_caller_and_undoes_what_it_did(engine: Engine) -> None:
    """A precondition runs in the caller's transaction before its row: what it changed is undone with the rest
    when it refuses, and the callers beside it are written."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    class Refused(Exception):
        pass

    def delete_then_refuse(connection: Connection) -> None:
        connection.execute(outcomes.delete().where(outcomes.c.id == "claim"))
        raise Refused

    def delete_claim(connection: Connection) -> None:
        if connection.execute(outcomes.delete().where(outcomes.c.id == "claim")).rowcount != 1:
            raise Refused

    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], _row("claim"))
        refused, beside = await asyncio.gather(
            writer.record([make_event(1)], CompanionRow(outcomes, _row("r1").build, delete_then_refuse)),
            writer.record([make_event(2)], _row("r2")), return_exceptions=True)
        assert isinstance(refused, AuditWriteError)
        assert isinstance(refused.__cause__, Refused)
        assert isinstance(beside, list)
        with engine.connect() as connection:
            assert set(connection.execute(select(outcomes.c.id)).scalars()) == {"claim", "r2"}  # delete undone
        await writer.record([make_event(3)], CompanionRow(outcomes, _row("r3").build, delete_claim))
        with pytest.raises(AuditWriteError):  # the claim is gone: the same precondition now refuses
            await writer.record([make_event(4)], CompanionRow(outcomes, _row("r4").build, delete_claim))
    with engine.connect() as connection:
        assert set(connection.execute(select(outcomes.c.id)).scalars()) == {"r2", "r3"}
    assert _count(engine, audit_entries) == 3 == log.size()  # events 0, 2 and 3: nothing of the refused two


async def test_a_companion_without_events_is_refused(engine: Engine) -> None:
    log = AuditLog(engine, log_signer())
    async with AsyncAuditWriter(log) as writer:
        with pytest.raises(ValueError, match="at least one event"):
            await writer.record([], _row("alone"))
    assert _count(engine, outcomes) == 0


async def test_an_expected_refusal_is_logged_quietly_and_a_fault_loudly(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Rule 6's count moving at a busy limit refused write-aheads routinely, and each refusal was an error line
    ("audit batch ... failed"), hiding real faults among them. A caller's expected refusal (a
    :class:`CompanionRefused`) is now logged at INFO; any other failure still at ERROR."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    class Moved(CompanionRefused):
        pass

    def refuse(connection: Connection) -> None:
        raise Moved

    def fault(connection: Connection) -> None:
        raise RuntimeError("a bug")

    caplog.set_level(logging.INFO, logger="audit.writer")
    async with AsyncAuditWriter(log) as writer:
        for precondition in (refuse, fault):
            with pytest.raises(AuditWriteError):
                await writer.record([make_event(0)], CompanionRow(outcomes, _row("r").build, precondition))
    levels = [(record.levelno, record.getMessage().rsplit(": ", 1)[-1]) for record in caplog.records
              if record.name == "audit.writer"]
    assert levels == [(logging.INFO, "Moved"), (logging.ERROR, "RuntimeError")]

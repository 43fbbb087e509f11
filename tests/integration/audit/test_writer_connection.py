"""The audit writer's thread keeps one SQLite connection for all of its commits (``AuditLog.holding_connection``)
instead of taking one from the pool and returning it per transaction (the writer's fixed cost per request), gives it
back to the pool after a database error and writes on with another, keeps it through a refused companion, takes a
new one after the engine was disposed (as the pool's users do: how the tests make a disk full), and on
PostgreSQL still takes one per transaction (the pool's pre-ping catches a restarted server)."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, event, func, select

from audit.errors import AuditWriteError, CompanionRefused
from audit.log import AuditLog, CheckpointPolicy
from audit.tables import audit_entries
from audit.verify import verify_database
from audit.writer import AsyncAuditWriter, CompanionRow
from tests.audit_support import log_signer, make_event


def _checkouts(engine: Engine) -> list[int]:
    taken: list[int] = []
    event.listen(engine, "checkout", lambda dbapi, record, proxy: taken.append(id(dbapi)))
    return taken


def _entries(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)).scalar_one())


class _Refused(CompanionRefused):
    pass


def _refuse(connection: Connection) -> None:
    raise _Refused("the precondition does not hold")


def _fault(connection: Connection) -> None:
    connection.exec_driver_sql("SELECT * FROM no_such_table")  # a database error inside the transaction


async def test_the_writer_commits_on_one_connection_on_sqlite_and_one_per_commit_elsewhere(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=4, every_seconds=None))
    taken = _checkouts(engine)
    async with AsyncAuditWriter(log, idle_interval=None) as writer:
        for n in range(6):
            await writer.record([make_event(n)])
    sqlite = engine.dialect.name == "sqlite"
    assert len(taken) == (1 if sqlite else 6)
    assert _entries(engine) == 6
    assert verify_database(engine, log.verifier).ok


async def test_after_a_refusal_and_a_database_error_the_writer_writes_on(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=3, every_seconds=None))
    taken = _checkouts(engine)
    async with AsyncAuditWriter(log, idle_interval=None) as writer:
        await writer.record([make_event(0)])
        with pytest.raises(AuditWriteError):
            await writer.record([make_event(1)], CompanionRow(None, None, _refuse))
        await writer.record([make_event(2)])
        kept = len(taken)
        with pytest.raises(AuditWriteError):
            await writer.record([make_event(3)], CompanionRow(None, None, _fault))
        await writer.record([make_event(4)])
        await writer.record([make_event(5)])
    if engine.dialect.name == "sqlite":
        assert kept == 1  # the refusal rolled its transaction back and kept the connection
        assert len(taken) == 2  # the database error gave it back; the next commit took another, and kept it
    assert _entries(engine) == 4  # neither failed caller's entry
    assert verify_database(engine, log.verifier).ok


async def test_after_the_engine_is_disposed_the_writer_takes_a_new_connection(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=3, every_seconds=None))
    taken = _checkouts(engine)
    async with AsyncAuditWriter(log, idle_interval=None) as writer:
        await writer.record([make_event(0)])
        await writer.record([make_event(1)])
        engine.dispose()
        await writer.record([make_event(2)])
        await writer.record([make_event(3)])
    assert len(taken) == (2 if engine.dialect.name == "sqlite" else 4)
    assert _entries(engine) == 4
    assert verify_database(engine, log.verifier).ok

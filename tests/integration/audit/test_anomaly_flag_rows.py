"""An anomaly flag's row (``audit_anomaly_flags``) commits with its ``anomaly.flagged`` entry and makes it the only
one for its actor, organisation, day and metric, whichever writer (gateway process) commits it: the losing
caller's entry is not written, and the callers that shared its group commit lose nothing."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date

import pytest
from sqlalchemy import Engine, func, select

from audit.anomaly import Flag, FlagLoggedAlready, flag_companion, flag_logged
from audit.errors import AuditWriteError
from audit.log import AuditLog, CheckpointPolicy
from audit.tables import audit_anomaly_flags, audit_entries
from audit.verify import verify_database
from audit.writer import AsyncAuditWriter, CompanionRow
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event

DAY = date(2026, 11, 25)
VOLUME = Flag("gemeente-amsterdam-vth", "gemeente-amsterdam", DAY, "volume", "40", "10.0/day")
DENIALS = Flag("gemeente-amsterdam-vth", "gemeente-amsterdam", DAY, "denial-rate", "0.90", "0.10")


@pytest.fixture
def engines(db_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one database: two gateway processes."""
    first, second = make_engine(db_url), make_engine(db_url)
    yield first, second
    first.dispose()
    second.dispose()


def _log(engine: Engine) -> AuditLog:
    return AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))


@asynccontextmanager
async def _one_batch(writer: AsyncAuditWriter) -> AsyncIterator[None]:
    """What the block hands to ``writer`` is written in one batch: the writer thread is held inside another
    caller's transaction until the block's callers have queued (each runs up to its wait at the ``sleep(0)``)."""
    held, go = threading.Event(), threading.Event()

    def hold(_connection: object) -> None:
        held.set()
        go.wait(10)

    holder = asyncio.ensure_future(writer.record([make_event(99)], CompanionRow(None, None, hold)))
    assert await asyncio.to_thread(held.wait, 10)
    try:
        yield
        await asyncio.sleep(0)
    finally:
        go.set()
        await holder


def _flagged(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(audit_entries)
                                      .where(audit_entries.c.event_type == "anomaly.flagged")).scalar_one())


async def test_a_flag_another_writer_committed_first_fails_alone_in_its_group_commit(
        engines: tuple[Engine, Engine], caplog: pytest.LogCaptureFixture) -> None:
    one, two = engines
    async with AsyncAuditWriter(_log(one)) as first:
        logged = await first.record([make_event(0, event_type="anomaly.flagged")], flag_companion(VOLUME))
    caplog.set_level(logging.INFO, logger="audit.writer")
    async with AsyncAuditWriter(_log(two)) as second:
        async with _one_batch(second):
            calls = [asyncio.ensure_future(second.record([make_event(1)])),
                     asyncio.ensure_future(second.record([make_event(2, event_type="anomaly.flagged")],
                                                         flag_companion(VOLUME))),
                     asyncio.ensure_future(second.record([make_event(3, event_type="anomaly.flagged")],
                                                         flag_companion(DENIALS)))]
        plain, duplicate, fresh = await asyncio.gather(*calls, return_exceptions=True)
    # the duplicate's precondition refused: the batch begun again with a savepoint per caller, the two others
    # committed in it, nothing of the duplicate written (before: the batch redone caller by caller, 2 failed of 3)
    assert (second.stats.failed_transactions, second.stats.transactions) == (0, 2)
    assert (second.stats.isolated_batches, second.stats.refused_callers) == (1, 1)
    assert isinstance(duplicate, AuditWriteError)
    assert isinstance(duplicate.__cause__, FlagLoggedAlready)
    assert isinstance(plain, list)
    assert isinstance(fresh, list)
    assert _flagged(one) == 2  # the first writer's and the denial-rate flag, not the duplicate
    with one.connect() as connection:
        rows = {(row.metric, row.log_index) for row in connection.execute(select(audit_anomaly_flags))}
    assert rows == {("volume", logged[0].index), ("denial-rate", fresh[0].index)}
    assert flag_logged(two, VOLUME)
    # an expected outcome, not a fault: no error line for it
    assert not [r for r in caplog.records if r.name == "audit.writer" and r.levelno >= logging.ERROR]
    assert verify_database(one, _log(one).verifier).ok


async def test_the_same_flag_twice_in_one_batch_is_written_once(engines: tuple[Engine, Engine]) -> None:
    """In the shared batch both pass the precondition (neither row is there yet): the primary key refuses the
    batch, and written one by one the second finds the first's row."""
    one, _ = engines
    async with AsyncAuditWriter(_log(one)) as writer:
        async with _one_batch(writer):
            calls = [asyncio.ensure_future(writer.record([make_event(n, event_type="anomaly.flagged")],
                                                         flag_companion(VOLUME))) for n in (1, 2)]
            calls.append(asyncio.ensure_future(writer.record([make_event(3)])))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert (writer.stats.failed_transactions, writer.stats.transactions) == (2, 3)
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["AuditWriteError", "list", "list"]
    assert _flagged(one) == 1
    assert flag_logged(one, VOLUME)

"""Group commit behaviour of AsyncAuditWriter, against a fake log (the database tests use the real one)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from uuid import uuid4

import pytest
from sqlalchemy import create_engine

from audit.errors import AuditWriteError, PersonalDataError
from audit.log import AuditLog, PreparedEvent, Receipt
from audit.writer import AsyncAuditWriter
from tests.audit_support import log_signer, make_event


class FakeLog:
    """Appends to a list; can be told to be slow (so requests pile up) or to fail."""

    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.size = 0
        self.checkpoint_calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def append_prepared(self, prepared: Sequence[PreparedEvent], within: object = None, *,
                        admit: object = None) -> list[Receipt]:
        assert within is None, "the fake log has no transaction for companion rows"
        assert admit is None, "the fake log has no transaction for companion checks"
        self.gate.wait(5)
        if self.delay:
            threading.Event().wait(self.delay)
        if self.fail:
            raise OSError("disk on fire")
        receipts = [Receipt(self.size + i, uuid4(), bytes(32), self.size + len(prepared))
                    for i in range(len(prepared))]
        self.size += len(prepared)
        self.batches.append(len(prepared))
        return receipts

    def maybe_issue_checkpoint(self) -> None:
        self.checkpoint_calls += 1

    def holding_connection(self) -> AbstractContextManager[None]:
        return nullcontext()


async def test_concurrent_records_share_transactions_and_get_consecutive_indices() -> None:
    log = FakeLog()
    log.gate.clear()  # hold the first transaction so that the others queue up behind it
    async with AsyncAuditWriter(log) as writer:
        tasks = [asyncio.create_task(writer.record([make_event(i), make_event(i + 1)])) for i in range(100)]
        await asyncio.sleep(0.05)
        log.gate.set()
        results = await asyncio.gather(*tasks)
    indices = sorted(r.index for receipts in results for r in receipts)
    assert indices == list(range(200))
    for receipts in results:  # each caller's events are consecutive and in its order
        assert receipts[1].index == receipts[0].index + 1
    assert writer.stats.transactions == len(log.batches) < 100
    assert max(log.batches) > 2
    assert writer.stats.events == 200


async def test_a_failed_transaction_fails_every_waiter_in_it() -> None:
    log = FakeLog(fail=True)
    log.gate.clear()
    async with AsyncAuditWriter(log) as writer:
        tasks = [asyncio.create_task(writer.record([make_event(i)])) for i in range(20)]
        await asyncio.sleep(0.05)
        log.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, AuditWriteError) for r in results)
    assert all(isinstance(r.__cause__, OSError) for r in results if isinstance(r, BaseException))
    assert writer.stats.failed_transactions >= 1
    assert writer.stats.transactions == 0


async def test_personal_data_fails_only_its_own_caller_and_writes_nothing_of_it() -> None:
    log = FakeLog()
    async with AsyncAuditWriter(log) as writer:
        good = asyncio.create_task(writer.record([make_event(1)]))
        with pytest.raises(PersonalDataError):
            await writer.record([make_event(2, extra={"mail": "jan@example.nl"})])
        assert len(await good) == 1
    assert log.size == 1


async def test_a_handed_commit_tells_its_outcome_to_a_caller_cancelled_while_it_waited_shielded() -> None:
    """``handed``: the future of the commit, which a caller that waits for it shielded leaves to be settled when
    it is cancelled meanwhile (``record``'s own wait cancels it): the gateway learns so whether a cancelled
    request's write-ahead is in the log."""
    log = FakeLog()
    log.gate.clear()
    async with AsyncAuditWriter(log) as writer:
        handed = writer.handed([make_event(1), make_event(2)])
        async def waits() -> list[Receipt]:
            return await asyncio.shield(handed)

        waiting = asyncio.create_task(waits())
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        log.gate.set()
        assert [r.index for r in await handed] == [0, 1]
        with pytest.raises(PersonalDataError):
            writer.handed([make_event(3, extra={"mail": "jan@example.nl"})])
        assert await writer.handed([]) == []
    assert log.size == 2


async def test_record_after_close_is_refused_and_close_writes_what_is_queued() -> None:
    log = FakeLog(delay=0.01)
    writer = AsyncAuditWriter(log)
    writer.start()
    pending = [asyncio.create_task(writer.record([make_event(i)])) for i in range(5)]
    await asyncio.sleep(0)
    await writer.aclose()
    done = await asyncio.gather(*pending, return_exceptions=True)
    assert all(isinstance(r, list) for r in done), "queued requests are written before the writer stops"
    with pytest.raises(AuditWriteError):
        await writer.record([make_event(9)])
    assert await writer.record([]) == []


async def test_idle_writer_applies_the_checkpoint_time_limit() -> None:
    log = FakeLog()
    async with AsyncAuditWriter(log, idle_interval=0.01):
        for _ in range(500):  # the writer thread's own pace: polled (at most 5 s), not a fixed 0.1 s
            if log.checkpoint_calls >= 2:
                break
            await asyncio.sleep(0.01)
    assert log.checkpoint_calls >= 2


class FailingCheckpoints(FakeLog):
    """Its idle-loop checkpoints fail on the calls in ``failing`` (1-based) and succeed otherwise; each call moves
    its clock on by a second, so the writer's failure lines are paced by calls, not by the test's speed."""

    def __init__(self, failing: set[int], last_call: int) -> None:
        super().__init__()
        self.failing = failing
        self.last_call = last_call
        self.now = 0.0
        self.done = threading.Event()

    def maybe_issue_checkpoint(self) -> None:
        self.checkpoint_calls += 1
        self.now += 1.0
        if self.checkpoint_calls >= self.last_call:
            self.done.set()
        if self.checkpoint_calls in self.failing:
            raise OSError("database away")


async def test_a_lasting_checkpoint_failure_is_logged_when_it_starts_once_a_minute_and_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    """The idle loop retries every idle second: a warning each time would be 3,600 lines an hour of one fault."""
    log = FailingCheckpoints(failing=set(range(1, 151)) | set(range(156, 161)), last_call=170)
    caplog.set_level(logging.INFO, logger="audit.writer")
    async with AsyncAuditWriter(log, idle_interval=0.001, clock=lambda: log.now):
        assert await asyncio.to_thread(log.done.wait, 30), "the idle loop did not get through its calls"
    lines = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == "audit.writer"]
    assert lines == [
        (logging.WARNING, "periodic audit checkpoint failed: OSError; retried while it lasts, reported at most "
                          "once a minute"),
        (logging.WARNING, "periodic audit checkpoint still failing: 61 failures in 60 s, the last OSError"),
        (logging.WARNING, "periodic audit checkpoint still failing: 121 failures in 120 s, the last OSError"),
        (logging.INFO, "periodic audit checkpoint recovered after 150 failures in 150 s"),
        (logging.WARNING, "periodic audit checkpoint failed: OSError; retried while it lasts, reported at most "
                          "once a minute"),
        (logging.INFO, "periodic audit checkpoint recovered after 5 failures in 5 s"),
    ]
    assert "database away" not in caplog.text, "the error's type, never its message"


async def test_a_real_database_failure_reaches_every_caller(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'missing-dir' / uuid4().hex / 'audit.sqlite'}")
    async with AsyncAuditWriter(AuditLog(engine, log_signer())) as writer:
        results = await asyncio.gather(*(writer.record([make_event(i)]) for i in range(10)), return_exceptions=True)
    assert all(isinstance(r, AuditWriteError) for r in results)
    engine.dispose()

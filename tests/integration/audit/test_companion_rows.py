"""Companion rows: a row of another table committed in the same transaction as a caller's audit entries.

The exchange stores its outcome row this way (one commit instead of two per request); what it relies on:
the row is written exactly when the entries are, it can cite the entries' indices, and a row that cannot
be written takes the entries of its whole batch down with it (every caller denies) rather than leaving
entries without their row or a row without its entries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, func, select

from audit.errors import AuditWriteError
from audit.log import AuditLog, CheckpointPolicy, Receipt
from audit.tables import audit_entries
from audit.writer import AsyncAuditWriter, CompanionRow
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event

_metadata = MetaData()
outcomes = Table("companion_test_outcomes", _metadata, Column("id", String(16), primary_key=True),
                 Column("first_index", Integer, nullable=False), Column("entries", Integer, nullable=False))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    _metadata.create_all(engine)
    try:
        yield engine
    finally:
        _metadata.drop_all(engine)
        engine.dispose()


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
    with engine.connect() as connection:
        stored = {row.id: row for row in connection.execute(select(outcomes))}
    assert sorted(stored) == sorted(f"r{i}" for i in range(60) if i % 3)
    for i, receipts in enumerate(results):
        if i % 3:
            assert (stored[f"r{i}"].first_index, stored[f"r{i}"].entries) == (receipts[0].index, 2)
    assert _count(engine, audit_entries) == 120


async def test_a_row_that_cannot_be_written_fails_its_whole_batch_and_writes_nothing(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))

    def clashing(receipts: list[Receipt]) -> dict[str, Any]:
        return {"id": "taken", "first_index": receipts[0].index, "entries": 1}  # primary key clash

    async with AsyncAuditWriter(log) as writer:
        await writer.record([make_event(0)], _row("taken"))
        plain, clash, fresh = await asyncio.gather(
            writer.record([make_event(1)]), writer.record([make_event(2)], CompanionRow(outcomes, clashing)),
            writer.record([make_event(3)], _row("fresh")), return_exceptions=True)
    assert isinstance(clash, AuditWriteError)
    # Callers queued with the clashing row shared its transaction and failed with it (which ones did
    # depends on timing); nothing of a failed transaction is stored, everything of a committed one is.
    written = [r for r in (plain, fresh) if isinstance(r, list)]
    assert _count(engine, audit_entries) == 1 + len(written) == log.size()
    assert _count(engine, outcomes) == 1 + isinstance(fresh, list)
    with engine.connect() as connection:
        assert connection.execute(select(outcomes.c.first_index).where(outcomes.c.id == "taken")).scalar_one() == 0


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


async def test_a_companion_without_events_is_refused(engine: Engine) -> None:
    log = AuditLog(engine, log_signer())
    async with AsyncAuditWriter(log) as writer:
        with pytest.raises(ValueError, match="at least one event"):
            await writer.record([], _row("alone"))
    assert _count(engine, outcomes) == 0

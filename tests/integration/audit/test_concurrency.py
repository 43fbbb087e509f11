"""Concurrent writers: group commit within a process, and several writer processes on one database."""

from __future__ import annotations

import asyncio
import multiprocessing

from audit.log import AuditLog, CheckpointPolicy
from audit.verify import verify_database
from audit.writer import AsyncAuditWriter
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event
from tests.integration.audit._workers import append_from_process


async def test_group_commit_under_concurrency_gives_gap_free_indices(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=50, every_seconds=None))
        async with AsyncAuditWriter(log) as writer:
            calls = [writer.record([make_event(i * 3 + j) for j in range(3)]) for i in range(120)]
            results = await asyncio.gather(*calls)
        indices = sorted(r.index for receipts in results for r in receipts)
        assert indices == list(range(360))
        for receipts in results:
            assert [r.index for r in receipts] == list(range(receipts[0].index, receipts[0].index + 3))
        assert writer.stats.transactions < 120, "concurrent calls should share transactions"
        assert log.size() == 360
        result = verify_database(engine, log.verifier)
        assert result.ok, result.failure
    finally:
        engine.dispose()


def test_several_writer_processes_keep_indices_gap_free_and_the_tree_valid(db_url: str) -> None:
    workers, per_worker, batch = 3, 50, 2
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers), context.Queue()
    processes = [context.Process(target=append_from_process,
                                 args=(db_url, worker, per_worker, batch, barrier, results))
                 for worker in range(workers)]
    for process in processes:
        process.start()
    per_process = dict(results.get(timeout=120) for _ in processes)
    failures = [outcome for outcome in per_process.values() if isinstance(outcome, str)]
    assert not failures, failures
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    everything = sorted(index for indices in per_process.values() for index in indices)
    assert everything == list(range(workers * per_worker)), "indices must be unique and gap-free"
    for indices in per_process.values():  # each transaction's batch is consecutive
        for start in range(0, per_worker, batch):
            assert indices[start + 1] == indices[start] + 1
    owner = {index: worker for worker, indices in per_process.items() for index in indices}
    switches = sum(owner[i] != owner[i + 1] for i in range(len(owner) - 1))
    assert switches >= workers, "the writers' transactions did not interleave"
    engine = make_engine(db_url)
    try:
        log = AuditLog(engine, log_signer())
        log.issue_checkpoint()
        result = verify_database(engine, log.verifier)
        assert result.ok, result.failure
        assert result.entries == workers * per_worker
        assert result.checkpoints >= 2
        assert not result.warnings
    finally:
        engine.dispose()

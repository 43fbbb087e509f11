"""OnDemandCheckpoints on SQLite and PostgreSQL: many threads asking at once for a checkpoint over entries no
checkpoint covers share one signature, and the interval holds however many ask — in however many processes
(the limiter is what stops asking from turning into signing)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Engine

from audit import AuditLog, CheckpointPending, CheckpointPolicy, OnDemandCheckpoints, ProofUnavailable
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event


@pytest.fixture
def log(db_url: str) -> Iterator[AuditLog]:
    engine: Engine = make_engine(db_url)
    yield AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
    engine.dispose()


def test_threads_asking_at_once_share_one_signature(log: AuditLog) -> None:
    log.append([make_event(0)])  # a log's first append is always checkpointed
    log.append([make_event(1), make_event(2)])
    on_demand = OnDemandCheckpoints(log, min_interval=60.0)
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: on_demand.covering(3), range(16)))
    assert {a.tree_size for a in answers} == {3}
    assert [c.tree_size for c in log.checkpoints()] == [1, 3]


def test_within_the_interval_nothing_more_is_signed(log: AuditLog) -> None:
    moment = [0.0]
    on_demand = OnDemandCheckpoints(log, min_interval=1.0, clock=lambda: moment[0])
    log.append([make_event(0)])
    log.append([make_event(1)])
    assert on_demand.covering(2).tree_size == 2
    for n in range(2, 6):
        log.append([make_event(n)])
        moment[0] += 0.1
        with pytest.raises(CheckpointPending) as pending:
            on_demand.covering(n + 1)
        assert 0 < pending.value.retry_after <= 1.0
        assert on_demand.covering(2).tree_size == 2  # what a checkpoint covers is answered all the same
    assert [c.tree_size for c in log.checkpoints()] == [1, 2]
    moment[0] += 1.0
    assert on_demand.covering(6).tree_size == 6
    with pytest.raises(ProofUnavailable):
        on_demand.covering(7)  # beyond the log: nothing to sign
    assert [c.tree_size for c in log.checkpoints()] == [1, 2, 6]


def test_the_interval_holds_for_every_process_on_the_database(db_url: str) -> None:
    """Two gateway processes (each its own engine, log and limiter) on one database: once one has signed on
    demand, the other is refused within the interval too, and told how long to wait; it was kept per process,
    so N worker processes signed up to N checkpoints a second. Past the interval either may sign again."""
    moment = [5000.0]
    engines = [make_engine(db_url), make_engine(db_url)]
    try:
        logs = [AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None))
                for engine in engines]
        first, second = (OnDemandCheckpoints(log, min_interval=1.0, clock=lambda: moment[0]) for log in logs)
        logs[0].append([make_event(0)])  # a log's first append is always checkpointed
        logs[0].append([make_event(1)])
        assert first.covering(2).tree_size == 2
        logs[1].append([make_event(2)])
        moment[0] += 0.25
        with pytest.raises(CheckpointPending) as pending:
            second.covering(3)
        assert pending.value.retry_after == pytest.approx(0.75)
        assert second.covering(2).tree_size == 2  # what a checkpoint covers is answered all the same
        assert [c.tree_size for c in logs[1].checkpoints()] == [1, 2]
        moment[0] += 0.75
        assert second.covering(3).tree_size == 3
        logs[0].append([make_event(3)])
        with pytest.raises(CheckpointPending):  # and the first process now waits for the second's interval
            first.covering(4)
        assert [c.tree_size for c in logs[0].checkpoints()] == [1, 2, 3]
    finally:
        for engine in engines:
            engine.dispose()

"""Verification with worker processes gives exactly the sequential verdict: for an intact log and for every
tampering of tests/integration/audit/test_tamper.py (fast mode, which is what runs in parallel).

The ranges are made tiny (4 entries) so that the 40-entry log spans ten worker tasks and the tampered
entry 13, the deleted one and the truncation fall inside and at the edges of ranges.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from sqlalchemy import Engine

from audit import verify
from audit.log import AuditLog
from audit.verify import verify_database
from tests.audit_support import triggers_disabled
from tests.integration.audit.test_tamper import LIVE_CASES, _restore, _snapshot, live_log  # noqa: F401


@pytest.fixture
def tiny_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "_PARALLEL_CHUNK", 4)
    monkeypatch.setattr(verify, "_PARALLEL_MIN_ENTRIES", 0)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """One pool of two worker processes for the whole module (starting one per verification is slow)."""
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def test_parallel_verification_agrees_with_sequential_on_every_tampering(
        live_log: tuple[Engine, AuditLog], tiny_ranges: None, pool: ProcessPoolExecutor) -> None:  # noqa: F811
    engine, log = live_log
    intact = verify_database(engine, log.verifier, deep=False, workers=2)  # with a pool of its own
    assert intact.ok
    assert (intact.entries, intact.checkpoints) == (40, 5)
    assert intact == verify_database(engine, log.verifier, deep=False)
    snapshot = _snapshot(engine)
    differences = {}
    for name, (tamper, _expect, options) in LIVE_CASES.items():
        with triggers_disabled(engine) as connection:
            tamper(connection)
        sequential = verify_database(engine, log.verifier, deep=False, **options)
        parallel = verify_database(engine, log.verifier, deep=False, pool=pool, **options)
        if parallel != sequential:
            differences[name] = f"sequential {sequential.failure}, parallel {parallel.failure}"
        _restore(engine, snapshot)
    assert not differences, "\n".join(f"{name}: {difference}" for name, difference in differences.items())


def test_entries_appended_after_the_parallel_part_are_verified_too(
        live_log: tuple[Engine, AuditLog], tiny_ranges: None, pool: ProcessPoolExecutor,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine, log = live_log
    real_feed = verify._feed_in_parallel

    def feed_then_append(chunks: verify._Chunks, workers: int, executor: ProcessPoolExecutor | None,
                         stream: verify._Stream) -> None:
        real_feed(chunks, workers, executor, stream)
        from tests.audit_support import make_event
        log.append([make_event(100 + i) for i in range(5)])  # lands while the verifier is running

    monkeypatch.setattr(verify, "_feed_in_parallel", feed_then_append)
    result = verify_database(engine, log.verifier, deep=False, pool=pool)
    assert result.ok
    assert result.entries == 45

"""Audit log benchmarks (run on demand): durable appends/s with group commit, proof and verification speed.

    python bench/bench_audit.py                         # SQLite, 20,000 appends per level, 100,000-entry tree
    python bench/bench_audit.py --proof-entries 1000000 # the issue's 1M-entry proof figure (builds for ~1-2 min)
    python bench/bench_audit.py --with-postgres         # also PostgreSQL: a throw-away server (tests/pg_server.py)
    python bench/bench_audit.py --postgres-url postgresql+psycopg://user@host/db   # ... or an empty database

Appends are end to end: ``await writer.record([event])`` per call, including the personal-data guard, RFC
8785 canonicalisation, the Merkle updates and a durable commit (SQLite WAL with synchronous=FULL), with
1, 16 and 64 concurrent writers sharing one AsyncAuditWriter. Targets from issue 5: >= 10,000 appends/s
on SQLite, >= 3,000/s on PostgreSQL, proofs at 1M entries <= 5 ms p99, verification >= 300,000 entries/s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.audit_support when run as a script

from audit.events import AuditEvent
from audit.export import export_log
from audit.log import AuditLog, CheckpointPolicy
from audit.verify import verify_database, verify_export
from audit.writer import AsyncAuditWriter
from gateway.db.engine import alembic_config, make_engine
from tests.audit_support import log_signer, make_event

_DEEP_LIMIT = 200_000
"""Deep verification (full JSON parse and RFC 8785 re-check) runs at ~10,000 entries/s: skipped above this."""


def _migrated_engine(url: str) -> Engine:
    command.upgrade(alembic_config(url), "heads")
    return make_engine(url)


async def _appends(log: AuditLog, events: list[AuditEvent], writers: int) -> tuple[float, int, int]:
    """Return (appends per second, transactions, largest batch) for ``writers`` concurrent callers."""
    per_writer = len(events) // writers

    async with AsyncAuditWriter(log) as writer:
        async def one_writer(offset: int) -> None:
            for event in events[offset * per_writer:(offset + 1) * per_writer]:
                await writer.record([event])

        started = time.perf_counter()
        await asyncio.gather(*(one_writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - started
    return per_writer * writers / elapsed, writer.stats.transactions, writer.stats.largest_batch


def bench_appends(label: str, make: Callable[[], Engine], total: int) -> None:
    events = [make_event(i) for i in range(total)]
    print(f"\n== durable appends with group commit ({label}, {total:,} per level)")
    print(f"{'writers':>8} {'appends/s':>12} {'transactions':>13} {'avg batch':>10} {'max batch':>10}")
    for writers in (1, 16, 64):
        engine = make()
        try:
            log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=1000, every_seconds=10))
            rate, transactions, largest = asyncio.run(_appends(log, events, writers))
            print(f"{writers:>8} {rate:>12,.0f} {transactions:>13,} {total / transactions:>10.1f} {largest:>10,}")
        finally:
            engine.dispose()


def _build(log: AuditLog, entries: int) -> float:
    started = time.perf_counter()
    batch = 5000
    template = [make_event(i) for i in range(batch)]
    for start in range(0, entries, batch):
        log.append(template[: min(batch, entries - start)])
    return time.perf_counter() - started


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, {len(ordered) / sum(ordered):,.0f}/s"


def bench_proofs_and_verification(url: str, entries: int, samples: int, workdir: Path) -> None:
    engine = _migrated_engine(url)
    try:
        log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=10_000, every_seconds=None))
        print(f"\n== tree of {entries:,} entries")
        elapsed = _build(log, entries)
        print(f"built in {elapsed:.1f} s ({entries / elapsed:,.0f} appends/s in batches of 5,000)")
        size = log.issue_checkpoint().tree_size
        rng = random.Random(5)

        timings = []
        for _ in range(samples):
            index = rng.randrange(size)
            started = time.perf_counter()
            log.inclusion_proof(index, size)
            timings.append(time.perf_counter() - started)
        print(f"inclusion proofs:   {_percentiles(timings)}")

        timings = []
        for _ in range(samples):
            first = rng.randrange(1, size)
            started = time.perf_counter()
            log.consistency_proof(first, size)
            timings.append(time.perf_counter() - started)
        print(f"consistency proofs: {_percentiles(timings)}")

        deep_modes = (False, True) if entries <= _DEEP_LIMIT else (False,)
        for deep in deep_modes:
            started = time.perf_counter()
            result = verify_database(engine, log.verifier, deep=deep, check_node_cache=not deep)
            elapsed = time.perf_counter() - started
            assert result.ok, result.failure
            mode = "deep (JSON, RFC 8785, event, columns)" if deep else "fast + node cache"
            print(f"verify live, {mode}: {result.entries / elapsed:,.0f} entries/s")

        path = workdir / "export.jsonl"
        started = time.perf_counter()
        export_log(engine, log.verifier, path)
        print(f"export: {entries / (time.perf_counter() - started):,.0f} entries/s "
              f"({path.stat().st_size / 1e6:,.0f} MB)")
        for deep in deep_modes:
            started = time.perf_counter()
            result = verify_export(path, verifier=log.verifier, deep=deep)
            elapsed = time.perf_counter() - started
            assert result.ok, result.failure
            print(f"verify export, {'deep' if deep else 'fast'}: {result.entries / elapsed:,.0f} entries/s")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=20_000, help="appends per concurrency level")
    parser.add_argument("--proof-entries", type=int, default=100_000, help="tree size for proofs/verification")
    parser.add_argument("--samples", type=int, default=2_000, help="proofs timed per kind")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to benchmark as well")
    parser.add_argument("--with-postgres", action="store_true", help="start a throw-away PostgreSQL and bench it too")
    args = parser.parse_args()
    if args.with_postgres and not args.postgres_url:
        from tests.pg_server import create_database, running_postgres

        with running_postgres() as admin_url:
            print("(throw-away PostgreSQL from tests/pg_server.py, fsync=off: commits cost less than in production)")
            counter = iter(range(1_000))
            bench_appends("PostgreSQL", lambda: _migrated_engine(
                create_database(admin_url, f"bench_audit_{next(counter)}")), args.appends)

    with tempfile.TemporaryDirectory(prefix="wgs-bench-audit-") as tmp:
        workdir = Path(tmp)
        counter = iter(range(1_000))
        bench_appends("SQLite", lambda: _migrated_engine(f"sqlite:///{workdir / f'appends-{next(counter)}.sqlite'}"),
                      args.appends)
        if args.postgres_url:
            print("\n(PostgreSQL: each level appends to the same database)")
            bench_appends("PostgreSQL", lambda: _migrated_engine(args.postgres_url), args.appends)
        bench_proofs_and_verification(f"sqlite:///{workdir / 'proofs.sqlite'}", args.proof_entries, args.samples,
                                      workdir)


if __name__ == "__main__":
    main()

"""Audit log benchmarks (run on demand): durable appends/s with group commit, proof and verification speed.

    python bench/bench_audit.py                         # SQLite, 20,000 appends per level, 100,000-entry tree
    python bench/bench_audit.py --proof-entries 1000000 # the issue's 1M-entry proof figure (builds for ~1-2 min)
    python bench/bench_audit.py --pg                    # also PostgreSQL, durable (fsync on): a throw-away server
    python bench/bench_audit.py --with-postgres         # also PostgreSQL as the tests run it (fsync off)
    python bench/bench_audit.py --postgres-url postgresql+psycopg://user@host/db   # ... or an empty database
    python bench/bench_audit.py --skip-appends          # only proofs, export and verification
    python bench/bench_audit.py --skip-proofs           # only the appends (3 rounds per level: --rounds)

Appends are end to end: ``await writer.record([event])`` per call, including the personal-data guard, RFC
8785 canonicalisation, the Merkle updates and a durable commit (SQLite WAL with synchronous=FULL;
PostgreSQL with fsync and synchronous_commit on under ``--pg``), with 1, 16, 64 and 256 concurrent writers
sharing one AsyncAuditWriter. Targets from issue 5: >= 10,000 appends/s on SQLite, >= 3,000/s on
PostgreSQL, proofs at 1M entries <= 5 ms p99, verification >= 300,000 entries/s.

Besides wall-clock rates the bench prints CPU time (all threads of this process): on a shared or
virtualised machine the wall-clock figures move with the neighbours' load and the disk's fsync latency,
the CPU figures much less. An append's commit waits for one fsync, so with at most 64 appends per
transaction the SQLite figure is bounded by 64 / (fsync latency + the transaction's work).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

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

_T = TypeVar("_T")

_DEEP_LIMIT = 200_000
"""Deep verification (full JSON parse and RFC 8785 re-check) runs at ~10,000 entries/s: skipped above this."""


def _migrated_engine(url: str) -> Engine:
    command.upgrade(alembic_config(url), "heads")
    return make_engine(url)


async def _appends(log: AuditLog, events: list[AuditEvent], writers: int) -> tuple[float, float, int, int]:
    """(appends per second, CPU microseconds per append, transactions, largest batch) for ``writers``
    concurrent callers."""
    per_writer = len(events) // writers

    async with AsyncAuditWriter(log) as writer:
        async def one_writer(offset: int) -> None:
            for event in events[offset * per_writer:(offset + 1) * per_writer]:
                await writer.record([event])

        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_writer(w) for w in range(writers)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    appended = per_writer * writers
    return appended / elapsed, cpu / appended * 1e6, writer.stats.transactions, writer.stats.largest_batch


def bench_appends(label: str, make: Callable[[], Engine], total: int, rounds: int = 1) -> None:
    events = [make_event(i) for i in range(total)]
    # The pre-made events are the bench's, not the append path's: keep the cyclic garbage collector from
    # re-scanning them on every collection (it otherwise costs the appends a third of their CPU time). The
    # gateway does the same with what it builds at start-up (gateway.app).
    gc.collect()
    gc.freeze()
    best = " (best of {rounds} rounds, each on a new database: the machine may be shared)" if rounds > 1 else ""
    print(f"\n== durable appends with group commit ({label}, {total:,} per level){best.format(rounds=rounds)}")
    print(f"{'writers':>8} {'appends/s':>12} {'CPU us/append':>14} {'transactions':>13} {'avg batch':>10} "
          f"{'max batch':>10}")
    for writers in (1, 16, 64, 256):
        results = []
        for _ in range(rounds):
            engine = make()
            try:
                log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=1000, every_seconds=10))
                results.append(asyncio.run(_appends(log, events, writers)))
            finally:
                engine.dispose()
        rate, cpu, transactions, largest = max(results)
        print(f"{writers:>8} {rate:>12,.0f} {cpu:>14,.0f} {transactions:>13,} {total / transactions:>10.1f} "
              f"{largest:>10,}")


@contextmanager
def _durable_postgres() -> Iterator[str]:
    """A throw-away PostgreSQL server like the tests' (tests/pg_server.py), but with fsync and
    synchronous_commit on, as in production; yields its admin URL."""
    from tests.pg_server import _as_postgres, _free_port, pg_bin

    bindir, port = pg_bin(), _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="wgs-bench-pg-"))
    datadir = workdir / "data"
    os.chmod(workdir, 0o777)
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(workdir / "server.log"),
                                 "-w", "-o", f"-p {port} -k {workdir} -h 127.0.0.1 -c fsync=on "
                                 "-c synchronous_commit=on -c max_connections=200", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast", "stop"]),
                       check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _bench_postgres(admin_url: str, label: str, total: int, rounds: int) -> None:
    from tests.pg_server import create_database

    counter = iter(range(1_000))
    bench_appends(label, lambda: _migrated_engine(create_database(admin_url, f"bench_audit_{next(counter)}")),
                  total, rounds)


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


def _timed(run: Callable[[], _T], entries: int) -> tuple[_T, str]:
    """Run once; the rate in entries per second of wall-clock and of CPU time."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = run()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return result, f"{entries / elapsed:,.0f} entries/s (CPU time: {entries / max(cpu, 1e-9):,.0f}/s)"


def _children_cpu() -> float:
    """CPU seconds of this process's finished child processes (a verification's worker pool)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_fast_verification(engine: Engine, log: AuditLog, entries: int, rounds: int) -> None:
    """``audit verify --fast`` in one process and with a worker per core: as the CLI runs it (node cache and
    search columns), without the columns (the tree, signatures, consistency and node cache alone) and without
    either; best of ``rounds`` (the machine may be shared). The CPU rate counts every process of the run (the
    workers are joined when it returns), so it shows the work, the wall-clock rate what was waited."""
    cores = os.cpu_count() or 1
    modes = {"fast + node cache + columns (as --fast)": (True, True), "fast + node cache, no columns": (True, False),
             "fast (tree, signatures, consistency)": (False, False)}
    for workers in sorted({1, cores}):
        for what, (nodes, columns) in modes.items():
            best_wall = best_cpu = float("inf")
            for _ in range(rounds):
                started, cpu_started, children = time.perf_counter(), time.process_time(), _children_cpu()
                result = verify_database(engine, log.verifier, deep=False, check_node_cache=nodes,
                                         check_columns=columns, workers=workers)
                best_wall = min(best_wall, time.perf_counter() - started)
                best_cpu = min(best_cpu, time.process_time() - cpu_started + _children_cpu() - children)
                assert result.ok, result.failure
            how = "1 process" if workers == 1 else f"{workers} worker processes (start included)"
            print(f"verify live, {what}, {how}: {entries / best_wall:,.0f} entries/s "
                  f"(CPU time, all processes: {entries / best_cpu:,.0f}/s; best of {rounds})")


def bench_proofs_and_verification(url: str, entries: int, samples: int, workdir: Path, verify_rounds: int = 3) -> None:
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
        if True in deep_modes:
            result, rates = _timed(partial(verify_database, engine, log.verifier, deep=True, check_node_cache=False),
                                   entries)
            assert result.ok, result.failure
            print(f"verify live, deep (JSON, RFC 8785, event, columns): {rates}")
        bench_fast_verification(engine, log, entries, verify_rounds)

        path = workdir / "export.jsonl"
        _, rates = _timed(lambda: export_log(log, path), entries)
        print(f"export: {rates} ({path.stat().st_size / 1e6:,.0f} MB)")
        for deep in deep_modes:
            result, rates = _timed(partial(verify_export, path, verifier=log.verifier, deep=deep), entries)
            assert result.ok, result.failure
            print(f"verify export, {'deep' if deep else 'fast'}: {rates}")

        timings = []  # last: the entries it adds would change the figures above
        for n in range(max(1, samples // 10)):
            log.append([make_event(n)])
            started = time.perf_counter()
            log.issue_checkpoint()
            timings.append(time.perf_counter() - started)
        print(f"checkpoints (each over 1 new entry, checked against the latest signed one): {_percentiles(timings)}")
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=20_000, help="appends per concurrency level")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per level; the best is printed")
    parser.add_argument("--proof-entries", type=int, default=100_000, help="tree size for proofs/verification")
    parser.add_argument("--samples", type=int, default=2_000, help="proofs timed per kind")
    parser.add_argument("--verify-rounds", type=int, default=3,
                        help="rounds per fast verification mode; the best is printed")
    parser.add_argument("--postgres-url", help="an empty PostgreSQL database to benchmark as well")
    parser.add_argument("--pg", action="store_true",
                        help="start a throw-away PostgreSQL with fsync on (durable, as in production) and bench it")
    parser.add_argument("--with-postgres", action="store_true",
                        help="start a throw-away PostgreSQL as the tests do (fsync off) and bench it too")
    parser.add_argument("--skip-appends", action="store_true", help="skip the SQLite append figures")
    parser.add_argument("--skip-proofs", action="store_true", help="skip proofs, export and verification")
    args = parser.parse_args()
    if args.pg:
        with _durable_postgres() as admin_url:
            print("(throw-away PostgreSQL, fsync=on, synchronous_commit=on: every commit waits for its WAL flush)")
            _bench_postgres(admin_url, "PostgreSQL, fsync on", args.appends, args.rounds)
    if args.with_postgres and not args.postgres_url:
        from tests.pg_server import running_postgres

        with running_postgres() as admin_url:
            print("(throw-away PostgreSQL from tests/pg_server.py, fsync=off: commits cost less than in production)")
            _bench_postgres(admin_url, "PostgreSQL, fsync off", args.appends, args.rounds)

    with tempfile.TemporaryDirectory(prefix="wgs-bench-audit-") as tmp:
        workdir = Path(tmp)
        counter = iter(range(1_000))
        if not args.skip_appends:
            bench_appends("SQLite", lambda: _migrated_engine(
                f"sqlite:///{workdir / f'appends-{next(counter)}.sqlite'}"), args.appends, args.rounds)
        if args.postgres_url:
            print("\n(PostgreSQL: each level appends to the same database)")
            bench_appends("PostgreSQL", lambda: _migrated_engine(args.postgres_url), args.appends, args.rounds)
        if not args.skip_proofs:
            bench_proofs_and_verification(f"sqlite:///{workdir / 'proofs.sqlite'}", args.proof_entries,
                                          args.samples, workdir, args.verify_rounds)


if __name__ == "__main__":
    main()

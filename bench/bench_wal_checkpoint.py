"""Per-commit latency of durable audit appends on SQLite, with SQLite's automatic WAL checkpoint and without it.

    python bench/bench_wal_checkpoint.py [--commits 5000] [--rounds 3] [--interval 0.5]

Why: in WAL mode SQLite checkpoints (copies the WAL's pages into the database file and fsyncs it) inside the
COMMIT that takes the WAL past ``wal_autocheckpoint`` pages (1,000 by default). In the gateway that is usually
the audit writer thread's commit, which every request of its group commit waits for. This script times
``AuditLog.append`` (2-4 events a transaction, one after another on one kept connection, as the writer thread
does) on a migrated SQLite file in two modes, interleaved round by round on fresh databases:

* ``auto``: the engine as the gateway makes it, SQLite's default automatic checkpoint;
* ``off+bg``: ``wal_autocheckpoint=0`` on the appending connections and a thread of its own that runs
  ``PRAGMA wal_checkpoint(PASSIVE)`` every ``--interval`` seconds (and, with ``--paired``, a second pass under the
  process's SQLite writer lock so that the WAL restarts: a background checkpointer measured and not taken,
  docs/performance.md).

It prints per mode p50/p90/p99/max and the number of commits over 3 ms, and, for ``auto``, how many commits ran
a checkpoint (a WAL reset seen at the start of the next one: the WAL header's checkpoint sequence number changes)
and those commits' latencies; and WAL pages written per transaction. Sequential commits measure the commit
itself rather than queueing, so the figures depend less on the machine's other load than a closed-loop run.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import Engine, event

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.audit_support when run as a script

from audit.log import AuditLog, CheckpointPolicy
from audit.store import sqlite_writer_lock
from gateway.db.engine import alembic_config, make_engine
from tests.audit_support import log_signer, make_event


def _timed_append(log: AuditLog, first: int, size: int) -> tuple[int, float]:
    """One transaction of ``size`` events numbered from ``first``: (the next number, the append's seconds)."""
    events = [make_event(first + k) for k in range(size)]
    started = time.perf_counter()
    log.append(events)
    return first + size, time.perf_counter() - started

def _wal_sequence(wal: Path) -> bytes:
    """The WAL header's checkpoint sequence number and salts: they change whenever SQLite restarts the WAL."""
    try:
        with wal.open("rb") as handle:
            return handle.read(24)[12:24]
    except FileNotFoundError:
        return b""


def _engine(path: Path, autocheckpoint_off: bool) -> Engine:
    url = f"sqlite:///{path}"
    command.upgrade(alembic_config(url), "heads")
    engine = make_engine(url)
    if autocheckpoint_off:
        event.listen(engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA wal_autocheckpoint=0"))
    return engine


class _Checkpointer(threading.Thread):
    def __init__(self, path: Path, interval: float, finish: threading.RLock | None = None) -> None:
        super().__init__(daemon=True)
        self.finish, self.finished = finish, 0
        self.path, self.interval, self.stop, self.runs, self.pages = path, interval, threading.Event(), 0, 0
        self.seconds: list[float] = []

    def run(self) -> None:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA synchronous=FULL")
        while not self.stop.wait(self.interval):
            started = time.perf_counter()
            _busy, log, _done = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.seconds.append(time.perf_counter() - started)
            self.runs += 1
            self.pages = max(self.pages, log)
            if self.finish is not None:
                # Frames committed meanwhile: copy those few with the process's writers held off, so that the
                # checkpoint is complete when the next writer begins, which then restarts the WAL.
                with self.finish:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                self.finished += 1
        connection.close()


def _round(mode: str, commits: int, interval: float, workdir: Path, counter: list[int]) -> dict[str, Any]:
    counter[0] += 1
    path = workdir / f"{mode.replace('+', '-')}-{counter[0]}.db"
    engine = _engine(path, autocheckpoint_off=(mode != "auto"))
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=1000, every_seconds=10))
    wal = Path(f"{path}-wal")
    finish = sqlite_writer_lock(engine) if mode == "bg+finish" else None
    checkpointer = _Checkpointer(path, interval, finish) if mode != "auto" else None
    latencies: list[float] = []
    resets: list[int] = []
    n = 0
    try:
        with log.holding_connection():
            log.append([make_event(0)])  # the first append opens the connection and signs the first checkpoint
            if checkpointer is not None:
                checkpointer.start()
            before = _wal_sequence(wal)
            for i in range(commits):
                n, seconds = _timed_append(log, n, 2 + i % 3)
                latencies.append(seconds)
                after = _wal_sequence(wal)
                if after != before and i > 0:
                    resets.append(i - 1)  # the WAL restarted at this commit's start: the previous one checkpointed
                before = after
        if checkpointer is not None:
            checkpointer.stop.set()
            checkpointer.join()
        probe = sqlite3.connect(path)
        _busy, wal_pages, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        probe.close()
    finally:
        engine.dispose()
    return {"latencies": latencies, "resets": resets, "checkpointer": checkpointer,
            "db_pages": path.stat().st_size // 4096, "final_wal_pages": wal_pages}


def _paired(commits: int, block: int, interval: float, workdir: Path) -> None:
    """``auto`` and ``bg+finish`` on two databases at once, in alternating blocks of ``block`` commits: both modes
    meet the same moments of the machine's other load, which moves the figures more between rounds than the
    checkpoint does."""
    logs: dict[str, tuple[Engine, AuditLog, Path]] = {}
    for mode in ("auto", "bg+finish"):
        path = workdir / f"paired-{mode.replace('+', '-')}.db"
        engine = _engine(path, autocheckpoint_off=(mode != "auto"))
        logs[mode] = (engine, AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=1000,
                                                                                     every_seconds=10)), path)
    checkpointer = _Checkpointer(logs["bg+finish"][2], interval, sqlite_writer_lock(logs["bg+finish"][0]))
    latencies: dict[str, list[float]] = {mode: [] for mode in logs}
    n = 0
    try:
        with logs["auto"][1].holding_connection(), logs["bg+finish"][1].holding_connection():
            for _made, log, _path in logs.values():
                log.append([make_event(0)])
            checkpointer.start()
            for b in range(commits // block):
                for mode in (("auto", "bg+finish") if b % 2 == 0 else ("bg+finish", "auto")):
                    log = logs[mode][1]
                    for i in range(block):
                        n, seconds = _timed_append(log, n, 2 + i % 3)
                        latencies[mode].append(seconds)
        checkpointer.stop.set()
        checkpointer.join()
    finally:
        for engine, _log, _path in logs.values():
            engine.dispose()
    for mode, values in latencies.items():
        print(f"paired {mode:>9}: {_summary(values)}")
    print(f"          {checkpointer.runs} background checkpoints, largest WAL seen {checkpointer.pages} pages; "
          f"checkpoint run median {statistics.median(checkpointer.seconds or [0.0]) * 1000:.1f} ms")


def _q(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def _summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    over = sum(1 for value in ordered if value > 0.003)
    return (f"p50 {statistics.median(ordered) * 1000:6.2f}  p90 {_q(ordered, 0.90):6.2f}  "
            f"p99 {_q(ordered, 0.99):6.2f}  p99.9 {_q(ordered, 0.999):7.2f}  max {ordered[-1] * 1000:7.2f} ms  "
            f">3 ms: {over}")


def watch(database: Path, seconds: float) -> None:
    """Count WAL restarts (each follows a completed checkpoint) of a database another process writes, polling the
    WAL header every millisecond, and the largest WAL file seen: how often the gateway checkpoints under a load."""
    wal = Path(f"{database}-wal")
    before, restarts, largest = _wal_sequence(wal), 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        after = _wal_sequence(wal)
        restarts += after != before and before != b""
        before = after
        largest = max(largest, wal.stat().st_size if wal.exists() else 0)
        time.sleep(0.001)
    print(f"{restarts} WAL restarts in {seconds:.0f} s; largest WAL file {largest / 4096:,.0f} pages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between background checkpoints")
    parser.add_argument("--modes", default="auto,off+bg,bg+finish")
    parser.add_argument("--paired", type=int, default=0, metavar="BLOCK",
                        help="auto and bg+finish at once, alternating blocks of BLOCK commits (see _paired())")
    parser.add_argument("--watch", type=Path, help="only watch this database file's WAL (see watch())")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long --watch watches")
    args = parser.parse_args()
    if args.paired:
        with tempfile.TemporaryDirectory(prefix="wgs-bench-wal-") as tmp:
            _paired(args.commits, args.paired, args.interval, Path(tmp))
        return
    if args.watch is not None:
        watch(args.watch, args.seconds)
        return
    counter = [0]
    modes = args.modes.split(",")
    everything: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="wgs-bench-wal-") as tmp:
        for r in range(args.rounds):
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                result = _round(mode, args.commits, args.interval, Path(tmp), counter)
                latencies = result["latencies"]
                everything[mode].extend(latencies)
                print(f"round {r + 1} {mode:>7}: {_summary(latencies)}")
                if mode == "auto":
                    resets = result["resets"]
                    at = sorted(latencies[i] * 1000 for i in resets)
                    rest = [value for i, value in enumerate(latencies) if i not in set(resets)]
                    print(f"          ~{1000 * len(resets) / len(latencies):.1f} WAL pages a commit; "
                          f"{len(resets)} auto-checkpoints in {len(latencies)} commits "
                          f"({len(resets) * 1000 / len(latencies):.1f} per 1,000); their commits: "
                          f"median {statistics.median(at) if at else 0:.2f} ms, max {max(at, default=0):.2f} ms; "
                          f"the other commits: {_summary(rest)}")
                else:
                    cp = result["checkpointer"]
                    print(f"          {cp.runs} background checkpoints ({cp.finished} finished under the writer lock), "
                          f"largest WAL seen {cp.pages} pages; "
                          f"checkpoint run median "
                          f"{statistics.median(cp.seconds) * 1000 if cp.seconds else 0:.1f} ms, max "
                          f"{max(cp.seconds, default=0) * 1000:.1f} ms; WAL pages left {result['final_wal_pages']}")
        print()
        for mode, values in everything.items():
            print(f"all rounds {mode:>7}: {_summary(values)}")


if __name__ == "__main__":
    main()

"""Appends of every batch shape the row writer pads or splits: the rows, receipts and tree stay exact."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.event import listen

from audit.canonical import parse_entry
from audit.log import AuditLog, CheckpointPolicy
from audit.merkle import leaf_hash, root_of
from audit.store import query_columns
from audit.verify import verify_database
from gateway.clock import FixedClock
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event

# Around the padding step (16 rows, below which nothing is padded) and across SQLite's per-statement row limit
# (2,448 entry rows), with a last chunk above the step (2,500) and below it (2,450).
BATCHES = (1, 2, 15, 16, 17, 33, 2_500, 2_450)


def test_batches_of_every_size_store_exactly_their_entries(engine: Engine, clock: FixedClock) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=100, every_seconds=None),
                   clock=clock.now)
    events = [make_event(n) for n in range(sum(BATCHES))]
    receipts, position = [], 0
    for size in BATCHES:
        receipts += log.append(events[position:position + size])
        position += size
    assert [r.index for r in receipts] == list(range(len(events)))
    stored = log.entries(0, len(events))
    assert [entry.index for entry in stored] == list(range(len(events)))
    for receipt, entry, event in zip(receipts, stored, events, strict=True):
        assert (receipt.entry_id, receipt.leaf_hash) == (entry.entry_id, entry.leaf_hash)
        assert entry.leaf_hash == leaf_hash(entry.canonical)
        assert entry.columns == query_columns(event)
        parsed = parse_entry(entry.canonical)
        assert (parsed.index, parsed.entry_id, parsed.event) == (entry.index, entry.entry_id, event)
    assert len({entry.entry_id for entry in stored}) == len(stored)
    assert log.root() == root_of([entry.leaf_hash for entry in stored])
    assert verify_database(engine, log.verifier).ok


def test_small_appends_insert_only_their_own_rows_on_sqlite(sqlite_db_url: str, clock: FixedClock) -> None:
    """The usual request appends one to four entries: padding such an append to sixteen rows cost SQLite more
    CPU than the entries themselves. Up to the padding step an append's statement lists exactly its rows;
    beyond it the padded statement (a few texts for the driver's cache) still serves."""
    engine = make_engine(sqlite_db_url)
    statements: list[str] = []
    listen(engine, "connect", lambda dbapi, _record: dbapi.set_trace_callback(statements.append))
    try:
        log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=None, every_seconds=None),
                       clock=clock.now)
        position = 0
        for size in (1, 2, 4, 16, 17):
            statements.clear()
            log.append([make_event(n) for n in range(position, position + size)])
            position += size
            inserts = [s for s in statements if s.startswith("INSERT INTO audit_entries")]
            assert len(inserts) == 1
            padded = "WHERE column1 IS NOT NULL" in inserts[0]
            assert padded == (size > 16), (size, inserts[0][:120])
        assert [entry.index for entry in log.entries(0, position)] == list(range(position))
        assert verify_database(engine, log.verifier).ok
    finally:
        engine.dispose()

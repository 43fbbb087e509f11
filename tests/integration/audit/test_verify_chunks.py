"""Verification in aligned chunks (each chunk's subtrees hashed and compared with the node cache in bulk, the
tree above the chunks and the checkpoints in the main process) gives exactly the verdict of the pass entry by
entry: for an intact log, every tampering of tests/integration/audit/test_tamper.py, and tamperings of the
node cache aimed at the chunks (inside one, a chunk's root, above the chunks, rows moved, junk rows).

Chunk sizes from 1 to beyond the log's 40 entries put the tampered entries and subtrees inside chunks, at
their edges and above them; the checkpoints (every 8 entries) fall inside chunks and on their ends.
"""

from __future__ import annotations

import multiprocessing
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import Connection, Engine, delete, insert, select, update

from audit import verify
from audit.log import AuditLog
from audit.merkle import flat_index
from audit.tables import audit_entries, audit_tree_nodes
from audit.verify import FailureKind, VerifyResult, verify_database
from tests.audit_support import make_event, triggers_disabled
from tests.integration.audit.test_tamper import (  # noqa: F401
    LIVE_CASES,
    TARGET,
    _edit_canonical,
    _restore,
    _snapshot,
    live_log,
)

CHUNK_SIZES = (1, 2, 4, 8, 16, 64)


def _corrupt(node: tuple[int, int]) -> Callable[[Connection], None]:
    def tamper(connection: Connection) -> None:
        connection.execute(update(audit_tree_nodes).where(audit_tree_nodes.c.node_id == flat_index(node))
                           .values(hash=bytes(32)))
    return tamper


def _remove(node: tuple[int, int]) -> Callable[[Connection], None]:
    def tamper(connection: Connection) -> None:
        connection.execute(delete(audit_tree_nodes).where(audit_tree_nodes.c.node_id == flat_index(node)))
    return tamper


def _move_to_the_end(node: tuple[int, int]) -> Callable[[Connection], None]:
    """The same row written again: its SQLite rowid (the order the rows are stored in) changes."""
    def tamper(connection: Connection) -> None:
        node_id = flat_index(node)
        row = audit_tree_nodes.c.node_id == node_id
        value = connection.execute(select(audit_tree_nodes.c.hash).where(row)).scalar()
        connection.execute(delete(audit_tree_nodes).where(row))
        connection.execute(insert(audit_tree_nodes).values(node_id=node_id, hash=value))
    return tamper


def _entry_to_the_end(connection: Connection) -> None:
    """Entry 13 written again, unchanged: stored after entry 39 now (SQLite rowid), still entry 13."""
    row = audit_entries.c.log_index == TARGET
    values = connection.execute(select(audit_entries).where(row)).one()._asdict()
    connection.execute(delete(audit_entries).where(row))
    connection.execute(insert(audit_entries).values(**values))


def _junk_rows(connection: Connection) -> None:
    """Rows that are no subtree (even ids are leaves, never cached): a verifier must not trip over them."""
    connection.execute(insert(audit_tree_nodes), [{"node_id": node_id, "hash": bytes(32)} for node_id in (20, 26, 62)])


def _cache_then_entry(connection: Connection) -> None:
    """A wrong cached subtree over entries 8..9, and entry 13 changed (leaf hash not rewritten): both before the
    checkpoint at 16. The subtree, complete first, is reported, in whatever chunks or batches they were read."""
    _corrupt((1, 4))(connection)
    _edit_canonical(connection, TARGET, fix_leaf=False)


CHUNK_CASES: dict[str, tuple[Callable[[Connection], None], tuple[FailureKind, int, int | None] | None]] = {
    "wrong cached pair over 12..13": (_corrupt((1, 6)), (FailureKind.NODE_CACHE, 12, 13)),
    "wrong cached subtree over 12..15": (_corrupt((2, 3)), (FailureKind.NODE_CACHE, 12, 15)),
    "wrong cached subtree over 0..15": (_corrupt((4, 0)), (FailureKind.NODE_CACHE, 0, 15)),
    "wrong cached subtree over 0..31": (_corrupt((5, 0)), (FailureKind.NODE_CACHE, 0, 31)),
    "missing cached subtree over 16..23": (_remove((3, 2)), (FailureKind.NODE_CACHE, 16, 23)),
    "wrong cached pair over 38..39": (_corrupt((1, 19)), (FailureKind.NODE_CACHE, 38, 39)),
    "cached subtree stored again (rowid order changed)": (_move_to_the_end((2, 3)), None),
    "junk rows in the node cache": (_junk_rows, None),
    "entry stored again (rowid order changed)": (_entry_to_the_end, None),
    "wrong cached subtree, then a changed entry": (_cache_then_entry, (FailureKind.NODE_CACHE, 8, 9)),
}


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def _entry_by_entry(engine: Engine, log: AuditLog, **options: Any) -> VerifyResult:
    return verify_database(engine, log.verifier, deep=False, **options)


def _in_chunks(monkeypatch: pytest.MonkeyPatch, chunk: int, engine: Engine, log: AuditLog,
               pool: ProcessPoolExecutor | None = None, **options: Any) -> VerifyResult:
    with monkeypatch.context() as patch:
        patch.setattr(verify, "_PARALLEL_CHUNK", chunk)
        patch.setattr(verify, "_CHUNKED_MIN_ENTRIES", 0)
        patch.setattr(verify, "_PARALLEL_MIN_ENTRIES", 0)
        return verify_database(engine, log.verifier, deep=False, pool=pool, **options)


Cases = dict[str, tuple[Callable[[Connection], object], dict[str, Any]]]  # a tamper and verify's options, by name


def _differences(monkeypatch: pytest.MonkeyPatch, engine: Engine, log: AuditLog,
                 cases: Cases,
                 pool: ProcessPoolExecutor | None = None, sizes: tuple[int, ...] = CHUNK_SIZES) -> dict[str, str]:
    snapshot = _snapshot(engine)
    differences = {}
    for name, (tamper, options) in cases.items():
        with triggers_disabled(engine) as connection:
            tamper(connection)
        reference = _entry_by_entry(engine, log, **options)
        for chunk in sizes:
            chunked = _in_chunks(monkeypatch, chunk, engine, log, pool, **options)
            if chunked != reference:
                differences[f"{name}, chunks of {chunk}"] = f"entry by entry {reference}, in chunks {chunked}"
        _restore(engine, snapshot)
    return differences


def test_chunks_agree_with_the_pass_entry_by_entry_on_every_tampering(
        live_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine, log = live_log
    for chunk in CHUNK_SIZES:
        intact = _in_chunks(monkeypatch, chunk, engine, log)
        assert intact == _entry_by_entry(engine, log)
        assert intact.ok
        assert (intact.entries, intact.checkpoints, intact.root_hash) == (40, 5, log.root())
    cases = {name: (tamper, options) for name, (tamper, _expect, options) in LIVE_CASES.items()}
    differences = _differences(monkeypatch, engine, log, cases)
    assert not differences, "\n".join(f"{name}: {difference}" for name, difference in differences.items())


def test_node_cache_tampering_is_reported_alike_in_chunks_and_entry_by_entry(
        live_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine, log = live_log
    snapshot = _snapshot(engine)
    wrong = {}
    for name, (tamper, expect) in CHUNK_CASES.items():
        with triggers_disabled(engine) as connection:
            tamper(connection)
        failure = _entry_by_entry(engine, log).failure
        got = None if failure is None else (failure.kind, failure.index, failure.last_index)
        if got != expect:
            wrong[name] = f"expected {expect}, got {failure}"
        _restore(engine, snapshot)
    assert not wrong, "\n".join(f"{name}: {problem}" for name, problem in wrong.items())
    cases: Cases = {name: (tamper, {}) for name, (tamper, _expect) in CHUNK_CASES.items()}
    differences = _differences(monkeypatch, engine, log, cases)
    assert not differences, "\n".join(f"{name}: {difference}" for name, difference in differences.items())


def test_node_cache_tampering_is_reported_alike_by_worker_processes(
        live_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        pool: ProcessPoolExecutor) -> None:
    engine, log = live_log
    cases: Cases = {name: (tamper, {}) for name, (tamper, _expect) in CHUNK_CASES.items()}
    differences = _differences(monkeypatch, engine, log, cases, pool=pool, sizes=(4, 8))
    assert not differences, "\n".join(f"{name}: {difference}" for name, difference in differences.items())


def test_a_wrong_cached_subtree_after_the_last_checkpoint_is_reported_at_the_end(
        live_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    engine, log = live_log
    log.append([make_event(100 + i) for i in range(5)])  # entries 40..44, no checkpoint covers them
    with triggers_disabled(engine) as connection:
        _corrupt((1, 20))(connection)
    reference = _entry_by_entry(engine, log)
    assert reference.failure is not None
    assert (reference.failure.kind, reference.failure.index, reference.failure.last_index) == (
        FailureKind.NODE_CACHE, 40, 41)
    for chunk in CHUNK_SIZES:
        assert _in_chunks(monkeypatch, chunk, engine, log) == reference


def _entry_at(index: int) -> Callable[[Connection], None]:
    """A copy of entry 5 inserted at ``index`` (an INSERT: the append-only triggers allow it)."""
    def tamper(connection: Connection) -> None:
        row = connection.execute(select(audit_entries).where(audit_entries.c.log_index == 5)).one()._asdict()
        connection.execute(insert(audit_entries).values(**{**row, "log_index": index, "entry_id": uuid4()}))
    return tamper


def test_a_row_at_a_huge_index_is_a_gap_not_a_list_of_chunks_up_to_it(
        live_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A fast verification takes the log's size as its largest index, and planned the chunks up to it as one list
    before reading any: one row inserted at index 2**63 - 1 (any BIGINT) made ``audit verify --fast`` and the
    console's "verify now" (in the gateway's own process) allocate until the machine killed them. The chunks are
    planned as they are read: the first comes back short, and the entries after it name the gap."""
    engine, log = live_log
    snapshot = _snapshot(engine)
    with engine.begin() as connection:
        _entry_at(2**22)(connection)
    tracemalloc.start()
    try:
        _in_chunks(monkeypatch, 4, engine, log)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a log of 41 rows"
    _restore(engine, snapshot)
    with engine.begin() as connection:
        _entry_at(2**63 - 1)(connection)
    reference = verify_database(engine, log.verifier)  # deep: entry by entry
    assert reference.failure is not None
    assert (reference.failure.kind, reference.failure.index) == (FailureKind.GAP, 40)
    assert _entry_by_entry(engine, log) == reference
    for chunk in (4, 16_384):
        assert _in_chunks(monkeypatch, chunk, engine, log) == reference
    assert verify_database(engine, log.verifier, deep=False, workers=2) == reference

"""AuditLog on SQLite and PostgreSQL: appends, checkpoints by policy, proofs, export and verification."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, delete

from audit.canonical import parse_entry
from audit.checkpoint import open_checkpoint
from audit.errors import AuditWriteError, PersonalDataError, ProofUnavailable, StoreUnavailable, VerificationError
from audit.export import export_log
from audit.log import AuditLog, CheckpointPolicy
from audit.merkle import EMPTY_ROOT, flat_index, leaf_hash, root_of
from audit.tables import audit_checkpoints, audit_entries, audit_tree_nodes
from audit.verify import verify_database, verify_export
from gateway.clock import FixedClock
from tests.audit_support import log_signer, make_event, triggers_disabled


def test_appends_get_gap_free_indices_and_receipts_match_the_stored_entries(engine: Engine,
                                                                             clock: FixedClock) -> None:
    log = AuditLog(engine, log_signer(), clock=clock.now)
    assert log.size() == 0
    assert log.root() == EMPTY_ROOT
    receipts = [r for batch in range(5) for r in log.append([make_event(batch * 3 + i) for i in range(3)])]
    assert [r.index for r in receipts] == list(range(15))
    assert receipts[-1].tree_size == 15
    stored = log.entries(0, 15)
    assert [e.index for e in stored] == list(range(15))
    for receipt, entry in zip(receipts, stored, strict=True):
        assert (receipt.entry_id, receipt.leaf_hash) == (entry.entry_id, entry.leaf_hash)
        parsed = parse_entry(entry.canonical)
        assert parsed.index == entry.index
        assert parsed.recorded_at == clock.now()
        assert entry.leaf_hash == leaf_hash(entry.canonical)
    # The root from cached subtrees equals the root recomputed from scratch, at every size.
    leaves = [e.leaf_hash for e in stored]
    for size in range(16):
        assert log.root(size) == root_of(leaves[:size])


def test_personal_data_is_refused_before_anything_is_written(engine: Engine) -> None:
    log = AuditLog(engine, log_signer())
    with pytest.raises(PersonalDataError):
        log.append([make_event(1), make_event(2, extra={"iban": "NL91ABNA0417164300"})])
    assert log.size() == 0


def test_checkpoints_follow_the_policy_with_an_injected_clock(engine: Engine, clock: FixedClock) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=10, every_seconds=60),
                   clock=clock.now)
    log.append([make_event(0)])
    assert [c.tree_size for c in log.checkpoints()] == [1]  # the first entry anchors the log
    log.append([make_event(i) for i in range(1, 6)])
    assert log.maybe_issue_checkpoint() is None  # 5 new entries, no time passed
    log.append([make_event(i) for i in range(6, 11)])
    assert [c.tree_size for c in log.checkpoints()] == [1, 11]  # 10 new entries
    log.append([make_event(11)])
    clock.advance(timedelta(seconds=61))
    issued = log.maybe_issue_checkpoint()
    assert issued is not None
    assert issued.tree_size == 12
    assert issued.issued_at == clock.now()
    assert log.maybe_issue_checkpoint() is None  # nothing new to cover
    clock.advance(timedelta(hours=1))
    assert log.maybe_issue_checkpoint() is None
    assert log.issue_checkpoint().tree_size == 12  # forced at an already covered size: the same one
    assert log.checkpoint().tree_size == 12
    assert log.checkpoint(11).tree_size == 11
    with pytest.raises(ProofUnavailable):
        log.checkpoint(5)


def test_every_proof_verifies_against_signed_checkpoints(engine: Engine) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=7, every_seconds=None))
    for batch in range(6):
        log.append([make_event(batch * 5 + i) for i in range(5)])
    log.issue_checkpoint()
    checkpoints = [open_checkpoint(c.note, log.verifier) for c in log.checkpoints()]
    assert [c.tree_size for c in checkpoints] == [5, 15, 25, 30]
    leaves = [e.leaf_hash for e in log.entries(0, 30)]
    for checkpoint in checkpoints:
        assert checkpoint.root_hash == root_of(leaves[: checkpoint.tree_size])
        for index in range(checkpoint.tree_size):
            proof = log.inclusion_proof(index, checkpoint.tree_size)
            assert proof.leaf_hash == leaves[index]
            proof.verify(checkpoint.root_hash)
    for older in checkpoints:
        for newer in checkpoints:
            if older.tree_size <= newer.tree_size:
                log.consistency_proof(older.tree_size, newer.tree_size).verify(older.root_hash, newer.root_hash)
    with pytest.raises(VerificationError):
        log.inclusion_proof(3, 15).verify(checkpoints[2].root_hash)


def test_a_log_shorter_than_its_latest_checkpoint_is_neither_appended_to_nor_signed(engine: Engine) -> None:
    """Entries deleted behind the gateway's back below a signed checkpoint (the triggers dropped, a botched
    restore): an append there would be a second entry at an index a signature already covers, reported durable
    although no verification can ever accept it, and a checkpoint over that tree a root that forks from the one
    signed before. Fail closed instead: the request is denied, nothing is written or signed."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=4, every_seconds=None))
    log.append([make_event(i) for i in range(4)])
    with triggers_disabled(engine) as connection:
        connection.execute(delete(audit_entries).where(audit_entries.c.log_index >= 2))
    other = AuditLog(engine, log_signer(), policy=log.policy)  # another process: it remembers nothing of the log
    for attempt in (lambda: other.append([make_event(9)]), other.issue_checkpoint):
        with pytest.raises(AuditWriteError, match="rolled back"):
            attempt()
    assert other.size() == 2
    assert [c.tree_size for c in other.checkpoints()] == [4]


def test_a_log_rolled_back_under_a_running_writer_is_not_written_to(engine: Engine) -> None:
    """A clean rollback (entries, subtrees and checkpoints after size 2 all gone: a backup put back under a running
    gateway) leaves nothing in the database to tell. But this process wrote 4 entries, and an append-only log never
    shrinks: appending would write entries 2 and 3 again, and sign sizes 3 and 4 again over other entries (a fork
    of the checkpoint at 4 that officers may hold). Fail closed until the process restarts."""
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=2, every_seconds=None))
    log.append([make_event(0), make_event(1)])
    log.append([make_event(2), make_event(3)])
    with triggers_disabled(engine) as connection:
        connection.execute(delete(audit_entries).where(audit_entries.c.log_index >= 2))
        connection.execute(delete(audit_checkpoints).where(audit_checkpoints.c.tree_size > 2))
        connection.execute(delete(audit_tree_nodes).where(
            audit_tree_nodes.c.node_id.in_([flat_index((1, 1)), flat_index((2, 0))])))
    with pytest.raises(AuditWriteError, match="rolled back"):
        log.append([make_event(9)])
    assert log.size() == 2
    assert [c.tree_size for c in log.checkpoints()] == [2]


def test_proofs_beyond_the_log_are_unavailable(engine: Engine) -> None:
    log = AuditLog(engine, log_signer())
    log.append([make_event(i) for i in range(3)])
    with pytest.raises(ProofUnavailable):
        log.inclusion_proof(2, 4)
    with pytest.raises(ProofUnavailable):
        log.inclusion_proof(3, 3)
    with pytest.raises(ProofUnavailable):
        log.consistency_proof(2, 4)
    with pytest.raises(ProofUnavailable):
        log.consistency_proof(3, 2)
    with pytest.raises(ProofUnavailable):
        log.root(4)


def test_export_and_live_verification_agree(engine: Engine, tmp_path: Path) -> None:
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=8, every_seconds=None))
    for batch in range(5):
        log.append([make_event(batch * 5 + i) for i in range(5)])
    log.append([make_event(25)])
    live = verify_database(engine, log.verifier)
    assert live.ok, live.failure
    assert (live.entries, live.checkpoints, live.root_hash) == (26, 3, log.root())
    assert live.warnings == ("entries 25..25 are not covered by a checkpoint yet",)

    path = tmp_path / "audit.jsonl"
    summary = export_log(log, path)  # signs the tree at 26: the export ends with a checkpoint at its size
    assert (summary.tree_size, summary.checkpoint_count) == (26, 4)
    assert log.checkpoint().tree_size == 26
    for deep in (True, False):
        exported = verify_export(path, verifier=log.verifier, deep=deep)
        assert exported.ok, exported.failure
        assert (exported.entries, exported.checkpoints, exported.root_hash) == (26, 4, log.root())
        assert exported.warnings == ()
    unpinned = verify_export(path)
    assert unpinned.ok
    assert not unpinned.key_pinned
    assert any("pin" in warning for warning in unpinned.warnings)


def test_a_locked_sqlite_database_becomes_an_audit_write_error(sqlite_db_url: str) -> None:
    engine = create_engine(sqlite_db_url, connect_args={"timeout": 0.05})
    blocker = sqlite3.connect(sqlite_db_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(AuditWriteError) as caught:
            AuditLog(engine, log_signer()).append([make_event(1)])
        assert "locked" in str(caught.value.__cause__)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        engine.dispose()


def test_an_unreachable_database_is_unavailable_for_reads(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'audit.sqlite'}")
    log = AuditLog(engine, log_signer())
    with pytest.raises(StoreUnavailable):
        log.size()
    with pytest.raises(StoreUnavailable):
        log.inclusion_proof(0, 1)
    engine.dispose()

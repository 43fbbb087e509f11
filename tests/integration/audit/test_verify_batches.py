"""Verification reads, hashes and checks in batches: the verdict never depends on where a batch ends."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

import audit.verify
from audit import store
from audit.export import export_log
from audit.log import AuditLog, CheckpointPolicy
from audit.merkle import flat_index, leaf_hash
from audit.tables import audit_entries, audit_tree_nodes
from audit.verify import FailureKind, VerifyResult, verify_database, verify_export
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event, triggers_disabled

SIZE = 300
BATCHINGS = [(1, 1), (7, 3), (64, 16), (10_000, 4096)]
"""(entries per read or export batch, completed subtrees per cache check)."""


@pytest.fixture
def engine_and_log(db_url: str) -> Iterator[tuple[Engine, AuditLog]]:
    engine = make_engine(db_url)
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=37, every_seconds=None))
    for start in range(0, SIZE, 25):
        log.append([make_event(i) for i in range(start, start + 25)])
    yield engine, log
    engine.dispose()


def _batched(monkeypatch: pytest.MonkeyPatch, entries: int, nodes: int) -> None:
    monkeypatch.setattr(store, "leaf_batches", functools.partial(store.leaf_batches, batch_size=entries))
    monkeypatch.setattr(audit.verify._NodeChecker, "batch", nodes)
    monkeypatch.setattr(audit.verify, "_EXPORT_BATCH", entries)


def _summary(result: VerifyResult) -> tuple[Any, ...]:
    failure = result.failure
    if failure is not None:  # how far the stream got before the failure depends on when it was checked
        return (None, None, None, result.warnings,
                (failure.kind, failure.index, failure.last_index, failure.checkpoint_size))
    return result.entries, result.checkpoints, result.root_hash, result.warnings, None


def _every_batching(monkeypatch: pytest.MonkeyPatch, verify: Any) -> tuple[Any, ...]:
    results = set()
    for entries, nodes in BATCHINGS:
        with monkeypatch.context() as patch:
            _batched(patch, entries, nodes)
            results.add(_summary(verify()))
    assert len(results) == 1, results
    return results.pop()


def test_an_intact_log_verifies_the_same_in_any_batching(engine_and_log: tuple[Engine, AuditLog],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine, log = engine_and_log
    live = _every_batching(monkeypatch, lambda: verify_database(engine, log.verifier, deep=False))
    assert live[:2] == (SIZE, len(log.checkpoints()))
    assert live[4] is None
    assert live[2] == log.root()
    assert _every_batching(monkeypatch, lambda: verify_database(engine, log.verifier)) == live
    path = tmp_path / "export.jsonl"
    export_log(log, path)  # signs a checkpoint at 300, which the export ends with
    exported = _every_batching(monkeypatch, lambda: verify_export(path, verifier=log.verifier, deep=False))
    assert exported[:3] == (SIZE, live[1] + 1, live[2])


@pytest.mark.parametrize(("target", "first", "last"), [(150, 150, 151), (299, 298, 299)])
def test_a_rewritten_entry_is_found_at_the_same_place_in_any_batching(
        engine_and_log: tuple[Engine, AuditLog], monkeypatch: pytest.MonkeyPatch, target: int, first: int,
        last: int) -> None:
    engine, log = engine_and_log
    log.issue_checkpoint()  # a checkpoint at 300 covers the last entries too
    with triggers_disabled(engine) as connection:  # the thorough forger rewrites the stored leaf hash too
        canonical = str(connection.execute(select(audit_entries.c.canonical)
                                           .where(audit_entries.c.log_index == target)).scalar_one())
        changed = canonical.replace("tax.debts", "tax.debtz", 1)
        connection.execute(update(audit_entries).where(audit_entries.c.log_index == target)
                           .values(canonical=changed, leaf_hash=leaf_hash(changed.encode())))
    live = _every_batching(monkeypatch, lambda: verify_database(engine, log.verifier, deep=False))
    assert live[4][:3] == (FailureKind.NODE_CACHE, first, last)  # the narrowest cached subtree over it
    unchecked = _every_batching(monkeypatch, lambda: verify_database(engine, log.verifier, deep=False,
                                                                     check_node_cache=False))
    assert unchecked[4][0] is FailureKind.ROOT
    assert unchecked[4][1] <= target <= unchecked[4][2]


def test_a_corrupted_large_cached_subtree_is_found_in_any_batching(engine_and_log: tuple[Engine, AuditLog],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    engine, log = engine_and_log
    with triggers_disabled(engine) as connection:  # the subtree over entries 0..127: far below later node ids
        connection.execute(update(audit_tree_nodes).where(audit_tree_nodes.c.node_id == flat_index((7, 0)))
                           .values(hash=bytes(32)))
    summary = _every_batching(monkeypatch, lambda: verify_database(engine, log.verifier, deep=False))
    assert summary[4][:3] == (FailureKind.NODE_CACHE, 0, 127)

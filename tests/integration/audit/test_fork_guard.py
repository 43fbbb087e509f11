"""The log never signs a checkpoint whose tree forks from the latest one its key signed.

The attacker has the database (triggers dropped), not the signing key: they rewrite an entry below the latest
checkpoint and rebuild the subtree cache over the forged leaves, so that a gateway process reading the cache
(one that did not write last, or a new one) computes the forged root. Signing it would have the log's own key
vouch for the forgery. Every way to a signature (an explicit checkpoint, the policy's on an append or while
idle, one on demand) is refused instead, nothing is written, and the refusal is logged with sizes and hashes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, delete, func, insert, select, update

from audit import AuditLog, AuditWriteError, Checkpoint, CheckpointPolicy, sign_checkpoint, verify_database
from audit.tables import audit_checkpoints, audit_entries, audit_tree_nodes
from gateway.db.engine import make_engine
from tests.audit_support import forge_entry, log_signer, make_event, triggers_disabled

SIGNER = log_signer()
POLICY = CheckpointPolicy(every_entries=8, every_seconds=None)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    writer = AuditLog(engine, SIGNER, policy=POLICY)
    for batch in range(3):
        writer.append([make_event(batch * 8 + i) for i in range(8)])
    writer.append([make_event(24 + i) for i in range(3)])  # 27 entries; checkpoints at 8, 16 and 24
    assert [c.tree_size for c in writer.checkpoints()] == [8, 16, 24]
    yield engine
    engine.dispose()


def _forged(engine: Engine) -> None:
    with triggers_disabled(engine) as connection:
        forge_entry(connection, 13)


def _state(engine: Engine) -> tuple[int, list[int]]:
    with engine.connect() as connection:
        size = connection.execute(select(func.count()).select_from(audit_entries)).scalar_one()
        sizes = list(connection.execute(select(audit_checkpoints.c.tree_size)
                                        .order_by(audit_checkpoints.c.tree_size)).scalars())
    return size, sizes


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "audit.log" and r.levelno == logging.ERROR]


def test_a_rebuilt_cache_over_rewritten_entries_is_not_signed(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    _forged(engine)
    other = AuditLog(engine, SIGNER, policy=POLICY)  # another process: the root from the (forged) cache
    forged_root = other.root(27)
    with (caplog.at_level(logging.ERROR, logger="audit.log"),
          pytest.raises(AuditWriteError, match="does not extend") as refused):
        other.issue_checkpoint()
    assert _state(engine) == (27, [8, 16, 24]), "nothing signed, nothing written"
    assert other.signing_refused is not None
    [record] = _refusals(caplog)
    message = record.getMessage()
    for stated in (forged_root.hex(), "27 entries", "24 entries"):
        assert stated in message
    assert other.signing_refused == str(refused.value)
    assert "{" not in message, "sizes and hashes only, never an entry"
    assert "gemeente" not in message
    assert not verify_database(engine, other.verifier).ok, "the verifier still catches it at 16"


def test_no_path_to_a_signature_signs_the_fork(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    _forged(engine)
    other = AuditLog(engine, SIGNER, policy=POLICY)
    with caplog.at_level(logging.ERROR, logger="audit.log"):
        with pytest.raises(AuditWriteError):  # 27 + 5: the policy's checkpoint is due with the append ...
            other.append([make_event(100 + i) for i in range(5)])
        assert _state(engine) == (27, [8, 16, 24]), "... so the entries are refused with it: callers deny"
        with pytest.raises(AuditWriteError):
            other.checkpoint_on_demand(27, now=1_000.0, min_interval=1.0)
        with pytest.raises(AuditWriteError):  # the writer's idle loop, when a checkpoint is due
            AuditLog(engine, SIGNER, policy=CheckpointPolicy(every_entries=1)).maybe_issue_checkpoint()
    assert _state(engine) == (27, [8, 16, 24])
    assert len(_refusals(caplog)) == 2, "logged once per process and fork, not on every attempt"


def test_the_process_that_wrote_last_refuses_too(engine: Engine) -> None:
    """Its frontier in memory gives the honest root, but the store's subtrees no longer prove it: no signature
    over a store that no longer shows where its root comes from."""
    writer = AuditLog(engine, SIGNER, policy=POLICY)
    writer.append([make_event(50)])  # remembers the frontier at 28
    _forged(engine)
    with pytest.raises(AuditWriteError):
        writer.issue_checkpoint()
    assert _state(engine) == (28, [8, 16, 24])


def test_a_planted_note_is_not_the_checkpoint_checked_against(engine: Engine) -> None:
    """A forged row signed by another key over the forged root, at the top: passed over, the check is against
    the log's own latest checkpoint (and an honest log with planted rows keeps signing)."""
    impostor = log_signer("impostor")
    log = AuditLog(engine, SIGNER, policy=POLICY)
    with engine.begin() as connection:  # an INSERT: the append-only triggers allow it
        for size, note in ((25, sign_checkpoint(Checkpoint(SIGNER.name, 25, log.root(25)), impostor)),
                           (26, "garbage")):
            connection.execute(insert(audit_checkpoints).values(tree_size=size, root_hash=log.root(size), note=note,
                                                                issued_at=log.checkpoint(24).issued_at))
    assert log.issue_checkpoint().tree_size == 27, "planted rows do not stop an honest log"
    assert log.signing_refused is None
    log.append([make_event(60)])
    _forged(engine)
    forged_root = AuditLog(engine, SIGNER).root(28)
    with engine.begin() as connection:  # the forger's own checkpoint over the forged tree, on top
        connection.execute(insert(audit_checkpoints).values(
            tree_size=28, root_hash=forged_root, note=sign_checkpoint(Checkpoint(SIGNER.name, 28, forged_root),
                                                                      impostor),
            issued_at=log.checkpoint(24).issued_at))
    with pytest.raises(AuditWriteError, match="signed at 27 entries"):  # 28 + 8: due with the append
        AuditLog(engine, SIGNER, policy=POLICY).append([make_event(61 + i) for i in range(8)])
    assert _state(engine) == (28, [8, 16, 24, 25, 26, 27, 28])


def test_signing_resumes_once_the_log_is_restored(engine: Engine) -> None:
    with engine.connect() as connection:
        honest = connection.execute(select(audit_entries.c.canonical, audit_entries.c.leaf_hash)
                                    .where(audit_entries.c.log_index == 13)).one()
        nodes = [row._asdict() for row in connection.execute(select(audit_tree_nodes))]
    _forged(engine)
    other = AuditLog(engine, SIGNER, policy=POLICY)
    with pytest.raises(AuditWriteError):
        other.issue_checkpoint()
    with triggers_disabled(engine) as connection:
        connection.execute(update(audit_entries).where(audit_entries.c.log_index == 13)
                           .values(canonical=honest.canonical, leaf_hash=honest.leaf_hash))
        connection.execute(delete(audit_tree_nodes))
        connection.execute(insert(audit_tree_nodes), nodes)
    assert other.issue_checkpoint().tree_size == 27
    assert other.signing_refused is None
    assert verify_database(engine, other.verifier).ok

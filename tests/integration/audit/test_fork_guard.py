"""The log never signs a checkpoint whose tree forks from the latest one its key signed.

The attacker has the database (triggers dropped), not the signing key: they rewrite an entry below the latest
checkpoint and rebuild the subtree cache over the forged leaves, so that a gateway process reading the cache
(one that did not write last, or a new one) computes the forged root. Signing it would have the log's own key
vouch for the forgery. Every way to a signature (an explicit checkpoint, the policy's on an append or while
idle, one on demand) is refused instead, nothing is written, and the refusal is logged with sizes and hashes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine, delete, func, insert, select, update

from audit import AuditLog, AuditWriteError, Checkpoint, CheckpointPolicy, sign_checkpoint, verify_database
from audit.log import prepare
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


# -- every checkpoint deleted: the process's own anchor ----------------------------------------------------------


def _checkpoints_deleted_and_forged(engine: Engine) -> None:
    """The thorough attacker: rewrite an entry below every checkpoint, rebuild the cache over it, and delete every
    checkpoint row, so that no stored signature is left to check a tree against."""
    with triggers_disabled(engine) as connection:
        connection.execute(delete(audit_checkpoints))
        forge_entry(connection, 13)


def _signs(log: AuditLog) -> None:
    log.issue_checkpoint()


def _adopts_at_start(log: AuditLog) -> None:
    assert log.adopt_latest_checkpoint() == Checkpoint(SIGNER.name, 24, log.root(24))


def _serves(log: AuditLog) -> None:
    log.check_checkpoint(log.checkpoint())


@pytest.mark.parametrize("anchored", [_signs, _adopts_at_start, _serves], ids=["signed", "at start", "served"])
def test_deleting_every_checkpoint_does_not_let_a_running_process_sign_a_rewritten_tree(
        engine: Engine, anchored: Callable[[AuditLog], None], caplog: pytest.LogCaptureFixture) -> None:
    """What the process signed or verified itself stays in its memory: with nothing stored to check against, the
    forged tree must still extend that, and does not."""
    log = AuditLog(engine, SIGNER, policy=POLICY)
    anchored(log)
    anchor = log.anchor
    assert anchor is not None
    size, _ = _state(engine)
    _checkpoints_deleted_and_forged(engine)
    with (caplog.at_level(logging.ERROR, logger="audit.log"),
          pytest.raises(AuditWriteError, match=f"this process signed or verified at {anchor.tree_size} entries")):
        log.issue_checkpoint()
    assert _state(engine) == (size, []), "nothing signed, nothing written"
    assert log.signing_refused is not None
    [record] = _refusals(caplog)
    assert anchor.root_hash.hex() in record.getMessage()
    with pytest.raises(AuditWriteError):  # an append the policy's checkpoint is due with: refused with it
        log.append([make_event(100 + i) for i in range(8)])
    with pytest.raises(AuditWriteError):
        log.checkpoint_on_demand(size, now=1_000.0, min_interval=1.0)
    assert _state(engine) == (size, [])
    assert log.anchor == anchor, "a refusal does not move the anchor"


def test_the_process_that_wrote_last_refuses_a_deleted_and_rewritten_log_too(engine: Engine) -> None:
    """Its frontier in memory gives the honest root, but the store's subtrees no longer prove that the tree
    extends its anchor: as with a stored checkpoint, nothing is signed over a store that does not show it."""
    writer = AuditLog(engine, SIGNER, policy=POLICY)
    writer.append([make_event(50)])  # remembers the frontier at 28
    writer.issue_checkpoint()
    _checkpoints_deleted_and_forged(engine)
    with pytest.raises(AuditWriteError, match="this process signed or verified at 28 entries"):
        writer.append([make_event(60 + i) for i in range(8)])
    assert _state(engine) == (28, [])


def test_a_process_started_on_a_log_without_checkpoints_warns_and_signs(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """The documented limit: checkpoints deleted before a process starts leave it nothing of its own to check
    against, and a log that never had a checkpoint by this key looks the same. It says so (sizes only), and
    signs what it finds; the verifier with an officer's saved checkpoint is what catches the rewrite."""
    _checkpoints_deleted_and_forged(engine)
    started = AuditLog(engine, SIGNER, policy=POLICY)
    with caplog.at_level(logging.WARNING, logger="audit.log"):
        assert started.adopt_latest_checkpoint() is None
    [warning] = [r for r in caplog.records if r.name == "audit.log" and r.levelno == logging.WARNING]
    assert "27 entries but no checkpoint signed by its key" in warning.getMessage()
    assert started.issue_checkpoint().tree_size == 27
    assert started.anchor == Checkpoint(SIGNER.name, 27, started.root(27))


def test_a_fresh_log_starts_without_a_warning(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(db_url)
    log = AuditLog(engine, SIGNER, policy=POLICY)
    with caplog.at_level(logging.WARNING, logger="audit.log"):
        assert log.adopt_latest_checkpoint() is None
    assert not [r for r in caplog.records if r.name == "audit.log"]
    assert log.append([make_event(0)])[0].index == 0
    assert [c.tree_size for c in log.checkpoints()] == [1], "the first entry gets its checkpoint"
    engine.dispose()


def test_processes_signing_in_turn_keep_extending_each_others_checkpoints(engine: Engine) -> None:
    """The normal path: each process's anchor is older than the latest stored checkpoint (another process signed
    that one), and both proofs pass."""
    first, second = AuditLog(engine, SIGNER, policy=POLICY), AuditLog(engine, SIGNER, policy=POLICY)
    for log in (first, second):
        log.adopt_latest_checkpoint()
    for turn in range(4):
        log = (first, second)[turn % 2]
        log.append([make_event(200 + turn * 8 + i) for i in range(8)])
        assert log.signing_refused is None
    assert _state(engine) == (59, [8, 16, 24, 35, 43, 51, 59])
    assert first.anchor == Checkpoint(SIGNER.name, 51, first.root(51))
    assert second.anchor == Checkpoint(SIGNER.name, 59, first.root(59))
    assert first.issue_checkpoint().tree_size == 59, "already signed at 59 by the other: nothing new to sign"
    assert verify_database(engine, first.verifier).ok


class _Refused(Exception):
    pass


def test_a_signature_rolled_back_with_its_entries_is_no_anchor(engine: Engine) -> None:
    """The checkpoint signed in a transaction that then failed covers entries that were never written: the entries
    written at those indices next are other ones, so anchoring to it would refuse every later checkpoint."""
    log = AuditLog(engine, SIGNER, policy=POLICY)
    log.issue_checkpoint()
    anchor = Checkpoint(SIGNER.name, 27, log.root(27))
    assert log.anchor == anchor

    def refuse(_connection: object, _receipts: object) -> None:
        raise _Refused

    with pytest.raises(_Refused):  # 27 + 8: signed at 35 inside the transaction, then rolled back
        log.append_prepared([prepare(make_event(300 + i)) for i in range(8)], refuse)
    assert _state(engine) == (27, [8, 16, 24, 27])
    assert log.anchor == anchor
    log.append([make_event(400 + i) for i in range(8)])
    assert _state(engine) == (35, [8, 16, 24, 27, 35])
    assert log.signing_refused is None

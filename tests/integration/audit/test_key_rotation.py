"""Rotating the checkpoint key (:mod:`audit.keys`): a handover checkpoint signed by both keys, eras per key.

An officer who pinned the old key follows the handover to the new one; one who pinned the new key follows it
back; every checkpoint is checked with the key current for its size, so a retired key (or a leaked one, after
rotation) cannot sign a new checkpoint that verifies, and a handover or key row forged without both keys fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, update

from audit import (
    AuditLog,
    AuditWriteError,
    Checkpoint,
    CheckpointPolicy,
    FailureKind,
    KeyHistory,
    NoteVerifier,
    VerificationError,
    export_log,
    sign_checkpoint,
    verify_database,
    verify_export,
)
from audit.checkpoint import SignedNote
from audit.keys import Handover, open_handover
from audit.log import prepare
from audit.tables import audit_checkpoint_keys, audit_checkpoints
from tests.audit_support import log_signer, make_event, triggers_disabled

OLD = log_signer("old key")
NEW = log_signer("new key")
POLICY = CheckpointPolicy(every_entries=8, every_seconds=None)


def _rotated(engine: Engine, *, compromised_after: int | None = None) -> AuditLog:
    """A log of 16 entries under OLD (checkpoints at 8 and 16), a rotation to NEW (handover at 17), then 8 more
    entries signed by NEW (checkpoint at 25)."""
    log = AuditLog(engine, OLD, policy=POLICY)
    log.append([make_event(n) for n in range(8)])
    log.append([make_event(n) for n in range(8, 16)])
    handover = log.rotate_key(NEW, prepare(make_event(99)), compromised_after=compromised_after)
    assert handover.tree_size == 17
    log.append([make_event(n) for n in range(17, 25)])
    assert [c.tree_size for c in log.checkpoints()] == [8, 16, 17, 25]
    return log


def _signers(note: str) -> set[bytes]:
    return {signature.key_id for signature in SignedNote.parse(note).signatures}


def test_after_a_rotation_the_new_key_signs_and_both_eras_verify_from_either_pinned_key(engine: Engine) -> None:
    log = _rotated(engine)
    notes = {c.tree_size: c.note for c in log.checkpoints()}
    assert _signers(notes[16]) == {OLD.verifier.key_id}
    assert _signers(notes[17]) == {OLD.verifier.key_id, NEW.verifier.key_id}, "the handover carries both"
    assert _signers(notes[25]) == {NEW.verifier.key_id}, "after it, the new key only"
    for pinned in (OLD.verifier, NEW.verifier):
        result = verify_database(engine, pinned)
        assert result.ok, result.failure
        assert (result.entries, result.checkpoints) == (25, 4)
    unrelated = verify_database(engine, log_signer("unrelated").verifier)
    assert unrelated.failure is not None
    assert unrelated.failure.kind == FailureKind.KEY


def test_the_handover_verifies_with_only_the_old_public_key(engine: Engine) -> None:
    handover = _rotated(engine).checkpoint(17).note
    pinned = NoteVerifier.from_vkey(OLD.verifier.vkey)  # what an officer kept: the old key's string, nothing else
    pinned.verify(SignedNote.parse(handover))  # any signed-note verifier pinned to the old key accepts it
    checkpoint, stated = open_handover(handover)
    assert (checkpoint.tree_size, stated.old.vkey, stated.new.vkey) == (17, OLD.verifier.vkey, NEW.verifier.vkey)
    assert KeyHistory.from_handovers(pinned, [handover]).current.vkey == NEW.verifier.vkey


def test_an_export_after_a_rotation_verifies_with_the_old_pinned_key(engine: Engine, tmp_path: Path) -> None:
    exported = tmp_path / "log.jsonl"
    export_log(_rotated(engine), exported)
    for pinned in (OLD.verifier, NEW.verifier):
        result = verify_export(exported, verifier=pinned)
        assert result.ok, result.failure
    wrong = verify_export(exported, verifier=log_signer("unrelated").verifier)
    assert wrong.failure is not None
    assert wrong.failure.kind == FailureKind.KEY


def test_the_retired_key_cannot_sign_a_new_checkpoint_that_verifies(engine: Engine) -> None:
    log = _rotated(engine)
    log.append([make_event(n) for n in range(25, 28)])  # 28 entries, no checkpoint beyond 25
    stale = AuditLog(engine, OLD, policy=POLICY)  # a process still holding the old key signs nothing
    with pytest.raises(AuditWriteError, match="rotated"):
        stale.issue_checkpoint()
    with pytest.raises(AuditWriteError, match="rotated"):
        stale.append([make_event(n) for n in range(30, 38)])
    assert log.checkpoint().tree_size == 25
    late = sign_checkpoint(Checkpoint(OLD.name, 28, log.root(28)), OLD)  # the retired key, over a bigger tree
    with engine.begin() as connection:  # an INSERT: the append-only triggers allow it
        connection.execute(insert(audit_checkpoints).values(tree_size=28, root_hash=log.root(28), note=late,
                                                            issued_at=log.checkpoint(25).issued_at))
    for pinned in (OLD.verifier, NEW.verifier):
        result = verify_database(engine, pinned)
        assert result.failure is not None
        assert (result.failure.kind, result.failure.checkpoint_size) == (FailureKind.SIGNATURE, 28)
        assert "retired at 17" in result.failure.reason
    with pytest.raises(VerificationError, match="retired"):
        log.key_history().open(late)


def test_a_process_with_a_key_source_takes_the_new_key_after_a_rotation_elsewhere(engine: Engine) -> None:
    running = AuditLog(engine, OLD, policy=POLICY, signer_source=lambda: NEW)
    running.append([make_event(n) for n in range(8)])
    AuditLog(engine, OLD, policy=POLICY).rotate_key(NEW, prepare(make_event(99)))
    running.append([make_event(n) for n in range(9, 17)])
    assert _signers(running.checkpoint().note) == {NEW.verifier.key_id}
    assert verify_database(engine, OLD.verifier).ok


def test_a_handover_signed_only_by_the_new_key_is_refused(engine: Engine) -> None:
    """The forger holds a key of their own and the database, not the log's key: a handover from the log's key to
    theirs, signed by theirs only, and a key row for it."""
    log = AuditLog(engine, OLD, policy=POLICY)
    log.append([make_event(n) for n in range(8)])
    log.append([make_event(n) for n in range(8, 12)])  # 12 entries, no checkpoint at 12
    forger = log_signer("forger")
    handover = Handover(12, OLD.verifier, forger.verifier)
    text = Checkpoint(OLD.name, 12, log.root(12), (handover.line(),)).body()
    note = SignedNote(text, (forger.sign(text),)).format()
    checkpoint = log.checkpoint(8)
    with engine.begin() as connection:
        connection.execute(insert(audit_checkpoints).values(tree_size=12, root_hash=log.root(12), note=note,
                                                            issued_at=checkpoint.issued_at))
        connection.execute(insert(audit_checkpoint_keys).values(
            from_size=12, verifier_key=forger.verifier.vkey, previous_key=OLD.verifier.vkey,
            compromised_after=None, rotated_at=checkpoint.issued_at))
    for pinned in (OLD.verifier, forger.verifier):
        result = verify_database(engine, pinned)
        assert result.failure is not None, pinned.vkey
        assert result.failure.kind == FailureKind.KEY
    log.append([make_event(12)])  # a checkpoint is due at 13: nobody signs it over a broken key history
    for key in (OLD, forger):
        with pytest.raises(AuditWriteError, match="key history does not verify"):
            AuditLog(engine, key, policy=POLICY).issue_checkpoint()
    assert log.checkpoint().tree_size == 12


def test_a_tampered_key_row_fails_verification(engine: Engine) -> None:
    _rotated(engine)
    assert verify_database(engine, OLD.verifier).ok
    forger = log_signer("forger")
    with triggers_disabled(engine) as connection:
        connection.execute(update(audit_checkpoint_keys).values(verifier_key=forger.verifier.vkey))
    for pinned in (OLD.verifier, NEW.verifier):
        result = verify_database(engine, pinned)
        assert result.failure is not None
        assert result.failure.kind == FailureKind.KEY
        assert "audit_checkpoint_keys" in result.failure.reason
    AuditLog(engine, NEW, policy=CheckpointPolicy(every_entries=None, every_seconds=None)).append([make_event(30)])
    with pytest.raises(AuditWriteError, match="key history does not verify"):
        AuditLog(engine, NEW, policy=POLICY).issue_checkpoint()


def test_a_key_row_removed_fails_verification(engine: Engine) -> None:
    _rotated(engine)
    with triggers_disabled(engine) as connection:
        connection.execute(audit_checkpoint_keys.delete())
    result = verify_database(engine, NEW.verifier)
    assert result.failure is not None
    assert result.failure.kind == FailureKind.KEY


def test_a_compromised_rotation_flags_what_the_leaked_key_signed_after_the_point(engine: Engine) -> None:
    log = _rotated(engine, compromised_after=8)
    history = log.key_history()
    assert [history.distrusted(size) for size in (8, 16, 17, 25)] == [False, True, False, False]
    result = verify_database(engine, NEW.verifier)
    assert result.ok, result.failure
    assert any("compromise point: their signatures prove nothing" in warning and "sizes 16 " in warning
               for warning in result.warnings)
    assert result.checkpoints == 3, "the leaked key's checkpoint at 16 counts for nothing"
    # after the leak, the leaked key over a bigger tree is still refused (its era ended at the handover)
    log.append([make_event(n) for n in range(25, 28)])
    leaked = sign_checkpoint(Checkpoint(OLD.name, 28, log.root(28)), OLD)
    with pytest.raises(VerificationError, match="retired"):
        history.open(leaked)


def test_a_rotation_is_refused_without_writing_when_the_new_key_is_the_old_one(engine: Engine) -> None:
    log = AuditLog(engine, OLD, policy=POLICY)
    log.append([make_event(0)])
    for bad in (OLD, log_signer("x", name="another/origin")):
        with pytest.raises(ValueError, match="another key"):
            log.rotate_key(bad, prepare(make_event(99)))
    with pytest.raises(ValueError, match="compromise point"):
        log.rotate_key(NEW, prepare(make_event(99)), compromised_after=5)
    assert log.size() == 1
    assert log.key_rows() == []


def test_after_a_leak_a_forged_checkpoint_that_stopped_signing_is_set_aside_by_a_compromised_rotation(
        engine: Engine) -> None:
    """The thief signs, with the leaked key, a checkpoint over a root the log does not have, on top: the fork guard
    then refuses every signature (fail closed). A rotation that says where the leak began is checked against the
    last genuine checkpoint instead, signs the handover, and the log verifies again, warning about the forgery."""
    log = AuditLog(engine, OLD, policy=POLICY)
    log.append([make_event(n) for n in range(8)])
    log.append([make_event(n) for n in range(8, 16)])  # checkpoints at 8 and 16
    log.append([make_event(n) for n in range(16, 20)])  # 20 entries, no checkpoint at 20
    wrong = bytes(32)
    forged = sign_checkpoint(Checkpoint(OLD.name, 20, wrong), OLD)
    with engine.begin() as connection:
        connection.execute(insert(audit_checkpoints).values(tree_size=20, root_hash=wrong, note=forged,
                                                            issued_at=log.checkpoint(16).issued_at))
    with pytest.raises(AuditWriteError, match="does not extend"):
        AuditLog(engine, OLD, policy=POLICY).append([make_event(n) for n in range(20, 28)])  # due at 28
    with pytest.raises(AuditWriteError, match="does not extend"):  # a rotation that trusts the leaked key refuses too
        AuditLog(engine, OLD, policy=POLICY).rotate_key(NEW, prepare(make_event(99)))
    failed = verify_database(engine, OLD.verifier)
    assert failed.failure is not None
    assert (failed.failure.kind, failed.failure.checkpoint_size) == (FailureKind.ROOT, 20)

    rotated = AuditLog(engine, OLD, policy=POLICY)
    assert rotated.rotate_key(NEW, prepare(make_event(99)), compromised_after=16).tree_size == 21
    rotated.append([make_event(n) for n in range(21, 29)])  # signs again, with the new key
    assert rotated.checkpoint().tree_size == 29
    for pinned in (OLD.verifier, NEW.verifier):
        result = verify_database(engine, pinned)
        assert result.ok, result.failure
        assert any("sizes 20, " in warning and "do not match the log" in warning for warning in result.warnings)

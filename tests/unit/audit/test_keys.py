"""The checkpoint-key history (:mod:`audit.keys`) on notes alone: eras, handover lines, forged handovers."""

from __future__ import annotations

import hashlib

import pytest

from audit import Checkpoint, KeyHistory, NoteSigner, VerificationError, sign_checkpoint
from audit.checkpoint import SignedNote
from audit.keys import Handover, handover_of, open_handover
from tests.audit_support import log_signer

A, B, C = log_signer("a"), log_signer("b"), log_signer("c")
ROOT = hashlib.sha256(b"root").digest()


def _handover(size: int, old: NoteSigner = A, new: NoteSigner = B, *, signers: tuple[NoteSigner, ...] = (),
              compromised_after: int | None = None) -> str:
    text = Checkpoint(old.name, size, ROOT, (Handover(size, old.verifier, new.verifier, compromised_after).line(),)
                      ).body()
    return SignedNote(text, tuple(signer.sign(text) for signer in (signers or (old, new)))).format()


def test_a_chain_of_two_rotations_is_followed_from_any_pinned_key() -> None:
    notes = [_handover(10, A, B), _handover(20, B, C)]
    for pinned in (A, B, C):
        history = KeyHistory.from_handovers(pinned.verifier, reversed(notes))
        assert history.current.vkey == C.verifier.vkey
        assert [(era.first_size, era.last_size) for era in history.eras] == [(0, 10), (10, 20), (20, None)]
    history = KeyHistory.from_handovers(A.verifier, notes)
    for size, signer in ((5, A), (15, B), (25, C)):
        assert history.open(sign_checkpoint(Checkpoint(A.name, size, ROOT), signer)).tree_size == size
    for size, signer in ((15, A), (25, B), (5, B), (5, C)):  # a retired key later, a newer key earlier
        with pytest.raises(VerificationError):
            history.open(sign_checkpoint(Checkpoint(A.name, size, ROOT), signer))
    assert history.open(notes[0]).tree_size == 10
    with pytest.raises(VerificationError, match="handover"):  # both keys, but no handover where one belongs
        history.open(_both(Checkpoint(A.name, 10, ROOT)))
    with pytest.raises(VerificationError, match="handover"):  # a handover where none belongs
        history.open(_both(Checkpoint(A.name, 12, ROOT, (Handover(12, A.verifier, B.verifier).line(),))))


def _both(checkpoint: Checkpoint) -> str:
    text = checkpoint.body()
    return SignedNote(text, (A.sign(text), B.sign(text))).format()


@pytest.mark.parametrize("signers", [(B,), (A,), (C,)], ids=["new only", "old only", "neither"])
def test_a_handover_not_signed_by_both_its_keys_is_refused(signers: tuple[NoteSigner, ...]) -> None:
    with pytest.raises(VerificationError):
        KeyHistory.from_handovers(A.verifier, [_handover(10, signers=signers)])


def test_a_history_that_does_not_reach_the_pinned_key_or_breaks_its_chain_is_refused() -> None:
    with pytest.raises(VerificationError, match="pinned key"):
        KeyHistory.from_handovers(C.verifier, [_handover(10, A, B)])
    with pytest.raises(VerificationError, match="does not follow"):
        KeyHistory.from_handovers(A.verifier, [_handover(10, A, B), _handover(20, A, C)])


def test_malformed_handover_lines_are_refused() -> None:
    line = Handover(10, A.verifier, B.verifier).line()
    for extension in (line + " extra", line + " compromised-after=01", line.replace(B.verifier.vkey, "nonsense"),
                      Handover(10, A.verifier, A.verifier).line(), line + " compromised-after=10"):
        with pytest.raises(VerificationError):
            handover_of(Checkpoint(A.name, 10, ROOT, (extension,)))
    with pytest.raises(VerificationError, match="more than one"):
        handover_of(Checkpoint(A.name, 10, ROOT, (line, line)))
    assert handover_of(Checkpoint(A.name, 10, ROOT, ("other extension",))) is None
    with pytest.raises(VerificationError, match="no key handover"):
        open_handover(sign_checkpoint(Checkpoint(A.name, 10, ROOT), A))


def test_a_compromised_key_s_checkpoints_after_its_point_are_distrusted() -> None:
    history = KeyHistory.from_handovers(B.verifier, [_handover(10, compromised_after=4)])
    assert [size for size in range(12) if history.distrusted(size)] == [5, 6, 7, 8, 9]

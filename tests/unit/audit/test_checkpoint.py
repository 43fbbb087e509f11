"""Signed checkpoints: interoperability with Go's sumdb/note, round trips, and every kind of tampering."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit.checkpoint import (
    Checkpoint,
    NoteSignature,
    NoteSigner,
    NoteVerifier,
    SignedNote,
    key_id,
    open_checkpoint,
    sign_checkpoint,
)
from audit.errors import VerificationError
from audit.merkle import EMPTY_ROOT, leaf_hash
from tests.audit_support import ORIGIN, log_signer

# The example of golang.org/x/mod/sumdb/note (also in the C2SP signed-note spec's lineage). Ed25519 is
# deterministic, so signing the same text with the same key must reproduce the published note byte for byte.
GO_SKEY_MATERIAL = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (GO_TEXT + "\n— PeterNeumann "
           "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")


def _go_signer() -> NoteSigner:
    material = base64.b64decode(GO_SKEY_MATERIAL)
    assert material[0] == 0x01
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(material[1:]))


def test_signing_reproduces_the_go_sumdb_note_example() -> None:
    signer = _go_signer()
    assert signer.verifier.vkey == GO_VKEY
    assert SignedNote(GO_TEXT, (signer.sign(GO_TEXT),)).format() == GO_NOTE


def test_the_go_example_verifies_with_the_published_verifier_key() -> None:
    verifier = NoteVerifier.from_vkey(GO_VKEY)
    note = SignedNote.parse(GO_NOTE)
    assert note.text == GO_TEXT
    verifier.verify(note)
    with pytest.raises(VerificationError, match="invalid"):
        verifier.verify(SignedNote.parse(GO_NOTE.replace("cryptography", "cryptographY")))


def test_key_id_is_the_truncated_hash_of_name_type_and_key() -> None:
    verifier = NoteVerifier.from_vkey(GO_VKEY)
    assert key_id("PeterNeumann", verifier.public_key).hex() == "c74f20a3"


def test_checkpoint_text_format_and_round_trip() -> None:
    root = leaf_hash(b"x")
    checkpoint = Checkpoint(ORIGIN, 1234, root)
    body = checkpoint.body()
    assert body == f"{ORIGIN}\n1234\n{base64.b64encode(root).decode()}\n"
    assert Checkpoint.parse_body(body) == checkpoint
    with_extension = Checkpoint(ORIGIN, 0, EMPTY_ROOT, ("ext line",))
    assert Checkpoint.parse_body(with_extension.body()) == with_extension

    signer = log_signer()
    note = sign_checkpoint(checkpoint, signer)
    assert note.startswith(body + "\n— " + ORIGIN + " ")
    assert note.endswith("\n")
    assert open_checkpoint(note, signer.verifier) == checkpoint
    assert SignedNote.parse(note).format() == note


def test_verifier_key_round_trips_and_rejects_manglings() -> None:
    verifier = log_signer().verifier
    again = NoteVerifier.from_vkey(verifier.vkey)
    assert again.vkey == verifier.vkey
    assert again.key_id == verifier.key_id
    name, hash_hex, material = verifier.vkey.split("+", 2)
    with pytest.raises(ValueError, match="does not match"):
        NoteVerifier.from_vkey(f"other.example+{hash_hex}+{material}")
    with pytest.raises(ValueError, match="look like"):
        NoteVerifier.from_vkey(f"{name}+{hash_hex}")
    ecdsa_material = base64.b64encode(bytes([2]) + bytes(32)).decode()
    with pytest.raises(ValueError, match="Ed25519"):
        NoteVerifier.from_vkey(f"{name}+{hash_hex}+{ecdsa_material}")


def _note() -> tuple[str, NoteSigner]:
    signer = log_signer()
    return sign_checkpoint(Checkpoint(ORIGIN, 42, leaf_hash(b"root")), signer), signer


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda n: n.replace("\n42\n", "\n43\n"), id="tree size"),
    pytest.param(lambda n: n.replace(n.split("\n")[2], base64.b64encode(EMPTY_ROOT).decode()), id="root"),
    pytest.param(lambda n: n.replace(ORIGIN + "\n", "evil.example/audit\n", 1), id="origin"),
    pytest.param(lambda n: n.replace("\n\n", "\nextension\n\n"), id="added extension line"),
])
def test_any_change_to_the_signed_text_fails(tamper: object) -> None:
    note, signer = _note()
    forged = tamper(note)  # type: ignore[operator]
    assert forged != note
    with pytest.raises(VerificationError, match="invalid"):
        open_checkpoint(forged, signer.verifier)


def test_a_checkpoint_signed_by_another_key_is_rejected_even_under_the_same_name() -> None:
    note, _ = _note()
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    forged = sign_checkpoint(Checkpoint(ORIGIN, 42, leaf_hash(b"root")), impostor)
    with pytest.raises(VerificationError, match="not signed by the trusted key"):
        open_checkpoint(forged, log_signer().verifier)
    # The impostor's signature may be added next to the real one: it is ignored, the real one counts.
    parsed, extra = SignedNote.parse(note), SignedNote.parse(forged)
    assert parsed.signatures[0].key_id != extra.signatures[0].key_id
    both = SignedNote(parsed.text, (*extra.signatures, *parsed.signatures)).format()
    open_checkpoint(both, log_signer().verifier)


def test_a_bad_signature_claiming_the_trusted_key_rejects_the_note() -> None:
    note, signer = _note()
    parsed = SignedNote.parse(note)
    good = parsed.signatures[0]
    bad = NoteSignature(good.key_name, good.key_id, bytes(64))
    with pytest.raises(VerificationError, match="invalid"):
        signer.verifier.verify(SignedNote(parsed.text, (good, bad)))


def test_origin_must_match_the_expected_log() -> None:
    signer = log_signer(name="other.example/log")
    note = sign_checkpoint(Checkpoint(ORIGIN, 1, leaf_hash(b"x")), signer)
    with pytest.raises(VerificationError, match="origin"):
        open_checkpoint(note, signer.verifier)
    assert open_checkpoint(note, signer.verifier, origin=ORIGIN).tree_size == 1


@pytest.mark.parametrize("malformed", [
    pytest.param("origin\n1\nAAAA\n", id="no signatures"),
    pytest.param("origin\n1\nAAAA\n\n- origin AAAAAAAA\n", id="hyphen instead of em dash"),
    pytest.param("origin\n1\nAAAA\n\n— origin AAAAAAAA", id="no final newline"),
    pytest.param("origin\n1\nAAAA\n\n— origin AAAA\n", id="signature too short"),
    pytest.param("origin\n1\nAAAA\n\n— origin not*base64\n", id="bad base64"),
    pytest.param("origin\n1\r\nAAAA\n\n— origin AAAAAAAA\n", id="control character"),
    pytest.param("origin\n1\nAAAA\n\n— origin two words AAAAAAAA\n", id="space in key name"),
])
def test_malformed_notes_are_rejected(malformed: str) -> None:
    with pytest.raises(VerificationError):
        SignedNote.parse(malformed)


@pytest.mark.parametrize("body", [
    pytest.param("origin\n01\nAAAA\n", id="leading zero"),
    pytest.param("origin\n-1\nAAAA\n", id="negative size"),
    pytest.param("origin\n1\n", id="missing root"),
    pytest.param(f"origin\n1\n{base64.b64encode(b'short').decode()}\n", id="root not 32 bytes"),
    pytest.param(f"\n1\n{base64.b64encode(EMPTY_ROOT).decode()}\n", id="empty origin"),
    pytest.param(f"origin\n1\n{base64.b64encode(EMPTY_ROOT).decode()}", id="no final newline"),
])
def test_malformed_checkpoint_bodies_are_rejected(body: str) -> None:
    with pytest.raises(VerificationError):
        Checkpoint.parse_body(body)

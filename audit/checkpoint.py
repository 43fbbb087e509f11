"""Signed checkpoints: C2SP tlog-checkpoint bodies in C2SP signed-note envelopes, signed with Ed25519.

A checkpoint is the log's signed statement "my tree has N leaves and this root". The text format is
the one transparency-log tooling (Go's ``sumdb/note``, Trillian Tessera, Sigsum witnesses) understands::

    wgs.example/audit            origin: the log's identity
    1234                         tree size, decimal, no leading zeros
    <base64 root hash>           RFC 9162 MTH of the first 1234 entries
                                 blank line ends the signed text
    — wgs.example/audit <base64(key id || Ed25519 signature)>

The signature covers the text including its final newline. The 4-byte key id is
SHA-256(key name || 0x0A || 0x01 || public key)[:4] (0x01 = Ed25519); it lets a verifier skip signatures
by keys it does not know, which is how key rotation and witness cosignatures work. Verification rules
follow the signed-note spec: unknown signatures are ignored, a signature by the trusted key that fails
rejects the whole note, and a note without a valid signature by the trusted key is rejected.

Verifier keys are written in the ``name+keyid+base64(0x01 || key)`` form of Go's ``sumdb/note``, so an
officer can pin one short string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.errors import VerificationError
from audit.merkle import HASH_SIZE

ED25519_SIGNATURE_TYPE = 0x01
_SIGNATURE_PREFIX = "\u2014 "  # em dash, space
_MAX_NOTE_BYTES = 1 << 20
_MAX_SIGNATURES = 100
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_NAME = re.compile(r"^[^\s+]+$")
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise VerificationError("invalid base64 in signed note") from exc


def _check_key_name(name: str) -> None:
    if not _KEY_NAME.match(name):
        raise ValueError("a note key name must be non-empty, without spaces or '+'")


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The signed-note key id: SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]."""
    material = name.encode() + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + _raw_public_key(public_key)
    return hashlib.sha256(material).digest()[:4]


@dataclass(frozen=True)
class Checkpoint:
    """A tree head as the tlog-checkpoint body states it."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise ValueError("checkpoint origin must be a non-empty single line")
        if self.tree_size < 0:
            raise ValueError("tree size cannot be negative")
        if len(self.root_hash) != HASH_SIZE:
            raise ValueError(f"root hash must be {HASH_SIZE} bytes")
        if any(not line or "\n" in line or _CONTROL.search(line) for line in self.extensions):
            raise ValueError("extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text that gets signed; ends with a newline."""
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode("ascii"),
                 *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (unsigned); raises :class:`VerificationError` when malformed."""
        if not text.endswith("\n"):
            raise VerificationError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise VerificationError("checkpoint needs origin, tree size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not _DECIMAL.match(size_text):
            raise VerificationError("checkpoint tree size is not a decimal without leading zeros")
        root_hash = _b64decode(root_text)
        try:
            return cls(origin, int(size_text), root_hash, tuple(extensions))
        except ValueError as exc:
            raise VerificationError(f"malformed checkpoint: {exc}") from exc


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: who (name + key id) and the signature bytes."""

    key_name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_SIGNATURE_PREFIX}{self.key_name} {base64.b64encode(self.key_id + self.signature).decode('ascii')}"


@dataclass(frozen=True)
class SignedNote:
    """A note text with its signature lines, as parsed from (or formatted to) the wire format."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def format(self) -> str:
        return self.text + "\n" + "".join(sig.line() + "\n" for sig in self.signatures)

    @classmethod
    def parse(cls, note: str) -> SignedNote:
        """Split a signed note into text and signature lines; refuses anything the spec does not allow."""
        if len(note.encode("utf-8", errors="surrogatepass")) > _MAX_NOTE_BYTES:
            raise VerificationError("signed note is too large")
        try:
            note.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise VerificationError("signed note is not valid UTF-8") from exc
        if _CONTROL.search(note):
            raise VerificationError("signed note contains control characters")
        if not note.endswith("\n"):
            raise VerificationError("signed note must end with a newline")
        split = note.rfind("\n\n")
        if split < 0:
            raise VerificationError("signed note has no blank line before its signatures")
        text, signature_block = note[: split + 1], note[split + 2 :]
        signatures: list[NoteSignature] = []
        for line in signature_block[:-1].split("\n"):
            if not line.startswith(_SIGNATURE_PREFIX):
                raise VerificationError("malformed signature line in signed note")
            parts = line[len(_SIGNATURE_PREFIX):].split(" ")
            if len(parts) != 2 or not _KEY_NAME.match(parts[0]):
                raise VerificationError("malformed signature line in signed note")
            blob = _b64decode(parts[1])
            if len(blob) < 5:
                raise VerificationError("signature in signed note is too short")
            signatures.append(NoteSignature(parts[0], blob[:4], blob[4:]))
        if not signatures:
            raise VerificationError("signed note has no signatures")
        if len(signatures) > _MAX_SIGNATURES:
            raise VerificationError("signed note has too many signatures")
        return cls(text, tuple(signatures))


class NoteSigner:
    """Signs note texts with one Ed25519 key under one key name (for the log: its origin)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._private_key = private_key
        self.verifier = NoteVerifier(name, private_key.public_key())

    def sign(self, text: str) -> NoteSignature:
        return NoteSignature(self.name, self.verifier.key_id, self._private_key.sign(text.encode("utf-8")))


class NoteVerifier:
    """Checks signed notes against one trusted Ed25519 public key, following the signed-note rules."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_key_name(name)
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)

    @property
    def vkey(self) -> str:
        """``name+<hex key id>+<base64(0x01 || key)>``: the verifier key as one string to pin."""
        material = bytes([ED25519_SIGNATURE_TYPE]) + _raw_public_key(self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(material).decode('ascii')}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string; its embedded key id must match the name and key."""
        parts = vkey.split("+", 2)  # the base64 part may itself contain "+"
        if len(parts) != 3 or len(parts[1]) != 8:
            raise ValueError("verifier key must look like name+keyid+base64key")
        try:
            material = base64.b64decode(parts[2], validate=True)
        except binascii.Error as exc:
            raise ValueError("verifier key has invalid base64") from exc
        if len(material) != 33 or material[0] != ED25519_SIGNATURE_TYPE:
            raise ValueError("verifier key is not an Ed25519 note key")
        verifier = cls(parts[0], Ed25519PublicKey.from_public_bytes(material[1:]))
        if verifier.key_id.hex() != parts[1].lower():
            raise ValueError("verifier key id does not match its name and key")
        return verifier

    def verify(self, note: SignedNote) -> None:
        """Accept the note only if it carries a valid signature by this key.

        1. Signatures whose (name, key id) is not ours are ignored (other keys, witnesses).
        2. A signature that claims to be ours but does not verify rejects the whole note.
        3. No signature of ours at all rejects the note.
        """
        ours = [s for s in note.signatures if s.key_name == self.name and s.key_id == self.key_id]
        if not ours:
            raise VerificationError(f"note is not signed by the trusted key {self.name}")
        for signature in ours:
            try:
                self.public_key.verify(signature.signature, note.text.encode("utf-8"))
            except InvalidSignature as exc:
                raise VerificationError(f"signature by {self.name} on the note is invalid") from exc


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The full signed-note text of a checkpoint."""
    text = checkpoint.body()
    return SignedNote(text, (signer.sign(text),)).format()


def claimed_checkpoint(note: str) -> Checkpoint:
    """What a signed checkpoint claims, its signature unchecked; :class:`VerificationError` when ``note`` is
    not a signed checkpoint at all.

    Only to file a checkpoint a verifier kept under the size it states, and to tell a text that is no
    checkpoint (a saved error answer, say) from a checkpoint whose signature fails. Never trust what it
    returns: :func:`open_checkpoint` does that.
    """
    return Checkpoint.parse_body(SignedNote.parse(note).text)


def names_key(note: str, verifier: NoteVerifier) -> bool:
    """Whether ``note`` is a checkpoint that claims the origin and a signature of ``verifier``'s key (its name and
    key id), the signature unchecked; False for a text that is no signed checkpoint.

    Tells a log signed under another identity (another key, another origin) from one whose checkpoint was
    garbled: only the first means the key at hand is not the log's. Never a verdict on the note itself:
    :func:`open_checkpoint` is.
    """
    try:
        signed = SignedNote.parse(note)
        origin = Checkpoint.parse_body(signed.text).origin
    except VerificationError:
        return False
    return origin == verifier.name and any(
        signature.key_name == verifier.name and signature.key_id == verifier.key_id for signature in signed.signatures)


def open_checkpoint(note: str, verifier: NoteVerifier, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint and return its contents; never look at the contents before that.

    ``origin`` defaults to the verifier's key name (tlog-checkpoint: the key name SHOULD be the origin).
    """
    signed = SignedNote.parse(note)
    verifier.verify(signed)
    checkpoint = Checkpoint.parse_body(signed.text)
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise VerificationError(f"checkpoint is for origin {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint

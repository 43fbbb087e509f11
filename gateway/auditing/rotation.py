"""``wgs-gateway audit key rotate``: hand the audit log over to a new checkpoint key (:mod:`audit.keys`).

The order makes every crash recoverable and keeps the retired private key out of the signing path:

1. the new key is written beside the current one as ``audit-checkpoint.next.pem`` (0600);
2. one database transaction appends the ``checkpoint-key.rotated`` entry, signs the handover checkpoint with
   both keys and stores the key row (:meth:`audit.AuditLog.rotate_key`): from its commit on, the new key is
   the log's and the old one's era has ended;
3. the new key replaces the old file (the retired private key is gone from the key store: only its public key
   stays, in the handover and the key row), and the ``next`` file is removed.

A crash between 2 and 3 leaves the old key in place and the new one in ``next``: the gateway then refuses to
start (its key is retired), and running ``rotate`` again finishes step 3 without a second rotation. A crash
before 2 leaves a ``next`` file no rotation names: the next ``rotate`` discards it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from audit import AuditLog, NoteSigner, NoteVerifier, StoredCheckpoint
from audit.log import prepare
from audit.store import key_rows, read_connection
from gateway.auditing.actions import action_event
from gateway.auditing.setup import (
    CHECKPOINT_KEY_FILE,
    CHECKPOINT_KEY_LOCK,
    CheckpointKeyError,
    load_checkpoint_key,
    log_origin,
    writing_signer,
)
from gateway.keyfiles import exclusively, replace_whole
from gateway.settings import Settings

NEXT_KEY_FILE = "audit-checkpoint.next.pem"
ACTION = "checkpoint-key.rotated"


class RotationUnfinished(RuntimeError):
    """The rotation committed but its key file could not be put in place (the message says how to finish)."""


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the keys before and after, and the handover (``None``: an interrupted rotation's
    files were put in place, nothing was signed)."""

    old: NoteVerifier
    new: NoteVerifier
    handover: StoredCheckpoint | None


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def rotate_checkpoint_key(settings: Settings, engine: Engine, *, compromised_after: int | None = None,
                          busy: Callable[[], None] | None = None) -> Rotation:
    """Rotate the log's checkpoint key (see the module); :class:`CheckpointKeyError` when the key store does not
    hold the log's current key, :class:`audit.AuditWriteError` when nothing could be signed. Under the key
    directory's lock (:data:`~gateway.auditing.setup.CHECKPOINT_KEY_LOCK`), which ``db backup`` holds too:
    ``busy`` is called once when a backup (or another rotation) holds it, before waiting for it."""
    directory = settings.key_dir
    origin = log_origin(settings.issuer)
    with exclusively(directory / CHECKPOINT_KEY_LOCK, busy=busy):
        finished = _finish_interrupted(directory, engine, origin)
        if finished is not None:
            return finished
        signer = writing_signer(engine, settings)  # the log's current key, or CheckpointKeyError
        new_key = Ed25519PrivateKey.generate()
        new_signer = NoteSigner(origin, new_key)
        next_path = directory / NEXT_KEY_FILE
        replace_whole(next_path, _pem(new_key))
        event = action_event(None, ACTION, organisation=None, account_id=None, channel="cli", details={
            "key_id": new_signer.verifier.key_id.hex(), "verifier_key": new_signer.verifier.vkey,
            "previous_key_id": signer.verifier.key_id.hex(), "compromised_after": compromised_after})
        try:
            handover = AuditLog(engine, signer).rotate_key(new_signer, prepare(event),
                                                           compromised_after=compromised_after)
        except BaseException:
            next_path.unlink(missing_ok=True)
            raise
        try:
            _install(directory)
        except OSError as exc:
            raise RotationUnfinished(f"the rotation to key {new_signer.verifier.key_id.hex()} is committed, but its "
                                     f"key could not be put in place ({exc.strerror or exc}): run `wgs-gateway "
                                     "audit key rotate` again to finish it (the gateway does not start "
                                     "meanwhile)") from exc
        return Rotation(signer.verifier, new_signer.verifier, handover)


def _finish_interrupted(directory: Path, engine: Engine, origin: str) -> Rotation | None:
    """Put an interrupted rotation's key in place when the database already names it; discard a ``next`` file
    that no rotation names (its transaction never committed)."""
    next_path = directory / NEXT_KEY_FILE
    if not next_path.exists():
        return None
    pending = NoteVerifier(origin, load_key_file(next_path).public_key())
    with read_connection(engine) as connection:
        rows = key_rows(connection)
    if rows and rows[-1].verifier_key == pending.vkey:
        old = NoteVerifier.from_vkey(rows[-1].previous_key)
        _install(directory)
        return Rotation(old, pending, None)
    next_path.unlink()
    return None


def _install(directory: Path) -> None:
    """The new key over the old one (the retired private key leaves the key store), then no ``next`` file."""
    next_path = directory / NEXT_KEY_FILE
    replace_whole(directory / CHECKPOINT_KEY_FILE, next_path.read_bytes())
    next_path.unlink()


def load_key_file(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; :class:`CheckpointKeyError` naming the file otherwise."""
    return load_checkpoint_key(path.parent, path.name)


__all__ = ["ACTION", "NEXT_KEY_FILE", "CheckpointKeyError", "Rotation", "RotationUnfinished", "rotate_checkpoint_key"]

"""Wiring of the audit log into the gateway (checkpoint key, ``AuditLog``, group-commit writer).

The checkpoint-signing key is an Ed25519 key in the key store directory (0600), separate from the token
keys: privacy officers pin its public key to verify the log without trusting the operators.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, inspect

from audit import (
    AsyncAuditWriter,
    AuditEvent,
    AuditLog,
    CheckpointPolicy,
    EventType,
    MalformedRow,
    NoteSigner,
    NoteVerifier,
    OnDemandCheckpoints,
    StoreUnavailable,
    VerificationError,
    names_key,
)
from audit.store import checkpoint_notes, has_checkpoint, key_rows, read_connection
from audit.tables import audit_checkpoints
from gateway.container import Container, NotReady, ReadinessCheck
from gateway.db.engine import engine_for, missing_database_file
from gateway.keyfiles import read_or_create
from gateway.settings import Settings


@dataclass
class AuditServices:
    log: AuditLog
    writer: AsyncAuditWriter
    signer: NoteSigner
    on_demand: OnDemandCheckpoints
    """Checkpoints signed when a reviewer needs one over entries no checkpoint covers yet (rate-limited)."""


CHECKPOINT_KEY_FILE = "audit-checkpoint.pem"
CHECKPOINT_KEY_LOCK = ".audit-checkpoint.lock"
"""The lock (in the key directory) that ``audit key rotate`` and ``db backup`` each hold throughout: a backup
taken mid-rotation would pair a database and a key directory from either side of the handover."""
KEY_LOCK_BUSY = ("waiting: a `wgs-gateway audit key rotate` or `db backup` is running on this key directory (the two "
                 "exclude each other); this one goes on once it has finished")
"""The one line either command says when the other holds :data:`CHECKPOINT_KEY_LOCK`."""


class CheckpointKeyError(RuntimeError):
    """The audit checkpoint key is missing or unusable (the message names the file, never key material)."""


def load_checkpoint_key(directory: Path, file_name: str = CHECKPOINT_KEY_FILE) -> Ed25519PrivateKey:
    """The existing checkpoint key; :class:`CheckpointKeyError` if there is none or it is not Ed25519.

    Only for readers (``audit key|export|verify``, the console's "verify now"): a key they created would
    be a new log identity that no officer pinned, and would hide a wrong data directory behind a fresh key.
    """
    path = directory / file_name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointKeyError(f"no audit checkpoint key at {path}: is the data directory right? "
                                 "(`wgs-gateway keys init` or starting the gateway creates it)") from None
    except OSError as exc:
        raise CheckpointKeyError(f"audit checkpoint key at {path} cannot be read ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CheckpointKeyError(f"audit checkpoint key at {path} is not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointKeyError(f"audit checkpoint key at {path} is not an Ed25519 key")
    return key


def load_or_create_checkpoint_key(directory: Path) -> Ed25519PrivateKey:
    """The checkpoint key, created (0600) if there is none: only for installing the log (``keys init``, the
    gateway starting), which is where a log and its identity begin."""
    read_or_create(directory / CHECKPOINT_KEY_FILE, lambda: Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return load_checkpoint_key(directory)


def log_origin(issuer: str) -> str:
    """The checkpoint origin line: the gateway's host plus a fixed suffix (C2SP: a schema-less URL)."""
    return f"{urlparse(issuer).netloc or 'wgs-gateway'}/audit-log"


def audit_signer(settings: Settings) -> NoteSigner:
    """The log's signer from the existing key (:func:`load_checkpoint_key`), for ``audit export``, which
    signs a checkpoint at the size it exports."""
    return NoteSigner(log_origin(settings.issuer), load_checkpoint_key(settings.key_dir))


def audit_verifier(settings: Settings) -> NoteVerifier:
    """The log's own verifier (checkpoint key from the key store, origin from the issuer): what
    ``audit verify``, the console's "verify now" and the reliability tests check the log against.
    Never creates the key: :class:`CheckpointKeyError` when it is missing."""
    return audit_signer(settings).verifier


def log_key(engine: Engine, settings: Settings) -> Ed25519PrivateKey:
    """The checkpoint key of the log in ``engine``, for the gateway starting: created only for a log that has no
    checkpoint yet (where a log and its identity begin); over a signed log, the key and origin that signed it.

    Why: a key created over a signed log (a key directory not mounted after a redeployment, a data directory
    that is not the database's) or another ``WGS_ISSUER`` (the origin line) made the gateway sign the same log
    under a second identity, silently: every officer's pinned key then fails on the new checkpoints, and an
    export, which names the new key, fails on every earlier one. :class:`CheckpointKeyError` instead, naming the
    file and what to restore, and no key file made. Whether the log has a checkpoint is read *before* the key
    file is looked at: a process starting beside one that is creating the log then sees either no checkpoint,
    or one and the key that process made first."""
    with read_connection(engine) as connection:
        signed = has_checkpoint(connection)
    path = settings.key_dir / CHECKPOINT_KEY_FILE
    if signed and not path.exists():
        raise CheckpointKeyError(f"no audit checkpoint key at {path}, but the audit log has checkpoints signed "
                                 "with one: restore that key (a new one would give the log a second identity that "
                                 "no officer pinned); is the data directory right?")
    key = load_or_create_checkpoint_key(settings.key_dir)
    if signed:
        _check_identity(engine, NoteVerifier(log_origin(settings.issuer), key.public_key()), path)
    return key


def install_checkpoint_key(settings: Settings) -> Ed25519PrivateKey:
    """The checkpoint key for ``keys init``: created where no log has begun (no database yet, or one not migrated
    yet), else exactly as the gateway's start takes it (:func:`log_key`).

    Why: ``keys init`` created a key whenever the file was missing, also over a log that had signed checkpoints
    with the lost one; everything then refused the new key, but only with "signed with another key", hiding that
    the log's own key is what to restore, and the new file stood where the restored one belongs. A database that
    cannot be read raises (SQLAlchemy's error): whether a log has begun is then unknown, and a key is not made on
    a guess."""
    if missing_database_file(settings.effective_database_url) is not None:
        return load_or_create_checkpoint_key(settings.key_dir)
    engine = engine_for(settings)
    try:
        if not inspect(engine).has_table(audit_checkpoints.name):
            return load_or_create_checkpoint_key(settings.key_dir)
        return log_key(engine, settings)
    finally:
        engine.dispose()


def writing_signer(engine: Engine, settings: Settings) -> NoteSigner:
    """The log's signer for a command that writes to the log (and may sign a checkpoint): the existing key
    (:func:`load_checkpoint_key`), and only if it is the log's (:func:`log_key`'s check). A command run with a
    key made by ``keys init`` after the log's own was lost would otherwise sign under a second identity, which
    the gateway's start then took for the log's."""
    signer = audit_signer(settings)
    _check_identity(engine, signer.verifier, settings.key_dir / CHECKPOINT_KEY_FILE)
    return signer


def _check_identity(engine: Engine, verifier: NoteVerifier, path: Path) -> None:
    """:class:`CheckpointKeyError` unless the log has no checkpoint yet (no identity to keep) or some stored
    checkpoint names ``verifier``'s key and origin (key name and id, signature unchecked: :func:`audit.names_key`),
    the newest first, so the usual check reads one row. Not only the newest: a row written behind the gateway's
    back (a forged or garbled checkpoint) would then stop every start with a wrong diagnosis; it is what the
    checks of served checkpoints (:mod:`gateway.auditing.checkpoints`) and the verifier report."""
    with read_connection(engine) as connection:
        rotations = key_rows(connection)
        notes = checkpoint_notes(connection)
        newest = next(notes, None)
        ours = newest is None or names_key(newest, verifier) or any(names_key(note, verifier) for note in notes)
    if rotations and rotations[-1].verifier_key != verifier.vkey:
        # A rotation committed: only its key may sign. The old key file restored, or a rotation interrupted
        # before its key was put in place (``audit key rotate`` again finishes it), would sign past its era.
        current = _key_id_of(rotations[-1].verifier_key)
        raise CheckpointKeyError(f"the audit log's checkpoint key was rotated to key {current} at size "
                                 f"{rotations[-1].from_size}, but {path} holds another key (a retired one, or a "
                                 "rotation was interrupted: run `wgs-gateway audit key rotate` again to finish it)")
    if not ours:
        raise CheckpointKeyError(f"the audit log's checkpoints are signed with another key than {path}, or for "
                                 f"another origin than {verifier.name} (from WGS_ISSUER): restore the log's key "
                                 "and issuer (signing on would give the log a second identity that no officer "
                                 "pinned)")


def _key_id_of(vkey: str) -> str:
    """A stored verifier key's id for a message ("?" for a row no rotation wrote: the verifier reports it)."""
    try:
        return NoteVerifier.from_vkey(vkey).key_id.hex()
    except ValueError:
        return "?"


def install_audit(container: Container) -> AuditServices:
    key = log_key(container.engine, container.settings)
    signer = NoteSigner(log_origin(container.settings.issuer), key)
    log = AuditLog(container.engine, signer, policy=CheckpointPolicy(every_entries=100, every_seconds=60.0),
                   clock=container.clock.now, signer_source=lambda: _rotated_signer(container.settings))
    log.adopt_latest_checkpoint()  # anchored from the start: checkpoint rows deleted later leave the check intact
    services = AuditServices(log=log, writer=AsyncAuditWriter(log), signer=signer, on_demand=OnDemandCheckpoints(log))
    container.services["audit"] = services
    container.readiness["audit_log"] = signing_check(log)
    record_register_change(container, services)
    return services


def _rotated_signer(settings: Settings) -> NoteSigner | None:
    """The key in the key store, for a running gateway whose key ``audit key rotate`` retired meanwhile (the log
    checks that it is the new current key before signing with it); ``None`` when it cannot be read."""
    try:
        return audit_signer(settings)
    except CheckpointKeyError:
        return None


def signing_check(log: AuditLog) -> ReadinessCheck:
    """Not ready while the log refuses to sign because its tree forks from its latest signed checkpoint or from
    the one this process signed or verified (:meth:`audit.AuditLog.signing_refused`): every append due a
    checkpoint is then refused, so the process would deny nearly everything. Reads nothing: the state of this
    process's last attempt to sign, which the writer's idle loop renews every second while a checkpoint is due.
    The reason names no size or hash (the probe is unauthenticated); the error log has them."""
    async def check() -> None:
        if log.signing_refused is not None:
            raise NotReady("the audit tree forks from a checkpoint the log signed; nothing is signed: "
                           "run `wgs-gateway audit verify`")
    return check


def record_register_change(container: Container, services: AuditServices) -> None:
    """A register version recorded for the first time is itself an audit entry (before any request)."""
    from gateway.register.setup import register_service

    register = register_service(container)
    if not register.newly_recorded:
        return
    services.log.append([AuditEvent(
        event_type=EventType.REGISTER_CHANGED, trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8),
        register_version=register.version, extra={"sha256": register.digest})])


def current_key(services: AuditServices) -> NoteVerifier:
    """The log's current checkpoint key as its key history states it (blocking: a small read), which a rotation
    by another process changes; the key this process signs with when the history cannot be read or verified
    (the served checkpoints' own check reports that)."""
    try:
        return services.log.key_history().current
    except (VerificationError, MalformedRow, StoreUnavailable):
        return services.log.verifier


def audit_services(container: Container) -> AuditServices:
    return container.service("audit", AuditServices)

"""What restoring a backup here would replace, said before the restore (``wgs-gateway db verify-backup``).

A restore puts the backup's files back by hand over the live ones (docs/deployment.md, "Restoring"), and the
backup's own checks pass whatever it is put over: a backup of another deployment (staging's, under the same
default ``WGS_ISSUER``), or an old one over a log that has moved on since. ``verify-backup`` runs with the
environment of the deployment to be restored, so it compares the backup with what is there:

1. The audit checkpoint key in ``WGS_DATA_DIR/keys``, when there is one: another key than the backup's is
   another log identity (another deployment's backup, or a key replaced since). When the live log's key history
   names the backup's key as one it rotated away from, that is said exactly: restored, the retired key is the
   current one again, which the restored files cannot tell afterwards (:mod:`gateway.backup.retired`), so this
   is the last moment it is known for sure.
2. The live audit log, when there is a database: one that holds entries past the backup's size and its newest
   checkpoint is the same log, moved on, and a restore drops those entries; one that does not hold that
   checkpoint is another log.

Warnings, not refusals: after the disaster a backup is for, a fresh installation has another key and a log
without the backup's checkpoint, and the restore is just what is wanted. Only read: no database file or key is
made where there is none (a missing SQLite file is not opened).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import SQLAlchemyError

from audit import MalformedRow, NoteVerifier, StoreUnavailable
from audit.store import checkpoint_at, key_rows, read_connection, tree_size
from gateway.auditing.setup import CheckpointKeyError, load_checkpoint_key, log_origin
from gateway.backup.manifest import KEYS_DIR, Manifest
from gateway.backup.state import DatabaseState
from gateway.db.engine import engine_for, missing_database_file
from gateway.settings import Settings


def restore_warnings(settings: Settings, directory: Path, manifest: Manifest) -> list[str]:
    """One line per way restoring the backup in ``directory`` over ``settings``' deployment would replace
    another log, or lose entries of this one (see the module); empty when there is nothing to warn of."""
    return _key_warnings(settings, directory) + _log_warnings(settings, manifest.state,
                                                              dumped_later=manifest.database == "postgresql")


def _public(directory: Path) -> bytes | None:
    try:
        key = load_checkpoint_key(directory)
    except CheckpointKeyError:
        return None
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_warnings(settings: Settings, directory: Path) -> list[str]:
    live, backed_up = _public(settings.key_dir), _public(directory / KEYS_DIR)
    if live is None or backed_up is None or live == backed_up:
        return []
    retired = _retired_here(settings, backed_up)
    if retired is not None:
        return [retired]
    return [f"the audit checkpoint key in {settings.key_dir} is not the backup's: the backup is of another "
            "deployment, or this one's key was replaced since; restored, the log is signed with the backup's key "
            "again, and officers who pinned this one's see another log"]


def _retired_here(settings: Settings, backed_up: bytes) -> str | None:
    """The warning for a backup whose checkpoint key the live log rotated away from, or ``None`` (not so, or the
    live log cannot be read: the log's own warning says that)."""
    if missing_database_file(settings.effective_database_url) is not None:
        return None
    vkey = NoteVerifier(log_origin(settings.issuer), Ed25519PublicKey.from_public_bytes(backed_up)).vkey
    try:
        engine = engine_for(settings)
        try:
            with read_connection(engine) as connection:
                rows = key_rows(connection)
        finally:
            engine.dispose()
    except (SQLAlchemyError, StoreUnavailable, MalformedRow):
        return None
    row = next((row for row in rows if row.previous_key == vkey), None)
    if row is None:
        return None
    leaked = "" if row.compromised_after is None else f" --compromised-after {row.compromised_after}"
    return (f"the backup's audit checkpoint key was retired here by a rotation at size {row.from_size}: restored, "
            "it is the current key again; pass `wgs-gateway db record-restore` a checkpoint of this log saved now "
            "(`wgs-gateway audit checkpoint --out FILE`, then `--latest-checkpoint FILE`), which rotates it again, "
            f"or run `wgs-gateway audit key rotate{leaked}` "
            "right after it (a smaller --compromised-after if the restored log is shorter)")


def _log_warnings(settings: Settings, recorded: DatabaseState, *, dumped_later: bool) -> list[str]:
    """``dumped_later``: a PostgreSQL backup, whose dump was taken after the manifest and may hold some of the
    entries written since (gateway.backup.restore)."""
    if missing_database_file(settings.effective_database_url) is not None:
        return []  # nothing to restore over
    at = recorded.checkpoint_size
    try:
        engine = engine_for(settings)
        try:
            with read_connection(engine) as connection:
                size = tree_size(connection)
                checkpoint = checkpoint_at(connection, at) if at is not None and size >= at else None
        finally:
            engine.dispose()
    except (SQLAlchemyError, StoreUnavailable) as exc:
        return [f"this deployment's database could not be read to compare it with the backup "
                f"({type(exc).__name__}): what a restore would replace is unknown"]
    if at is not None and size >= at and (checkpoint is None or checkpoint.root_hash.hex() != recorded.checkpoint_root):
        return [f"this deployment's audit log ({size} entries) does not hold the backup's checkpoint at size {at}: "
                "the backup is of another log (another deployment's, or this one's before an earlier restore)"]
    if size > recorded.audit_size:
        return [f"this deployment's audit log has {size} entries, the backup {recorded.audit_size}: restoring it "
                f"drops the {size - recorded.audit_size} audit entries written since"
                f"{' (fewer if the dump, taken after it, holds some)' if dumped_later else ''}, and what they "
                "recorded (docs/deployment.md, \"What a restore does to the audit log\")"]
    return []

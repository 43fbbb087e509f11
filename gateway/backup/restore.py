"""``wgs-gateway db record-restore DEST``: the restored audit log's first entry says that it was restored.

After a restore the log is older than checkpoints officers may hold: the entries written after the backup are
lost, and a kept checkpoint from that stretch reports the log as rolled back, then forked
(docs/deployment.md, "Backup and restore"). The entry written here (``console.action``, action ``restore``,
channel ``cli``: the backup's id and the size the log was restored at) is the first one after that point, with
a checkpoint over it, so that whoever finds the fork finds, at the very index where it begins, that a restore
was done and from which backup — not only in an incident note kept elsewhere.

It is written only over the backup it names, as restored: the live log must hold its newest checkpoint (size and
root hash) and, for an SQLite backup (the copy *is* the database the manifest describes), have exactly its number
of entries, else :class:`~gateway.backup.take.BackupRefused` — a log that has moved on since is either not
restored or already written to by a started gateway, and an entry there would not mark where the log forks.
A PostgreSQL backup's database is dumped with PostgreSQL's tools *after* ``db backup`` wrote the manifest, while
the gateways keep running, so the restored dump may hold entries written in between: there the log may be
longer than the manifest's size (this command cannot tell those entries from a started gateway's: it is run
before the gateways start), and the entry names the size the log was restored at.

A backup from before a rotation of the checkpoint key brings the retired key back as the current one, and
nothing in the restored files says so (:mod:`gateway.backup.retired`). Given a checkpoint kept from before the
restore (``kept``), this command judges it first, before writing anything, and when it shows the restored key
retired, it does not finish without a rotation: right after the restore's entry (which must come first, at the
index where the log forks), it rotates the key itself (:func:`gateway.auditing.rotation.rotate_checkpoint_key`),
carrying over the compromise point the lost handover stated. Automatic rather than a refusal: the rotation is
what the docs prescribe in this case, it costs officers one new pin, and a gateway started on a retired key
meanwhile would sign with a key others may hold. Without ``kept`` nothing can tell, and the command says what
to check (docs/deployment.md, "Restoring").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from audit import AuditLog, AuditWriteError, StoreUnavailable
from audit.store import checkpoint_at, read_connection, tree_size
from gateway.auditing.actions import action_event
from gateway.auditing.rotation import Rotation, RotationUnfinished, rotate_checkpoint_key
from gateway.auditing.setup import CheckpointKeyError, writing_signer
from gateway.backup.manifest import Manifest, read_manifest
from gateway.backup.retired import NotAKeptCheckpoint, Retired, retired_by
from gateway.backup.take import BackupRefused
from gateway.db.engine import existing_engine_for
from gateway.settings import Settings

ACTION = "restore"


@dataclass(frozen=True)
class Restored:
    """What ``record-restore`` did: the backup, the log's size before the restore's entry, and, when the kept
    checkpoint showed the restored key retired, what showed it and the rotation that followed."""

    manifest: Manifest
    size: int
    retired: Retired | None = None
    rotation: Rotation | None = None


def record_restore(settings: Settings, directory: Path, *, kept: str | None = None) -> Restored:
    """Write the restore's entry for the backup in ``directory``, and rotate the checkpoint key when ``kept`` (a
    checkpoint kept from before the restore) shows the restored one retired (see the module)."""
    try:
        manifest = read_manifest(directory)
    except ValueError as exc:
        raise BackupRefused(f"{directory}: {exc}") from None
    recorded = manifest.state
    engine = existing_engine_for(settings)
    try:
        with read_connection(engine) as connection:
            size = tree_size(connection)
            checkpoint = None if recorded.checkpoint_size is None else checkpoint_at(connection,
                                                                                       recorded.checkpoint_size)
        dumped_later = manifest.database == "postgresql"  # the dump may hold entries written after the manifest
        if (size < recorded.audit_size or (size != recorded.audit_size and not dumped_later)
                or (recorded.checkpoint_size is not None and (
                    checkpoint is None or checkpoint.root_hash.hex() != recorded.checkpoint_root))):
            raise BackupRefused(f"the audit log here is not backup {manifest.backup_id} as restored ({size} entries, "
                                f"the backup has {recorded.audit_size}): record the restore right after putting the "
                                "backup back, before the gateways start")
        try:
            log = AuditLog(engine, writing_signer(engine, settings))
            retired = None if kept is None else retired_by(kept, log.verifier)
            log.append([action_event(None, ACTION, organisation=None, account_id=None, channel="cli",
                                     details={"backup_id": manifest.backup_id,
                                              "restored_size": size})])
            log.issue_checkpoint()
        except NotAKeptCheckpoint as exc:
            raise BackupRefused(f"the restore was not recorded: {exc}") from None
        except CheckpointKeyError as exc:
            raise BackupRefused(f"the restore cannot be recorded: {exc}") from None
        except (AuditWriteError, StoreUnavailable):
            raise BackupRefused("the restore cannot be recorded: the audit log could not be written") from None
        rotation = None if retired is None else _rotate_retired(settings, engine, log, retired)
    finally:
        engine.dispose()
    return Restored(manifest, size, retired, rotation)


def _rotate_retired(settings: Settings, engine: Engine, log: AuditLog, retired: Retired) -> Rotation:
    """Rotate the restored (retired) key, with the lost handover's compromise point (at most the log's size: the
    restored log may end below it); :class:`BackupRefused` naming the exact command when that fails."""
    compromised = None if retired.compromised_after is None else min(retired.compromised_after, log.size())
    command = "wgs-gateway audit key rotate" + ("" if compromised is None else f" --compromised-after {compromised}")
    try:
        return rotate_checkpoint_key(settings, engine, compromised_after=compromised)
    except (CheckpointKeyError, AuditWriteError, StoreUnavailable, RotationUnfinished, OSError, ValueError) as exc:
        raise BackupRefused(f"the restore is recorded, but the restored checkpoint key, retired after this backup, "
                            f"could not be rotated ({exc}): run `{command}` before starting the gateways") from None

"""``wgs-gateway db backup DEST``: a backup of one deployment, taken while its gateways keep running.

In this order, each step only after the one before succeeded:

1. Refuse a destination that exists and is not an empty directory of this user's (a backup never mixes with
   another's files or overwrites one, nor lies in a directory someone else controls), and a database that is
   neither SQLite nor PostgreSQL.
2. Write the audit entry (``console.action``, action ``backup``, channel ``cli``, with the backup's id; no
   path, which may name a person) and sign a checkpoint over it. First, so that no copy of the database —
   which holds what the partners exchanged — exists without its entry; and the copy then holds its own entry,
   covered by a checkpoint. Without the log's checkpoint key the backup is refused: it could not be audited.
3. Copy the database (SQLite: :func:`gateway.backup.copying.copy_sqlite`; PostgreSQL: not here, its own tools
   do it consistently and this would only be a worse ``pg_dump``).
4. Copy the key directory, after the database: a key made or rotated meanwhile is then in the copy, so the
   copied database never names a key (a pseudonym key version, say) that the copied keys lack; a key the
   copied database does not use yet does no harm.
5. Write the manifest (:mod:`gateway.backup.manifest`), last: a directory without one did not finish.

A failure after step 1 removes what this backup wrote, so no partial backup is left that looks like one. A
failure after step 2 also writes a second entry (action ``backup-failed``, the backup's id and the kind of
failure: an exception's class and, for an OS error, its errno name; never its message, which names paths), so
the log does not name, as taken, a backup that does not exist. Best effort: when that entry cannot be written
either (the disk that filled up holds the database too), the command still says that the backup failed.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from audit import AuditLog, AuditWriteError, StoreUnavailable
from gateway.auditing.actions import action_event
from gateway.auditing.setup import CHECKPOINT_KEY_LOCK, CheckpointKeyError, writing_signer
from gateway.backup.copying import DIR_MODE, copy_keys, copy_sqlite
from gateway.backup.manifest import DATABASE_FILE, KEYS_DIR, Manifest, file_record, write_manifest
from gateway.backup.state import DatabaseState, database_state, read_only_sqlite
from gateway.db.engine import existing_engine_for, sqlite_file
from gateway.ids import new_id
from gateway.keyfiles import exclusively
from gateway.settings import Settings

ACTION = "backup"
FAILED_ACTION = "backup-failed"


class BackupRefused(RuntimeError):
    """The backup was not made (or was removed again); the message is one line for the operator."""


def database_kind(url: str) -> str:
    """``sqlite`` (a file) or ``postgresql``; :class:`BackupRefused` for anything else."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite" and sqlite_file(url) is not None:
        return "sqlite"
    if backend == "postgresql":
        return "postgresql"
    raise BackupRefused(f"cannot back up a {backend} database{' in memory' if backend == 'sqlite' else ''}: "
                        "only an SQLite file (copied here) or PostgreSQL (with its own tools) can be backed up")


def _check_destination(destination: Path) -> None:
    """An empty directory must be this user's: one made by someone else (in a shared ``/tmp``) stays theirs after
    the chmod to 0700, and its owner could list, remove and replace the backup's files, the manifest too."""
    if destination.is_dir():
        if any(destination.iterdir()):
            raise BackupRefused(f"{destination} exists and is not empty: back up into a new directory")
        if destination.stat().st_uid != os.geteuid():
            raise BackupRefused(f"{destination} belongs to another user: back up into a new directory of your own")
    elif destination.exists() or destination.is_symlink():
        raise BackupRefused(f"{destination} exists and is not a directory: back up into a new directory")


def take_backup(settings: Settings, destination: Path, *, busy: Callable[[], None] | None = None) -> Manifest:
    """Back up the deployment of ``settings`` into ``destination`` (see the module); the manifest written.

    From its entry to its copy of the keys it holds the key directory's lock, as ``audit key rotate`` does
    throughout (:data:`~gateway.auditing.setup.CHECKPOINT_KEY_LOCK`): a database copied before a rotation's
    handover with the key directory copied after it holds a key its log never handed over to, a backup that
    ``db verify-backup`` refuses. ``busy`` is called once when a rotation (or another backup) holds the lock,
    before waiting for it.

    Raises :class:`BackupRefused`, and :class:`~gateway.errors.DatabaseNotMigrated` when there is no database
    file yet."""
    kind = database_kind(settings.effective_database_url)
    _check_destination(destination)
    engine = existing_engine_for(settings)
    try:
        with exclusively(settings.key_dir / CHECKPOINT_KEY_LOCK, busy=busy):
            return _take(settings, destination, kind, engine)
    finally:
        engine.dispose()


def _take(settings: Settings, destination: Path, kind: str, engine: Engine) -> Manifest:
    try:
        log = AuditLog(engine, writing_signer(engine, settings))
    except CheckpointKeyError as exc:
        raise BackupRefused(f"the backup cannot be audited, so it was not made: {exc}") from None
    existed = _make_destination(destination)
    try:
        return _write(settings, destination, kind, log)
    except BaseException:
        _remove(destination, keep_directory=existed)
        raise


def _write(settings: Settings, destination: Path, kind: str, log: AuditLog) -> Manifest:
    backup_id = new_id()
    created_at = datetime.now(UTC)
    try:
        log.append([action_event(None, ACTION, organisation=None, account_id=None, channel="cli",
                                 details={"backup_id": backup_id, "database": kind})])
        log.issue_checkpoint()
    except (AuditWriteError, StoreUnavailable):
        raise BackupRefused("the backup cannot be audited (the audit log could not be written), so it was not "
                            "made") from None
    try:
        return _copy(settings, destination, kind, log, backup_id, created_at)
    except OSError as exc:
        _record_failure(log, backup_id, exc)
        raise BackupRefused(f"backup failed: {exc.filename or destination} could not be copied "
                            f"({exc.strerror or type(exc).__name__}); nothing was kept") from None
    except sqlite3.Error as exc:
        _record_failure(log, backup_id, exc)
        raise BackupRefused(f"backup failed: the database could not be copied ({type(exc).__name__}: {exc}); "
                            "nothing was kept") from None
    except BaseException as exc:  # an interrupt, a bug: the files are removed all the same
        _record_failure(log, backup_id, exc)
        raise


def _copy(settings: Settings, destination: Path, kind: str, log: AuditLog, backup_id: str,
          created_at: datetime) -> Manifest:
    """Steps 3 to 5, after the backup's entry."""
    if kind == "sqlite":
        state = _copy_database(settings, destination / DATABASE_FILE)
    else:
        with log.engine.connect() as connection:
            state = database_state(connection)
    copied = copy_keys(settings.key_dir, destination / KEYS_DIR)
    names = ([DATABASE_FILE] if kind == "sqlite" else []) + [f"{KEYS_DIR}/{path.as_posix()}" for path in copied]
    manifest = Manifest(backup_id=backup_id, created_at=created_at, database=kind, state=state,
                        files={name: file_record(destination / name) for name in names})
    write_manifest(destination, manifest)
    return manifest


def _record_failure(log: AuditLog, backup_id: str, exc: BaseException) -> None:
    """The entry saying that the backup named by the log's ``backup`` entry was not kept (see the module)."""
    reason: dict[str, str] = {"reason": type(exc).__name__}
    if isinstance(exc, OSError) and exc.errno is not None:
        reason["errno"] = errno.errorcode.get(exc.errno, str(exc.errno))
    try:
        log.append([action_event(None, FAILED_ACTION, organisation=None, account_id=None, ok=False, channel="cli",
                                 details={"backup_id": backup_id, **reason})])
        log.issue_checkpoint()
    except (AuditWriteError, StoreUnavailable):
        pass  # the backup's failure is what the operator is told; a second failure would only hide it


def _copy_database(settings: Settings, target: Path) -> DatabaseState:
    """Copy the SQLite database and read the copy's state (the copy's, not the live one's, which moves on)."""
    source = sqlite_file(settings.effective_database_url)
    assert source is not None  # database_kind said it is a file
    copy_sqlite(source, target)
    engine = read_only_sqlite(target)
    try:
        with engine.connect() as connection:
            return database_state(connection)
    finally:
        engine.dispose()


def _make_destination(destination: Path) -> bool:
    """Create ``destination`` (0700) or narrow the empty one there to 0700; whether it was there. Created with
    ``mkdir`` that fails when it exists: a directory another backup made since the check is refused, never
    shared (a failure of this backup would then remove the other's files). One that cannot be made is
    :class:`BackupRefused` (before the backup's entry: nothing was taken)."""
    existed = destination.is_dir()
    try:
        if not existed:
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                destination.mkdir(mode=DIR_MODE)
            except FileExistsError:
                raise BackupRefused(f"{destination} was made by someone else meanwhile: back up into a new "
                                    "directory") from None
        destination.chmod(DIR_MODE)
    except OSError as exc:  # a parent that is a file, one the user may not write in, a read-only file system
        raise BackupRefused(f"cannot make {destination} ({exc.strerror or type(exc).__name__}): back up into "
                            "a directory you can create") from None
    return existed


def _remove(destination: Path, *, keep_directory: bool) -> None:
    """Remove what a failed backup wrote: the directory, or its content when it was there (empty) before."""
    if not keep_directory:
        shutil.rmtree(destination, ignore_errors=True)
        return
    for child in destination.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)

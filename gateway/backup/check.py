"""``wgs-gateway db verify-backup DEST``: whether a backup can be trusted with a restore, before the restore.

Checked in order; the first step that fails ends the check with its reasons, one line each:

1. The manifest is there and is one (a directory without it is a backup that did not finish).
2. Every file it lists is there, inside the backup, with its size and SHA-256; no file is there that it does
   not list (a restore puts the key directory back whole, so a stray key file would come back too).
3. SQLite: the copy, opened read-only, passes SQLite's ``quick_check``; its migration revisions, audit log
   size, newest checkpoint and register version are the manifest's.
4. Its audit log verifies as ``audit verify`` checks the live one (:func:`audit.verify_database`, every entry
   re-parsed), against the checkpoint key *in the backup* and the origin of this deployment's ``WGS_ISSUER``:
   the pair the restored gateway will sign with. ``fast``: as ``audit verify --fast`` (``deep=False``): the tree,
   every leaf hash, the cached subtrees, the checkpoint signatures and the columns searches use (the time among
   them) are checked, but no entry is re-parsed for canonical JSON of a valid event, nor its ``entry_id``
   column compared with it; a changed byte in an entry still changes the tree. In this process, as the full
   check: the copy is opened read-only through a connection of its own, which worker processes, opening it by
   URL, could not be.

5. Compared with the deployment it is to be restored over (:mod:`gateway.backup.live`): what a restore would
   replace (another log, entries written since) is said as a warning, which does not change the exit code.

A database at other revisions than this code's is not a fault of the backup: it is said, as a note (after the
restore, ``db upgrade``, or restore with the version that made it). A PostgreSQL backup holds the keys only;
its database is checked with PostgreSQL's tools and, once restored, ``audit verify``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from sqlalchemy.exc import SQLAlchemyError

from audit import NoteVerifier, StoreUnavailable, verify_database
from gateway.auditing.setup import CheckpointKeyError, load_checkpoint_key, log_origin
from gateway.backup.live import restore_warnings
from gateway.backup.manifest import DATABASE_FILE, KEYS_DIR, MANIFEST, Manifest, file_record, read_manifest
from gateway.backup.state import DatabaseState, database_state, read_only_sqlite
from gateway.db.engine import expected_heads
from gateway.settings import Settings


@dataclass
class BackupCheck:
    """``problems``: why the backup is not to be trusted (empty: it is); ``notes``: what to know all the same;
    ``warnings``: what restoring it over this deployment would replace (:mod:`gateway.backup.live`)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    summary: str = ""


def check_backup(settings: Settings, directory: Path, *, fast: bool = False) -> BackupCheck:
    """Check the backup in ``directory`` (see the module; ``fast`` for its audit log); never writes to it."""
    check = BackupCheck()
    try:
        manifest = read_manifest(directory)
    except ValueError as exc:
        check.problems.append(str(exc))
        return check
    check.problems.extend(_file_problems(directory, manifest))
    if check.problems:
        return check
    if manifest.database != "sqlite":
        check.notes.append(f"database: {manifest.database}, not in this backup: check its dump with its own tools "
                           "and, once restored, run `wgs-gateway audit verify`")
        check.summary = f"backup {manifest.backup_id} intact: {len(manifest.files)} key files"
    elif DATABASE_FILE not in manifest.files:
        check.problems.append(f"the manifest lists no {DATABASE_FILE} for an SQLite backup")
    else:
        _check_database(settings, directory, manifest, check, fast=fast)
    if not check.problems:
        check.warnings.extend(restore_warnings(settings, directory, manifest))
    return check


def _file_problems(directory: Path, manifest: Manifest) -> list[str]:
    problems = []
    for name, record in sorted(manifest.files.items()):
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            problems.append(f"the manifest names {name!r}, which is not a path inside the backup")
            continue
        path = directory / relative
        try:
            if _through_link(directory, relative):
                problems.append(f"{name} is reached through a symbolic link: a backup holds its own files only")
                continue
            if not path.is_file():
                problems.append(f"{name} is missing")
                continue
            found = file_record(path)
        except OSError as exc:  # a name too long to look up, a file that cannot be read: a reason, not a crash
            problems.append(f"{name} cannot be read ({exc.strerror or type(exc).__name__})")
            continue
        if found.size != record.size:
            problems.append(f"{name} has {found.size} bytes, the manifest says {record.size}")
        elif found.sha256 != record.sha256:
            problems.append(f"{name} has changed: its SHA-256 is not the manifest's")
    listed = set(manifest.files)
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if path.is_symlink() and name not in listed:
            problems.append(f"{name} is a symbolic link, not in the manifest")
        elif path.is_file() and name != MANIFEST and name not in listed:
            problems.append(f"{name} is not in the manifest")
    return problems


def _through_link(directory: Path, relative: PurePosixPath) -> bool:
    """Whether the listed file, or a directory on the way to it, is a symbolic link. Its digest would then be of
    a file elsewhere (which the backup's own copy no longer is), and a restore would copy what it points to."""
    path = directory
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def _check_database(settings: Settings, directory: Path, manifest: Manifest, check: BackupCheck, *,
                    fast: bool) -> None:
    engine = read_only_sqlite(directory / DATABASE_FILE)
    try:
        with engine.connect() as connection:
            verdict = connection.exec_driver_sql("PRAGMA quick_check").scalar()
            if verdict != "ok":
                check.problems.append(f"{DATABASE_FILE} is damaged (SQLite's quick_check: {verdict})")
                return
            state = database_state(connection)
        check.problems.extend(_state_problems(manifest.state, state))
        if check.problems:
            return
        try:
            key = load_checkpoint_key(directory / KEYS_DIR)
        except CheckpointKeyError as exc:
            check.problems.append(f"the backup's audit checkpoint key: {exc}")
            return
        result = verify_database(engine, NoteVerifier(log_origin(settings.issuer), key.public_key()), deep=not fast,
                                 workers=1)
    except (SQLAlchemyError, sqlite3.Error, StoreUnavailable) as exc:
        check.problems.append(f"{DATABASE_FILE} cannot be read as the gateway's database ({type(exc).__name__})")
        return
    finally:
        engine.dispose()
    if not result.ok:
        check.problems.append(f"the backup's audit log is NOT intact: {result.failure}")
        return
    expected = tuple(sorted(expected_heads()))
    if state.migration_heads != expected:
        check.notes.append(f"the database is at revision {', '.join(state.migration_heads) or 'none'}, this code "
                           f"expects {', '.join(expected)}: after restoring, run `wgs-gateway db upgrade` (or "
                           "restore with the version that made the backup)")
    check.summary = (f"backup {manifest.backup_id} intact: {len(manifest.files)} files, database at "
                     f"{', '.join(state.migration_heads)}, audit log {result.entries} entries, "
                     f"{result.checkpoints} checkpoints, root {result.root_hash.hex() if result.root_hash else '-'}")


def _state_problems(recorded: DatabaseState, found: DatabaseState) -> list[str]:
    """One line per way the copy differs from what the manifest recorded of it."""
    labels = {"migration_heads": "migration revisions", "audit_size": "audit log size",
              "checkpoint_size": "newest checkpoint's size", "checkpoint_root": "newest checkpoint's root hash",
              "register_version": "register version", "register_sha256": "register digest"}
    return [f"the database's {label} is not the manifest's ({getattr(found, name)} against "
            f"{getattr(recorded, name)})"
            for name, label in labels.items() if getattr(found, name) != getattr(recorded, name)]

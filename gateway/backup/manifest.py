"""``MANIFEST.json``: what a backup holds, so that it can be checked before it is trusted with a restore.

It lists every file of the backup (paths relative to the backup's directory, never the directory itself, whose
path may name a person) with its SHA-256 and size, and the database's state as copied
(:mod:`gateway.backup.state`). It holds digests of key files, never their content: a SHA-256 of a random key
reveals nothing of it. It is written last, whole (a draft renamed into place), so a backup directory without a
manifest is one that did not finish.

The digests find a changed byte (a disk, a copy over a network), not a forger: whoever can rewrite a key file
can rewrite the manifest too. What vouches for the audit log in a backup is its checkpoints, checked against
the key (:mod:`gateway.backup.check`) and, by officers, against the key they pinned.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.backup.copying import FILE_MODE
from gateway.backup.state import DatabaseState

MANIFEST = "MANIFEST.json"
FORMAT = "wgs-gateway-backup/1"
DATABASE_FILE = "gateway.sqlite"
KEYS_DIR = "keys"


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """``database``: ``sqlite`` (the copy is ``gateway.sqlite``) or ``postgresql`` (not copied: ``state`` is the
    live database's at the time of the backup, for comparison with the dump taken with PostgreSQL's tools)."""

    backup_id: str
    created_at: datetime
    database: str
    state: DatabaseState
    files: dict[str, FileRecord]

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "backup_id": self.backup_id, "created_at": self.created_at.isoformat(),
                "database": self.database, "database_copied": self.database == "sqlite",
                "state": self.state.to_json(),
                "files": {name: {"sha256": record.sha256, "size": record.size}
                          for name, record in sorted(self.files.items())}}


def file_record(path: Path) -> FileRecord:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(digest.hexdigest(), size)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write ``MANIFEST.json`` (0600) into ``directory`` whole: a draft, flushed, then renamed into place."""
    draft = directory / f".{MANIFEST}.new"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(manifest.to_json(), handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    draft.replace(directory / MANIFEST)


def read_manifest(directory: Path) -> Manifest:
    """The manifest of the backup in ``directory``; ``ValueError`` with the reason when there is none or it is
    not one (a missing manifest: the backup did not finish)."""
    path = directory / MANIFEST
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ValueError(f"no {MANIFEST}: not a backup, or one that did not finish") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested past Python's stack
        raise ValueError(f"{MANIFEST} cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{MANIFEST} is not a manifest of this format ({FORMAT})")
    try:
        files = {str(name): FileRecord(str(record["sha256"]), int(record["size"]))
                 for name, record in document["files"].items()}
        manifest = Manifest(backup_id=str(document["backup_id"]),
                            created_at=datetime.fromisoformat(document["created_at"]),
                            database=str(document["database"]), state=DatabaseState.from_json(document["state"]),
                            files=files)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"{MANIFEST} is incomplete or malformed ({type(exc).__name__})") from None
    _check_database_kind(manifest)
    return manifest


def _check_database_kind(manifest: Manifest) -> None:
    """Refuse a manifest whose ``database`` is not what ``take_backup`` writes, or a PostgreSQL one listing more
    than key files. Why: ``verify-backup`` checks the SQLite copy's audit log only for ``sqlite``; a manifest
    edited to say ``postgresql`` (or anything else) beside a ``gateway.sqlite`` passed it as intact "key files"
    with that copy's log never verified, and the copy is what a restore would put back."""
    if manifest.database not in {"sqlite", "postgresql"}:
        raise ValueError(f"{MANIFEST} names a database the gateway does not back up ({manifest.database!r})")
    if manifest.database == "postgresql":
        others = sorted(name for name in manifest.files if not name.startswith(f"{KEYS_DIR}/"))
        if others:
            raise ValueError(f"{MANIFEST} is of a PostgreSQL backup, which holds the key directory only, but lists "
                             f"{', '.join(others)}")

"""The copies a backup is made of: the SQLite database, taken while gateways write to it, and the key directory.

The database is copied with SQLite's online backup API in one step: it reads every page inside one read
transaction, so the copy is the database as of one commit, WAL or not, and writers go on meanwhile (a reader
never blocks a WAL writer). A copy of the file itself (``cp``) while a gateway writes can tear a page, and
misses what is still in the ``-wal`` file. A stepped backup (some pages at a time) starts over whenever
another connection writes, so under a steady stream of audit entries it may never finish.

Key files are never rewritten in place (:mod:`gateway.keyfiles`: published whole, replaced by rename), so a
plain read gets one version of each. Drafts (``.<name>.*.new``) and lock files are left out: a draft is a key
not yet published (or abandoned), and a lock file is made on use.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def create_private_file(path: Path) -> None:
    """An empty file at ``path`` readable by its owner only, made before anything is written into it (a file
    made by ``open`` gets the umask's mode, often world-readable, until a ``chmod`` after the copy)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    os.chmod(path, FILE_MODE)  # O_CREAT's mode is narrowed by the umask only; chmod makes it exact


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy the SQLite database ``source`` into the new file ``target`` (0600), consistently (see the module).

    The source is opened read-only (a missing file is an error, never a new empty database); the copy is left
    in rollback-journal mode, one self-contained file: the gateway switches it back to WAL on its first
    connection after a restore."""
    create_private_file(target)
    reading = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        writing = sqlite3.connect(target)
        try:
            reading.backup(writing)  # pages=-1: every page in one step, one read transaction
            writing.execute("PRAGMA journal_mode=DELETE")
        finally:
            writing.close()
    finally:
        reading.close()


def key_files(directory: Path) -> Iterator[Path]:
    """The key files under ``directory``, as paths relative to it, sorted; drafts and lock files left out."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and not path.name.endswith(".lock"):
            yield path.relative_to(directory)


def copy_keys(source: Path, target: Path) -> list[Path]:
    """Copy the key directory ``source`` to the new directory ``target``: directories 0700, files 0600, whatever
    the umask; the relative paths of the files copied. A key file that is a symbolic link (to a mounted secret,
    say) is copied as the file it points to: the copy holds the keys, not links to them."""
    target.mkdir(mode=DIR_MODE)
    os.chmod(target, DIR_MODE)
    copied = []
    for relative in key_files(source):
        destination = target / relative
        for parent in reversed(relative.parents[:-1]):
            folder = target / parent
            if not folder.exists():
                folder.mkdir(mode=DIR_MODE)
                os.chmod(folder, DIR_MODE)
        create_private_file(destination)
        destination.write_bytes((source / relative).read_bytes())
        copied.append(relative)
    return copied

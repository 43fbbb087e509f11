"""Key files that the first gateway process to need them creates: whole or not at all, for every process.

Several processes (uvicorn workers, containers on one volume) start together and each may find a key file
missing. Created in place (``O_CREAT | O_EXCL``, then written), the file exists empty for a moment: another
process that found it then read an empty key. A worker failed to start on an empty record-sealing key, and
one that read an empty console-session secret signed and accepted session cookies under an empty HMAC key,
which anyone can forge. Here the key is written to a file of its own and published under its name with a
hard link, which either makes the whole file appear at once or fails because another process published its
key first: then that one is read, so every process uses the same key.

Key files that change later (rotation) are replaced whole (:func:`replace_whole`) under an exclusive lock
(:func:`exclusively`), and a process that follows such a file tells versions apart by :func:`stamp_of`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

try:  # POSIX; elsewhere the lock is a no-op (single-process use only)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

FileStamp = tuple[int, int, int, int, int]
"""(device, inode, size, mtime ns, ctime ns) of a key file: equal stamps, the same file as it was read. Files
are replaced, never rewritten in place, so another version has another inode; a ``chmod`` changes the ctime."""


class EmptyKeyFile(RuntimeError):
    """A key file holds nothing (left by an interrupted start of an older version): it is never used as a key."""


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The bytes of the key file ``path``; when there is none, a new key ``make()`` published as it (0600) —
    or, when another process published one meanwhile, that one."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.new")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(make())
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process published its key first: use that
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    content = path.read_bytes()
    if not content.strip():
        raise EmptyKeyFile(f"the key file {path} is empty; remove it (a new key is made on the next start)")
    return content


def exposed_key_files(directory: Path) -> list[Path]:
    """The files under the key directory ``directory`` that users other than their owner may read or write (a
    group or other permission bit), sorted; none when there is no such directory.

    Why: whoever reads the token-signing key signs tokens the gateway accepts, and whoever reads the checkpoint
    key signs checkpoints of the log as the gateway. Every key file is made 0600, but a file put there by hand
    (a restore, a configuration tool, a secret mounted with its default mode) keeps the mode it was given; the
    pseudonym key ring refuses such a file itself, and the start refuses the others (:mod:`gateway.startup`)."""
    exposed = []
    for path in sorted(directory.rglob("*")):
        try:
            info = path.stat()
        except OSError:  # removed meanwhile, or a link to nothing: not a key anyone can read
            continue
        if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
            exposed.append(path)
    return exposed


def stamp_of(info: os.stat_result) -> FileStamp:
    """The stamp of a file's ``stat``/``fstat``."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


@contextlib.contextmanager
def exclusively(lock_path: Path, *, busy: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (made if missing, 0600) for a read-change-write of a key file:
    two rotations at once (two administrators, two processes) would otherwise each replace the file with their
    own change, and one of them would be lost. ``busy`` is called once, before waiting, when another holder has
    the lock: a command that would otherwise hang without a word says what it waits for."""
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if busy is not None:
                    busy()
                fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def replace_whole(path: Path, content: bytes) -> None:
    """Replace the file ``path`` with ``content`` (0600): written to a draft of its own name, flushed to disk,
    renamed over ``path`` and the directory flushed, so a reader sees the old file or the new one, whole, and a
    crash leaves one of them. A draft name per call, because a shared one (``path.tmp``) lets two writers
    truncate each other's draft."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.new")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(draft, path)
    finally:
        draft.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


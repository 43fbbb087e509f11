"""Where the transcryptor's secrets live: a small async ``KeyStore`` interface, a file store and a test fake.

The gateway loads a :class:`~gateway.pseudonyms.keys.KeyRing` at start-up and hands it to the transcryptor,
and follows the file from then on (:mod:`gateway.pseudonyms.following`); rotation adds a version (and makes it
current), retirement removes a version once nothing refers to it.
Other back-ends (a KMS, an HSM-backed service) implement the same four coroutines.

``FileKeyStore`` file format (JSON, one file, mode 0600 in a 0700 directory)::

    {"format": "wgs-gateway/pseudonym-keys", "format_version": 1, "current": 2,
     "versions": [{"version": 1, "created_at": "2025-03-01T00:00:00+00:00",
                   "public_key": "<b64url>", "elgamal_secret": "<b64url>",
                   "pseudonymisation_secret": "<b64url>", "rekey_secret": "<b64url>"}, ...]}

Security checklist applied when loading:
  1. the path is a regular file, not a symlink;
  2. neither group nor others may read or write it (``chmod 600``), else refuse;
  3. the document has the expected format and version, every secret decodes to the right length;
  4. each version's stored public key equals ``y·G`` (detects a corrupted or mixed-up secret);
  5. the current version exists.
Writes are atomic (temporary file created 0600, fsync, rename, fsync of the directory) and serialised with
an advisory lock. Nothing here logs, and errors never contain key material.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.clock import Clock, SystemClock
from gateway.keyfiles import FileStamp, exclusively, replace_whole, stamp_of
from gateway.pseudonyms.errors import KeyStoreError
from gateway.pseudonyms.keys import MASTER_SECRET_BYTES, KeyRing, KeyVersion
from gateway.pseudonyms.pep import SCALAR_BYTES, Point, Scalar, b64url_decode, b64url_encode

__all__ = ["FileKeyStore", "FileStamp", "InMemoryKeyStore", "KeyStore"]

_FORMAT = "wgs-gateway/pseudonym-keys"
_FORMAT_VERSION = 1

class KeyStore(Protocol):
    """The transcryptor's key store. Implementations never log secrets and never put them in errors."""

    async def load(self) -> KeyRing:
        """The key ring; :class:`KeyStoreError` if there is none or it cannot be trusted."""
        ...

    async def initialise(self) -> KeyRing:
        """Create key version 1 if the store is empty; return the (existing or new) key ring."""
        ...

    async def rotate(self) -> KeyRing:
        """Add a new key version with fresh secrets and make it current; older versions are kept."""
        ...

    async def retire(self, version: int) -> KeyRing:
        """Remove a non-current version (after everything under it was re-keyed)."""
        ...


class InMemoryKeyStore:
    """The test fake: same behaviour as the file store, nothing on disk."""

    def __init__(self, *, clock: Clock | None = None, ring: KeyRing | None = None) -> None:
        self._clock = clock or SystemClock()
        self._ring = ring

    async def load(self) -> KeyRing:
        if self._ring is None:
            raise KeyStoreError("the key store is empty; initialise it first")
        return self._ring

    async def initialise(self) -> KeyRing:
        if self._ring is None:
            self._ring = KeyRing({1: KeyVersion.generate(1, self._clock.now())}, 1)
        return self._ring

    async def rotate(self) -> KeyRing:
        ring = await self.load()
        self._ring = ring.with_version(KeyVersion.generate(max(ring.versions) + 1, self._clock.now()))
        return self._ring

    async def retire(self, version: int) -> KeyRing:
        self._ring = (await self.load()).without_version(version)
        return self._ring

    def __repr__(self) -> str:
        return f"InMemoryKeyStore(ring={self._ring!r})"


class FileKeyStore:
    """Key ring in one JSON file under ``directory`` (created 0700; the file is 0600)."""

    def __init__(self, directory: Path, *, clock: Clock | None = None,
                 filename: str = "pseudonym-keys.json") -> None:
        self._directory = Path(directory)
        self._path = self._directory / filename
        self._lock_path = self._directory / (filename + ".lock")
        self._clock = clock or SystemClock()

    @property
    def path(self) -> Path:
        return self._path

    async def load(self) -> KeyRing:
        return await asyncio.to_thread(self._load)

    async def initialise(self) -> KeyRing:
        return await asyncio.to_thread(self._update, self._initialise)

    async def rotate(self) -> KeyRing:
        return await asyncio.to_thread(self._update, self._rotate)

    async def retire(self, version: int) -> KeyRing:
        return await asyncio.to_thread(self._update, lambda ring: self._retire(ring, version))

    def __repr__(self) -> str:
        return f"FileKeyStore(path={str(self._path)!r})"

    # --- synchronous internals (run in a worker thread) --------------------------------------------------

    def _initialise(self, ring: KeyRing | None) -> KeyRing:
        return ring if ring is not None else KeyRing({1: KeyVersion.generate(1, self._clock.now())}, 1)

    def _rotate(self, ring: KeyRing | None) -> KeyRing:
        if ring is None:
            raise KeyStoreError("the key store is empty; initialise it first")
        return ring.with_version(KeyVersion.generate(max(ring.versions) + 1, self._clock.now()))

    def _retire(self, ring: KeyRing | None, version: int) -> KeyRing:
        if ring is None:
            raise KeyStoreError("the key store is empty")
        return ring.without_version(version)

    def _ensure_directory(self) -> None:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _update(self, change: Any) -> KeyRing:
        self._ensure_directory()
        with exclusively(self._lock_path):
            ring = self._load() if self._path.exists() else None
            new_ring: KeyRing = change(ring)
            if new_ring is not ring:
                self._write(new_ring)
            return new_ring

    def stamp(self) -> FileStamp | None:
        """What identifies the key file's present version (one ``lstat``, no read); None when there is none.

        Writes replace the file (a new inode, written whole before the rename), so a different stamp means
        another ring; a ``chmod`` changes it too (ctime), so the checks of :meth:`load_stamped` are made again.
        """
        try:
            return stamp_of(os.lstat(self._path))
        except FileNotFoundError:
            return None

    def load_stamped(self) -> tuple[KeyRing, FileStamp]:
        """The key ring and the stamp of exactly the file it was read from, synchronously (a small file).

        For a process that follows the file (:class:`~gateway.pseudonyms.following.FollowedTranscryptor`):
        the stamp comes from the open file itself, so a rotation between a ``stat`` and the read can never be
        mistaken for the version that was read. :class:`KeyStoreError` as :meth:`load`."""
        return self._load_stamped()

    def _load(self) -> KeyRing:
        return self._load_stamped()[0]

    def _load_stamped(self) -> tuple[KeyRing, FileStamp]:
        # 1. a regular file, not a symlink
        try:
            info = self._path.lstat()
        except FileNotFoundError:
            raise KeyStoreError("no key store file; initialise the key store first") from None
        if not stat.S_ISREG(info.st_mode):
            raise KeyStoreError("the key store path is not a regular file")
        try:  # the file as opened: replaced by a symlink or another file since the lstat, it is checked again
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise KeyStoreError("no key store file; initialise the key store first") from None
        except OSError as exc:
            raise KeyStoreError("the key store path is not a regular file" if exc.errno == errno.ELOOP
                                else "the key store file cannot be opened") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise KeyStoreError("the key store path is not a regular file")
            # 2. private to its owner
            if info.st_mode & 0o077:
                raise KeyStoreError("the key store file is readable or writable by group/others; chmod 600 it")
            try:
                document = json.loads(handle.read())
            except (OSError, ValueError):
                raise KeyStoreError("the key store file cannot be read as JSON") from None
        return _ring_from_document(document), stamp_of(info)

    def _write(self, ring: KeyRing) -> None:
        self._ensure_directory()
        replace_whole(self._path, json.dumps(_ring_to_document(ring), indent=2, sort_keys=True).encode())


def _ring_to_document(ring: KeyRing) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "current": ring.current,
        "versions": [
            {
                "version": key.version,
                "created_at": key.created_at.isoformat(),
                "public_key": key.public_key.encode(),
                "elgamal_secret": b64url_encode(bytes(key.elgamal_secret)),
                "pseudonymisation_secret": b64url_encode(key.pseudonymisation_secret),
                "rekey_secret": b64url_encode(key.rekey_secret),
            }
            for key in sorted(ring.versions.values(), key=lambda k: k.version)
        ],
    }


def _ring_from_document(document: Any) -> KeyRing:
    # 3. format and shapes; messages name fields and versions, never values
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise KeyStoreError("the key store file has an unknown format")
    if document.get("format_version") != _FORMAT_VERSION:
        raise KeyStoreError("the key store file has an unsupported format version")
    entries = document.get("versions")
    current = document.get("current")
    if not isinstance(entries, list) or not isinstance(current, int):
        raise KeyStoreError("the key store file lacks 'versions' or 'current'")
    versions: dict[int, KeyVersion] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("version"), int):
            raise KeyStoreError(f"key store entry {position} is malformed")
        number: int = entry["version"]
        if number in versions:
            raise KeyStoreError(f"key version {number} appears twice")
        try:
            key = KeyVersion(
                version=number,
                elgamal_secret=Scalar(b64url_decode(entry["elgamal_secret"], SCALAR_BYTES, "secret")),
                pseudonymisation_secret=b64url_decode(
                    entry["pseudonymisation_secret"], MASTER_SECRET_BYTES, "secret"),
                rekey_secret=b64url_decode(entry["rekey_secret"], MASTER_SECRET_BYTES, "secret"),
                created_at=datetime.fromisoformat(entry["created_at"]),
            )
            stored_public = Point.decode(entry["public_key"])
        except (KeyError, TypeError, ValueError):  # InvalidPseudonym is a ValueError
            raise KeyStoreError(f"key version {number} has a missing or malformed field") from None
        # 4. the stored public key must be the secret's
        if key.public_key != stored_public:
            raise KeyStoreError(f"key version {number}: public key does not match its secret")
        versions[number] = key
    # 5. the current version exists (KeyRing checks)
    return KeyRing(versions, current)

"""A running gateway process follows the pseudonym key ring file: a rotation is in force from its next use.

Why: ``wgs-gateway pseudonyms rotate`` (another process) adds a key version to the file and re-keys the
discovery index to it. A process that kept the ring it loaded at start went on computing partnership
pseudonyms under the old version — discovery answered ``no-hit`` for subjects the index holds — published the
old public key, refused the new version's pseudonyms that partners made with keys from an up-to-date process,
and enrolled under the old version, until it was restarted. The token-signing keys already follow their file
(``gateway.auth.keys``); this does the same for the key ring.

Cost: one ``lstat`` per use (a few microseconds, against some 65 µs for the cheapest transformation, a
translation), compared with the stamp of the file last read; the file is read again only when it was
replaced. Every write of :class:`~gateway.pseudonyms.keystore.FileKeyStore` creates a new file, written and
flushed whole, and renames it over the old one, so what is opened is always one complete ring, never a
half-written one; the stamp is taken from the opened file, so it always describes the ring that was read.

A file that changed and can no longer be trusted (made readable by others, not a key ring any more, gone) is
not served from memory either: every use raises :class:`KeyStoreError` until the file is put right (which
changes its stamp again), so the process fails closed rather than answering under a ring it would refuse to
start with. The stamp of such a file is remembered, so it is not read again on every use. Nothing here logs.
"""

from __future__ import annotations

import threading

from gateway.pseudonyms.errors import KeyStoreError
from gateway.pseudonyms.keystore import FileKeyStore, FileStamp
from gateway.pseudonyms.transcryptor import Transcryptor

__all__ = ["FollowedTranscryptor"]


class FollowedTranscryptor:
    """``follower()`` is the transcryptor of the key ring as the file holds it now (read at construction)."""

    def __init__(self, store: FileKeyStore) -> None:
        self._store = store
        self._lock = threading.Lock()  # one reload at a time; readers never wait for it unless it is due
        ring, stamp = store.load_stamped()
        # One tuple, swapped whole: a thread reads a stamp and the ring (or refusal) that goes with it.
        self._state: tuple[FileStamp | None, Transcryptor | KeyStoreError] = (stamp, Transcryptor(ring))

    def __call__(self) -> Transcryptor:
        """The current transcryptor; :class:`KeyStoreError` when the file changed into one that cannot be used."""
        stamp, current = self._state
        if self._store.stamp() != stamp:
            current = self._reload()
        if isinstance(current, KeyStoreError):
            raise KeyStoreError(str(current))  # a fresh exception each time: no traceback piling up on one
        return current

    def _reload(self) -> Transcryptor | KeyStoreError:
        with self._lock:
            stamp, current = self._state
            seen = self._store.stamp()
            if seen == stamp:  # another thread reloaded it meanwhile
                return current
            try:
                ring, stamp = self._store.load_stamped()
                current = Transcryptor(ring)
            except KeyStoreError as exc:
                stamp, current = seen, exc
            self._state = (stamp, current)
            return current

    def __repr__(self) -> str:
        return f"FollowedTranscryptor(store={self._store!r})"

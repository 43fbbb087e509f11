"""The gateway's token-signing keys: a small file key store with rotation.

Why rotation keeps old keys: an access token stays valid until it expires, so after ``rotate()`` the
previous public key stays in the JWKS (and in the verification set) for ``retire_after`` — at least the
access-token lifetime — and only then disappears. Private keys live in one JSON file with 0600
permissions; nothing here logs or reprs key material.

Why a key can also be retired at once (:meth:`SigningKeyStore.retire`, ``keys retire`` and ``keys rotate
--retire-previous-now``): after a key leaked, those ten minutes are ten minutes in which anyone holding it mints
tokens the gateway accepts. A retired key is removed from the file, private part and all, so it is in no JWKS and
no verification set. Every process reads the file's stamp on each token check (:meth:`_reload_if_changed`; within
one HTTP request once, at its first use of the keys: :mod:`gateway.auth.freshness`), so each refuses the key's
tokens from its next request on, with no restart and no interval to wait for.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from joserfc.jwk import Key, KeySet, OKPKey

from gateway.auth import freshness
from gateway.clock import Clock
from gateway.ids import new_id
from gateway.keyfiles import FileStamp, exclusively, read_or_create, replace_whole, stamp_of

SIGNING_ALGORITHM = "Ed25519"  # RFC 9864's fully specified EdDSA over Ed25519


class KeyRetirementRefused(Exception):
    """A retirement that would leave no current key, or whose keys are not what the caller read."""


@dataclass(frozen=True)
class _StoredKey:
    kid: str
    created_at: datetime
    superseded_at: datetime | None
    private_jwk: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "created_at": self.created_at.isoformat(),
                "superseded_at": self.superseded_at.isoformat() if self.superseded_at else None,
                "private_jwk": self.private_jwk}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _StoredKey:
        superseded = data.get("superseded_at")
        return cls(kid=data["kid"], created_at=datetime.fromisoformat(data["created_at"]),
                   superseded_at=datetime.fromisoformat(superseded) if superseded else None,
                   private_jwk=data["private_jwk"])


class SigningKeyStore:
    """File-backed Ed25519 signing keys with a current key and recently superseded ones."""

    def __init__(self, directory: Path, clock: Clock, retire_after: timedelta) -> None:
        self._path = directory / "token-signing.json"
        self._lock_path = directory / "token-signing.json.lock"
        self._clock = clock
        self._retire_after = retire_after
        self._lock = threading.Lock()
        self._keys: list[_StoredKey] = []
        self._loaded: FileStamp | None = None  # the stamp of the file the keys were read from
        self._verification_cache: tuple[tuple[_StoredKey, ...], KeySet] | None = None

    def __repr__(self) -> str:
        return f"SigningKeyStore(path={str(self._path)!r}, keys={len(self._keys)})"

    @property
    def path(self) -> Path:
        return self._path

    def load(self) -> bool:
        """Read the stored keys without ever creating one (``keys list``); False when there are none."""
        with self._lock:
            self._reload_locked()
            return bool(self._keys)

    def load_or_create(self) -> None:
        """Load the keys, making the first one if there is none. Processes starting together on a new
        installation each find none: the first key is published whole under the file's name, once
        (:func:`~gateway.keyfiles.read_or_create`), and every process uses that one — saved by each, the
        processes whose file was replaced signed tokens with a key no other process knew."""
        with self._lock, exclusively(self._lock_path):
            self._reload_locked()
            if not self._keys:
                read_or_create(self._path, lambda: json.dumps({"keys": [self._new_key().to_json()]}).encode())
                self._reload_locked()
            if not self._keys:  # a file that lists no key (all removed by hand): as before, make one
                self._keys = [self._new_key()]
                self._save()

    def rotate(self) -> str:
        """Make a new current key; the old one is kept for verification until it retires. Read, changed and
        written under the file's lock, so a rotation another process makes at the same time is kept, not
        overwritten."""
        with self._lock, exclusively(self._lock_path):
            self._reload_locked()
            now = self._clock.now()
            self._keys = [
                key if key.superseded_at else _StoredKey(key.kid, key.created_at, now, key.private_jwk)
                for key in self._keys if not self._is_retired(key, now)
            ]
            fresh = self._new_key()
            self._keys.append(fresh)
            self._save()
            return fresh.kid

    def retire(self, kids: frozenset[str], *, successor: str | None = None) -> None:
        """Remove the keys ``kids`` from the file now, under its lock (see the module's docstring). With
        ``successor`` first make a new current key of that id, so that the current key can be among ``kids``
        (``keys rotate --retire-previous-now``: every key there was is then to be retired). Raises
        :class:`KeyRetirementRefused`, changing nothing, when one of ``kids`` is not in the file, when no current
        key would be left, or when a successor is to retire every key there is and the file holds others (made by a
        rotation meanwhile: the caller named the keys to retire, and its audit entry, before it)."""
        with self._lock, exclusively(self._lock_path):
            self._reload_locked()
            stored = {key.kid for key in self._keys}
            if not kids <= stored:
                raise KeyRetirementRefused("a key to retire is not in the key file (changed meanwhile?); nothing "
                                           "was changed")
            kept = [key for key in self._keys if key.kid not in kids]
            if successor is not None:
                if stored != kids:
                    raise KeyRetirementRefused("the key file changed meanwhile (a rotation?); nothing was changed")
                kept.append(self._new_key(successor))
            if not any(key.superseded_at is None for key in kept):
                raise KeyRetirementRefused("that is the current signing key: `keys rotate --retire-previous-now` "
                                           "replaces it and retires it; nothing was changed")
            self._keys = kept
            self._save()

    def current_kid(self) -> str:
        """The id of the key :meth:`current` signs with, without importing it."""
        with self._lock:
            self._reload_if_changed()
            active = [key for key in self._keys if key.superseded_at is None]
            if not active:
                raise RuntimeError("the signing key store has not been loaded")
            return active[-1].kid

    def current(self) -> OKPKey:
        with self._lock:
            self._reload_if_changed()
            active = [key for key in self._keys if key.superseded_at is None]
            if not active:
                raise RuntimeError("the signing key store has not been loaded")
            return OKPKey.import_key(active[-1].private_jwk, {"kid": active[-1].kid})

    def verification_keys(self) -> KeySet:
        """Current and not-yet-retired keys (public parts) for verifying tokens."""
        now = self._clock.now()
        with self._lock:
            self._reload_if_changed()
            live = tuple(key for key in self._keys if not self._is_retired(key, now))
            if self._verification_cache is None or self._verification_cache[0] != live:
                # Importing a key costs more than checking a token's signature: import once per key set
                # (a reload or a retirement changes the tuple of stored keys, and so the cache).
                keys: list[Key] = [OKPKey.import_key(self._public(key), {"kid": key.kid}) for key in live]
                self._verification_cache = (live, KeySet(keys))
            return self._verification_cache[1]

    def jwks(self) -> dict[str, Any]:
        now = self._clock.now()
        with self._lock:
            self._reload_if_changed()
            return {"keys": [{**self._public(key), "kid": key.kid, "use": "sig", "alg": SIGNING_ALGORITHM}
                             for key in self._keys if not self._is_retired(key, now)]}

    def describe(self) -> list[dict[str, str | None]]:
        """Key ids and dates (no key material), for `wgs-gateway keys list`."""
        with self._lock:
            return [{"kid": key.kid, "created_at": key.created_at.isoformat(),
                     "superseded_at": key.superseded_at.isoformat() if key.superseded_at else None}
                    for key in self._keys]

    def _is_retired(self, key: _StoredKey, now: datetime) -> bool:
        return key.superseded_at is not None and now - key.superseded_at > self._retire_after

    @staticmethod
    def _public(key: _StoredKey) -> dict[str, Any]:
        return {name: value for name, value in key.private_jwk.items() if name in {"kty", "crv", "x"}}

    def _new_key(self, kid: str | None = None) -> _StoredKey:
        kid = kid or new_id()
        private = OKPKey.generate_key("Ed25519", parameters={"kid": kid}).as_dict(private=True)
        return _StoredKey(kid=kid, created_at=self._clock.now(), superseded_at=None, private_jwk=dict(private))

    def _reload_locked(self) -> None:
        try:
            with self._path.open("rb") as handle:  # the stamp of the file read, not of one replacing it meanwhile
                stamp, content = stamp_of(os.fstat(handle.fileno())), handle.read()
        except FileNotFoundError:
            return
        self._keys = [_StoredKey.from_json(item) for item in json.loads(content)["keys"]]
        self._loaded = stamp

    def _reload_if_changed(self) -> None:
        """Pick up a rotation made by another process (the CLI, another worker) without a restart: one
        ``stat``, compared by inode and nanosecond times (a float mtime could miss two rotations in one tick).
        Once per HTTP request: a request that checked already skips it (:mod:`gateway.auth.freshness`)."""
        checks = freshness.current()
        if checks is not None and checks.has_checked(self):
            return
        try:
            stamp = stamp_of(self._path.stat())
        except FileNotFoundError:
            return
        if stamp != self._loaded:
            self._reload_locked()
        if checks is not None:
            checks.note(self)

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        replace_whole(self._path, json.dumps({"keys": [key.to_json() for key in self._keys]}).encode())
        self._loaded = stamp_of(self._path.stat())

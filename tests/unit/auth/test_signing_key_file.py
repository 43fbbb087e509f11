"""The token-signing key file shared by gateway processes and the CLI: rotations are never lost and always
seen. Each store below stands for a process of its own (its own memory, the one file)."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.auth.keys import SigningKeyStore
from gateway.clock import SystemClock

_KEEP_ALL = timedelta(days=1)  # nothing retires during a test


def _store(directory: Path) -> SigningKeyStore:
    store = SigningKeyStore(directory, SystemClock(), _KEEP_ALL)
    store.load_or_create()
    return store


def test_rotations_made_at_the_same_time_by_two_processes_are_all_kept(tmp_path: Path) -> None:
    """Found by a review: a rotation read the file, added its key and replaced the file, with nothing held in
    between, so of two rotations at once the one saved last dropped the other's key (a kid that `keys rotate`
    had just printed was in no JWKS), and both wrote one shared draft file. They now take the file's lock."""
    stores = [_store(tmp_path), _store(tmp_path)]
    rounds = 8
    start = threading.Barrier(len(stores))
    made: list[str] = []

    def rotate(store: SigningKeyStore) -> None:
        for _ in range(rounds):
            start.wait(10)
            made.append(store.rotate())

    threads = [threading.Thread(target=rotate, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    kept = {key["kid"] for key in _store(tmp_path).jwks()["keys"]}
    assert set(made) <= kept
    assert len(kept) == 1 + len(stores) * rounds  # the first key and every rotation's
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith((".tmp", ".new"))] == []


def test_a_rotation_is_seen_even_when_the_file_keeps_its_modification_time(tmp_path: Path) -> None:
    """A process compared only the file's modification time (a float) with the one it had read, so a rotation
    within the same clock tick — here forced by setting the time back — went unseen and the process went on
    signing with the superseded key. The file is now told apart by inode and nanosecond times."""
    running, cli = _store(tmp_path), _store(tmp_path)
    path = tmp_path / "token-signing.json"
    seen = os.stat(path)
    new_kid = cli.rotate()
    os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))
    assert running.current().kid == new_kid


def test_a_retirement_made_over_a_file_another_process_changed_changes_nothing(tmp_path: Path) -> None:
    """`keys rotate --retire-previous-now` names the keys it retires (and its audit entry) before it takes the file's
    lock: a rotation committed in between would leave a key it did not name valid, so nothing is retired; nor is
    the current key without a successor, which would leave nothing to sign with."""
    from gateway.auth.keys import KeyRetirementRefused

    operator, other = _store(tmp_path), _store(tmp_path)
    read = frozenset(key["kid"] or "" for key in operator.describe())
    other.rotate()
    before = (tmp_path / "token-signing.json").read_bytes()
    with pytest.raises(KeyRetirementRefused, match="changed meanwhile"):
        operator.retire(read, successor="new-key")
    with pytest.raises(KeyRetirementRefused, match="current signing key"):
        operator.retire(frozenset({other.current_kid()}))
    assert (tmp_path / "token-signing.json").read_bytes() == before
    operator.retire(read)  # the superseded key alone: the current one stays
    assert [key["kid"] for key in other.jwks()["keys"]] == [other.current_kid()]

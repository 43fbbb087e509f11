"""The token-signing key file shared by gateway processes and the CLI: rotations are never lost and always
seen. Each store below stands for a process of its own (its own memory, the one file)."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.auth import freshness
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


def _other_process(directory: Path) -> SigningKeyStore:
    """Another process's store of the same file, named by another path (so that its ``stat`` calls are not
    counted as the gateway's)."""
    alias = directory / "same-directory"
    alias.symlink_to(directory, target_is_directory=True)
    return _store(alias)


def _counting_stats(store: SigningKeyStore, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The ``stat`` calls made on ``store``'s key file (by its path) from now on."""
    seen: list[Path] = []
    real = Path.stat

    def stat(path: Path, *args: Any, **kwargs: Any) -> os.stat_result:
        if path == store.path:
            seen.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    return seen


def test_within_one_request_the_key_file_is_stated_once_and_each_request_reads_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exchange request used the keys three times (the rate limiter's token check, the route's, the token for
    the holder), each with a ``stat``. Now once per request: a rotation made by another process before a request
    is seen at that request's first use, as before, and outside a request every use still checks."""
    gateway, cli = _store(tmp_path), _other_process(tmp_path)
    stats = _counting_stats(gateway, monkeypatch)
    checks, token = freshness.begin()
    try:
        first = gateway.current_kid()
        gateway.verification_keys()
        gateway.jwks()
        assert len(stats) == 1
        newer = cli.rotate()  # within the request: its own uses were a moment apart, one check is theirs
        assert gateway.current_kid() == first
    finally:
        freshness.end(checks, token)
    assert len(stats) == 1
    checks, token = freshness.begin()  # the next request sees the rotation at its first use
    try:
        assert gateway.current_kid() == newer
        assert newer in {key["kid"] for key in gateway.jwks()["keys"]}
        assert len(stats) == 2
    finally:
        freshness.end(checks, token)
    for _ in range(3):  # outside a request (the CLI, periodic jobs): every use checks
        gateway.current_kid()
    assert len(stats) == 5


def test_a_task_that_outlives_its_request_checks_the_key_file_again(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A task started by a request keeps the request's context (and so its record) after the request ended: the
    ended record skips nothing, so such a task sees a retirement made after its request at its next use."""
    gateway, cli = _store(tmp_path), _other_process(tmp_path)
    stats = _counting_stats(gateway, monkeypatch)

    async def scenario() -> tuple[str, str]:
        checks, token = freshness.begin()
        try:
            old = gateway.current_kid()
            later = asyncio.Event()

            async def background() -> str:
                await later.wait()
                return gateway.current_kid()

            task = asyncio.create_task(background())  # copies the context: the request's record with it
        finally:
            freshness.end(checks, token)
        cli.retire(frozenset({old}), successor="successor-kid")
        later.set()
        return old, await task

    old, seen_later = asyncio.run(scenario())
    assert seen_later == "successor-kid" != old
    assert len(stats) == 2

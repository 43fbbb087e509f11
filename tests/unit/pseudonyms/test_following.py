"""A process follows the key ring file: a rotation by another process is in force from the next use, the file
is read again only when it was replaced, a half-written or untrustworthy file is never served."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from gateway.auth.principal import Principal
from gateway.client.pseudonyms import PseudonymClient
from gateway.clock import FixedClock
from gateway.enrolment.service import Item, PseudonymService
from gateway.errors import ServiceUnavailable
from gateway.pseudonyms.errors import KeyStoreError
from gateway.pseudonyms.following import FollowedTranscryptor
from gateway.pseudonyms.keys import KeyRing
from gateway.pseudonyms.keystore import FileKeyStore, FileStamp
from gateway.pseudonyms.pep import PolymorphicPseudonym
from gateway.register.loader import load_register
from gateway.settings import SHIPPED_REGISTER

_CLOCK = FixedClock(datetime(2025, 3, 1, tzinfo=UTC))
RIEC = "riec-amsterdam-amstelland"


@pytest.fixture
def store(tmp_path: Path) -> FileKeyStore:
    store = FileKeyStore(tmp_path / "keys", clock=_CLOCK)
    asyncio.run(store.initialise())
    return store


class _CountingStore(FileKeyStore):
    """The file store, counting how often the ring is read."""

    reads = 0

    def load_stamped(self) -> tuple[KeyRing, FileStamp]:
        self.reads += 1
        return super().load_stamped()


def _rotate_elsewhere(store: FileKeyStore) -> None:
    """A rotation by another process: another store object on the same directory (as the CLI has)."""
    asyncio.run(FileKeyStore(store.path.parent, clock=_CLOCK).rotate())


def test_a_rotation_by_another_process_is_in_force_from_the_next_use(store: FileKeyStore) -> None:
    follower = FollowedTranscryptor(store)
    before = follower()
    assert before.public_key_version == 1
    _rotate_elsewhere(store)
    after = follower()
    assert after.public_key_version == 2
    assert after.public_key() == asyncio.run(store.load()).public_key.encode()
    assert sorted(after.keys.versions) == [1, 2]  # the old version is still held (its pseudonyms still work)
    asyncio.run(FileKeyStore(store.path.parent, clock=_CLOCK).retire(1))
    assert sorted(follower().keys.versions) == [2]


def test_the_ring_is_read_again_only_when_the_file_was_replaced(tmp_path: Path) -> None:
    store = _CountingStore(tmp_path / "keys", clock=_CLOCK)
    asyncio.run(store.initialise())
    follower = FollowedTranscryptor(store)
    first = follower()
    for _ in range(1000):
        assert follower() is first  # the same transcryptor: its caches stay warm
    assert store.reads == 1
    _rotate_elsewhere(store)
    assert follower().public_key_version == 2
    for _ in range(1000):
        follower()
    assert store.reads == 2


def test_a_file_made_readable_by_others_is_refused_until_it_is_put_right(store: FileKeyStore) -> None:
    """Fail closed: the process does not go on with the ring in memory once the file is one it would refuse to
    start with; it is used again as soon as the file is private again."""
    follower = FollowedTranscryptor(store)
    ring = follower().keys
    os.chmod(store.path, 0o644)
    for _ in range(2):  # every use, not only the first after the change
        with pytest.raises(KeyStoreError, match="group/others"):
            follower()
    os.chmod(store.path, 0o600)
    assert follower().keys.public_key == ring.public_key


def test_a_half_written_ring_is_never_served(store: FileKeyStore) -> None:
    """Written in place (not the way the store writes: say, restored with `cp`), the file is for a moment a
    part of a ring: refused, never taken for a ring with fewer versions; the whole file is used once written."""
    follower = FollowedTranscryptor(store)
    _rotate_elsewhere(store)
    whole = store.path.read_bytes()
    with open(store.path, "r+b") as handle:  # the same file, truncated part-way: an interrupted copy
        handle.truncate(len(whole) // 2)
    with pytest.raises(KeyStoreError, match="JSON"):
        follower()
    with open(store.path, "r+b") as handle:
        handle.write(whole)
    assert sorted(follower().keys.versions) == [1, 2]


def test_a_ring_rotated_while_in_use_is_always_read_whole(store: FileKeyStore) -> None:
    """Threads using the ring while another process rotates it over and over: every use gets a complete ring
    (one the store wrote), never an error, and the versions only ever go up."""
    follower = FollowedTranscryptor(store)
    failures: list[BaseException] = []
    stop = threading.Event()

    def use() -> None:
        seen = 0
        while not stop.is_set():
            try:
                current = follower()
                assert current.keys.current == max(current.keys.versions) >= seen
                seen = current.keys.current
            except BaseException as exc:  # collected and asserted below
                failures.append(exc)
                return

    threads = [threading.Thread(target=use) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 2
    rotations = 0
    while time.monotonic() < deadline and rotations < 30:
        _rotate_elsewhere(store)
        rotations += 1
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert failures == []
    assert follower().public_key_version == rotations + 1


def test_the_service_fails_closed_with_a_503_when_the_ring_cannot_be_used(store: FileKeyStore) -> None:
    """Not the partner's fault: a 503 (never a 422 blaming its pseudonyms, nor a 500), nothing computed, and no
    reason in the answer that would tell a partner about the gateway's files."""
    register, _ = load_register(SHIPPED_REGISTER)
    service = PseudonymService(sessions=sessionmaker[Session](), clock=_CLOCK, register=register,
                               transcryptor=FollowedTranscryptor(store))
    item = Item("kvk", PseudonymClient(service.public_key()["public_key"]).polymorphic("kvk", "12345678"),
                ("trade-name",), ("company_registration",))
    mine = service.transcryptor.participant_pseudonym(PolymorphicPseudonym.decode(item.polymorphic), "kvk", RIEC,
                                                      "kvk").encode()
    assert service.to_partnership(mine, RIEC, "kvk")
    os.chmod(store.path, 0o644)
    kvk = Principal(kind="system", subject="kvk-handelsregister", organisation="kvk", scopes=frozenset({"enrol"}))
    for call in (service.public_key, lambda: service.pseudonymise(kvk, RIEC, [item]),
                 lambda: service.to_partnership(mine, RIEC, "kvk")):
        with pytest.raises(ServiceUnavailable) as refused:
            call()
        assert refused.value.status == 503
        assert "group" not in refused.value.detail
        assert str(store.path) not in refused.value.detail


def test_a_holders_pseudonyms_come_under_every_key_version_the_current_one_first(store: FileKeyStore) -> None:
    """The current version first, then the older ones, newest first: the exchange asks a holder in that order,
    and when they do not fit one holder query, the first part holds the current ones (``gateway.exchange.parts``)."""
    register, _ = load_register(SHIPPED_REGISTER)
    _rotate_elsewhere(store)
    _rotate_elsewhere(store)
    service = PseudonymService(sessions=sessionmaker[Session](), clock=_CLOCK, register=register,
                               transcryptor=FollowedTranscryptor(store))
    polymorphic = PseudonymClient(service.public_key()["public_key"]).polymorphic("kvk", "12345678")
    mine = service.transcryptor.participant_pseudonym(PolymorphicPseudonym.decode(polymorphic), "kvk", RIEC,
                                                      "kvk").encode()
    every = service.to_holder_all(mine, RIEC, "kvk", "belastingdienst")
    assert [p.split(".")[1] for p in every] == ["v3", "v2", "v1"]

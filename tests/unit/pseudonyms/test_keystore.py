"""Key stores: the file store's permissions, format checks, rotation; the in-memory fake behaves the same."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.clock import FixedClock
from gateway.pseudonyms.errors import KeyStoreError, UnknownKeyVersion
from gateway.pseudonyms.keys import Domain
from gateway.pseudonyms.keystore import FileKeyStore, InMemoryKeyStore, KeyStore

_CLOCK = FixedClock(datetime(2025, 3, 1, tzinfo=UTC))


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> KeyStore:
    if request.param == "file":
        return FileKeyStore(tmp_path / "keys", clock=_CLOCK)
    return InMemoryKeyStore(clock=_CLOCK)


async def test_lifecycle(store: KeyStore) -> None:
    with pytest.raises(KeyStoreError):
        await store.load()
    ring = await store.initialise()
    assert ring.current == 1
    again = await store.initialise()  # idempotent
    assert again.public_key == ring.public_key
    rotated = await store.rotate()
    assert rotated.current == 2
    assert sorted(rotated.versions) == [1, 2]
    assert rotated.public_key != ring.public_key
    loaded = await store.load()
    assert loaded.current == 2
    domain = Domain("riec", "politie")
    assert loaded.get(1).reshuffle_factor(domain) == ring.get(1).reshuffle_factor(domain)
    assert loaded.get(2).reshuffle_factor(domain) != loaded.get(1).reshuffle_factor(domain)
    assert loaded.get(1).rekey_factor(domain) != loaded.get(1).reshuffle_factor(domain)
    retired = await store.retire(1)
    assert sorted(retired.versions) == [2]
    with pytest.raises(UnknownKeyVersion):
        retired.get(1)
    with pytest.raises(KeyStoreError):
        await store.retire(2)
    assert retired.get(2).created_at == _CLOCK.now()


async def test_file_store_is_private_and_reloads_identically(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    store = FileKeyStore(directory, clock=_CLOCK)
    ring = await store.initialise()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    reloaded = await FileKeyStore(directory).load()
    domain = Domain("riec")
    assert reloaded.public_key == ring.public_key
    assert reloaded.current_version.reshuffle_factor(domain) == ring.current_version.reshuffle_factor(domain)
    document = json.loads(store.path.read_text())
    assert document["format"] == "wgs-gateway/pseudonym-keys"
    assert document["current"] == 1
    secrets = [document["versions"][0][name]
               for name in ("elgamal_secret", "pseudonymisation_secret", "rekey_secret")]
    for text in (repr(store), repr(reloaded), repr(reloaded.current_version), str(reloaded.current_version)):
        for secret in secrets:
            assert secret not in text


async def test_file_store_refuses_loose_permissions_and_symlinks(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    await store.initialise()
    os.chmod(store.path, 0o640)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        await store.load()
    os.chmod(store.path, 0o600)
    link_dir = tmp_path / "linked"
    link_dir.mkdir()
    (link_dir / "pseudonym-keys.json").symlink_to(store.path)
    with pytest.raises(KeyStoreError, match="regular file"):
        await FileKeyStore(link_dir).load()


@pytest.mark.parametrize("corruption", ["public_key", "secret", "format", "current", "json", "duplicate"])
async def test_file_store_detects_corruption_without_echoing_secrets(tmp_path: Path, corruption: str) -> None:
    store = FileKeyStore(tmp_path / "keys")
    await store.initialise()
    await store.rotate()
    document = json.loads(store.path.read_text())
    secret = document["versions"][0]["elgamal_secret"]
    if corruption == "public_key":
        document["versions"][0]["public_key"] = document["versions"][1]["public_key"]
    elif corruption == "secret":
        document["versions"][0]["rekey_secret"] = "not-base64!"
    elif corruption == "format":
        document["format"] = "something else"
    elif corruption == "current":
        document["current"] = 7
    elif corruption == "duplicate":
        document["versions"][1]["version"] = 1
    text = "{not json" if corruption == "json" else json.dumps(document)
    store.path.write_text(text)
    os.chmod(store.path, 0o600)
    with pytest.raises(KeyStoreError) as caught:
        await store.load()
    assert secret not in str(caught.value)


async def test_rotation_through_the_file_store_survives_a_reload(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    await store.initialise()
    await store.rotate()
    await store.rotate()
    ring = await FileKeyStore(tmp_path).load()
    assert ring.current == 3
    assert len({bytes(ring.get(v).public_key) for v in (1, 2, 3)}) == 3
    assert not list(tmp_path.glob("*.tmp"))

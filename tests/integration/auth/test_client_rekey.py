"""Giving a partner system's client new credentials (``clients add`` again, after a key or secret leaked) ends
the tokens it got before, within the refresh interval and without a database read per request; the re-key
is audited, together with the change or not at all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from audit import store
from audit.tables import audit_entries
from gateway.auditing.setup import load_or_create_checkpoint_key
from gateway.auth import passwords, repository
from gateway.auth.access_changes import Registration, register_client
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import Conflict, ServiceUnavailable
from gateway.register.loader import load_register
from tests.auth_helpers import ClientKeys, bearer, fetch_token

SYSTEM = "politie-bvh"


def _rekey(container: Container, kid: str) -> ClientKeys:
    """What `wgs-gateway clients add SYSTEM --jwks-file ...` does, with a new key."""
    key = OKPKey.generate_key("Ed25519", parameters={"kid": kid})
    register, _ = load_register(container.settings.register_file)
    register_client(container.settings, container.engine, register, SYSTEM, ["register:read"], container.clock,
                    jwks={"keys": [key.as_dict(private=False)]})
    return ClientKeys(SYSTEM, key, "Ed25519")


def _rekey_secret(container: Container) -> Registration:
    """What `wgs-gateway clients add SYSTEM --generate-secret` does (after `keys init`)."""
    load_or_create_checkpoint_key(container.settings.key_dir)
    register, _ = load_register(container.settings.register_file)
    return register_client(container.settings, container.engine, register, SYSTEM, ["register:read"],
                           container.clock)


def _stored(container: Container) -> repository.ClientRecord:
    with transaction(container.sessions) as session:
        found = repository.get_client(session, SYSTEM)
    assert found is not None
    return found


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return response.json()  # type: ignore[no-any-return]


def _cli_entries(container: Container) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [e for e in events if e["extra"].get("channel") == "cli"]


def _generation(container: Container) -> int:
    with transaction(container.sessions) as session:
        found = repository.get_client(session, SYSTEM)
    assert found is not None
    return found.key_generation


def test_a_token_got_before_a_re_key_is_refused_and_one_got_after_works(client: TestClient,
                                                                          container: Container) -> None:
    leaked = _rekey(container, "first")  # a new client: registered, no entry
    old = fetch_token(client, container, leaked)
    assert client.get("/v1/register", headers=bearer(old)).status_code == 200  # verified and remembered
    assert _cli_entries(container) == []
    renewed = _rekey(container, "second")
    auth_services(container).disabled.load()  # what the timer does every interval
    refused = _problem(client.get("/v1/register", headers=bearer(old)), 401)
    assert "new credentials" in refused["detail"]
    new = fetch_token(client, container, renewed)
    assert client.get("/v1/register", headers=bearer(new)).status_code == 200
    _problem(client.get("/v1/register", headers=bearer(old)), 401)  # still, after a valid token of the client
    [entry] = _cli_entries(container)
    assert entry["requester"] == {"org": "politie", "system": None, "user": None}
    assert entry["extra"] == {"action": "client-rekeyed", "channel": "cli", "client": SYSTEM, "key_generation": 1}
    _rekey(container, "third")  # a second re-key ends the second key's tokens the same way
    auth_services(container).disabled.load()
    _problem(client.get("/v1/register", headers=bearer(new)), 401)
    assert [e["extra"]["key_generation"] for e in _cli_entries(container)] == [1, 2]


def test_a_re_key_that_fails_in_the_logs_transaction_changes_nothing(client: TestClient, container: Container,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The new key is written, then the transaction fails: the old key (and its tokens) stay, with no entry."""
    first = _rekey(container, "first")
    real = repository.upsert_client

    def written_then_failed(connection: Connection, record: repository.ClientRecord, created_at: Any) -> bool:
        assert real(connection, record, created_at)
        raise Conflict("failed after the change")

    monkeypatch.setattr(repository, "upsert_client", written_then_failed)
    with pytest.raises(Conflict):
        _rekey(container, "second")
    monkeypatch.undo()
    assert _generation(container) == 0
    assert _cli_entries(container) == []
    token = fetch_token(client, container, first)  # the old key still gets tokens, and they work
    auth_services(container).disabled.load()
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("generation", ["1", -1, True, 1.5, [1]])
def test_a_token_with_a_bad_generation_claim_is_401_not_500(client: TestClient, container: Container,
                                                           generation: object) -> None:
    """Only the gateway's own key could sign one; still never read as generation 0 nor a 500."""
    key = auth_services(container).keys.current()
    now = int(container.clock.now().timestamp())
    claims = {"iss": container.settings.issuer, "aud": container.settings.audience, "sub": SYSTEM, "org": "politie",
              "scope": "register:read", "iat": now, "exp": now + 300, "jti": "t-1", "kind": "system",
              "gen": generation}
    token = jwt.encode({"alg": "Ed25519", "kid": key.kid}, claims, key, algorithms=["Ed25519"])
    assert "`gen`" in _problem(client.get("/v1/register", headers=bearer(token)), 401)["detail"]


class _LockWatch:
    """Tells whether the audit log's append transaction (which holds its write lock) is open, and records it
    for every argon2 hash made."""

    def __init__(self) -> None:
        self.locked = False
        self.hashed_under_lock: list[bool] = []
        self.appends = 0


def test_a_secret_re_key_hashes_the_secret_before_taking_the_audit_logs_lock(container: Container,
                                                                             monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    """The hash is deliberately slow; made under the append lock it held up every audited write meanwhile."""
    first = _rekey_secret(container)
    watch = _LockWatch()
    real_transaction, real_hasher = store.append_transaction, passwords._hasher

    @contextmanager
    def watched(engine: Engine, held: Connection | None = None) -> Iterator[store.AppendTransaction]:
        with real_transaction(engine, held) as open_transaction:
            watch.locked, watch.appends = True, watch.appends + 1
            try:
                yield open_transaction
            finally:
                watch.locked = False

    class WatchedHasher:
        def hash(self, secret: str) -> str:
            watch.hashed_under_lock.append(watch.locked)
            return real_hasher.hash(secret)

    monkeypatch.setattr(store, "append_transaction", watched)
    monkeypatch.setattr(passwords, "_hasher", WatchedHasher())
    renewed = _rekey_secret(container)
    monkeypatch.undo()
    assert renewed.rekeyed
    assert watch.appends == 1  # the re-key was audited through the watched lock ...
    assert watch.hashed_under_lock == [False]  # ... and its one hash was made before it was taken
    stored = _stored(container)
    assert stored.key_generation == 1
    assert stored.secret_hash is not None
    assert passwords.verify_secret(stored.secret_hash, renewed.secret or "")
    assert not passwords.verify_secret(stored.secret_hash, first.secret or "")
    assert [e["extra"]["action"] for e in _cli_entries(container)] == ["client-rekeyed"]


def test_a_secret_re_key_whose_audit_append_fails_leaves_the_client_as_it_was(container: Container,
                                                                              monkeypatch: pytest.MonkeyPatch
                                                                              ) -> None:
    """The new hash is written in the append's transaction, then the append fails to commit: nothing stays."""
    first = _rekey_secret(container)
    before = _stored(container)
    real_transaction = store.append_transaction

    @contextmanager
    def failing(engine: Engine, held: Connection | None = None) -> Iterator[store.AppendTransaction]:
        with real_transaction(engine, held) as open_transaction:
            yield open_transaction
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(store, "append_transaction", failing)
    with pytest.raises(ServiceUnavailable, match="audit log could not be written"):
        _rekey_secret(container)
    monkeypatch.undo()
    assert _stored(container) == before
    assert before.secret_hash is not None
    assert passwords.verify_secret(before.secret_hash, first.secret or "")
    assert _cli_entries(container) == []

"""Giving a partner system's client new credentials (``clients add`` again, after a key or secret leaked) ends
the tokens it got before, within the refresh interval and without a database read per request; the re-key
is audited, together with the change or not at all."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import Connection, select

from audit.tables import audit_entries
from gateway.auth import repository
from gateway.auth.access_changes import register_client
from gateway.auth.setup import auth_services
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.errors import Conflict
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

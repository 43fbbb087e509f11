"""Client secrets are stored as argon2id hashes only: the plain secret is in no column of the client's row."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.auth.tables import oauth_clients
from gateway.container import Container
from tests.auth_helpers import register_secret

SYSTEM = "kvk-handelsregister"


def test_a_client_secret_is_stored_as_an_argon2_hash_only(client: TestClient, container: Container) -> None:
    secret = register_secret(container, SYSTEM, ["exchange", "register:read"])
    assert len(secret) >= 32
    with container.engine.connect() as connection:
        row = connection.execute(select(oauth_clients).where(oauth_clients.c.client_id == SYSTEM)).mappings().one()
    assert row["auth_method"] == "client_secret"
    assert row["jwks"] is None
    for column, value in row.items():
        assert secret not in str(value), column
        assert secret[:12] not in str(value), column  # not even a prefix of it
    stored = row["secret_hash"]
    assert stored.startswith("$argon2id$")
    hasher = PasswordHasher()
    assert hasher.verify(stored, secret)
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stored, secret + "x")
    # And the stored hash is what the token endpoint checks against.
    response = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                                 "client_secret": secret})
    assert response.status_code == 200, response.text
    assert secret not in response.text


def test_re_registering_a_secret_client_replaces_the_hash(container: Container) -> None:
    first = register_secret(container, SYSTEM, ["exchange"])
    second = register_secret(container, SYSTEM, ["exchange"])
    assert first != second
    with container.engine.connect() as connection:
        stored = connection.execute(select(oauth_clients.c.secret_hash)).scalars().all()
    assert len(stored) == 1
    hasher = PasswordHasher()
    assert hasher.verify(stored[0], second)
    with pytest.raises(VerifyMismatchError):
        hasher.verify(stored[0], first)

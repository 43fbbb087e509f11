"""Real credentials for tests: registered clients with real keys, real assertions, real tokens.

Everything goes through the production code paths (client registration service, the token endpoint), so
tests of other routes authenticate exactly as partner systems do.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache

from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from gateway.auth.accounts import create_account
from gateway.auth.clients import register_key_client, register_secret_client
from gateway.auth.endpoints import token_endpoint_url
from gateway.container import Container
from gateway.db.engine import transaction
from gateway.register.loader import parse_register
from gateway.register.model import Register

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class ClientKeys:
    system_id: str
    key: OKPKey | ECKey
    alg: str


def _register(container: Container) -> Register:
    """The container's register file, parsed as the registration commands parse it (re-read every time, so a
    test that edits the file is seen), each text once: tests register clients by the dozen and the parse is
    most of a registration's time. A register is a frozen model that registration only reads, so sharing
one between tests shares no state."""
    path = container.settings.register_file
    return _parsed(path.read_text(encoding="utf-8"), str(path))


@cache
def _parsed(text: str, source: str) -> Register:
    return parse_register(text, source)


def register_client(container: Container, system_id: str, scopes: list[str], alg: str = "Ed25519") -> ClientKeys:
    key: OKPKey | ECKey = (OKPKey.generate_key("Ed25519", parameters={"kid": f"{system_id}-1"}) if alg == "Ed25519"
                           else ECKey.generate_key("P-256", parameters={"kid": f"{system_id}-1"}))
    with transaction(container.sessions) as session:
        register_key_client(session, _register(container), system_id, scopes,
                            {"keys": [key.as_dict(private=False)]}, container.clock)
    return ClientKeys(system_id, key, alg)


def register_secret(container: Container, system_id: str, scopes: list[str]) -> str:
    with transaction(container.sessions) as session:
        _, secret = register_secret_client(session, _register(container), system_id, scopes, container.clock)
    return secret


def client_assertion(container: Container, keys: ClientKeys, *, audience: str | list[str] | None = None,
                     jti: str | None = None, lifetime: int = 60, issued_offset: int = 0,
                     subject: str | None = None, signing_key: OKPKey | ECKey | None = None) -> str:
    now = int(container.clock.now().timestamp()) + issued_offset
    claims = {"iss": keys.system_id, "sub": subject or keys.system_id,
              "aud": audience or token_endpoint_url(container), "iat": now, "exp": now + lifetime,
              "jti": jti or str(uuid.uuid4())}
    key = signing_key or keys.key
    return jwt.encode({"alg": keys.alg, "kid": keys.key.kid}, claims, key, algorithms=[keys.alg])


def token_form(assertion: str, scope: str | None = None) -> dict[str, str]:
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion}
    if scope:
        form["scope"] = scope
    return form


def fetch_token(client: TestClient, container: Container, keys: ClientKeys, scope: str | None = None) -> str:
    response = client.post("/oauth/token", data=token_form(client_assertion(container, keys), scope))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def system_token(client: TestClient, container: Container, system_id: str, scopes: list[str]) -> str:
    """Register ``system_id`` with a fresh key and get an access token through the token endpoint."""
    return fetch_token(client, container, register_client(container, system_id, scopes))


def person_token(client: TestClient, container: Container, username: str, organisation: str,
                 roles: list[str], password: str = "correct horse battery staple") -> str:
    with transaction(container.sessions) as session:
        create_account(session, username, organisation, roles, password, container.clock)
    response = client.post("/v1/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def issued_person_token(container: Container, username: str, organisation: str, roles: list[str]) -> str:
    """The token ``POST /v1/auth/login`` issues to this person (:meth:`AuthServices.person_token`), without the
    argon2 hashes of creating the account and signing in: the account gets a hash no password matches."""
    from gateway.auth import repository
    from gateway.auth.setup import auth_services
    from gateway.ids import new_id

    with transaction(container.sessions) as session:
        account = repository.get_account(session, username)
        if account is None:
            account = repository.AccountRecord(new_id(), username, organisation, sorted(roles), "unusable", True)
            repository.insert_account(session, account, container.clock.now())
    return auth_services(container).person_token(account).access_token


def account_id(container: Container, username: str) -> str:
    """The id of ``username``'s account: how audit entries name the person (never by username)."""
    from gateway.auth.repository import get_account

    with transaction(container.sessions) as session:
        found = get_account(session, username)
    assert found is not None, username
    return found.id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}

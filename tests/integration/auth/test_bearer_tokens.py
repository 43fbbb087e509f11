"""Every API route checks the bearer token and its scope; forged, foreign and stale tokens fail."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from fastapi import FastAPI
from fastapi.dependencies.utils import get_dependant
from fastapi.security.base import SecurityBase
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OctKey, OKPKey

from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container
from gateway.exchange.endpoints import create_exchange
from tests.auth_helpers import bearer, person_token, system_token

pytestmark = pytest.mark.usefixtures("cheap_password_hashing")  # its subject is not the password hashing

SYSTEM = "politie-bvh"
# The check under test is in memory (signature and claims against the key store), no database involved: SQLite
# only. Tests that issue tokens, log people in or count failures run on both databases (see conftest.py).
IN_MEMORY_ONLY = pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)


def _claims(container: Container, **overrides: object) -> dict[str, object]:
    now = int(container.clock.now().timestamp())
    claims: dict[str, object] = {"iss": container.settings.issuer, "aud": container.settings.audience,
                                 "sub": SYSTEM, "org": "politie", "scope": "register:read", "iat": now,
                                 "exp": now + 300, "jti": "t-1", "kind": "system"}
    claims.update(overrides)
    return claims


def _assert_401(response: object) -> None:
    assert response.status_code == 401, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    assert response.headers["www-authenticate"].startswith("Bearer")  # type: ignore[attr-defined]


@IN_MEMORY_ONLY
def test_missing_or_malformed_authorization_is_401(client: TestClient) -> None:
    _assert_401(client.get("/v1/register"))
    _assert_401(client.get("/v1/register", headers={"Authorization": "Basic abc"}))
    _assert_401(client.get("/v1/register", headers=bearer("garbage")))


@pytest.mark.parametrize("header", [b"[" * 5000 + b"]" * 5000, b"{}" + b" " * 20_000],
                         ids=["nested-past-the-parser", "oversized"])
def test_a_hostile_token_header_is_401_not_500(client: TestClient, header: bytes) -> None:
    """The header is read before any key is chosen: attacker's bytes, refused as malformed."""
    segment = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    _assert_401(client.get("/v1/register", headers=bearer(f"{segment}.e30.AAAA")))


@IN_MEMORY_ONLY
def test_token_signed_by_a_foreign_key_is_401(client: TestClient, container: Container) -> None:
    attacker = OKPKey.generate_key("Ed25519", parameters={"kid": auth_services(container).keys.current_kid()})
    forged = jwt.encode({"alg": "Ed25519", "kid": attacker.kid}, _claims(container), attacker, algorithms=["Ed25519"])
    _assert_401(client.get("/v1/register", headers=bearer(forged)))


def test_token_with_a_changed_claim_is_401(client: TestClient, container: Container) -> None:
    token = system_token(client, container, SYSTEM, ["register:read"])
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["org"] = "belastingdienst"
    tampered = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    _assert_401(client.get("/v1/register", headers=bearer(f"{header}.{tampered}.{signature}")))


@IN_MEMORY_ONLY
@pytest.mark.parametrize("claim", [{"aud": "another-gateway"}, {"iss": "https://evil.example"},
                                   {"exp": 1}, {"kind": "robot"}])
def test_token_with_wrong_audience_issuer_expiry_or_kind_is_401(client: TestClient, container: Container,
                                                                claim: dict[str, object]) -> None:
    key = auth_services(container).keys.current()
    token = jwt.encode({"alg": "Ed25519", "kid": key.kid}, _claims(container, **claim), key, algorithms=["Ed25519"])
    _assert_401(client.get("/v1/register", headers=bearer(token)))


@IN_MEMORY_ONLY
def test_alg_none_and_hmac_tokens_are_401(client: TestClient, container: Container) -> None:
    def b64(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(_claims(container))}."
    _assert_401(client.get("/v1/register", headers=bearer(unsigned)))
    # HS256 keyed with the public key bytes: the classic algorithm-confusion attack.
    public_x = auth_services(container).keys.jwks()["keys"][0]["x"]
    hmac_key = OctKey.import_key(public_x.encode())
    confused = jwt.encode({"alg": "HS256"}, _claims(container), hmac_key, algorithms=["HS256"])
    _assert_401(client.get("/v1/register", headers=bearer(confused)))


def test_valid_token_without_the_scope_is_403(client: TestClient, container: Container) -> None:
    token = system_token(client, container, SYSTEM, ["exchange"])
    response = client.get("/v1/register", headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["required_scope"] == "register:read"


def test_key_rotation_keeps_old_tokens_valid_until_expiry(client: TestClient, container: Container,
                                                          clock: FixedClock) -> None:
    old_token = system_token(client, container, SYSTEM, ["register:read"])
    keys = auth_services(container).keys
    old_kid = keys.current().kid
    new_kid = keys.rotate()
    assert new_kid != old_kid
    assert {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]} == {old_kid, new_kid}
    assert client.get("/v1/register", headers=bearer(old_token)).status_code == 200
    new_token = system_token(client, container, "belastingdienst-ivs", ["register:read"])
    assert jwt.decode(new_token, keys.verification_keys(), algorithms=["Ed25519"]).header["kid"] == new_kid
    clock.advance(timedelta(seconds=container.settings.access_token_ttl_seconds + 400))
    assert {key["kid"] for key in client.get("/.well-known/jwks.json").json()["keys"]} == {new_kid}
    _assert_401(client.get("/v1/register", headers=bearer(old_token)))


def test_people_log_in_and_get_scopes_from_their_roles(client: TestClient, container: Container) -> None:
    token = person_token(client, container, "po-gemeente", "gemeente-amsterdam", ["privacy-officer"])
    claims = jwt.decode(token, auth_services(container).keys.verification_keys(), algorithms=["Ed25519"]).claims
    assert claims["kind"] == "person"
    assert claims["org"] == "gemeente-amsterdam"
    assert set(claims["scope"].split()) == {"audit:read", "escalation", "register:read"}
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200


def test_wrong_password_is_401_and_repeated_failures_are_throttled(client: TestClient, container: Container) -> None:
    person_token(client, container, "admin-riec", "riec-aa", ["administrator"])
    for _ in range(5):
        response = client.post("/v1/auth/login", json={"username": "admin-riec", "password": "wrong password!"})
        assert response.status_code == 401
        assert "password" in response.json()["detail"]
    throttled = client.post("/v1/auth/login", json={"username": "admin-riec",
                                                    "password": "correct horse battery staple"})
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    unknown = client.post("/v1/auth/login", json={"username": "nobody", "password": "whatever it is"})
    assert unknown.status_code == 401


# -- remembered tokens: the verification result is reused, never widened ----------------------------
def test_a_remembered_token_is_rejected_once_it_expires(client: TestClient, container: Container,
                                                        clock: FixedClock) -> None:
    token = system_token(client, container, SYSTEM, ["register:read"])
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200  # verified and remembered
    clock.advance(timedelta(seconds=container.settings.access_token_ttl_seconds + 29))  # within the leeway
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    clock.advance(timedelta(seconds=2))  # past exp + 30 s leeway; the signing key was never rotated
    _assert_401(client.get("/v1/register", headers=bearer(token)))


def test_changed_copies_of_a_remembered_token_are_rejected(client: TestClient, container: Container) -> None:
    token = system_token(client, container, SYSTEM, ["register:read"])
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "register:read audit:read"
    widened = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    _assert_401(client.get("/v1/register", headers=bearer(f"{header}.{widened}.{signature}")))
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    _assert_401(client.get("/v1/register", headers=bearer(f"{header}.{payload}.{flipped}")))
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200  # the original still works


@IN_MEMORY_ONLY
def test_a_remembered_token_of_a_retired_key_is_rejected(client: TestClient, container: Container,
                                                        clock: FixedClock) -> None:
    keys = auth_services(container).keys
    signing = keys.current()
    now = int(clock.now().timestamp())
    long_lived = jwt.encode({"alg": "Ed25519", "kid": signing.kid}, _claims(container, exp=now + 30 * 86400),
                            signing, algorithms=["Ed25519"])
    assert client.get("/v1/register", headers=bearer(long_lived)).status_code == 200  # remembered
    keys.rotate()
    assert client.get("/v1/register", headers=bearer(long_lived)).status_code == 200  # key superseded, not retired
    clock.advance(timedelta(seconds=container.settings.access_token_ttl_seconds + 400))  # the old key retires
    _assert_401(client.get("/v1/register", headers=bearer(long_lived)))  # its exp is still weeks away


def test_the_exchange_solves_one_dependency_that_is_the_bearer_scheme_itself(app: FastAPI) -> None:
    """Each dependency FastAPI solves costs the event loop on every request: the exchange's scope check is one
    dependency, declared as the bearer security scheme itself (the OpenAPI document still shows it), with
    nothing under it; the container is read in the route."""
    dependant = get_dependant(path="/v1/exchanges", call=create_exchange)
    [check] = dependant.dependencies
    assert isinstance(check.call, SecurityBase)
    assert check.dependencies == []
    operation = app.openapi()["paths"]["/v1/exchanges"]["post"]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert app.openapi()["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "An access token from POST /oauth/token or /v1/auth/login."}


@IN_MEMORY_ONLY
def test_a_token_without_the_scope_is_403_problem_json_naming_the_scope(client: TestClient,
                                                                         container: Container) -> None:
    token = system_token(client, container, SYSTEM, ["register:read"])
    response = client.post("/v1/exchanges", json={}, headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["required_scope"] == "exchange"

"""The OAuth2 token endpoint: issuance by private_key_jwt and by secret, and every rejection."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import OKPKey
from sqlalchemy import select

from gateway.auth.endpoints import token_endpoint_url
from gateway.auth.tables import used_client_assertions
from gateway.clock import FixedClock
from gateway.container import Container
from tests.auth_helpers import (
    ClientKeys,
    bearer,
    client_assertion,
    fetch_token,
    register_client,
    register_secret,
    token_form,
)

SYSTEM = "gemeente-amsterdam-vth"


def _problem(response: object, status: int, error: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["error"] == error
    assert body["status"] == status
    return body


@pytest.mark.parametrize("alg", ["Ed25519", "ES256"])
def test_private_key_jwt_issues_a_signed_token_with_the_required_claims(
        client: TestClient, container: Container, alg: str) -> None:
    keys = register_client(container, SYSTEM, ["exchange", "discovery"], alg=alg)
    response = client.post("/oauth/token", data=token_form(client_assertion(container, keys)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "discovery exchange"
    assert response.headers["cache-control"] == "no-store"
    jwks = client.get("/.well-known/jwks.json").json()
    decoded = jwt.decode(body["access_token"], OKPKey.import_key(jwks["keys"][0]), algorithms=["Ed25519"])
    claims = decoded.claims
    assert claims["iss"] == container.settings.issuer
    assert claims["aud"] == container.settings.audience
    assert claims["sub"] == SYSTEM
    assert claims["org"] == "gemeente-amsterdam"
    assert claims["exp"] - claims["iat"] == container.settings.access_token_ttl_seconds
    assert claims["jti"]
    assert decoded.header["kid"] == jwks["keys"][0]["kid"]


def test_requested_scope_narrows_and_unregistered_scope_is_refused(client: TestClient, container: Container) -> None:
    keys = register_client(container, SYSTEM, ["exchange", "discovery"])
    narrowed = client.post("/oauth/token", data=token_form(client_assertion(container, keys), "exchange"))
    assert narrowed.json()["scope"] == "exchange"
    refused = client.post("/oauth/token", data=token_form(client_assertion(container, keys), "exchange admin"))
    _problem(refused, 400, "invalid_scope")


def test_a_scope_asked_twice_is_granted_once(client: TestClient, container: Container) -> None:
    """The scope is a set (RFC 6749 §3.3): the answer and the token's claim name each scope once."""
    keys = register_client(container, SYSTEM, ["exchange", "discovery"])
    granted = client.post("/oauth/token", data=token_form(client_assertion(container, keys),
                                                          "exchange discovery exchange"))
    assert granted.status_code == 200, granted.text
    assert granted.json()["scope"] == "discovery exchange"
    jwks = client.get("/.well-known/jwks.json").json()
    claims = jwt.decode(granted.json()["access_token"], OKPKey.import_key(jwks["keys"][0]),
                        algorithms=["Ed25519"]).claims
    assert claims["scope"] == "discovery exchange"


@pytest.mark.parametrize("separator", ["\t", "\n", "\r", "\x0b", "\x0c", "\x1f", "\x85", "\u00a0", "\u2003",
                                       "\u3000"])
def test_a_scope_split_by_anything_but_a_space_is_refused(client: TestClient, container: Container,
                                                          separator: str) -> None:
    """RFC 6749 §3.3: the scope is scope-tokens of printable ASCII joined by spaces. Python's ``str.split()``
    also splits at tabs, line ends and Unicode white space, so ``exchange<TAB>discovery`` got a token for
    both, where a proxy, a filter or a log on the way in reads one unknown scope (or none it guards): a
    token request two readers read differently, as a repeated form parameter is. Refused, and no token."""
    keys = register_client(container, SYSTEM, ["exchange", "discovery"])
    refused = client.post("/oauth/token", data=token_form(client_assertion(container, keys),
                                                          f"exchange{separator}discovery"))
    body = _problem(refused, 400, "invalid_scope")
    assert "access_token" not in body
    spaced = client.post("/oauth/token", data=token_form(client_assertion(container, keys), "exchange discovery"))
    assert spaced.status_code == 200, spaced.text


@pytest.mark.parametrize("style", ["basic", "post"])
def test_client_secret_authentication(client: TestClient, container: Container, style: str) -> None:
    secret = register_secret(container, SYSTEM, ["exchange"])
    if style == "basic":
        credentials = base64.b64encode(f"{SYSTEM}:{secret}".encode()).decode()
        response = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                               headers={"Authorization": f"Basic {credentials}"})
    else:
        response = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                                     "client_secret": secret})
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "exchange"
    wrong = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": SYSTEM,
                                              "client_secret": secret + "x"})
    body = _problem(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert secret not in str(body)


def test_replayed_assertion_is_refused(client: TestClient, container: Container) -> None:
    keys = register_client(container, SYSTEM, ["exchange"])
    assertion = client_assertion(container, keys, jti="same-jti")
    assert client.post("/oauth/token", data=token_form(assertion)).status_code == 200
    body = _problem(client.post("/oauth/token", data=token_form(assertion)), 401, "invalid_client")
    assert "replay" in str(body["detail"])
    fresh_with_same_jti = client_assertion(container, keys, jti="same-jti", issued_offset=1)
    _problem(client.post("/oauth/token", data=token_form(fresh_with_same_jti)), 401, "invalid_client")


def test_forged_assertion_signed_by_another_key_is_refused(client: TestClient, container: Container) -> None:
    keys = register_client(container, SYSTEM, ["exchange"])
    attacker = OKPKey.generate_key("Ed25519")
    forged = client_assertion(container, keys, signing_key=attacker)
    _problem(client.post("/oauth/token", data=token_form(forged)), 401, "invalid_client")


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"lifetime": -120}, "expired"),
    ({"lifetime": 3600}, "longer"),
    ({"audience": "https://someone-else.example/token"}, "aud"),
    ({"subject": "politie-bvh"}, "sub"),
])
def test_bad_assertion_claims_are_refused(client: TestClient, container: Container, kwargs: dict[str, Any],
                                          reason: str) -> None:
    keys = register_client(container, SYSTEM, ["exchange"])
    body = _problem(client.post("/oauth/token", data=token_form(client_assertion(container, keys, **kwargs))),
                    401, "invalid_client")
    assert reason in str(body["detail"])


def test_assertion_for_another_client_is_refused(client: TestClient, container: Container) -> None:
    mine = register_client(container, SYSTEM, ["exchange"])
    register_client(container, "politie-bvh", ["exchange"])
    pretend = ClientKeys("politie-bvh", mine.key, mine.alg)  # claims to be the police, signed with our key
    _problem(client.post("/oauth/token", data=token_form(client_assertion(container, pretend))),
             401, "invalid_client")


def test_unknown_and_disabled_clients_are_refused(client: TestClient, container: Container) -> None:
    ghost = ClientKeys("no-such-system", OKPKey.generate_key("Ed25519", parameters={"kid": "g"}), "Ed25519")
    _problem(client.post("/oauth/token", data=token_form(client_assertion(container, ghost))), 401, "invalid_client")
    keys = register_client(container, SYSTEM, ["exchange"])
    from gateway.auth import repository
    from gateway.db.engine import transaction

    with transaction(container.sessions) as session:
        repository.set_client_active(session, SYSTEM, False)
    _problem(client.post("/oauth/token", data=token_form(client_assertion(container, keys))), 401, "invalid_client")


def test_malformed_requests_are_refused_without_500(client: TestClient, container: Container) -> None:
    keys = register_client(container, SYSTEM, ["exchange"])
    unsupported = token_form(client_assertion(container, keys)) | {"grant_type": "password"}
    _problem(client.post("/oauth/token", data=unsupported), 400, "unsupported_grant_type")
    _problem(client.post("/oauth/token", json={"grant_type": "client_credentials"}), 400, "invalid_request")
    garbage = token_form("not.a.jwt")
    _problem(client.post("/oauth/token", data=garbage), 401, "invalid_client")
    none_alg = token_form("eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.")
    _problem(client.post("/oauth/token", data=none_alg), 401, "invalid_client")


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # published from memory: no database
def test_metadata_and_jwks_are_published(client: TestClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["grant_types_supported"] == ["client_credentials"]
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys
    assert all("d" not in key for key in keys)  # never the private part


def test_token_expires_by_the_clock(client: TestClient, container: Container, clock: FixedClock) -> None:
    keys = register_client(container, SYSTEM, ["register:read"])
    token = fetch_token(client, container, keys)
    assert client.get("/v1/register", headers=bearer(token)).status_code == 200
    clock.advance(timedelta(seconds=container.settings.access_token_ttl_seconds + 31))
    expired = client.get("/v1/register", headers=bearer(token))
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"].startswith("Bearer")


def test_the_same_assertion_sent_twice_at_once_is_accepted_once(client: TestClient, container: Container) -> None:
    """The replay guard is the database's primary key, not a read-then-write: two requests racing with one
    assertion get one token and one invalid_client, never two tokens and never a 500."""
    keys = register_client(container, SYSTEM, ["exchange"])
    form = token_form(client_assertion(container, keys, jti="raced-jti"))
    start = threading.Barrier(2)

    def send() -> int:
        start.wait()
        return int(client.post("/oauth/token", data=form).status_code)

    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(lambda _: send(), range(2)))
    assert statuses == [200, 401]
    with container.engine.connect() as connection:
        stored = connection.execute(select(used_client_assertions.c.jti)).scalars().all()
    assert stored == ["raced-jti"]


def test_a_used_assertion_stays_refused_through_the_leeway_after_it_expires(
        client: TestClient, container: Container, clock: FixedClock) -> None:
    """The claims check accepts an assertion until ``exp`` plus the leeway; its jti must be remembered as
    long, or the expired-jti purge hands a captured assertion a second token in those seconds."""
    keys = register_client(container, SYSTEM, ["exchange"])
    assertion = client_assertion(container, keys, lifetime=60)
    assert client.post("/oauth/token", data=token_form(assertion)).status_code == 200
    clock.advance(timedelta(seconds=70))  # 10 s past exp: inside the 30 s leeway
    body = _problem(client.post("/oauth/token", data=token_form(assertion)), 401, "invalid_client")
    assert "replay" in str(body["detail"])


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_NESTED = _segment(b"[" * 5000 + b"]" * 5000)  # past the JSON parser's recursion limit
_EDDSA = _segment(b'{"alg": "Ed25519"}')
_LONE_SURROGATE_ISSUER = _segment(b'{"iss": "\\ud800"}')  # JSON escape of a lone surrogate
_LONG_ISSUER = _segment(b'{"iss": "' + b"x" * 500 + b'"}')
HOSTILE_ASSERTIONS = {
    "nested-header": f"{_NESTED}.e30.AAAA",
    "nested-claims": f"{_EDDSA}.{_NESTED}.AAAA",
    "oversized": f"{_EDDSA}.{'A' * 100_000}.AAAA",  # far longer than any assertion
    "lone-surrogate-issuer": f"{_EDDSA}.{_LONE_SURROGATE_ISSUER}.AAAA",
    "long-issuer": f"{_EDDSA}.{_LONG_ISSUER}.AAAA",
}


@pytest.mark.parametrize("assertion", list(HOSTILE_ASSERTIONS.values()), ids=list(HOSTILE_ASSERTIONS))
def test_hostile_unsigned_assertions_are_invalid_client_not_500(client: TestClient, assertion: str) -> None:
    _problem(client.post("/oauth/token", data=token_form(assertion)), 401, "invalid_client")


@pytest.mark.parametrize("repeated", ["grant_type", "scope", "client_assertion", "client_assertion_type"])
def test_a_repeated_parameter_is_invalid_request_and_uses_up_nothing(client: TestClient, container: Container,
                                                                     repeated: str) -> None:
    """RFC 6749 §3.2: a parameter MUST NOT be sent more than once. Taking the last of each (as a form parser
    does) let ``grant_type=password&grant_type=client_credentials`` through, and a proxy or log that reads
    the first sees another request than the gateway answered. Refused before the client is authenticated,
    so the assertion is not used up either."""
    keys = register_client(container, SYSTEM, ["exchange"])
    assertion = client_assertion(container, keys)
    form = token_form(assertion, "exchange")
    decoy = {"grant_type": "password", "scope": "admin", "client_assertion": client_assertion(container, keys),
             "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"}[repeated]
    pairs = [(repeated, decoy), *form.items()]
    answer = client.post("/oauth/token", content=urlencode(pairs),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    body = _problem(answer, 400, "invalid_request")
    assert repeated in str(body["error_description"])
    assert answer.headers["cache-control"] == "no-store"
    assert client.post("/oauth/token", data=form).status_code == 200  # the same assertion, sent once: fine


@pytest.mark.parametrize("audience", [["https://other-server.example", "{endpoint}"],
                                      ["{endpoint}", "https://other-server.example/token"],
                                      ["{issuer}", "wgs-gateway"]])
def test_an_assertion_also_meant_for_another_audience_is_refused(client: TestClient, container: Container,
                                                                 audience: list[str]) -> None:
    """An assertion naming other audiences besides this gateway can be replayed here by any of them (the
    audience injection of RFC 7523bis, which asks for this server alone in ``aud``): refused, with no jti
    used up, however the gateway is named among them."""
    keys = register_client(container, SYSTEM, ["exchange"])
    named = {"endpoint": token_endpoint_url(container), "issuer": container.settings.issuer}
    assertion = client_assertion(container, keys, audience=[value.format(**named) for value in audience])
    body = _problem(client.post("/oauth/token", data=token_form(assertion)), 401, "invalid_client")
    assert "aud" in str(body["detail"])
    with container.engine.connect() as connection:
        assert connection.execute(select(used_client_assertions.c.jti)).scalars().all() == []


@pytest.mark.parametrize("audience", ["{endpoint}", "{issuer}", ["{endpoint}"], ["{issuer}"],
                                      ["{issuer}", "{endpoint}"]])
def test_an_assertion_for_this_gateway_alone_is_accepted(client: TestClient, container: Container,
                                                         audience: str | list[str]) -> None:
    """The token endpoint's URL or the issuer, as a string or an array of this gateway's names only."""
    keys = register_client(container, SYSTEM, ["exchange"])
    named = {"endpoint": token_endpoint_url(container), "issuer": container.settings.issuer}
    aud = audience.format(**named) if isinstance(audience, str) else [value.format(**named) for value in audience]
    answer = client.post("/oauth/token", data=token_form(client_assertion(container, keys, audience=aud)))
    assert answer.status_code == 200, answer.text


def test_a_refused_token_request_logs_the_client_id_only_when_it_is_a_system_id(client: TestClient) -> None:
    """The caller chooses ``client_id``: a megabyte, a line break that forges a log line, or a name."""
    from structlog.testing import capture_logs

    sent = {"politie-bvh": "politie-bvh", "x" * 100_000: "<not a system id>",
            "Jan Jansen": "<not a system id>", "politie-bvh\nforged": "<not a system id>"}
    for client_id, logged in sent.items():
        with capture_logs() as logs:
            refused = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                        "client_secret": "wrong"})
        assert refused.status_code in {400, 401}
        (line,) = [entry for entry in logs if entry["event"] == "token_rejected"]
        assert line["client_id"] == logged

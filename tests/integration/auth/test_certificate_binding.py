"""Certificate-bound access tokens (RFC 8705) over the real app, on SQLite and PostgreSQL: a bound client gets a
token only over the client certificate its TLS proxy forwards, the token names that certificate
(``cnf.x5t#S256``), and every use of it must come over the same certificate. The header is believed from the
configured proxies only: anyone else can send it (a certificate is public; its private key is not).

Certificates are made here with ``cryptography``; their thumbprints are computed here too, from the DER bytes,
not with the gateway's helper."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from audit.tables import audit_entries
from gateway.app import create_app
from gateway.auth import repository
from gateway.auth.access_changes import register_client, set_certificate_bound
from gateway.auth.jose_segments import decode_segment
from gateway.auth.setup import auth_services
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import transaction
from gateway.errors import NotFound
from gateway.peer import behind_proxies
from gateway.ratelimit import RateLimitMiddleware
from gateway.register.loader import load_register
from gateway.settings import Settings
from tests.auth_helpers import ClientKeys, bearer, client_assertion, token_form
from tests.auth_helpers import register_client as register_key

SYSTEM = "politie-bvh"
PROXY = "10.0.0.7"  # the TLS proxy's address, the one in WGS_CLIENT_CERT_PROXIES
OUTSIDER = "203.0.113.9"  # a caller that reaches the gateway without the proxy
HEADER = "X-Client-Cert"


def _certificate(name: str) -> tuple[bytes, str]:
    """A self-signed client certificate as PEM, and its RFC 8705 thumbprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    return (certificate.public_bytes(serialization.Encoding.PEM),
            base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode())


PARTNER_PEM, PARTNER_THUMBPRINT = _certificate(SYSTEM)
OTHER_PEM, _ = _certificate("someone-else")


def _forwarded(pem: bytes) -> dict[str, str]:
    """The header as nginx's ``$ssl_client_escaped_cert`` fills it: the PEM, URL-encoded."""
    return {HEADER: quote(pem.decode(), safe="")}


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=db_url, log_json=True, client_cert_header=HEADER,
                    client_cert_proxies=f"{PROXY},192.0.2.0/28")  # as the env gives it


@pytest.fixture
def via_proxy(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, client=(PROXY, 40000)) as test_client:
        yield test_client


@pytest.fixture
def direct(app: FastAPI, via_proxy: TestClient) -> TestClient:
    """A caller from elsewhere, on the app ``via_proxy`` started (one start per app)."""
    return TestClient(app, client=(OUTSIDER, 40000))


def _bound_client(container: Container) -> ClientKeys:
    keys = register_key(container, SYSTEM, ["register:read"])
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, True)
    auth_services(container).disabled.load()  # what the timer does every interval (binding bumps the generation)
    return keys


def _token_response(http: TestClient, container: Container, keys: ClientKeys, headers: dict[str, str] | None = None
                    ) -> Any:
    return http.post("/oauth/token", data=token_form(client_assertion(container, keys)), headers=headers or {})


def _bound_token(via_proxy: TestClient, container: Container, keys: ClientKeys) -> str:
    response = _token_response(via_proxy, container, keys, _forwarded(PARTNER_PEM))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _claims(token: str) -> dict[str, Any]:
    return decode_segment(token.split(".")[1])


def _refused(response: Any, error: str) -> dict[str, Any]:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"] == f'Bearer error="{error}"'
    return response.json()  # type: ignore[no-any-return]


def _cli_entries(container: Container) -> list[dict[str, Any]]:
    with container.engine.connect() as connection:
        rows = connection.execute(select(audit_entries.c.canonical).order_by(audit_entries.c.log_index))
        events = [json.loads(row.canonical)["event"] for row in rows]
    return [e["extra"] for e in events if e["extra"].get("channel") == "cli"]


def test_the_metadata_advertises_bound_tokens(client: TestClient) -> None:
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert metadata["tls_client_certificate_bound_access_tokens"] is True


def test_a_bound_client_gets_a_token_bound_to_the_certificate_its_proxy_forwarded(
        via_proxy: TestClient, container: Container) -> None:
    keys = _bound_client(container)
    token = _bound_token(via_proxy, container, keys)
    assert _claims(token)["cnf"] == {"x5t#S256": PARTNER_THUMBPRINT}
    assert via_proxy.get("/v1/register", headers=bearer(token) | _forwarded(PARTNER_PEM)).status_code == 200


@pytest.mark.parametrize("headers", [{}, {HEADER: ""}, {HEADER: "not a certificate"},
                                     {HEADER: quote(PARTNER_PEM.decode() + OTHER_PEM.decode(), safe="")}],
                         ids=["none", "empty (nginx without a certificate)", "garbage", "two certificates"])
def test_a_bound_client_without_one_certificate_gets_no_token(via_proxy: TestClient, container: Container,
                                                              headers: dict[str, str]) -> None:
    keys = _bound_client(container)
    problem = _refused(_token_response(via_proxy, container, keys, headers), "invalid_client")
    assert problem["error"] == "invalid_client"
    assert "certificate" in problem["error_description"]


def test_a_certificate_header_from_a_caller_that_is_no_proxy_is_ignored(
        direct: TestClient, via_proxy: TestClient, container: Container) -> None:
    """The attack: the certificate is public, so whoever stole a bound token (or a client's key) can put the
    right certificate in the header; only its source tells it from the proxy's."""
    keys = _bound_client(container)
    _refused(_token_response(direct, container, keys, _forwarded(PARTNER_PEM)), "invalid_client")
    stolen = _bound_token(via_proxy, container, keys)
    _refused(direct.get("/v1/register", headers=bearer(stolen) | _forwarded(PARTNER_PEM)), "invalid_token")


def test_a_bound_token_without_its_certificate_or_with_another_is_refused(
        via_proxy: TestClient, container: Container) -> None:
    token = _bound_token(via_proxy, container, _bound_client(container))
    none = _refused(via_proxy.get("/v1/register", headers=bearer(token)), "invalid_token")
    assert "presented none" in none["detail"]
    other = _refused(via_proxy.get("/v1/register", headers=bearer(token) | _forwarded(OTHER_PEM)), "invalid_token")
    assert "another" in other["detail"]
    _refused(via_proxy.get("/v1/register", headers=bearer(token) | {HEADER: "%%garbage"}), "invalid_token")
    twice = [("authorization", f"Bearer {token}"), (HEADER, _forwarded(PARTNER_PEM)[HEADER]),
             (HEADER, _forwarded(PARTNER_PEM)[HEADER])]  # a proxy that appended instead of replacing
    _refused(via_proxy.get("/v1/register", headers=twice), "invalid_token")


def test_an_unbound_client_gets_tokens_without_cnf_that_work_without_a_certificate(
        via_proxy: TestClient, container: Container) -> None:
    keys = register_key(container, SYSTEM, ["register:read"])
    response = _token_response(via_proxy, container, keys, _forwarded(PARTNER_PEM))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert "cnf" not in _claims(token)
    assert via_proxy.get("/v1/register", headers=bearer(token)).status_code == 200
    assert via_proxy.get("/v1/register", headers=bearer(token) | _forwarded(OTHER_PEM)).status_code == 200


def test_binding_ends_the_unbound_tokens_and_is_audited_as_unbinding_is(
        via_proxy: TestClient, container: Container) -> None:
    keys = register_key(container, SYSTEM, ["register:read"])
    unbound = _token_response(via_proxy, container, keys).json()["access_token"]
    assert via_proxy.get("/v1/register", headers=bearer(unbound)).status_code == 200
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, True)
    auth_services(container).disabled.load()
    _refused(via_proxy.get("/v1/register", headers=bearer(unbound) | _forwarded(PARTNER_PEM)), "invalid_token")
    assert not set_certificate_bound(container.settings, container.engine, SYSTEM, True)  # already: no entry
    bound = _bound_token(via_proxy, container, keys)
    assert set_certificate_bound(container.settings, container.engine, SYSTEM, False)
    auth_services(container).disabled.load()
    # Unbound now: new tokens come without cnf, and the bound one still asks for its certificate
    assert "cnf" not in _claims(_token_response(via_proxy, container, keys).json()["access_token"])
    _refused(via_proxy.get("/v1/register", headers=bearer(bound)), "invalid_token")
    assert via_proxy.get("/v1/register", headers=bearer(bound) | _forwarded(PARTNER_PEM)).status_code == 200
    assert _cli_entries(container) == [
        {"action": "client-certificate-bound", "channel": "cli", "client": SYSTEM, "key_generation": 1},
        {"action": "client-certificate-unbound", "channel": "cli", "client": SYSTEM}]
    with pytest.raises(NotFound):
        set_certificate_bound(container.settings, container.engine, "kvk-handelsregister", True)


def test_new_credentials_keep_a_binding_and_can_give_one(via_proxy: TestClient, container: Container) -> None:
    """Leaving ``--certificate-bound`` out of a re-key must not unbind a client by the way."""
    register, _ = load_register(container.settings.register_file)
    jwks = {"keys": [register_key(container, SYSTEM, ["register:read"]).key.as_dict(private=False)]}

    def rekey(bound: bool) -> repository.ClientRecord:
        return register_client(container.settings, container.engine, register, SYSTEM, ["register:read"],
                               container.clock, jwks=jwks, certificate_bound=bound).record

    assert rekey(True).certificate_bound
    assert rekey(False).certificate_bound
    with transaction(container.sessions) as session:
        stored = repository.get_client(session, SYSTEM)
    assert stored is not None
    assert stored.certificate_bound
    assert [entry.get("certificate_bound") for entry in _cli_entries(container)] == [True, None]


def test_a_bound_token_is_checked_against_the_proxy_that_connected_not_a_forwarded_address(
        app: FastAPI, container: Container) -> None:
    """Behind ``FORWARDED_ALLOW_IPS`` the ASGI client is the partner's address, not the proxy's: the entry
    point (:func:`gateway.peer.behind_proxies`) keeps the connection's address for this check."""
    served = behind_proxies(app, forwarded_allow_ips=PROXY)
    with TestClient(served, client=(PROXY, 40000)) as proxied:
        outsider = TestClient(served, client=(OUTSIDER, 1))
        token = _bound_token(proxied, container, _bound_client(container))
        partner = {"X-Forwarded-For": "198.51.100.4"} | _forwarded(PARTNER_PEM)
        assert proxied.get("/v1/register", headers=bearer(token) | partner).status_code == 200
        # Someone naming the proxy as the one it forwards for is still not the proxy
        forged = {"X-Forwarded-For": PROXY} | _forwarded(PARTNER_PEM)
        _refused(outsider.get("/v1/register", headers=bearer(token) | forged), "invalid_token")


def test_a_copy_of_a_bound_token_spends_no_budget_of_its_system(app: FastAPI, via_proxy: TestClient,
                                                                 container: Container) -> None:
    """The rate limiter keys a request by its token's system only over the token's certificate: a copy of a
    bound token (the threat RFC 8705 answers) is keyed by its sender's address, and cannot throttle the partner
    it was taken from — also not after the partner's own request had the token remembered."""
    token = _bound_token(via_proxy, container, _bound_client(container))
    limiter = RateLimitMiddleware(app, per_second=1.0, burst=1)

    def key(client: str, headers: dict[str, str]) -> str:
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1"))
               for name, value in (bearer(token) | headers).items()]
        return limiter.client_key({"type": "http", "app": app, "client": (client, 1), "headers": raw})

    assert key(PROXY, _forwarded(PARTNER_PEM)) == f"system:{SYSTEM}"
    assert key(OUTSIDER, {}) == f"ip:{OUTSIDER}"
    assert key(OUTSIDER, _forwarded(PARTNER_PEM)) == f"ip:{OUTSIDER}"  # the header from no proxy: ignored
    assert key(PROXY, _forwarded(OTHER_PEM)) == f"ip:{PROXY}"
    assert key(PROXY, _forwarded(PARTNER_PEM)) == f"system:{SYSTEM}"


def test_without_the_setting_nothing_changes_and_bound_clients_are_refused(tmp_path: Path, db_url: str,
                                                                          clock: FixedClock) -> None:
    """The default: no header is believed from anyone, no token gets cnf, the metadata promises nothing; a
    client bound all the same gets no token (fail closed), and unbound ones work as before."""
    plain = build_container(Settings(data_dir=tmp_path, database_url=db_url), clock)
    try:
        with TestClient(create_app(container=plain), client=(PROXY, 40000)) as http:
            assert "tls_client_certificate_bound_access_tokens" not in http.get(
                "/.well-known/oauth-authorization-server").json()
            keys = register_key(plain, SYSTEM, ["register:read"])
            token = _token_response(http, plain, keys, _forwarded(PARTNER_PEM)).json()["access_token"]
            assert "cnf" not in _claims(token)
            assert http.get("/v1/register", headers=bearer(token)).status_code == 200
            assert set_certificate_bound(plain.settings, plain.engine, SYSTEM, True)
            _refused(_token_response(http, plain, keys, _forwarded(PARTNER_PEM)), "invalid_client")
    finally:
        plain.close()

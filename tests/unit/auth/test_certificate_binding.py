"""The pieces of certificate binding (RFC 8705) on their own: which peer's header is believed, how a token's
``cnf`` is read, and the settings that switch it on (both of them, or neither)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from pydantic import ValidationError
from starlette.requests import Request

from gateway.auth.certificate_binding import MAX_HEADER_BYTES, bound_thumbprint, presented_thumbprint
from gateway.errors import Unauthorized
from gateway.peer import TCP_PEER
from gateway.settings import Settings, settings_problems

HEADER = "x-client-cert"
SETTINGS = Settings(_env_file=None, client_cert_header=HEADER,
                    client_cert_proxies="10.0.0.7, fd00:1::/64")


def _pem() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, None))
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
    return certificate.public_bytes(serialization.Encoding.PEM), base64.urlsafe_b64encode(digest).decode().rstrip("=")


PEM, THUMBPRINT = _pem()


def _request(peer: str | None, *values: str, recorded: str | None = "unset") -> Request:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(HEADER.encode(), v.encode()) for v in values],
             "client": (peer, 1) if peer is not None else None}
    if recorded != "unset":
        scope[TCP_PEER] = recorded
    return Request(scope)


@pytest.mark.parametrize("peer", ["10.0.0.7", "::ffff:10.0.0.7", "fd00:1::5", "fd00:1::5%eth0"])
def test_the_header_is_believed_from_a_listed_proxy(peer: str) -> None:
    assert presented_thumbprint(_request(peer, quote(PEM.decode(), safe="")), SETTINGS) == THUMBPRINT


def test_a_pem_with_only_its_line_breaks_encoded_is_read_too() -> None:
    """A proxy that escapes no more than a header needs (the line breaks) sends the same certificate."""
    assert presented_thumbprint(_request("10.0.0.7", PEM.decode().replace("\n", "%0A")), SETTINGS) == THUMBPRINT


@pytest.mark.parametrize("peer", ["10.0.0.8", "fd00:2::5", "testclient", "/run/gateway.sock", None])
def test_the_header_is_ignored_from_anyone_else(peer: str | None) -> None:
    assert presented_thumbprint(_request(peer, quote(PEM.decode(), safe="")), SETTINGS) is None


def test_the_recorded_tcp_peer_decides_not_the_forwarded_client() -> None:
    forwarded_from_outside = _request("10.0.0.7", quote(PEM.decode(), safe=""), recorded="203.0.113.9")
    assert presented_thumbprint(forwarded_from_outside, SETTINGS) is None
    proxy_forwarding = _request("198.51.100.4", quote(PEM.decode(), safe=""), recorded="10.0.0.7")
    assert presented_thumbprint(proxy_forwarding, SETTINGS) == THUMBPRINT


@pytest.mark.parametrize("values", [(), ("",), ("x" * (MAX_HEADER_BYTES + 1),), ("-----BEGIN CERTIFICATE-----x",),
                                    (quote(PEM.decode(), safe=""),) * 2])
def test_no_single_readable_certificate_is_none(values: tuple[str, ...]) -> None:
    assert presented_thumbprint(_request("10.0.0.7", *values), SETTINGS) is None


def test_without_the_setting_no_header_is_read() -> None:
    plain = Settings(_env_file=None)
    assert presented_thumbprint(_request("10.0.0.7", quote(PEM.decode(), safe="")), plain) is None


def test_a_token_without_cnf_is_unbound_and_one_with_it_names_its_thumbprint() -> None:
    assert bound_thumbprint({"sub": "x"}) is None
    assert bound_thumbprint({"cnf": {"x5t#S256": THUMBPRINT}}) == THUMBPRINT


@pytest.mark.parametrize("cnf", [{"jkt": THUMBPRINT}, THUMBPRINT, None, {"x5t#S256": 7}, {"x5t#S256": "short"}, [],
                                 {"x5t#S256": "\u00e9" * 43}, {"x5t#S256": "=" * 43}])
def test_a_cnf_the_gateway_cannot_check_is_refused_not_ignored(cnf: object) -> None:
    with pytest.raises(Unauthorized, match="cnf"):
        bound_thumbprint({"cnf": cnf})


@pytest.mark.parametrize(("values", "problem"), [
    ({"client_cert_header": "X-Client-Cert"}, "WGS_CLIENT_CERT_PROXIES: WGS_CLIENT_CERT_HEADER is set"),
    ({"client_cert_proxies": "10.0.0.7"}, "WGS_CLIENT_CERT_PROXIES: set WGS_CLIENT_CERT_HEADER too"),
    ({"client_cert_header": "X-Client-Cert", "client_cert_proxies": "10.0.0.7/24"}, "CIDR form without host bits"),
    ({"client_cert_header": "X-Client-Cert", "client_cert_proxies": "proxy.example"}, "an IP address"),
    ({"client_cert_header": "Authorization", "client_cert_proxies": "10.0.0.7"}, "reads for something else"),
    ({"client_cert_header": "X Client Cert", "client_cert_proxies": "10.0.0.7"}, "not an HTTP header name"),
])
def test_the_settings_are_both_or_neither_and_well_formed(values: dict[str, str], problem: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, **values)  # type: ignore[arg-type]  # strings, as the environment gives them
    [line] = settings_problems(refused.value)
    assert problem in line
    assert "10.0.0.7" not in line


def test_the_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGS_CLIENT_CERT_HEADER", "X-SSL-Client-Cert")
    monkeypatch.setenv("WGS_CLIENT_CERT_PROXIES", "10.0.0.7, 192.0.2.0/28,::1")
    settings = Settings(_env_file=None)
    assert settings.client_cert_header == "x-ssl-client-cert"
    assert [str(network) for network in settings.client_cert_proxies] == ["10.0.0.7/32", "192.0.2.0/28", "::1/128"]
    default = Settings(_env_file=None, client_cert_header=None, client_cert_proxies=[])
    assert (default.client_cert_header, default.client_cert_proxies) == (None, [])

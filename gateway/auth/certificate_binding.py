"""Certificate-bound access tokens (RFC 8705) where a proxy terminates TLS.

The gateway speaks plain HTTP. A proxy in front of it terminates TLS, asks partner systems for a client
certificate, verifies it (against the partnership's CA) and forwards it to the gateway in one header,
``WGS_CLIENT_CERT_HEADER``, as URL-encoded PEM (nginx's ``$ssl_client_escaped_cert``; Envoy, HAProxy and
Traefik can be set up to send the same). A client registered as certificate-bound gets a token only over such
a certificate, and the token says which one: ``cnf: {"x5t#S256": <thumbprint>}`` (RFC 8705 §3.1). Every
use of that token must come over the same certificate (§3): a copy of the token is of no use without the
certificate's private key.

Checklist of :func:`presented_thumbprint`; any failure means "no certificate", never an error of its own
(whatever needs a certificate then refuses: the token endpoint with ``invalid_client``, a bound token's
check with ``invalid_token``):

1. the feature is configured (``WGS_CLIENT_CERT_HEADER``);
2. the request's TCP peer (:func:`gateway.peer.tcp_peer`, not an address from ``X-Forwarded-For``) is one of
   ``WGS_CLIENT_CERT_PROXIES``: anyone can send the header, and only a proxy that sets it (replacing what
   the caller sent) says something;
3. the header is there once, not empty (nginx sends it empty when the caller gave no certificate), and not
   longer than :data:`MAX_HEADER_BYTES`;
4. its value, URL-decoded, is one PEM certificate that parses as X.509.

The thumbprint is the base64url (unpadded) SHA-256 of the certificate's DER encoding. Nothing of the
certificate is logged: its subject may name a person.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from ipaddress import ip_address
from typing import TypeGuard
from urllib.parse import unquote_to_bytes

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.requests import Request

from gateway.errors import Unauthorized
from gateway.peer import tcp_peer
from gateway.settings import Settings

log = structlog.get_logger("gateway.auth.certificate_binding")

CONFIRMATION_CLAIM = "cnf"
THUMBPRINT_MEMBER = "x5t#S256"
MAX_HEADER_BYTES = 16 * 1024
"""A certificate of a partner system is 1-3 KiB as PEM, three times that URL-encoded at most."""
THUMBPRINT_LENGTH = 43
"""Characters of an unpadded base64url SHA-256 digest."""
_THUMBPRINT = re.compile(rf"[A-Za-z0-9_-]{{{THUMBPRINT_LENGTH}}}")
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"


def is_thumbprint(value: object) -> TypeGuard[str]:
    """Whether ``value`` has the shape of an ``x5t#S256``: 43 base64url characters (ASCII, so comparable with
    ``hmac.compare_digest``)."""
    return isinstance(value, str) and _THUMBPRINT.fullmatch(value) is not None


def thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1's ``x5t#S256`` of a certificate in DER."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def binding_configured(settings: Settings) -> bool:
    return settings.client_cert_header is not None


def _from_trusted_proxy(request: Request, settings: Settings) -> bool:
    peer = tcp_peer(request.scope)
    try:
        address = ip_address(peer.partition("%")[0]) if peer else None  # an IPv6 zone is no part of the address
    except ValueError:  # a Unix socket's path, a test client's name: no proxy of the list
        return False
    if address is not None and address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports an IPv4 proxy as ::ffff:a.b.c.d
    return address is not None and any(address in network for network in settings.client_cert_proxies)


def _certificate_der(value: str) -> bytes | None:
    pem = unquote_to_bytes(value.strip()).strip()
    if not pem.startswith(_PEM_BEGIN) or pem.count(_PEM_BEGIN) != 1:
        return None
    try:
        return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError:
        return None


_PRESENTED = "wgs.client_cert_thumbprint"
"""The scope key under which a request's answer of :func:`presented_thumbprint` is kept: the rate limiter and the
route's token check both ask, and the certificate is parsed (and a refusal logged) once per request."""


def presented_thumbprint(request: Request, settings: Settings) -> str | None:
    """The thumbprint of the client certificate the trusted proxy forwarded with ``request``, or None (see the
    module's checklist)."""
    scope = request.scope
    if _PRESENTED not in scope:
        scope[_PRESENTED] = _presented(request, settings)
    found = scope[_PRESENTED]
    return found if isinstance(found, str) else None


def _presented(request: Request, settings: Settings) -> str | None:
    name = settings.client_cert_header
    if name is None:  # 1
        return None
    values = request.headers.getlist(name)
    if not values:
        return None
    if not _from_trusted_proxy(request, settings):  # 2
        log.info("client_certificate_ignored", reason="not from a trusted proxy")
        return None
    if len(values) != 1 or len(values[0]) > MAX_HEADER_BYTES:  # 3: a proxy that appends instead of replacing
        log.warning("client_certificate_ignored", reason="repeated or oversized header")
        return None
    if not values[0].strip():  # the proxy's way of saying that the caller presented none
        return None
    der = _certificate_der(values[0])  # 4
    if der is None:
        log.warning("client_certificate_ignored", reason="not one URL-encoded PEM certificate")
        return None
    return thumbprint(der)


def confirmation(certificate_thumbprint: str) -> dict[str, str]:
    """The ``cnf`` claim of a token bound to that certificate."""
    return {THUMBPRINT_MEMBER: certificate_thumbprint}


def bound_thumbprint(claims: dict[str, object]) -> str | None:
    """The thumbprint a token's ``cnf`` binds it to, None for a token without ``cnf``. A ``cnf`` this gateway
    cannot check (another confirmation method, a malformed value) is a 401: ignoring it would accept a bound
    token from anyone."""
    if CONFIRMATION_CLAIM not in claims:
        return None
    cnf = claims[CONFIRMATION_CLAIM]
    value = cnf.get(THUMBPRINT_MEMBER) if isinstance(cnf, dict) else None
    if not is_thumbprint(value):  # a non-ASCII one would fail compare_digest
        raise Unauthorized("access token rejected: invalid claim `cnf`")
    return value


def check_presented(request: Request, settings: Settings, bound_to: str) -> None:
    """A bound token's use (RFC 8705 §3): the request comes over the certificate it is bound to, else 401."""
    presented = presented_thumbprint(request, settings)
    if presented is None:
        raise Unauthorized("the access token is bound to a TLS client certificate; the request presented none")
    if not hmac.compare_digest(presented, bound_to):
        raise Unauthorized("the access token is bound to another TLS client certificate")

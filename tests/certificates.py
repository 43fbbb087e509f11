"""Certificates of a test partnership CA, as the TLS proxy would verify them: a client certificate of each
system, issued by one CA. Thumbprints (RFC 8705 ``x5t#S256``) are computed here from the DER bytes, not with the
gateway's helper, and the private keys are only here (a test that needs a key in a file writes its PEM)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # validity is the proxy's check, never the gateway's


@dataclass(frozen=True)
class Issued:
    pem: bytes
    thumbprint: str
    key_pem: bytes  # the certificate's private key: for tests of files that hold one by mistake


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@cache
def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), _name("Test partnership CA")


def issued(common_name: str) -> Issued:
    """A new client certificate for ``common_name``, issued by the test partnership's CA (a new key each call:
    two calls for one name are a certificate and its renewal)."""
    ca_key, ca_name = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(_NOW).not_valid_after(_NOW + dt.timedelta(days=365))
                   .sign(ca_key, hashes.SHA256()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Issued(certificate.public_bytes(serialization.Encoding.PEM),
                  base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode(), key_pem)

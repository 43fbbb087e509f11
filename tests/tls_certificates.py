"""TLS material for tests: a private CA (as partnerships run) and a server certificate it issued; client
certificates of partner systems, as files or in memory."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _issued(directory: Path, ca_common_name: str, leaf_common_name: str, file_names: tuple[str, str, str],
            extensions: list[x509.ExtensionType]) -> tuple[Path, Path, Path]:
    """A CA named ``ca_common_name`` and a certificate it issued to ``leaf_common_name`` (a day valid, with
    ``extensions``), written as (CA file, certificate, key) under ``file_names``."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, leaf_common_name)]))
               .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1)))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    leaf = builder.sign(ca_key, hashes.SHA256())
    paths = directory / file_names[0], directory / file_names[1], directory / file_names[2]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def private_ca_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate it issued for 127.0.0.1: (CA file, certificate, key)."""
    return _issued(directory, "partnership test CA", "gateway", ("ca.pem", "gateway.pem", "gateway-key.pem"),
                   [x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])])


def client_certificate(directory: Path, name: str = "partner-system") -> tuple[Path, Path, Path]:
    """A CA for partner systems' client certificates and one it issued to ``name``: (CA file, certificate,
    key), as a TLS proxy that asks partner systems for certificates trusts and they present."""
    return _issued(directory, "partner systems test CA", name, ("clients-ca.pem", f"{name}.pem", f"{name}-key.pem"),
                   [])


_PINNED_NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # validity is the proxy's check, never the gateway's


@dataclass(frozen=True)
class IssuedCertificate:
    pem: bytes
    thumbprint: str
    key_pem: bytes  # the certificate's private key: for tests of files that hold one by mistake


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@cache
def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), _name("partner systems test CA")


def issued(common_name: str) -> IssuedCertificate:
    """A new client certificate for ``common_name``, in memory, issued by one CA for the whole test process (a
    new key each call: two calls for one name are a certificate and its renewal), as certificate pinning's tests
    need several certificates that one proxy verifies alike. Its thumbprint (RFC 8705 ``x5t#S256``) is computed
    here from the DER bytes, not with the gateway's helper."""
    ca_key, ca_name = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(_PINNED_NOW).not_valid_after(_PINNED_NOW + dt.timedelta(days=365))
                   .sign(ca_key, hashes.SHA256()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return IssuedCertificate(certificate.public_bytes(serialization.Encoding.PEM),
                  base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode(), key_pem)

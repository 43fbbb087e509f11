"""Reading the certificates an operator pins (PEM files) and checking a presented certificate against pins: what
is refused (a private key, anything but PEM certificates) and that a refusal quotes nothing of the file."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.auth.certificate_pins import MAX_PINS, NotCertificates, checked_pins, is_pinned, pins_from_pem
from gateway.errors import Unprocessable
from tests.tls_certificates import issued

PARTNER = issued("politie-bvh")
RENEWED = issued("politie-bvh")
OTHER = issued("kvk-handelsregister")


def test_one_certificate_gives_its_thumbprint() -> None:
    assert pins_from_pem(PARTNER.pem) == [PARTNER.thumbprint]


def test_a_file_of_several_gives_each_once_in_file_order() -> None:
    """A renewal overlapping the old certificate: both in one file (with text between, as bundles have)."""
    bundle = RENEWED.pem + b"\n# renewed\n" + PARTNER.pem + RENEWED.pem
    assert pins_from_pem(bundle) == [RENEWED.thumbprint, PARTNER.thumbprint]


def _pkcs1_rsa_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _encrypted_ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"))


@pytest.mark.parametrize("with_key", [
    pytest.param(lambda: PARTNER.pem + PARTNER.key_pem, id="certificate and its PKCS#8 key"),
    pytest.param(lambda: PARTNER.key_pem, id="the key alone"),
    pytest.param(_pkcs1_rsa_key, id="RSA PKCS#1"),
    pytest.param(_encrypted_ec_key, id="encrypted PKCS#8")])
def test_a_file_with_a_private_key_is_refused_without_quoting_it(with_key: Callable[[], bytes]) -> None:
    data = with_key()
    with pytest.raises(NotCertificates, match="private key") as refused:
        pins_from_pem(data)
    body = b"".join(line for line in data.splitlines() if not line.startswith(b"-----"))
    assert body[:16].decode() not in str(refused.value)


@pytest.mark.parametrize(("data", "says"), [
    (b"", "no PEM certificate"),
    (b"hello, I am not a certificate", "no PEM certificate"),
    (b"\x30\x82\x01\x0a\xff\xfe", "no PEM certificate"),  # DER, or anything binary
    (b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n", "could not be read"),
    (b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "no PEM certificate")],
    ids=["empty", "text", "binary", "garbage in a certificate block", "a CSR"])
def test_what_is_no_pem_certificate_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(NotCertificates, match=says) as refused:
        pins_from_pem(data)
    assert "bm90IGEgY2VydGlmaWNhdGU" not in str(refused.value)


def test_pins_are_stored_sorted_once_and_must_be_thumbprints() -> None:
    assert checked_pins([OTHER.thumbprint, PARTNER.thumbprint, OTHER.thumbprint]) == tuple(
        sorted([OTHER.thumbprint, PARTNER.thumbprint]))
    assert checked_pins([]) == ()
    for bad in ["", "A" * 42, "A" * 44, "+" * 43, "é" * 43, PARTNER.thumbprint + "="]:
        with pytest.raises(Unprocessable, match="not a thumbprint"):
            checked_pins([PARTNER.thumbprint, bad])
    with pytest.raises(Unprocessable, match=f"at most {MAX_PINS}"):
        checked_pins(issued(f"system-{n}").thumbprint for n in range(MAX_PINS + 1))


def test_only_a_pinned_thumbprint_is_pinned() -> None:
    pins = (PARTNER.thumbprint, RENEWED.thumbprint)
    assert is_pinned(PARTNER.thumbprint, pins)
    assert is_pinned(RENEWED.thumbprint, pins)
    assert not is_pinned(OTHER.thumbprint, pins)
    assert not is_pinned(None, pins)
    assert not is_pinned(PARTNER.thumbprint, ())

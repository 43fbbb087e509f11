"""Pinning a certificate-bound client to its certificates (RFC 8705 §2.1.1's ``tls_client_auth``, adapted).

A bound client (:mod:`gateway.auth.certificate_binding`) gets tokens over whatever certificate the trusted proxy
verified: the proxy trusts the partnership's CA, which issues certificates to every partner system. Whoever
holds a leaked client key and *any* such certificate (their own system's, say) got a bound token in the client's
name. RFC 8705 §2.1.1 answers this by registering which certificate a client authenticates with; here the
client still authenticates with its key or secret, and a pinned client gets a token only over one of the
certificates whose thumbprints (``x5t#S256``, :func:`~gateway.auth.certificate_binding.thumbprint`) it is
pinned to. Several pins let a renewed certificate overlap the old one.

The operator gives the certificates as PEM files; :func:`pins_from_pem` reads one. Its refusals never quote the
file (it may hold a private key picked by mistake) nor anything of a certificate (its subject may name a
person): only thumbprints are stored, shown and audited.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.auth.certificate_binding import is_thumbprint, thumbprint
from gateway.errors import Unprocessable

MAX_PINS = 8
"""More than a renewal's overlap ever needs; a longer list is more likely a CA bundle given by mistake."""
_PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class NotCertificates(ValueError):
    """A file that cannot be pinned; the message names no content of it."""


def pins_from_pem(data: bytes) -> list[str]:
    """The thumbprints of the PEM certificates in ``data`` (one or more), in file order without repeats.

    Checklist, each failure a :class:`NotCertificates`:

    1. no private key in it (of any kind, encrypted too): the operator should learn that the key file left
       its place, and it is not stored or kept anywhere here;
    2. at least one ``CERTIFICATE`` block;
    3. every such block parses as X.509.
    """
    if _PRIVATE_KEY.search(data):  # 1
        raise NotCertificates("the file contains a private key; give the certificate only (and keep the key "
                              "where it was)")
    if _CERTIFICATE not in data:  # 2
        raise NotCertificates("the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:  # 3
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise NotCertificates("a certificate in the file could not be read as a PEM X.509 certificate") from None
    return list(dict.fromkeys(thumbprint(c.public_bytes(Encoding.DER)) for c in certificates))


def checked_pins(pins: Iterable[str]) -> tuple[str, ...]:
    """``pins`` as stored: sorted, without repeats, each a thumbprint, at most :data:`MAX_PINS`; else
    :class:`Unprocessable` (nothing is stored)."""
    unique = tuple(sorted(set(pins)))
    if not all(is_thumbprint(pin) for pin in unique):
        raise Unprocessable("a certificate pin is not a thumbprint (x5t#S256: 43 base64url characters)")
    if len(unique) > MAX_PINS:
        raise Unprocessable(f"at most {MAX_PINS} certificates can be pinned to a client; {len(unique)} were given")
    return unique


def is_pinned(presented: str | None, pins: Iterable[str]) -> bool:
    """Whether the presented certificate's thumbprint is one of ``pins`` (None, no certificate: never)."""
    if presented is None:
        return False
    return any(hmac.compare_digest(presented.encode("ascii", "replace"), pin.encode("ascii", "replace"))
               for pin in pins)

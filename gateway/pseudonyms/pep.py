"""PEP-style polymorphic pseudonyms on ristretto255: the pure group maths, safe to run on a partner's side.

This module has no server dependencies (only ``pysodium``, the standard library and
:mod:`gateway.pseudonyms.identifiers`), so the partner SDK (:mod:`gateway.client.pseudonyms`) uses it
directly. Key management and the gateway's transcryptor live in :mod:`gateway.pseudonyms.keys` and
:mod:`gateway.pseudonyms.transcryptor`.

The scheme (after Verheul & Jacobs, "Polymorphic Encryption and Pseudonymisation", and libpep)
---------------------------------------------------------------------------------------------
ristretto255 is a prime-order group (order L = 2^252 + 27742317777372353535851937790883648493) with base
point G; points are 32-byte canonical encodings, scalars 32-byte little-endian integers < L.

* **Identifier point**: ``M = from_hash(SHA-512("<type>:<normalised id>"))`` (Elligator-based
  ``crypto_core_ristretto255_from_hash``), e.g. ``SHA-512("bsn:123456782")``.
* **Polymorphic pseudonym**: an ElGamal ciphertext of M under the gateway's public key ``Y = y·G``,
  carried together with that key: ``(b, c, Y) = (r·G, M + r·Y, Y)`` for a fresh random r. Anyone holding Y
  can make one; nobody without y learns anything from it, and two encryptions of M are unlinkable.
* **Transcryptor operations** (no decryption involved, all multiplicative on the ciphertext):

  ====================  ================================================  =========================
  operation             result                                            decrypts (key) to
  ====================  ================================================  =========================
  rerandomise(r)        ``(b + r·G, c + r·Y, Y)``                         M   (y)
  reshuffle(s)          ``(s·b, s·c, Y)``                                 s·M (y)
  rekey(k)              ``(b/k, c, k·Y)``                                 M   (k·y)
  rsk(s, k)             ``((s/k)·b, s·c, k·Y)`` = rekey(k)∘reshuffle(s)   s·M (k·y)
  ====================  ================================================  =========================

  Decryption is ``c - x·b`` for the secret x matching the embedded public key. A recipient with key
  ``x = k·y`` decrypts an RSK-ed ciphertext to the **domain pseudonym** ``s·M``: stable (the same for
  every encryption of M), different for every factor s, and unlinkable across domains without s.

Wire formats (strictly validated on input)
-----------------------------------------
* Polymorphic pseudonym: base64url (no padding) of ``b || c || Y``, 96 bytes → 128 characters.
* Encrypted pseudonym (a ciphertext re-keyed for a recipient): ``"<type>.v<version>.<base64url b||c||Y>"``.
* Domain pseudonym: ``"<type>.v<version>.<base64url of the 32-byte point>"`` (43 characters of base64url).
* Recipient key (a participant's decryption secret): ``"rk.v<version>.<base64url scalar>"``.

Validation rejects wrong lengths, non-canonical base64, invalid or non-canonical ristretto255 encodings
(``crypto_core_ristretto255_is_valid_point``, plus the top-bit check that libsodium 1.0.18 lacks) and the
identity element in any position: an identity ``b``
would carry M (or s·M) in the clear, an identity ``Y`` would be a key that decrypts everything.

Tampering
---------
ElGamal is malleable by design; the transcryptor depends on it. A modified ciphertext is therefore either
**rejected** (the bytes are no longer a valid, canonical, non-identity ristretto255 point — most single-byte
changes) or, when it still decodes, it **decrypts to a different, unrelated pseudonym** that matches no
enrolment (changing b or c by anything but a known multiple of M moves the plaintext to an unknown point).
A change of the embedded public key ``Y`` is always detected: the gateway accepts a polymorphic pseudonym only
when Y equals one of its own public keys (:class:`~gateway.pseudonyms.errors.WrongKey` otherwise), and a
recipient checks that an encrypted pseudonym's Y equals ``x·G`` for its own secret x.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

import pysodium

from gateway.pseudonyms.errors import InvalidPseudonym, WrongKey
from gateway.pseudonyms.identifiers import Identifier, IdentifierType

__all__ = [
    "POINT_BYTES",
    "SCALAR_BYTES",
    "ElGamal",
    "EncryptedPseudonym",
    "Point",
    "PolymorphicPseudonym",
    "Pseudonym",
    "RecipientKey",
    "Scalar",
    "decrypt",
    "encrypt",
    "identifier_point",
    "make_polymorphic",
    "rekey",
    "rerandomize",
    "rerandomize_with_secret",
    "reshuffle",
    "rsk",
]

POINT_BYTES = 32
SCALAR_BYTES = 32
_HASH_BYTES = 64
_IDENTITY = bytes(POINT_BYTES)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_VERSIONED = re.compile(r"([a-z]+)\.v([1-9][0-9]{0,8})\.([A-Za-z0-9_-]+)")


# --- base64url, strict -------------------------------------------------------------------------------------

def b64url_encode(data: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, length: int, what: str) -> bytes:
    """Decode unpadded base64url of exactly ``length`` bytes; reject anything non-canonical."""
    expected_chars = (length * 4 + 2) // 3
    if not isinstance(text, str) or len(text) != expected_chars or not _B64URL.fullmatch(text):
        raise InvalidPseudonym(f"{what} must be {expected_chars} characters of unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidPseudonym(f"{what} is not valid base64url") from exc
    if len(data) != length or b64url_encode(data) != text:
        raise InvalidPseudonym(f"{what} is not canonical base64url")
    return data


# --- group elements and scalars ----------------------------------------------------------------------------

class Point:
    """A ristretto255 group element other than the identity, in canonical 32-byte encoding."""

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        """Validate and wrap an encoding (raises :class:`InvalidPseudonym`)."""
        if not isinstance(raw, bytes | bytearray) or len(raw) != POINT_BYTES:
            raise InvalidPseudonym(f"a group element must be {POINT_BYTES} bytes")
        raw = bytes(raw)
        if hmac.compare_digest(raw, _IDENTITY):
            raise InvalidPseudonym("the identity element is not allowed")
        # RFC 9496 requires the top bit to be clear. libsodium < 1.0.19 (Debian 12 ships 1.0.18) does not
        # check it, so ``x`` and ``x | 0x80<<248`` would both decode to one point: a second encoding of every
        # element (and of the identity). Refuse it before asking libsodium about the rest.
        if raw[31] & 0x80 or not pysodium.crypto_core_ristretto255_is_valid_point(raw):
            raise InvalidPseudonym("not a canonical ristretto255 encoding")
        self._raw = raw

    @classmethod
    def _trusted(cls, raw: bytes) -> Point:
        """Wrap the output of a libsodium operation without re-validating; the identity is still refused."""
        if hmac.compare_digest(raw, _IDENTITY):
            raise InvalidPseudonym("operation produced the identity element")
        point = object.__new__(cls)
        point._raw = raw
        return point

    @classmethod
    def base(cls) -> Point:
        return _BASE_POINT

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __add__(self, other: Point) -> Point:
        return Point._trusted(pysodium.crypto_core_ristretto255_add(self._raw, other._raw))

    def __sub__(self, other: Point) -> Point:
        return Point._trusted(pysodium.crypto_core_ristretto255_sub(self._raw, other._raw))

    def encode(self) -> str:
        return b64url_encode(self._raw)

    @classmethod
    def decode(cls, text: str) -> Point:
        return cls(b64url_decode(text, POINT_BYTES, "group element"))

    def __repr__(self) -> str:
        return f"Point({self._raw[:6].hex()}…)"


class Scalar:
    """A non-zero scalar modulo L, canonical 32-byte little-endian. ``repr`` never shows the value."""

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes | bytearray) or len(raw) != SCALAR_BYTES:
            raise InvalidPseudonym(f"a scalar must be {SCALAR_BYTES} bytes")
        raw = bytes(raw)
        if pysodium.crypto_core_ristretto255_scalar_reduce(raw + bytes(32)) != raw:
            raise InvalidPseudonym("scalar is not reduced modulo the group order")
        if hmac.compare_digest(raw, bytes(SCALAR_BYTES)):
            raise InvalidPseudonym("scalar must not be zero")
        self._raw = raw

    @classmethod
    def _trusted(cls, raw: bytes) -> Scalar:
        if hmac.compare_digest(raw, bytes(SCALAR_BYTES)):
            raise InvalidPseudonym("operation produced a zero scalar")
        scalar = object.__new__(cls)
        scalar._raw = raw
        return scalar

    @classmethod
    def random(cls) -> Scalar:
        """A uniformly random non-zero scalar (libsodium's CSPRNG)."""
        return cls._trusted(pysodium.crypto_core_ristretto255_scalar_random())

    @classmethod
    def from_wide(cls, data: bytes) -> Scalar:
        """Reduce 64 uniformly random bytes (e.g. HKDF or SHA-512 output) modulo L."""
        if len(data) != _HASH_BYTES:
            raise ValueError(f"from_wide needs {_HASH_BYTES} bytes")
        return cls._trusted(pysodium.crypto_core_ristretto255_scalar_reduce(data))

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scalar) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __mul__(self, other: Scalar) -> Scalar:
        return Scalar._trusted(pysodium.crypto_core_ristretto255_scalar_mul(self._raw, other._raw))

    def times(self, point: Point) -> Point:
        """``self · point`` (libsodium refuses, and we raise, if the result would be the identity)."""
        try:
            return Point._trusted(pysodium.crypto_scalarmult_ristretto255(self._raw, point._raw))
        except ValueError as exc:
            raise InvalidPseudonym("scalar multiplication failed") from exc

    def times_base(self) -> Point:
        """``self · G``."""
        return Point._trusted(pysodium.crypto_scalarmult_ristretto255_base(self._raw))

    def invert(self) -> Scalar:
        return Scalar._trusted(pysodium.crypto_core_ristretto255_scalar_invert(self._raw))

    def __truediv__(self, other: Scalar) -> Scalar:
        return self * other.invert()

    def __repr__(self) -> str:
        return "Scalar(<secret>)"

    __str__ = __repr__


_BASE_POINT = Scalar._trusted((1).to_bytes(SCALAR_BYTES, "little")).times_base()


def hash_to_point(data: bytes) -> Point:
    """Hash arbitrary bytes to a group element: ``from_hash(SHA-512(data))``."""
    return Point._trusted(pysodium.crypto_core_ristretto255_from_hash(hashlib.sha512(data).digest()))


def identifier_point(identifier: Identifier) -> Point:
    """The identifier's group element ``M = from_hash(SHA-512("<type>:<digits>"))``."""
    return hash_to_point(identifier.hash_input())


# --- ElGamal and the PEP operations ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, repr=False)
class ElGamal:
    """An ElGamal ciphertext ``(b, c, Y)``: ``b = r·G``, ``c = M + r·Y``, Y the public key it is under."""

    b: Point
    c: Point
    y: Point

    WIRE_BYTES: ClassVar[int] = 3 * POINT_BYTES

    def to_bytes(self) -> bytes:
        return bytes(self.b) + bytes(self.c) + bytes(self.y)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        if len(data) != cls.WIRE_BYTES:
            raise InvalidPseudonym(f"a ciphertext must be {cls.WIRE_BYTES} bytes (b || c || Y)")
        return cls(Point(data[:32]), Point(data[32:64]), Point(data[64:]))

    def encode(self) -> str:
        return b64url_encode(self.to_bytes())

    @classmethod
    def decode(cls, text: str) -> Self:
        return cls.from_bytes(b64url_decode(text, cls.WIRE_BYTES, "ciphertext"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(y={self.y!r})"


_C = TypeVar("_C", bound=ElGamal)


class PolymorphicPseudonym(ElGamal):
    """An identifier point encrypted under the gateway's public key; the partner's form of a subject."""

    __slots__ = ()


def encrypt(message: Point, public_key: Point, r: Scalar | None = None) -> ElGamal:
    """ElGamal-encrypt ``message`` under ``public_key`` with randomness ``r`` (fresh if not given)."""
    r = Scalar.random() if r is None else r
    return ElGamal(r.times_base(), message + r.times(public_key), public_key)


def decrypt(ciphertext: ElGamal, secret: Scalar) -> Point:
    """``c - x·b``. The caller is responsible for ``x`` matching ``ciphertext.y`` (see RecipientKey)."""
    return ciphertext.c - secret.times(ciphertext.b)


def rerandomize(ciphertext: _C, r: Scalar | None = None) -> _C:
    """Same plaintext, same key, unlinkable ciphertext: ``(b + r·G, c + r·Y, Y)``."""
    r = Scalar.random() if r is None else r
    return type(ciphertext)(ciphertext.b + r.times_base(), ciphertext.c + r.times(ciphertext.y), ciphertext.y)


def rerandomize_with_secret(ciphertext: _C, secret: Scalar, r: Scalar | None = None) -> _C:
    """:func:`rerandomize` for whoever knows the secret x of ``Y = x·G``: ``r·Y`` becomes the faster ``(r·x)·G``."""
    r = Scalar.random() if r is None else r
    return type(ciphertext)(ciphertext.b + r.times_base(), ciphertext.c + (r * secret).times_base(), ciphertext.y)


def reshuffle(ciphertext: _C, s: Scalar) -> _C:
    """Plaintext M becomes s·M, same key: ``(s·b, s·c, Y)``."""
    return type(ciphertext)(s.times(ciphertext.b), s.times(ciphertext.c), ciphertext.y)


def rekey(ciphertext: _C, k: Scalar) -> _C:
    """Same plaintext, now decryptable by ``k·x`` instead of ``x``: ``(b/k, c, k·Y)``."""
    return type(ciphertext)(k.invert().times(ciphertext.b), ciphertext.c, k.times(ciphertext.y))


def rsk(ciphertext: _C, s: Scalar, k: Scalar, rekeyed_public_key: Point | None = None) -> _C:
    """Reshuffle and rekey in one step, ``((s/k)·b, s·c, k·Y)`` — equal to ``rekey(reshuffle(ct, s), k)``.

    ``rekeyed_public_key`` (``k·Y``) may be passed when the caller has it cached; it saves a multiplication.
    """
    target = rekeyed_public_key if rekeyed_public_key is not None else k.times(ciphertext.y)
    return type(ciphertext)((s / k).times(ciphertext.b), s.times(ciphertext.c), target)


def make_polymorphic(identifier: Identifier, public_key: Point, r: Scalar | None = None) -> PolymorphicPseudonym:
    """Encrypt an identifier's point under the gateway's public key (partner side)."""
    r = Scalar.random() if r is None else r
    message = identifier_point(identifier)
    return PolymorphicPseudonym(r.times_base(), message + r.times(public_key), public_key)


# --- domain pseudonyms, encrypted pseudonyms, recipient keys -----------------------------------------------

def _split_versioned(text: str, what: str) -> tuple[str, int, str]:
    if not isinstance(text, str) or len(text) > 256:
        raise InvalidPseudonym(f"{what} is malformed")
    match = _VERSIONED.fullmatch(text)
    if match is None:
        raise InvalidPseudonym(f"{what} must look like '<type>.v<version>.<base64url>'")
    return match.group(1), int(match.group(2)), match.group(3)


def _identifier_type(prefix: str, what: str) -> IdentifierType:
    try:
        return IdentifierType(prefix)
    except ValueError:
        raise InvalidPseudonym(f"{what} has an unknown identifier type prefix") from None


@dataclass(frozen=True, slots=True)
class Pseudonym:
    """A domain pseudonym ``s·M``: stable for one subject in one domain, under pseudonymisation key version."""

    identifier_type: IdentifierType
    key_version: int
    point: Point

    def encode(self) -> str:
        return f"{self.identifier_type.value}.v{self.key_version}.{self.point.encode()}"

    @classmethod
    def decode(cls, text: str) -> Pseudonym:
        prefix, version, body = _split_versioned(text, "pseudonym")
        return cls(_identifier_type(prefix, "pseudonym"), version, Point.decode(body))

    def __str__(self) -> str:
        return self.encode()


@dataclass(frozen=True, slots=True)
class EncryptedPseudonym:
    """A domain pseudonym still encrypted, re-keyed for one recipient; only that recipient can open it."""

    identifier_type: IdentifierType
    key_version: int
    ciphertext: ElGamal

    def encode(self) -> str:
        return f"{self.identifier_type.value}.v{self.key_version}.{self.ciphertext.encode()}"

    @classmethod
    def decode(cls, text: str) -> EncryptedPseudonym:
        prefix, version, body = _split_versioned(text, "encrypted pseudonym")
        return cls(_identifier_type(prefix, "encrypted pseudonym"), version, ElGamal.decode(body))


class RecipientKey:
    """A participant's decryption secret ``x = k·y`` for one domain and key version. Never logged."""

    __slots__ = ("_secret", "public_key", "version")
    _PREFIX = "rk"

    def __init__(self, secret: Scalar, version: int) -> None:
        self._secret = secret
        self.version = version
        self.public_key = secret.times_base()

    def decrypt(self, encrypted: EncryptedPseudonym) -> Pseudonym:
        """Open an encrypted pseudonym made for this key; :class:`WrongKey` if it was made for someone else."""
        if encrypted.key_version != self.version or encrypted.ciphertext.y != self.public_key:
            raise WrongKey("encrypted pseudonym was not made for this recipient key")
        point = decrypt(encrypted.ciphertext, self._secret)
        return Pseudonym(encrypted.identifier_type, encrypted.key_version, point)

    def encode(self) -> str:
        """Export for the participant's own secret storage (``rk.v<version>.<base64url>``)."""
        return f"{self._PREFIX}.v{self.version}.{b64url_encode(bytes(self._secret))}"

    @classmethod
    def decode(cls, text: str) -> RecipientKey:
        prefix, version, body = _split_versioned(text, "recipient key")
        if prefix != cls._PREFIX:
            raise InvalidPseudonym("recipient key must start with 'rk.'")
        return cls(Scalar(b64url_decode(body, SCALAR_BYTES, "recipient key")), version)

    def __repr__(self) -> str:
        return f"RecipientKey(version={self.version}, public_key={self.public_key!r})"

    __str__ = __repr__

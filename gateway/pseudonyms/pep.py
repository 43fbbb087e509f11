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

* **Fused forms for whoever holds the secrets** (the gateway), cheaper in scalar multiplications — V a
  variable-base multiplication (~64 µs here), B a base-point one (~20 µs, libsodium's precomputed table),
  A a point addition (~17 µs):

  =========================================  =======================================  ===========
  function                                   result                                   cost
  =========================================  =======================================  ===========
  ``decrypt_reshuffled(ct, s, s·x)``         ``s·c - (s·x)·b`` = s·M, M never formed  2V + A
  ``encrypt_with_secret(m, x)``              ``(r·G, m + (r·x)·G, x·G)``              2B + A
  ``rerandomize_with_secret(ct, x)``         ``(b + r·G, c + (r·x)·G, Y)``            2B + 2A
  =========================================  =======================================  ===========

  ``r·Y`` for a known ``Y = y·G`` is ``(r·y)·G``: a base-point multiplication instead of a variable-base one.
  A partner does not know y, so :func:`make_polymorphic` costs from_hash + B + V + A.

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
import ctypes
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
    "decrypt_reshuffled",
    "encrypt",
    "encrypt_with_secret",
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


# --- libsodium, called directly ----------------------------------------------------------------------------
# pysodium's wrappers re-check the library version, re-check lengths and build their output buffer with
# ``create_string_buffer`` on every call: ~2-3 µs of Python per group operation. A transformation is three to
# eight of them, and at 5,000 transformations/s per core the whole budget is 200 µs, so the group operations
# call the same libsodium functions through a ctypes handle of their own (pysodium's function objects, and
# their argtypes, stay untouched), with inputs whose lengths ``Point`` and ``Scalar`` already guarantee.
# ctypes releases the GIL during each call, as pysodium does.
#
# Costs here (libsodium 1.0.18, best of many runs; instructions from callgrind): variable-base scalar
# multiplication ~64 µs (665k), base-point multiplication ~20 µs (221k, precomputed table), point addition or
# subtraction ~17 µs (152k: two decodings and one encoding), point validation ~6 µs (51k), from_hash ~22 µs,
# scalar multiplication ~1 µs, scalar inversion ~40 µs. Every operation below is counted in these units.

_sodium = ctypes.CDLL(pysodium.sodium._name)
if _sodium.sodium_init() < 0:  # idempotent; pysodium does not call it
    raise ImportError("libsodium could not be initialised")
_Bytes32 = ctypes.c_char * 32
_scalarmult = _sodium.crypto_scalarmult_ristretto255
_scalarmult_base = _sodium.crypto_scalarmult_ristretto255_base
_point_add = _sodium.crypto_core_ristretto255_add
_point_sub = _sodium.crypto_core_ristretto255_sub
_point_is_valid = _sodium.crypto_core_ristretto255_is_valid_point
_point_from_hash = _sodium.crypto_core_ristretto255_from_hash
_scalar_mul = _sodium.crypto_core_ristretto255_scalar_mul
_scalar_invert = _sodium.crypto_core_ristretto255_scalar_invert
_scalar_random = _sodium.crypto_core_ristretto255_scalar_random
_scalar_reduce = _sodium.crypto_core_ristretto255_scalar_reduce
_ZERO_SCALAR = bytes(SCALAR_BYTES)


def _mul(scalar: bytes, point: bytes) -> bytes:
    """``scalar · point``. libsodium refuses an invalid point and an identity result itself (return code)."""
    out = _Bytes32()
    if _scalarmult(out, scalar, point):
        raise InvalidPseudonym("scalar multiplication failed")
    return out.raw


def _mul_base(scalar: bytes) -> bytes:
    """``scalar · G`` from libsodium's precomputed table: about a third of a variable-base multiplication."""
    out = _Bytes32()
    if _scalarmult_base(out, scalar):
        raise InvalidPseudonym("scalar multiplication failed")
    return out.raw


def _add(p: bytes, q: bytes) -> bytes:
    out = _Bytes32()
    if _point_add(out, p, q):
        raise InvalidPseudonym("not a canonical ristretto255 encoding")
    raw = out.raw
    if hmac.compare_digest(raw, _IDENTITY):  # unlike the multiplications, addition does not check this
        raise InvalidPseudonym("operation produced the identity element")
    return raw


def _sub(p: bytes, q: bytes) -> bytes:
    out = _Bytes32()
    if _point_sub(out, p, q):
        raise InvalidPseudonym("not a canonical ristretto255 encoding")
    raw = out.raw
    if hmac.compare_digest(raw, _IDENTITY):
        raise InvalidPseudonym("operation produced the identity element")
    return raw


def _smul(x: bytes, y: bytes) -> bytes:
    out = _Bytes32()
    _scalar_mul(out, x, y)
    return out.raw


def _random_scalar() -> bytes:
    """A uniformly random scalar in [1, L) (libsodium retries until it is non-zero and reduced)."""
    out = _Bytes32()
    _scalar_random(out)
    return out.raw


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
        if raw[31] & 0x80 or _point_is_valid(raw) != 1:
            raise InvalidPseudonym("not a canonical ristretto255 encoding")
        self._raw = raw

    @classmethod
    def _trusted(cls, raw: bytes) -> Point:
        """Wrap the output of a libsodium operation without re-validating.

        Every producer has already refused the identity: the multiplications by their return code, addition
        and subtraction in :func:`_add` / :func:`_sub`, :func:`hash_to_point` explicitly.
        """
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
        return Point._trusted(_add(self._raw, other._raw))

    def __sub__(self, other: Point) -> Point:
        return Point._trusted(_sub(self._raw, other._raw))

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
        reduced = _Bytes32()
        _scalar_reduce(reduced, raw + _ZERO_SCALAR)
        if reduced.raw != raw:
            raise InvalidPseudonym("scalar is not reduced modulo the group order")
        if hmac.compare_digest(raw, _ZERO_SCALAR):
            raise InvalidPseudonym("scalar must not be zero")
        self._raw = raw

    @classmethod
    def _trusted(cls, raw: bytes) -> Scalar:
        if hmac.compare_digest(raw, _ZERO_SCALAR):
            raise InvalidPseudonym("operation produced a zero scalar")
        scalar = object.__new__(cls)
        scalar._raw = raw
        return scalar

    @classmethod
    def random(cls) -> Scalar:
        """A uniformly random non-zero scalar (libsodium's CSPRNG)."""
        return cls._trusted(_random_scalar())

    @classmethod
    def from_wide(cls, data: bytes) -> Scalar:
        """Reduce 64 uniformly random bytes (e.g. HKDF or SHA-512 output) modulo L."""
        if len(data) != _HASH_BYTES:
            raise ValueError(f"from_wide needs {_HASH_BYTES} bytes")
        out = _Bytes32()
        _scalar_reduce(out, bytes(data))
        return cls._trusted(out.raw)

    def __bytes__(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Scalar) and hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __mul__(self, other: Scalar) -> Scalar:
        return Scalar._trusted(_smul(self._raw, other._raw))

    def times(self, point: Point) -> Point:
        """``self · point`` (libsodium refuses, and we raise, if the result would be the identity)."""
        return Point._trusted(_mul(self._raw, point._raw))

    def times_base(self) -> Point:
        """``self · G``."""
        return Point._trusted(_mul_base(self._raw))

    def invert(self) -> Scalar:
        out = _Bytes32()
        if _scalar_invert(out, self._raw):
            raise InvalidPseudonym("scalar is not invertible")
        return Scalar._trusted(out.raw)

    def __truediv__(self, other: Scalar) -> Scalar:
        return self * other.invert()

    def __repr__(self) -> str:
        return "Scalar(<secret>)"

    __str__ = __repr__


_BASE_POINT = Scalar._trusted((1).to_bytes(SCALAR_BYTES, "little")).times_base()


def hash_to_point(data: bytes) -> Point:
    """Hash arbitrary bytes to a group element: ``from_hash(SHA-512(data))``."""
    out = _Bytes32()
    _point_from_hash(out, hashlib.sha512(data).digest())
    raw = out.raw
    if hmac.compare_digest(raw, _IDENTITY):  # probability ~2^-252, but then refuse it like everywhere else
        raise InvalidPseudonym("operation produced the identity element")
    return Point._trusted(raw)


def identifier_point(identifier: Identifier) -> Point:
    """The identifier's group element ``M = from_hash(SHA-512("<type>:<digits>"))``."""
    return hash_to_point(identifier.hash_input())


# --- ElGamal and the PEP operations ------------------------------------------------------------------------

_KNOWN_KEYS: dict[bytes, Point] = {}
_KNOWN_KEYS_LIMIT = 64


def _public_key_point(raw: bytes) -> Point:
    """The ``Y`` of a ciphertext, validated once per distinct key instead of once per ciphertext.

    Every polymorphic pseudonym carries one of the gateway's few public keys (every encrypted pseudonym a
    recipient's), so the same 32 bytes are validated over and over: this remembers encodings that passed
    :class:`Point`'s full check (a bounded dict of public values, emptied when full), saving one point
    decoding (~6 µs) per ciphertext. Anything not in it goes through the full check.
    """
    point = _KNOWN_KEYS.get(raw)
    if point is None:
        point = Point(raw)
        if len(_KNOWN_KEYS) >= _KNOWN_KEYS_LIMIT:
            _KNOWN_KEYS.clear()
        _KNOWN_KEYS[raw] = point
    return point


@dataclass(frozen=True, slots=True, repr=False)
class ElGamal:
    """An ElGamal ciphertext ``(b, c, Y)``: ``b = r·G``, ``c = M + r·Y``, Y the public key it is under."""

    b: Point
    c: Point
    y: Point

    WIRE_BYTES: ClassVar[int] = 3 * POINT_BYTES

    def to_bytes(self) -> bytes:
        return self.b._raw + self.c._raw + self.y._raw

    @classmethod
    def from_bytes(cls, data: bytes | bytearray) -> Self:
        if len(data) != cls.WIRE_BYTES:
            raise InvalidPseudonym(f"a ciphertext must be {cls.WIRE_BYTES} bytes (b || c || Y)")
        data = bytes(data)
        return cls(Point(data[:32]), Point(data[32:64]), _public_key_point(data[64:]))

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
    """ElGamal-encrypt ``message`` under ``public_key`` with randomness ``r`` (fresh if not given).

    One base and one variable-base multiplication and one addition; whoever knows the secret of
    ``public_key`` should use the cheaper :func:`encrypt_with_secret`.
    """
    r_raw = _random_scalar() if r is None else r._raw
    return ElGamal(Point._trusted(_mul_base(r_raw)),
                   Point._trusted(_add(message._raw, _mul(r_raw, public_key._raw))), public_key)


def encrypt_with_secret(message: Point, secret: Scalar, public_key: Point | None = None,
                        r: Scalar | None = None) -> ElGamal:
    """:func:`encrypt` under ``X = x·G`` for whoever knows x: ``(r·G, m + (r·x)·G, X)``.

    ``r·X`` equals ``(r·x)·G``, so the variable-base multiplication becomes a second base-point one (~20 µs
    instead of ~64 µs). ``public_key`` (``x·G``) may be passed when the caller has it cached.
    """
    r_raw = _random_scalar() if r is None else r._raw
    key = secret.times_base() if public_key is None else public_key
    return ElGamal(Point._trusted(_mul_base(r_raw)),
                   Point._trusted(_add(message._raw, _mul_base(_smul(r_raw, secret._raw)))), key)


def decrypt(ciphertext: ElGamal, secret: Scalar) -> Point:
    """``c - x·b``. The caller is responsible for ``x`` matching ``ciphertext.y`` (see RecipientKey)."""
    return Point._trusted(_sub(ciphertext.c._raw, _mul(secret._raw, ciphertext.b._raw)))


def decrypt_reshuffled(ciphertext: ElGamal, s: Scalar, s_times_secret: Scalar) -> Point:
    """``s·M`` from an encryption of M under ``x·G``, as ``s·c - (s·x)·b``, without ever forming M.

    Two variable-base multiplications and one subtraction: reshuffle and decryption folded into one step
    (``s_times_secret`` is ``s·x``, which a caller with fixed s and x computes once). This is the minimum
    for any function of M from ``(b, c)``: both points are unknown, so each needs its own multiplication.
    """
    return Point._trusted(_sub(_mul(s._raw, ciphertext.c._raw), _mul(s_times_secret._raw, ciphertext.b._raw)))


def rerandomize(ciphertext: _C, r: Scalar | None = None) -> _C:
    """Same plaintext, same key, unlinkable ciphertext: ``(b + r·G, c + r·Y, Y)``."""
    r = Scalar.random() if r is None else r
    return type(ciphertext)(ciphertext.b + r.times_base(), ciphertext.c + r.times(ciphertext.y), ciphertext.y)


def rerandomize_with_secret(ciphertext: _C, secret: Scalar, r: Scalar | None = None) -> _C:
    """:func:`rerandomize` for whoever knows the secret x of ``Y = x·G``: ``r·Y`` becomes the faster ``(r·x)·G``."""
    r_raw = _random_scalar() if r is None else r._raw
    return type(ciphertext)(Point._trusted(_add(ciphertext.b._raw, _mul_base(r_raw))),
                            Point._trusted(_add(ciphertext.c._raw, _mul_base(_smul(r_raw, secret._raw)))),
                            ciphertext.y)


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
    """Encrypt an identifier's point under the gateway's public key (partner side).

    from_hash, one base and one variable-base multiplication, one addition: the minimum for an ElGamal
    encryption under a key whose secret the partner does not know (``r·Y`` cannot become ``(r·y)·G``).
    """
    r_raw = _random_scalar() if r is None else r._raw
    message = identifier_point(identifier)
    return PolymorphicPseudonym(Point._trusted(_mul_base(r_raw)),
                                Point._trusted(_add(message._raw, _mul(r_raw, public_key._raw))), public_key)


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

"""Key material of the transcryptor: versions, domains and HKDF-derived per-domain factors.

One **key version** holds three independent secrets, all generated at random:

* ``elgamal_secret`` y — the gateway's ElGamal secret; ``Y = y·G`` is published to partners;
* ``pseudonymisation_secret`` — master secret for the reshuffle factors s (which domain pseudonym);
* ``rekey_secret`` — master secret for the rekey factors k (who can decrypt).

Per-domain factors are derived, never stored::

    s(domain) = reduce(HKDF-SHA512(pseudonymisation_secret, salt=_SALT,
                                   info="pseudonymisation" || 0x00 || u32(version) || domain.info(), L=64))
    k(domain) = reduce(HKDF-SHA512(rekey_secret, salt=_SALT,
                                   info="rekey" || 0x00 || u32(version) || domain.info(), L=64))

``reduce`` is ``crypto_core_ristretto255_scalar_reduce`` of the 64 output bytes (bias < 2^-250). The labels
keep the two uses apart even if the same secret were ever configured twice, and the version in ``info`` keeps
versions apart. A **domain** is a partnership (``participant=None``: the gateway's own matching domain, never
shown to a partner) or one participant within a partnership; its ``info`` is length-prefixed, so no two
domains share an encoding.

Rotation adds a new version and makes it current; older versions stay in the key ring until every stored
pseudonym and ciphertext has been moved (:mod:`gateway.pseudonyms.rotation`), then they are retired.
Nothing in here is ever logged: every ``repr`` shows versions and public keys only.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.pseudonyms.errors import KeyStoreError, UnknownKeyVersion, WrongKey
from gateway.pseudonyms.pep import Point, RecipientKey, Scalar

__all__ = ["Domain", "KeyRing", "KeyVersion"]

_SALT = b"wgs-gateway/pseudonyms/v1"
_LABEL_PSEUDONYMISATION = b"pseudonymisation"
_LABEL_REKEY = b"rekey"
_LABEL_INDEX_TAG = b"index-tag"
MASTER_SECRET_BYTES = 32
_MAX_NAME = 200
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Domain:
    """A pseudonymisation domain: a partnership, or one participant (system/organisation id) within it."""

    partnership: str
    participant: str | None = None

    def __post_init__(self) -> None:
        for name, value in (("partnership", self.partnership), ("participant", self.participant)):
            if value is None and name == "participant":
                continue
            if not isinstance(value, str) or not value or len(value) > _MAX_NAME or not value.isprintable():
                raise ValueError(f"domain {name} must be a non-empty printable name of at most {_MAX_NAME} chars")

    def info(self) -> bytes:
        """Unambiguous bytes for HKDF ``info``: length-prefixed fields, a marker for 'whole partnership'."""
        partnership = self.partnership.encode()
        out = len(partnership).to_bytes(2, "big") + partnership
        if self.participant is None:
            return out + b"\xff\xff"
        participant = self.participant.encode()
        return out + len(participant).to_bytes(2, "big") + participant

    def __str__(self) -> str:
        return self.partnership if self.participant is None else f"{self.partnership}/{self.participant}"


def _derive_bytes(secret: bytes, label: bytes, version: int, domain: Domain, length: int) -> bytes:
    info = label + b"\x00" + version.to_bytes(4, "big") + domain.info()
    return HKDF(algorithm=hashes.SHA512(), length=length, salt=_SALT, info=info).derive(secret)


def _derive(secret: bytes, label: bytes, version: int, domain: Domain) -> Scalar:
    return Scalar.from_wide(_derive_bytes(secret, label, version, domain, 64))


@dataclass(frozen=True, eq=False, repr=False)
class KeyVersion:
    """The secrets of one key version. Frozen, compared by identity, never printed."""

    version: int
    elgamal_secret: Scalar
    pseudonymisation_secret: bytes
    rekey_secret: bytes
    created_at: datetime
    public_key: Point = field(init=False)
    _factors: dict[tuple[bytes, Domain], Scalar] = field(init=False, default_factory=dict)
    _recipient_public: dict[Domain, Point] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 1:
            raise KeyStoreError("key versions are positive integers")
        for name in ("pseudonymisation_secret", "rekey_secret"):
            if len(getattr(self, name)) < MASTER_SECRET_BYTES:
                raise KeyStoreError(f"{name} of key version {self.version} is shorter than {MASTER_SECRET_BYTES} bytes")
        if self.pseudonymisation_secret == self.rekey_secret:
            raise KeyStoreError(f"key version {self.version} reuses one master secret for two purposes")
        if self.created_at.tzinfo is None:
            raise KeyStoreError("created_at must be timezone-aware")
        object.__setattr__(self, "public_key", self.elgamal_secret.times_base())

    @classmethod
    def generate(cls, version: int, created_at: datetime) -> KeyVersion:
        """Fresh random secrets for ``version``."""
        return cls(version, Scalar.random(), secrets.token_bytes(MASTER_SECRET_BYTES),
                   secrets.token_bytes(MASTER_SECRET_BYTES), created_at)

    def _factor(self, label: bytes, secret: bytes, domain: Domain) -> Scalar:
        # Per-instance cache: derived factors go away with the key version when it is retired.
        key = (label, domain)
        factor = self._factors.get(key)
        if factor is None:
            if len(self._factors) >= _CACHE_LIMIT:
                self._factors.clear()
            factor = self._factors[key] = _derive(secret, label, self.version, domain)
        return factor

    def reshuffle_factor(self, domain: Domain) -> Scalar:
        """s(domain): the factor that turns M into this domain's pseudonym s·M."""
        return self._factor(_LABEL_PSEUDONYMISATION, self.pseudonymisation_secret, domain)

    def index_tag_key(self, domain: Domain) -> bytes:
        """The HMAC key under which the index stores a participant's own pseudonyms (``domain`` is the
        participant's): derived from the pseudonymisation secret under a label of its own, never stored. Why a
        keyed tag and not the pseudonym: the database alone must not link a participant's pseudonyms (which it
        holds, with the identities) to the partnership's index rows — that takes the gateway's keys, as before."""
        return _derive_bytes(self.pseudonymisation_secret, _LABEL_INDEX_TAG, self.version, domain, 32)

    def rekey_factor(self, domain: Domain) -> Scalar:
        """k(domain): the factor that makes a ciphertext decryptable by ``k·y`` (the domain's recipient key)."""
        return self._factor(_LABEL_REKEY, self.rekey_secret, domain)

    def recipient_public_key(self, domain: Domain) -> Point:
        """``k·Y``: the public key that ciphertexts re-keyed for ``domain`` carry."""
        point = self._recipient_public.get(domain)
        if point is None:
            if len(self._recipient_public) >= _CACHE_LIMIT:
                self._recipient_public.clear()
            point = self._recipient_public[domain] = self.rekey_factor(domain).times(self.public_key)
        return point

    def recipient_key(self, domain: Domain) -> RecipientKey:
        """The recipient's decryption secret ``k·y`` for ``domain`` (hand it to that participant only)."""
        return RecipientKey(self.rekey_factor(domain) * self.elgamal_secret, self.version)

    def __repr__(self) -> str:
        return f"KeyVersion(version={self.version}, public_key={self.public_key!r}, created_at={self.created_at})"

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class KeyRing:
    """All key versions the gateway holds, and which one is current (used for everything new)."""

    versions: Mapping[int, KeyVersion]
    current: int
    _by_public_key: dict[bytes, KeyVersion] = field(init=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        versions = dict(self.versions)
        if not versions:
            raise KeyStoreError("the key ring is empty")
        for number, key in versions.items():
            if number != key.version:
                raise KeyStoreError(f"key version {key.version} is filed under {number}")
        if self.current not in versions:
            raise UnknownKeyVersion(self.current)
        object.__setattr__(self, "versions", MappingProxyType(versions))
        by_public = {bytes(key.public_key): key for key in versions.values()}
        if len(by_public) != len(versions):
            raise KeyStoreError("two key versions share an ElGamal key")
        self._by_public_key.update(by_public)

    @property
    def current_version(self) -> KeyVersion:
        return self.versions[self.current]

    @property
    def public_key(self) -> Point:
        """The current public key Y, published to partners for making polymorphic pseudonyms."""
        return self.current_version.public_key

    def get(self, version: int) -> KeyVersion:
        try:
            return self.versions[version]
        except KeyError:
            raise UnknownKeyVersion(version) from None

    def for_public_key(self, public_key: Point) -> KeyVersion:
        """The version whose ElGamal key is ``public_key``; :class:`WrongKey` if none (tampered or foreign)."""
        try:
            return self._by_public_key[bytes(public_key)]
        except KeyError:
            raise WrongKey("ciphertext is not under any of the gateway's public keys") from None

    def with_version(self, key: KeyVersion, *, make_current: bool = True) -> KeyRing:
        if key.version in self.versions:
            raise KeyStoreError(f"key version {key.version} already exists")
        return KeyRing({**self.versions, key.version: key}, key.version if make_current else self.current)

    def without_version(self, version: int) -> KeyRing:
        if version == self.current:
            raise KeyStoreError("the current key version cannot be retired")
        self.get(version)
        return KeyRing({n: k for n, k in self.versions.items() if n != version}, self.current)

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current}, versions={sorted(self.versions)})"

    __str__ = __repr__

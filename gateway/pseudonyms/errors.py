"""The pseudonym package's exception tree.

    PseudonymError                 base; never raised directly
    ├── InvalidIdentifier          an identifier is malformed or fails its check digit (also a ValueError)
    ├── InvalidPseudonym           a pseudonym or ciphertext cannot be decoded: length, base64, non-canonical or
    │   │                          invalid ristretto255 encoding, identity element (also a ValueError)
    │   └── WrongKey               well-formed, but not made for this gateway's key (or this recipient's key)
    └── KeyStoreError              the key store is missing, unreadable, too widely readable or inconsistent
        └── UnknownKeyVersion      a key version was asked for that the store does not hold

Messages never contain an identifier, a pseudonym's bytes or key material: only kinds, lengths, field names
and key version numbers, so that an error that reaches a log or a problem document leaks nothing.
This package knows nothing of HTTP; the gateway maps these errors to problem+json.
"""

from __future__ import annotations


class PseudonymError(Exception):
    """Base of every error raised by ``gateway.pseudonyms``."""


class InvalidIdentifier(PseudonymError, ValueError):
    """An identifier (BSN, KvK number, RSIN) is malformed or fails its check. The value is never kept."""


class InvalidPseudonym(PseudonymError, ValueError):
    """A pseudonym, polymorphic pseudonym or key could not be decoded or is not a valid group element."""


class WrongKey(InvalidPseudonym):
    """A ciphertext is well-formed but was not encrypted for the expected public key.

    Raised when the public key embedded in a polymorphic pseudonym is none of the gateway's (tampering or a
    stale/foreign key), and when a recipient decrypts a ciphertext re-keyed for someone else.
    """


class KeyStoreError(PseudonymError):
    """The key store cannot be used as it is; the gateway must not start pseudonymising."""


class UnknownKeyVersion(KeyStoreError):
    """A key version was requested that the key store does not (or no longer) hold."""

    def __init__(self, version: int) -> None:
        super().__init__(f"key version {version} is not in the key store")
        self.version = version

"""Hashing of client secrets and people's passwords (argon2id via argon2-cffi).

Why argon2: a leaked database must not yield usable secrets; argon2id is memory-hard and its encoded
hash carries its own parameters, so they can be raised later without a migration.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(encoded: str, secret: str) -> bool:
    """Constant-time check; any malformed stored hash counts as a mismatch."""
    try:
        return _hasher.verify(encoded, secret)
    except (VerificationError, InvalidHashError):
        return False


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


# A fixed hash to verify against when the account does not exist, so timing does not reveal that.
DUMMY_HASH = _hasher.hash("wgs-no-such-account")

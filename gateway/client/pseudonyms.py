"""Partner side of polymorphic pseudonymisation: identifiers in, polymorphic pseudonyms out.

Typical use by a partner system::

    client = PseudonymClient(gateway_public_key="<base64url from the gateway>",
                             recipient_key=RecipientKey.decode(secret_from_vault))
    subject = client.polymorphic("bsn", "1234.56.782")      # fresh, unlinkable each time; send this
    mine = client.open(encrypted_from_gateway)               # "bsn.v1.…": our own stable pseudonym

The identifier never leaves the partner: it is normalised and checked locally (eleven-test), hashed to a
ristretto255 point and ElGamal-encrypted under the gateway's key. Only the gateway's transcryptor can turn
that into a domain pseudonym, and only this partner's recipient key opens the encrypted pseudonyms made for
it. Keep the recipient key in the partner's secret store; this module never logs it and its ``repr`` hides it.
"""

from __future__ import annotations

from gateway.pseudonyms.errors import InvalidIdentifier, InvalidPseudonym, PseudonymError, WrongKey
from gateway.pseudonyms.identifiers import (
    Identifier,
    IdentifierType,
    bsn,
    eleven_test,
    kvk_number,
    parse_identifier,
    rsin,
)
from gateway.pseudonyms.pep import (
    EncryptedPseudonym,
    Point,
    PolymorphicPseudonym,
    Pseudonym,
    RecipientKey,
    make_polymorphic,
)

__all__ = [
    "EncryptedPseudonym",
    "Identifier",
    "IdentifierType",
    "InvalidIdentifier",
    "InvalidPseudonym",
    "Point",
    "PolymorphicPseudonym",
    "Pseudonym",
    "PseudonymClient",
    "PseudonymError",
    "RecipientKey",
    "WrongKey",
    "bsn",
    "eleven_test",
    "kvk_number",
    "parse_identifier",
    "rsin",
]


class PseudonymClient:
    """Makes polymorphic pseudonyms for one gateway key and opens pseudonyms encrypted for this partner."""

    def __init__(self, gateway_public_key: str | Point, *, recipient_key: RecipientKey | None = None) -> None:
        self._public_key = (gateway_public_key if isinstance(gateway_public_key, Point)
                            else Point.decode(gateway_public_key))
        self._recipient_key = recipient_key

    @property
    def gateway_public_key(self) -> str:
        return self._public_key.encode()

    def polymorphic_pseudonym(self, identifier: Identifier) -> PolymorphicPseudonym:
        """An ElGamal encryption of the identifier's point under the gateway key (fresh randomness)."""
        return make_polymorphic(identifier, self._public_key)

    def polymorphic(self, identifier_type: IdentifierType | str, raw: str) -> str:
        """Normalise and check ``raw`` and return its polymorphic pseudonym (base64url, 128 characters).

        Raises :class:`InvalidIdentifier` (whose message never contains the identifier) for bad input.
        """
        return self.polymorphic_pseudonym(parse_identifier(identifier_type, raw)).encode()

    def open_pseudonym(self, encrypted: EncryptedPseudonym) -> Pseudonym:
        if self._recipient_key is None:
            raise WrongKey("this client has no recipient key to open encrypted pseudonyms with")
        return self._recipient_key.decrypt(encrypted)

    def open(self, encrypted: str) -> str:
        """Decrypt an encrypted pseudonym from the gateway into this partner's own pseudonym string."""
        return self.open_pseudonym(EncryptedPseudonym.decode(encrypted)).encode()

    def __repr__(self) -> str:
        has_key = self._recipient_key is not None
        return f"PseudonymClient(gateway_public_key={self.gateway_public_key!r}, recipient_key={has_key})"

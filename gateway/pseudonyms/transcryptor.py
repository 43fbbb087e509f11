"""The gateway's transcryptor: polymorphic pseudonyms in, domain pseudonyms out, identifiers never seen.

Pure library code over a :class:`~gateway.pseudonyms.keys.KeyRing`; no HTTP, no database. The maths is in
:mod:`gateway.pseudonyms.pep`. Notation: M the identifier point, ``(b, c, Y) = (r·G, M + r·Y, Y)`` a partner's
polymorphic pseudonym under the gateway key ``Y = y·G``, ``s_D`` the reshuffle factor and ``k_D`` the rekey
factor of domain D (HKDF-derived per key version, see :mod:`gateway.pseudonyms.keys`).

Domains
-------
* ``Domain(partnership)`` — the **partnership domain** ``s_P·M``. The gateway matches and keeps its
  discovery index on it; it is never shown to a partner. (a) :meth:`Transcryptor.partnership_pseudonym`.
* ``Domain(partnership, participant)`` — the **participant's own pseudonym** ``s_{P,A}·M``, stable per
  participant and partnership, different for every participant and every partnership.
  (b) :meth:`Transcryptor.participant_pseudonym` (plain, for the gateway's use) and
  :meth:`Transcryptor.encrypted_pseudonym` (RSK-ed and re-randomised for participant A, who opens it with its
  recipient key ``k_{P,A}·y``; the form handed out at enrolment, so transport and logs only ever carry a
  fresh-looking ciphertext).

A domain pseudonym is computed as ``s·c - (s·y)·b`` (= ``s·M``): reshuffle and decryption folded into two
scalar multiplications, so the identifier point M is never materialised.

(c) Translation between participants: the multiplicative design
---------------------------------------------------------------
When a holder B answers about a subject with *its own* pseudonym ``p_B = s_B·M``, the gateway must give the
requester A ``p_A = s_A·M``. Because every domain pseudonym is a scalar multiple of the same M::

    p_A = (s_A / s_B) · p_B            (scalar inversion: crypto_core_ristretto255_scalar_invert)

:meth:`Transcryptor.translate` does exactly that: one scalar multiplication, stateless, no ciphertext kept
per enrolment, and the gateway never needs M or the identifier. The same formula moves a participant's
pseudonym into the partnership domain (:meth:`Transcryptor.to_partnership`, ``s_P/s_B``), which is how the
exchange service checks that the holder's answer is about the subject that was asked for, and across key
versions (``s_A^{new} / s_B^{old}``), which is how rotation works (:mod:`gateway.pseudonyms.rotation`).

Why not the alternative — storing every enrolment's polymorphic ciphertext and translating by look-up
followed by RSK? It needs a stored ciphertext for every (participant, subject), a database round trip per
translation, and it fails for subjects a holder never enrolled. Keeping ciphertexts remains possible (they
can be moved to a new ElGamal key without decryption, :func:`gateway.pseudonyms.rotation.rekey_polymorphic`),
but it is not needed for translation.

Security notes, for whoever wires this into the API
---------------------------------------------------
1. ``translate`` is an oracle: it maps *any* valid point from B's domain into A's. Call it only for
   pseudonyms in a holder's answer to an allowed exchange, and only after :meth:`to_partnership` shows the
   pseudonym is the one asked about (or one the holder has enrolled). Never expose it as a free service.
2. Partners must never receive partnership-domain pseudonyms, factors or another participant's pseudonyms.
3. PEP separates the transcryptor from the key server; here one gateway holds y and all master secrets, so
   whoever controls the gateway process could test guesses of identifiers (a BSN space is small). The code
   never computes M, never logs, and keeps the secrets in the key store; operational separation of that
   store (file permissions, KMS/HSM back-end) is what protects against an insider.
4. A polymorphic pseudonym is accepted only if its embedded Y is one of the gateway's keys (tampering with Y
   raises :class:`~gateway.pseudonyms.errors.WrongKey`); tampering with b or c either fails decoding or gives
   an unrelated pseudonym that matches no one (see :mod:`gateway.pseudonyms.pep`).
"""

from __future__ import annotations

from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.keys import Domain, KeyRing, KeyVersion
from gateway.pseudonyms.pep import (
    ElGamal,
    EncryptedPseudonym,
    PolymorphicPseudonym,
    Pseudonym,
    RecipientKey,
    Scalar,
    rerandomize_with_secret,
)

__all__ = ["Transcryptor"]

_CACHE_LIMIT = 10_000


class Transcryptor:
    """Turns polymorphic pseudonyms into domain pseudonyms and translates between domains."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._ratios: dict[tuple[Domain, int, Domain, int], Scalar] = {}
        self._rsk: dict[tuple[Domain, int, int], tuple[Scalar, Scalar]] = {}

    @property
    def keys(self) -> KeyRing:
        return self._keys

    @property
    def public_key_version(self) -> int:
        return self._keys.current

    def public_key(self) -> str:
        """The current public key Y (base64url) that partners encrypt identifiers under."""
        return self._keys.public_key.encode()

    # --- checks ----------------------------------------------------------------------------------------------

    def accept(self, polymorphic: ElGamal) -> KeyVersion:
        """The key version a polymorphic pseudonym was made for; :class:`WrongKey` if it is not one of ours."""
        return self._keys.for_public_key(polymorphic.y)

    # --- (a) and (b): from a polymorphic pseudonym ------------------------------------------------------------

    def rerandomize(self, polymorphic: PolymorphicPseudonym) -> PolymorphicPseudonym:
        """A fresh-looking copy of the same polymorphic pseudonym (e.g. before storing or forwarding it)."""
        under = self.accept(polymorphic)
        return rerandomize_with_secret(polymorphic, under.elgamal_secret)

    def domain_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                         domain: Domain) -> Pseudonym:
        """``s_D·M`` under the current key version, computed as ``s·c - (s·y)·b`` without forming M."""
        under = self.accept(polymorphic)
        current = self._keys.current_version
        s = current.reshuffle_factor(domain)
        point = s.times(polymorphic.c) - (s * under.elgamal_secret).times(polymorphic.b)
        return Pseudonym(IdentifierType(identifier_type), current.version, point)

    def partnership_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                              partnership: str) -> Pseudonym:
        """(a) The partnership-domain pseudonym used for matching. Never hand it to a partner."""
        return self.domain_pseudonym(polymorphic, identifier_type, Domain(partnership))

    def participant_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                              partnership: str, participant: str) -> Pseudonym:
        """(b) The participant's own pseudonym, stable per participant and partnership."""
        return self.domain_pseudonym(polymorphic, identifier_type, Domain(partnership, participant))

    def encrypted_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                            partnership: str, participant: str) -> EncryptedPseudonym:
        """(b), encrypted: RSK into the participant's domain and key, then re-randomised.

        Only the participant (with :meth:`recipient_key`) can open it, and it decrypts to exactly
        :meth:`participant_pseudonym`. A ciphertext under an older gateway key is moved to the current
        one in the same step: ``b' = (s·y_old / (k·y_cur))·b``, ``c' = s·c``, ``Y' = k·Y_cur``.
        """
        under = self.accept(polymorphic)
        current = self._keys.current_version
        domain = Domain(partnership, participant)
        s = current.reshuffle_factor(domain)
        b_factor, recipient_secret = self._rsk_factors(domain, under, current)
        moved = ElGamal(b_factor.times(polymorphic.b), s.times(polymorphic.c), current.recipient_public_key(domain))
        fresh = rerandomize_with_secret(moved, recipient_secret)
        return EncryptedPseudonym(IdentifierType(identifier_type), current.version, fresh)

    def _rsk_factors(self, domain: Domain, under: KeyVersion, current: KeyVersion) -> tuple[Scalar, Scalar]:
        """``s·y_under / (k·y_current)`` and the recipient secret ``k·y_current`` (cached; inversions are slow)."""
        cache_key = (domain, under.version, current.version)
        factors = self._rsk.get(cache_key)
        if factors is None:
            if len(self._rsk) >= _CACHE_LIMIT:
                self._rsk.clear()
            recipient_secret = current.rekey_factor(domain) * current.elgamal_secret
            b_factor = current.reshuffle_factor(domain) * under.elgamal_secret / recipient_secret
            factors = self._rsk[cache_key] = (b_factor, recipient_secret)
        return factors

    def recipient_key(self, partnership: str, participant: str, *, version: int | None = None) -> RecipientKey:
        """The participant's decryption secret for its domain (hand over once, over a secure channel)."""
        key = self._keys.get(self._keys.current if version is None else version)
        return key.recipient_key(Domain(partnership, participant))

    # --- (c): between domains ----------------------------------------------------------------------------------

    def _ratio(self, source: Domain, source_version: int, target: Domain, target_version: int) -> Scalar:
        cache_key = (source, source_version, target, target_version)
        ratio = self._ratios.get(cache_key)
        if ratio is None:
            if len(self._ratios) >= _CACHE_LIMIT:
                self._ratios.clear()
            s_source = self._keys.get(source_version).reshuffle_factor(source)
            s_target = self._keys.get(target_version).reshuffle_factor(target)
            ratio = self._ratios[cache_key] = s_target / s_source
        return ratio

    def convert(self, pseudonym: Pseudonym, source: Domain, target: Domain, *,
                target_version: int | None = None) -> Pseudonym:
        """``(s_target / s_source)·p``: the pseudonym of the same subject in another domain and/or key version.

        The source key version is the pseudonym's own; the target version defaults to the current one.
        """
        version = self._keys.current if target_version is None else target_version
        ratio = self._ratio(source, pseudonym.key_version, target, version)
        return Pseudonym(pseudonym.identifier_type, version, ratio.times(pseudonym.point))

    def translate(self, pseudonym: Pseudonym, partnership: str, source_participant: str,
                  target_participant: str) -> Pseudonym:
        """(c) A holder's own pseudonym → the requester's pseudonym for the same subject (same partnership)."""
        return self.convert(pseudonym, Domain(partnership, source_participant),
                            Domain(partnership, target_participant))

    def to_partnership(self, pseudonym: Pseudonym, partnership: str, participant: str) -> Pseudonym:
        """A participant's pseudonym → the partnership-domain pseudonym (for checks against the index)."""
        return self.convert(pseudonym, Domain(partnership, participant), Domain(partnership))

    def __repr__(self) -> str:
        return f"Transcryptor(keys={self._keys!r})"

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
  :meth:`Transcryptor.encrypted_pseudonym` (a fresh encryption of it for participant A — the same
  distribution as RSK followed by re-randomisation — which A opens with its recipient key ``k_{P,A}·y``; the
  form handed out at enrolment, so transport and logs only ever carry a fresh-looking ciphertext).

A domain pseudonym is computed as ``s·c - (s·y)·b`` (= ``s·M``): reshuffle and decryption folded into two
scalar multiplications, so the identifier point M is never materialised.

Cost per call, in libsodium operations (V variable-base multiplication ~64 µs, B base-point multiplication
~20 µs, A point addition ~17 µs; per-domain factors, their products and inverses are cached):

=========================================  ===============  =============================================
operation                                  cost             before (the first implementation)
=========================================  ===============  =============================================
(a) / (b) plain domain pseudonym           2V + A           2V + A
(b) encrypted pseudonym                    2V + 2B + 2A     2V + 2B + 2A
(a) + (b) encrypted, one enrolled record   3V + 2B + 2A     4V + 2B + 3A (two separate calls)
(c) translate, to_partnership              V                V
rerandomise                                2B + 2A          2B + 2A
=========================================  ===============  =============================================

Two V per domain pseudonym is the minimum through libsodium's API: b and c are both unknown points, and it
offers no multi-scalar multiplication. A fresh encryption needs new randomness in both halves (two B, two A);
drawing it instead from a random multiple of b or c costs a third V (3V + A), which is no cheaper.

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

import hashlib
import hmac
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from gateway.pseudonyms.identifiers import IdentifierType
from gateway.pseudonyms.keys import Domain, KeyRing, KeyVersion
from gateway.pseudonyms.pep import (
    ElGamal,
    EncryptedPseudonym,
    Point,
    PolymorphicPseudonym,
    Pseudonym,
    RecipientKey,
    Scalar,
    decrypt_reshuffled,
    encrypt_with_secret,
    rerandomize_with_secret,
)

__all__ = ["EnrolmentPseudonyms", "Transcryptor"]

_CACHE_LIMIT = 10_000
_K = TypeVar("_K")
_V = TypeVar("_V")
_Names = tuple[str, str | None]  # a domain as (partnership, participant): a cache key without building a Domain


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> _V:
    """Bounded caches: emptied when full (the working set is the partnerships' participants, far fewer)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


@dataclass(frozen=True, slots=True)
class _Reshuffle:
    """What turns a ciphertext under key version ``under`` into a domain pseudonym of the current version."""

    version: int          # the current key version: the pseudonym's
    s: Scalar             # s_D of the current version
    s_y: Scalar           # s_D · y_under: decryption under the ciphertext's own key, folded in


@dataclass(frozen=True, slots=True)
class _Recipient:
    """A participant domain's recipient key (current version) and the ratio into its partnership's domain."""

    secret: Scalar        # x = k_D · y_current
    public: Point         # X = x·G
    to_partnership: Scalar  # s_P / s_D


class EnrolmentPseudonyms(NamedTuple):
    """What enrolling one subject yields: the participant's own pseudonym, encrypted for it, the
    partnership-domain pseudonym the gateway indexes it under, and the participant's own pseudonym in plain
    (computed on the way; the index keeps it so that a related subject the participant names by it is found
    without a multiplication into the partnership domain, ``PseudonymService.related_for_requester``)."""

    own: EncryptedPseudonym
    partnership: Pseudonym
    plain: Pseudonym


class Transcryptor:
    """Turns polymorphic pseudonyms into domain pseudonyms and translates between domains.

    Everything that depends only on the key ring and a domain (HKDF factors, their products with the
    ElGamal secrets, recipient keys, ratios between domains, each needing an HKDF or a ~40 µs scalar
    inversion) is derived once and cached per domain; a call does only the group operations that depend on
    its input. The caches are keyed by the domain's names, so a hit does not even build a :class:`Domain`.
    """

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        self._reshuffles: dict[tuple[str, str | None, int], _Reshuffle] = {}
        self._recipients: dict[tuple[str, str], _Recipient] = {}
        self._ratios: dict[tuple[_Names, int, _Names, int], Scalar] = {}
        self._tag_keys: dict[tuple[str, str, int], bytes] = {}

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

    # --- per-domain factors, derived once -----------------------------------------------------------------------

    def _reshuffle(self, under: KeyVersion, partnership: str, participant: str | None) -> _Reshuffle:
        key = (partnership, participant, under.version)
        found = self._reshuffles.get(key)
        if found is None:
            current = self._keys.current_version
            s = current.reshuffle_factor(Domain(partnership, participant))
            found = _remember(self._reshuffles, key, _Reshuffle(current.version, s, s * under.elgamal_secret))
        return found

    def _recipient(self, partnership: str, participant: str) -> _Recipient:
        key = (partnership, participant)
        found = self._recipients.get(key)
        if found is None:
            current = self._keys.current_version
            domain = Domain(partnership, participant)
            to_partnership = current.reshuffle_factor(Domain(partnership)) / current.reshuffle_factor(domain)
            found = _remember(self._recipients, key, _Recipient(
                current.rekey_factor(domain) * current.elgamal_secret, current.recipient_public_key(domain),
                to_partnership))
        return found

    # --- (a) and (b): from a polymorphic pseudonym ------------------------------------------------------------

    def rerandomize(self, polymorphic: PolymorphicPseudonym) -> PolymorphicPseudonym:
        """A fresh-looking copy of the same polymorphic pseudonym (e.g. before storing or forwarding it)."""
        under = self.accept(polymorphic)
        return rerandomize_with_secret(polymorphic, under.elgamal_secret)

    def _pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str, partnership: str,
                   participant: str | None) -> Pseudonym:
        kind = IdentifierType(identifier_type)
        factors = self._reshuffle(self.accept(polymorphic), partnership, participant)
        return Pseudonym(kind, factors.version, decrypt_reshuffled(polymorphic, factors.s, factors.s_y))

    def domain_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                         domain: Domain) -> Pseudonym:
        """``s_D·M`` under the current key version, computed as ``s·c - (s·y)·b`` without forming M."""
        return self._pseudonym(polymorphic, identifier_type, domain.partnership, domain.participant)

    def partnership_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                              partnership: str) -> Pseudonym:
        """(a) The partnership-domain pseudonym used for matching. Never hand it to a partner."""
        return self._pseudonym(polymorphic, identifier_type, partnership, None)

    def participant_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                              partnership: str, participant: str) -> Pseudonym:
        """(b) The participant's own pseudonym, stable per participant and partnership."""
        return self._pseudonym(polymorphic, identifier_type, partnership, participant)

    def encrypted_pseudonym(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                            partnership: str, participant: str) -> EncryptedPseudonym:
        """(b), encrypted: the participant pseudonym ``p = s·M``, freshly encrypted under the participant's key.

        Only the participant (with :meth:`recipient_key`, ``x = k·y``) can open it, and it decrypts to exactly
        :meth:`participant_pseudonym`. Computed as ``p = s·c - (s·y)·b`` and then ``(r·G, p + (r·x)·G, x·G)``
        for a fresh r: two variable-base and two base-point multiplications, two additions.

        This is RSK followed by re-randomisation, ``((s/k)·b + r·G, s·c + (r·x)·G, k·Y)`` (PEP's form), in
        another order: with ``b = t·G`` that ciphertext is ``(u·G, p + u·x·G)`` for ``u = s·t/k + r``, a fresh
        encryption of p whose randomness u is uniform because r is. Both forms cost the same and give the same
        distribution; this one yields p on the way, which :meth:`enrolment_pseudonyms` reuses. A ciphertext
        under an older gateway key is moved to the current one in the same step (``y`` is then that key's
        secret, s and x the current version's). The gateway already computes p (``participant_pseudonym``);
        M is never formed.
        """
        kind = IdentifierType(identifier_type)
        factors = self._reshuffle(self.accept(polymorphic), partnership, participant)
        recipient = self._recipient(partnership, participant)
        own = decrypt_reshuffled(polymorphic, factors.s, factors.s_y)
        return EncryptedPseudonym(kind, factors.version, encrypt_with_secret(own, recipient.secret, recipient.public))

    def enrolment_pseudonyms(self, polymorphic: ElGamal, identifier_type: IdentifierType | str,
                             partnership: str, participant: str) -> EnrolmentPseudonyms:
        """(b) encrypted and (a) together, as enrolment needs them: one variable-base multiplication fewer.

        ``encrypted_pseudonym`` + ``partnership_pseudonym`` cost four variable-base multiplications (each is
        ``s·c - (s·y)·b``); here the partnership pseudonym is ``(s_P / s_A)·p_A`` from the participant
        pseudonym p_A that the encryption needs anyway — the same algebra as :meth:`to_partnership`. The
        results are identical to the two separate calls (the encryption's randomness aside); ``plain`` is
        :meth:`participant_pseudonym`'s, at no cost.
        """
        kind = IdentifierType(identifier_type)
        factors = self._reshuffle(self.accept(polymorphic), partnership, participant)
        recipient = self._recipient(partnership, participant)
        own = decrypt_reshuffled(polymorphic, factors.s, factors.s_y)
        encrypted = EncryptedPseudonym(kind, factors.version,
                                       encrypt_with_secret(own, recipient.secret, recipient.public))
        return EnrolmentPseudonyms(encrypted, Pseudonym(kind, factors.version, recipient.to_partnership.times(own)),
                                   Pseudonym(kind, factors.version, own))

    def recipient_key(self, partnership: str, participant: str, *, version: int | None = None) -> RecipientKey:
        """The participant's decryption secret for its domain (hand over once, over a secure channel)."""
        key = self._keys.get(self._keys.current if version is None else version)
        return key.recipient_key(Domain(partnership, participant))

    # --- (c): between domains ----------------------------------------------------------------------------------

    def _ratio(self, source: _Names, source_version: int, target: _Names, target_version: int) -> Scalar:
        cache_key = (source, source_version, target, target_version)
        ratio = self._ratios.get(cache_key)
        if ratio is None:
            s_source = self._keys.get(source_version).reshuffle_factor(Domain(*source))
            s_target = self._keys.get(target_version).reshuffle_factor(Domain(*target))
            ratio = _remember(self._ratios, cache_key, s_target / s_source)
        return ratio

    def _convert(self, pseudonym: Pseudonym, source: _Names, target: _Names, target_version: int | None) -> Pseudonym:
        version = self._keys.current if target_version is None else target_version
        ratio = self._ratio(source, pseudonym.key_version, target, version)
        return Pseudonym(pseudonym.identifier_type, version, ratio.times(pseudonym.point))

    def convert(self, pseudonym: Pseudonym, source: Domain, target: Domain, *,
                target_version: int | None = None) -> Pseudonym:
        """``(s_target / s_source)·p``: the pseudonym of the same subject in another domain and/or key version.

        The source key version is the pseudonym's own; the target version defaults to the current one. One
        variable-base multiplication; the ratio (an inversion) is cached per pair of domains and versions.
        """
        return self._convert(pseudonym, (source.partnership, source.participant),
                             (target.partnership, target.participant), target_version)

    def translate(self, pseudonym: Pseudonym, partnership: str, source_participant: str,
                  target_participant: str) -> Pseudonym:
        """(c) A holder's own pseudonym → the requester's pseudonym for the same subject (same partnership)."""
        return self._convert(pseudonym, (partnership, source_participant), (partnership, target_participant), None)

    def to_partnership(self, pseudonym: Pseudonym, partnership: str, participant: str) -> Pseudonym:
        """A participant's pseudonym → the partnership-domain pseudonym (for checks against the index)."""
        return self._convert(pseudonym, (partnership, participant), (partnership, None), None)

    def index_tag(self, own: str, key_version: int, partnership: str, participant: str) -> str:
        """The index's tag of a participant's own pseudonym ``own`` (its encoded text, of ``key_version``):
        HMAC-SHA256 under the participant's tag key of that version (:meth:`KeyVersion.index_tag_key`), hex. What
        ``enrolments.own_tag`` keeps, so that a related subject the participant names is found by its text
        without a multiplication, while the database alone links no participant's pseudonym to an index row."""
        cache_key = (partnership, participant, key_version)
        key = self._tag_keys.get(cache_key)
        if key is None:
            key = _remember(self._tag_keys, cache_key,
                            self._keys.get(key_version).index_tag_key(Domain(partnership, participant)))
        return hmac.new(key, own.encode("ascii"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"Transcryptor(keys={self._keys!r})"

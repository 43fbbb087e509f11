"""Key rotation over stored pseudonyms: pure, streaming cores for the batch job.

After :meth:`KeyStore.rotate` the key ring holds the old and the new version. Everything stored under an
older one is then moved, without decrypting anything:

* a **domain pseudonym** ``s_old·M`` becomes ``s_new·M`` by one multiplication with ``s_new / s_old`` (the same
  multiplicative structure that translation uses; factors of each version are independent secrets);
* a stored **polymorphic pseudonym** ``(b, c, Y_old)`` becomes ``((y_old/y_new)·b, c, Y_new)``, which decrypts
  under ``y_new`` to the same M (``c - y_new·(y_old/y_new)·b = c - y_old·b``); it is re-randomised as well
  (with y_new known, by two base-point multiplications instead of a base-point and a variable-base one).

Both functions take any iterable (a database cursor, a list) and yield results one by one, so the caller's
batch job can write in chunks, commit as it goes and drive a progress bar; nothing is held in memory. Each
item carries the caller's own key (a row id) through unchanged. A domain pseudonym names its own key version,
so :func:`rekey_pseudonyms` can move items from *any* version still in the key ring (``old_version=None``):
rows left behind by an interrupted job, or written under an old version by a request that was in flight when
the key ring changed, are moved by the same pass. When rotation has finished, the old version can be retired
from the key store and the participants receive their new pseudonyms (or the mapping old → new, which this
produces).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from gateway.pseudonyms.errors import KeyStoreError
from gateway.pseudonyms.keys import Domain, KeyRing
from gateway.pseudonyms.pep import ElGamal, PolymorphicPseudonym, Pseudonym, Scalar, rerandomize_with_secret

__all__ = ["rekey_polymorphic", "rekey_pseudonyms"]

K = TypeVar("K")


def rekey_pseudonyms(items: Iterable[tuple[K, Domain, Pseudonym]], keys: KeyRing, *, old_version: int | None = None,
                     new_version: int) -> Iterator[tuple[K, Pseudonym]]:
    """Move domain pseudonyms to ``new_version``; yields ``(item key, new pseudonym)``.

    Items already under ``new_version`` pass through unchanged (a resumed job is idempotent). With
    ``old_version`` given, an item under any other version raises :class:`KeyStoreError` (the caller expected
    exactly one source version; stop and look). With ``old_version=None`` each item is moved from the version
    it names, whichever that is, because one interrupted or overtaken rotation can leave rows under several;
    a version no longer in the key ring raises :class:`~gateway.pseudonyms.errors.UnknownKeyVersion` (it was
    retired too early: those rows cannot be moved without their participants re-enrolling).
    """
    new = keys.get(new_version)
    if old_version is not None:
        keys.get(old_version)  # an unknown expected version fails before anything is yielded
    ratios: dict[tuple[Domain, int], Scalar] = {}
    for item_key, domain, pseudonym in items:
        version = pseudonym.key_version
        if version == new_version:
            yield item_key, pseudonym
            continue
        if old_version is not None and version != old_version:
            raise KeyStoreError(f"a stored pseudonym is under key version {version}, expected {old_version}")
        ratio = ratios.get((domain, version))
        if ratio is None:
            old = keys.get(version)
            ratio = ratios[domain, version] = new.reshuffle_factor(domain) / old.reshuffle_factor(domain)
        yield item_key, Pseudonym(pseudonym.identifier_type, new_version, ratio.times(pseudonym.point))


def rekey_polymorphic(items: Iterable[tuple[K, PolymorphicPseudonym]], keys: KeyRing, *, old_version: int,
                      new_version: int) -> Iterator[tuple[K, PolymorphicPseudonym]]:
    """Move stored polymorphic pseudonyms from the old gateway key to the new one (re-randomised)."""
    old, new = keys.get(old_version), keys.get(new_version)
    factor = old.elgamal_secret / new.elgamal_secret
    for item_key, ciphertext in items:
        if ciphertext.y == new.public_key:
            yield item_key, ciphertext
            continue
        if ciphertext.y != old.public_key:
            raise KeyStoreError(f"a stored ciphertext is not under key version {old_version}")
        moved = ElGamal(factor.times(ciphertext.b), ciphertext.c, new.public_key)
        fresh = rerandomize_with_secret(moved, new.elgamal_secret)  # we hold y_new: r·Y_new is (r·y_new)·G
        yield item_key, PolymorphicPseudonym(fresh.b, fresh.c, fresh.y)

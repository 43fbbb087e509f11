"""Pseudonymised identities: typed identifiers, PEP-style polymorphic pseudonyms, keys and rotation.

Pure library code (no HTTP, no database); the gateway's services wire it in. Modules:

* :mod:`~gateway.pseudonyms.identifiers` — BSN / KvK number / RSIN: normalisation and the eleven-test.
* :mod:`~gateway.pseudonyms.pep` — ristretto255 group maths (pysodium), ElGamal, the PEP operations
  (rerandomise, reshuffle, rekey, RSK) and the wire formats. No server dependencies: the partner SDK
  (:mod:`gateway.client.pseudonyms`) uses it.
* :mod:`~gateway.pseudonyms.keys` — key versions, domains, HKDF-derived per-domain factors.
* :mod:`~gateway.pseudonyms.keystore` — the ``KeyStore`` protocol, ``FileKeyStore`` and a test fake.
* :mod:`~gateway.pseudonyms.following` — a running process follows the key file (rotations without restart).
* :mod:`~gateway.pseudonyms.transcryptor` — polymorphic → partnership / participant pseudonyms, and the
  translation between participants (design in its docstring).
* :mod:`~gateway.pseudonyms.rotation` — streaming re-keying of stored pseudonyms after a key rotation.
* :mod:`~gateway.pseudonyms.errors` — the exception tree.

This ``__init__`` deliberately imports nothing, so that importing the pure maths does not pull in the rest.
"""

"""The transcryptor: stable, separated, unlinkable domain pseudonyms; translation; rotation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.client.pseudonyms import PseudonymClient
from gateway.pseudonyms.errors import InvalidPseudonym, KeyStoreError, UnknownKeyVersion, WrongKey
from gateway.pseudonyms.identifiers import bsn, kvk_number
from gateway.pseudonyms.keys import Domain, KeyRing, KeyVersion
from gateway.pseudonyms.keystore import InMemoryKeyStore
from gateway.pseudonyms.pep import (
    ElGamal,
    EncryptedPseudonym,
    PolymorphicPseudonym,
    Pseudonym,
    Scalar,
    decrypt,
    make_polymorphic,
)
from gateway.pseudonyms.rotation import rekey_polymorphic, rekey_pseudonyms
from gateway.pseudonyms.transcryptor import Transcryptor
from tests.unit.pseudonyms._strategies import names, valid_bsns

FAST = settings(max_examples=25, deadline=None)
_T0 = datetime(2025, 3, 1, tzinfo=UTC)
_RING = KeyRing({1: KeyVersion.generate(1, _T0)}, 1)
_T = Transcryptor(_RING)
P = "riec-zuid"


def _pp(number: str) -> PolymorphicPseudonym:
    return make_polymorphic(bsn(number), _RING.public_key)


@FAST
@given(number=valid_bsns, participant=names)
def test_domain_pseudonyms_are_stable_across_encryptions_and_rerandomisation(number: str, participant: str) -> None:
    first, second = _pp(number), _pp(number)
    third = _T.rerandomize(first)
    assert third != first
    pseudonyms = {_T.participant_pseudonym(pp, "bsn", P, participant) for pp in (first, second, third)}
    assert len(pseudonyms) == 1
    partnership = {_T.partnership_pseudonym(pp, "bsn", P) for pp in (first, second, third)}
    assert len(partnership) == 1
    assert partnership != pseudonyms


@FAST
@given(number=valid_bsns, a=names, b=names)
def test_participants_and_partnerships_get_different_pseudonyms(number: str, a: str, b: str) -> None:
    pp = _pp(number)
    seen = {
        _T.participant_pseudonym(pp, "bsn", P, a),
        _T.participant_pseudonym(pp, "bsn", "fec", a),
        _T.partnership_pseudonym(pp, "bsn", P),
        _T.partnership_pseudonym(pp, "bsn", "fec"),
    }
    assert len(seen) == 4
    if a != b:
        assert _T.participant_pseudonym(pp, "bsn", P, a) != _T.participant_pseudonym(pp, "bsn", P, b)


@FAST
@given(first=valid_bsns, second=valid_bsns)
def test_different_subjects_get_different_pseudonyms(first: str, second: str) -> None:
    if first != second:
        assert _T.participant_pseudonym(_pp(first), "bsn", P, "politie") != _T.participant_pseudonym(
            _pp(second), "bsn", P, "politie")


@FAST
@given(number=valid_bsns, a=names, b=names)
def test_translation_between_participants(number: str, a: str, b: str) -> None:
    pp = _pp(number)
    holder = _T.participant_pseudonym(pp, "bsn", P, b)
    requester = _T.participant_pseudonym(_pp(number), "bsn", P, a)
    assert _T.translate(holder, P, b, a) == requester
    assert _T.translate(requester, P, a, b) == holder
    assert _T.to_partnership(holder, P, b) == _T.partnership_pseudonym(pp, "bsn", P)


@FAST
@given(number=valid_bsns, a=names)
def test_encrypted_pseudonym_opens_to_the_participant_pseudonym(number: str, a: str) -> None:
    client = PseudonymClient(_T.public_key(), recipient_key=_T.recipient_key(P, a))
    pp = PolymorphicPseudonym.decode(client.polymorphic("bsn", number))
    first = _T.encrypted_pseudonym(pp, "bsn", P, a)
    second = _T.encrypted_pseudonym(pp, "bsn", P, a)
    assert first.ciphertext != second.ciphertext  # re-randomised: transport copies are unlinkable
    expected = _T.participant_pseudonym(pp, "bsn", P, a).encode()
    assert client.open(first.encode()) == client.open(second.encode()) == expected


@FAST
@given(number=valid_bsns, a=names, b=names)
def test_a_holder_with_only_its_own_key_cannot_link(number: str, a: str, b: str) -> None:
    if a == b:
        return
    pp = _pp(number)
    for_b = _T.encrypted_pseudonym(pp, "bsn", P, b)
    key_a = _T.recipient_key(P, a)
    with pytest.raises(WrongKey):
        key_a.decrypt(for_b)
    # Even ignoring the key check, A's raw decryption of B's ciphertext matches neither pseudonym.
    secret_a = _RING.current_version.rekey_factor(Domain(P, a)) * _RING.current_version.elgamal_secret
    raw = decrypt(for_b.ciphertext, secret_a)
    assert raw != _T.participant_pseudonym(pp, "bsn", P, a).point
    assert raw != _T.participant_pseudonym(pp, "bsn", P, b).point
    # And A's decryption of the polymorphic form reveals nothing either.
    assert decrypt(pp, secret_a) != _T.participant_pseudonym(pp, "bsn", P, a).point


def test_identifier_types_are_separate_domains_of_their_own() -> None:
    pp_bsn = make_polymorphic(bsn("123456782"), _RING.public_key)
    pp_kvk = make_polymorphic(kvk_number("12345678"), _RING.public_key)
    a = _T.participant_pseudonym(pp_bsn, "bsn", P, "kvk")
    b = _T.participant_pseudonym(pp_kvk, "kvk", P, "kvk")
    assert a.point != b.point
    assert a.encode().startswith("bsn.v1.")
    assert b.encode().startswith("kvk.v1.")


@settings(max_examples=60, deadline=None)
@given(number=valid_bsns, position=st.integers(0, 95), flip=st.integers(1, 255))
def test_tampered_polymorphic_pseudonym_is_rejected_or_matches_no_one(number: str, position: int,
                                                                       flip: int) -> None:
    pp = _pp(number)
    expected = _T.participant_pseudonym(pp, "bsn", P, "politie")
    raw = bytearray(pp.to_bytes())
    raw[position] ^= flip
    try:
        tampered = PolymorphicPseudonym.from_bytes(bytes(raw))
        result = _T.participant_pseudonym(tampered, "bsn", P, "politie")
    except WrongKey:
        assert position >= 64  # only a changed embedded key is reported as the wrong key
        return
    except InvalidPseudonym:
        return
    assert position < 64
    assert result != expected


def test_foreign_public_key_is_refused() -> None:
    other = KeyVersion.generate(1, _T0)
    pp = make_polymorphic(bsn("123456782"), other.public_key)
    with pytest.raises(WrongKey):
        _T.partnership_pseudonym(pp, "bsn", P)
    with pytest.raises(WrongKey):
        _T.encrypted_pseudonym(pp, "bsn", P, "politie")
    with pytest.raises(WrongKey):
        _T.rerandomize(pp)


def test_domains_are_encoded_unambiguously() -> None:
    assert Domain("ab", "c").info() != Domain("a", "bc").info()
    with pytest.raises(ValueError, match="participant"):
        Domain("a", "")
    with pytest.raises(ValueError, match="partnership"):
        Domain("")
    assert str(Domain("p", "a")) == "p/a"


def test_key_material_is_never_printed() -> None:
    key = _RING.current_version
    secret_hex = bytes(key.elgamal_secret).hex()
    for text in (repr(key), str(key), repr(_RING), repr(_T), repr(_T.recipient_key(P, "x")),
                 repr(key.reshuffle_factor(Domain(P)))):
        assert secret_hex not in text
        assert key.pseudonymisation_secret.hex() not in text
    assert "public_key" in repr(key)


def test_rotation_moves_pseudonyms_and_ciphertexts_without_decrypting() -> None:
    store = InMemoryKeyStore(ring=KeyRing({1: KeyVersion.generate(1, _T0)}, 1))
    old_ring = asyncio.run(store.load())
    old = Transcryptor(old_ring)
    numbers = ["123456782", "111222333", "012345672"]
    pps = [make_polymorphic(bsn(n), old_ring.public_key) for n in numbers]
    domain = Domain(P, "politie")
    stored = [(i, domain, old.participant_pseudonym(pp, "bsn", P, "politie")) for i, pp in enumerate(pps)]
    stored.append((99, Domain(P), old.partnership_pseudonym(pps[0], "bsn", P)))

    new_ring = asyncio.run(store.rotate())
    assert new_ring.current == 2
    assert sorted(new_ring.versions) == [1, 2]
    new = Transcryptor(new_ring)

    moved = dict(rekey_pseudonyms(iter(stored), new_ring, old_version=1, new_version=2))
    for i, pp in enumerate(pps):
        fresh = new.participant_pseudonym(pp, "bsn", P, "politie")  # old-key ciphertext still accepted
        assert fresh.key_version == 2
        assert moved[i] == fresh
        assert moved[i] != stored[i][2]
    assert moved[99] == new.partnership_pseudonym(pps[0], "bsn", P)
    # idempotent when resumed
    again = dict(rekey_pseudonyms([(0, domain, moved[0])], new_ring, old_version=1, new_version=2))
    assert again[0] == moved[0]

    # translation straight from an old-version pseudonym into the current version
    assert new.translate(stored[0][2], P, "politie", "fiod") == new.participant_pseudonym(pps[0], "bsn", P, "fiod")

    # stored polymorphic pseudonyms move to the new ElGamal key and keep their meaning
    moved_pps = dict(rekey_polymorphic(enumerate(pps), new_ring, old_version=1, new_version=2))
    for i in range(len(pps)):
        assert moved_pps[i].y == new_ring.public_key
        assert new.participant_pseudonym(moved_pps[i], "bsn", P, "politie") == moved[i]

    # encrypted pseudonyms from old-key ciphertexts open with the new recipient key
    key = new.recipient_key(P, "politie")
    assert key.decrypt(new.encrypted_pseudonym(pps[1], "bsn", P, "politie")) == moved[1]

    # after retiring version 1, old ciphertexts and pseudonyms are refused
    retired = asyncio.run(store.retire(1))
    after = Transcryptor(retired)
    with pytest.raises(WrongKey):
        after.partnership_pseudonym(pps[0], "bsn", P)
    with pytest.raises(UnknownKeyVersion):
        after.translate(stored[0][2], P, "politie", "fiod")
    with pytest.raises(KeyStoreError):
        asyncio.run(store.retire(2))


def test_rotation_refuses_items_under_an_unexpected_version() -> None:
    ring = KeyRing({1: KeyVersion.generate(1, _T0), 2: KeyVersion.generate(2, _T0),
                    3: KeyVersion.generate(3, _T0)}, 3)
    pseudonym = Transcryptor(ring).partnership_pseudonym(make_polymorphic(bsn("123456782"), ring.public_key),
                                                         "bsn", P)
    with pytest.raises(KeyStoreError, match="version 3"):
        list(rekey_pseudonyms([(1, Domain(P), pseudonym)], ring, old_version=1, new_version=2))
    foreign = make_polymorphic(bsn("123456782"), ring.public_key)
    with pytest.raises(KeyStoreError):
        list(rekey_polymorphic([(1, foreign)], ring, old_version=1, new_version=2))


def test_rotation_moves_items_from_whichever_version_they_name_to_the_target() -> None:
    """An interrupted rotation or a gateway still on an old key ring can leave items under several versions;
    without an expected source version each is moved from its own, and a retired version is refused."""
    ring = KeyRing({v: KeyVersion.generate(v, _T0) for v in (1, 2, 3)}, 3)
    pp = make_polymorphic(bsn("123456782"), ring.public_key)
    under = {v: Transcryptor(KeyRing(dict(ring.versions), v)).partnership_pseudonym(pp, "bsn", P) for v in (1, 2, 3)}
    moved = dict(rekey_pseudonyms([(v, Domain(P), under[v]) for v in (1, 2, 3)], ring, new_version=3))
    assert moved == {1: under[3], 2: under[3], 3: under[3]}
    retired = ring.without_version(1)
    with pytest.raises(UnknownKeyVersion):
        list(rekey_pseudonyms([(1, Domain(P), under[1])], retired, new_version=3))


def test_encrypted_pseudonym_wire_format() -> None:
    encrypted = _T.encrypted_pseudonym(_pp("123456782"), "bsn", P, "politie")
    text = encrypted.encode()
    assert text.startswith("bsn.v1.")
    assert len(text) == len("bsn.v1.") + 128
    assert EncryptedPseudonym.decode(text) == encrypted
    assert isinstance(encrypted.ciphertext, ElGamal)
    with pytest.raises(InvalidPseudonym):
        EncryptedPseudonym.decode(text[:-1])


def test_scalar_ratio_translation_is_exact_inverse() -> None:
    pseudonym = _T.participant_pseudonym(_pp("123456782"), "bsn", P, "a")
    there = _T.convert(pseudonym, Domain(P, "a"), Domain("other", "b"))
    back = _T.convert(there, Domain("other", "b"), Domain(P, "a"))
    assert back == pseudonym
    assert isinstance(Scalar.random(), Scalar)
    assert isinstance(pseudonym, Pseudonym)


@FAST
@given(number=valid_bsns, a=names)
def test_enrolment_pseudonyms_equal_the_separate_operations(number: str, a: str) -> None:
    client = PseudonymClient(_T.public_key(), recipient_key=_T.recipient_key(P, a))
    pp = _pp(number)
    own, shared, plain = _T.enrolment_pseudonyms(pp, "bsn", P, a)
    assert shared == _T.partnership_pseudonym(pp, "bsn", P)
    assert plain == _T.participant_pseudonym(pp, "bsn", P, a)
    assert client.open(own.encode()) == _T.participant_pseudonym(pp, "bsn", P, a).encode()
    assert own.ciphertext.y == _T.encrypted_pseudonym(pp, "bsn", P, a).ciphertext.y
    assert own.ciphertext != _T.enrolment_pseudonyms(pp, "bsn", P, a).own.ciphertext  # fresh randomness
    assert _T.to_partnership(client.open_pseudonym(own), P, a) == shared


def test_enrolment_pseudonyms_move_old_key_ciphertexts_to_the_current_version() -> None:
    old = KeyVersion.generate(1, _T0)
    ring = KeyRing({1: old, 2: KeyVersion.generate(2, _T0)}, 2)
    transcryptor = Transcryptor(ring)
    pp = make_polymorphic(bsn("123456782"), old.public_key)
    own, shared, plain = transcryptor.enrolment_pseudonyms(pp, "bsn", P, "politie")
    assert own.key_version == shared.key_version == plain.key_version == 2
    assert transcryptor.recipient_key(P, "politie").decrypt(own) == transcryptor.participant_pseudonym(
        make_polymorphic(bsn("123456782"), ring.public_key), "bsn", P, "politie")
    assert shared == transcryptor.partnership_pseudonym(make_polymorphic(bsn("123456782"), ring.public_key),
                                                        "bsn", P)
    with pytest.raises(WrongKey):
        transcryptor.enrolment_pseudonyms(make_polymorphic(bsn("123456782"), KeyVersion.generate(
            1, _T0).public_key), "bsn", P, "politie")


def test_domain_names_are_still_validated_behind_the_caches() -> None:
    pp = _pp("123456782")
    for call in (lambda: _T.partnership_pseudonym(pp, "bsn", ""),
                 lambda: _T.participant_pseudonym(pp, "bsn", P, ""),
                 lambda: _T.encrypted_pseudonym(pp, "bsn", P, "\n"),
                 lambda: _T.enrolment_pseudonyms(pp, "bsn", P, "x" * 201),
                 lambda: _T.translate(_T.participant_pseudonym(pp, "bsn", P, "a"), P, "a", "")):
        with pytest.raises(ValueError, match="domain"):
            call()
    with pytest.raises(ValueError, match="passport"):
        _T.encrypted_pseudonym(pp, "passport", P, "politie")


def test_an_index_tag_is_keyed_per_participant_and_key_version_and_reveals_no_pseudonym() -> None:
    """``Transcryptor.index_tag`` (what ``enrolments.own_tag`` keeps of a participant's own pseudonym): the same for
    the same text, participant and version, so a look-up finds it; another participant's, another version's or
    another ring's (other secrets) tag of the same text differs, and the tag holds nothing of the text — so the
    database alone cannot link a participant's pseudonyms, which it holds with the identities, to index rows."""
    own = _T.participant_pseudonym(_pp("123456782"), "bsn", P, "politie").encode()
    tag = _T.index_tag(own, 1, P, "politie")
    assert tag == Transcryptor(_RING).index_tag(own, 1, P, "politie")
    assert len(tag) == 64
    assert own.rsplit(".", 1)[-1] not in tag
    ring = _RING.with_version(KeyVersion.generate(2, _T0))
    others = {_T.index_tag(own, 1, P, "kvk"), _T.index_tag(own, 1, "riec-noord", "politie"),
              Transcryptor(ring).index_tag(own, 2, P, "politie"),
              Transcryptor(KeyRing({1: KeyVersion.generate(1, _T0)}, 1)).index_tag(own, 1, P, "politie")}
    assert tag not in others
    assert len(others) == 4

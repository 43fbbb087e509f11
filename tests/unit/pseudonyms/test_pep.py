"""The PEP group maths: algebraic properties of the operations, strict wire formats, tampering."""

from __future__ import annotations

import base64

import pysodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pseudonyms.errors import InvalidPseudonym, WrongKey
from gateway.pseudonyms.identifiers import bsn
from gateway.pseudonyms.pep import (
    ElGamal,
    EncryptedPseudonym,
    Point,
    PolymorphicPseudonym,
    Pseudonym,
    RecipientKey,
    Scalar,
    decrypt,
    decrypt_reshuffled,
    encrypt,
    encrypt_with_secret,
    hash_to_point,
    identifier_point,
    make_polymorphic,
    rekey,
    rerandomize,
    rerandomize_with_secret,
    reshuffle,
    rsk,
)
from tests.unit.pseudonyms._strategies import scalars, valid_bsns

FAST = settings(max_examples=30, deadline=None)
_Y_SECRET = Scalar.from_wide(bytes(range(64)))
_Y = _Y_SECRET.times_base()


def _message(number: str) -> Point:
    return identifier_point(bsn(number))


@FAST
@given(number=valid_bsns, r=scalars)
def test_encrypt_then_decrypt_gives_the_message(number: str, r: Scalar) -> None:
    m = _message(number)
    assert decrypt(encrypt(m, _Y, r), _Y_SECRET) == m


@FAST
@given(number=valid_bsns, r=scalars, s=scalars)
def test_rerandomise_and_reshuffle_commute(number: str, r: Scalar, s: Scalar) -> None:
    ct = make_polymorphic(bsn(number), _Y)
    a = decrypt(reshuffle(rerandomize(ct, r), s), _Y_SECRET)
    b = decrypt(rerandomize(reshuffle(ct, s), r), _Y_SECRET)
    assert a == b == s.times(_message(number))


@FAST
@given(number=valid_bsns, s=scalars, k=scalars)
def test_rsk_equals_rekey_after_reshuffle(number: str, s: Scalar, k: Scalar) -> None:
    ct = make_polymorphic(bsn(number), _Y)
    combined = rsk(ct, s, k)
    stepwise = rekey(reshuffle(ct, s), k)
    assert combined == stepwise  # deterministic: equal as ciphertexts, not only after decryption
    assert combined.y == k.times(_Y)
    assert decrypt(combined, k * _Y_SECRET) == s.times(_message(number))
    assert rsk(ct, s, k, k.times(_Y)) == combined


@FAST
@given(number=valid_bsns, k=scalars, r=scalars)
def test_rekey_keeps_the_message_for_the_new_key_only(number: str, k: Scalar, r: Scalar) -> None:
    ct = rekey(make_polymorphic(bsn(number), _Y), k)
    assert decrypt(ct, k * _Y_SECRET) == _message(number)
    assert decrypt(ct, _Y_SECRET) != _message(number)
    assert decrypt(rerandomize_with_secret(ct, k * _Y_SECRET, r), k * _Y_SECRET) == _message(number)


@FAST
@given(number=valid_bsns)
def test_polymorphic_pseudonyms_are_fresh_each_time(number: str) -> None:
    first, second = make_polymorphic(bsn(number), _Y), make_polymorphic(bsn(number), _Y)
    assert first.b != second.b
    assert first.c != second.c
    assert decrypt(first, _Y_SECRET) == decrypt(second, _Y_SECRET)


def test_identifier_point_is_from_hash_of_sha512() -> None:
    import hashlib
    expected = pysodium.crypto_core_ristretto255_from_hash(hashlib.sha512(b"bsn:123456782").digest())
    assert bytes(identifier_point(bsn("1234.56.782"))) == expected
    assert hash_to_point(b"kvk:12345678") != hash_to_point(b"rsin:12345678")


@FAST
@given(number=valid_bsns)
def test_wire_format_round_trip(number: str) -> None:
    ct = make_polymorphic(bsn(number), _Y)
    text = ct.encode()
    assert len(text) == 128
    assert "=" not in text
    assert len(ct.to_bytes()) == 96
    decoded = PolymorphicPseudonym.decode(text)
    assert decoded == ct
    assert isinstance(decoded, PolymorphicPseudonym)
    pseudonym = Pseudonym(bsn(number).type, 3, decrypt(ct, _Y_SECRET))
    assert Pseudonym.decode(pseudonym.encode()) == pseudonym
    assert pseudonym.encode().startswith("bsn.v3.")


@settings(max_examples=150, deadline=None)
@given(number=valid_bsns, position=st.integers(0, 95), flip=st.integers(1, 255))
def test_tampered_ciphertext_is_rejected_or_decrypts_elsewhere(number: str, position: int, flip: int) -> None:
    ct = make_polymorphic(bsn(number), _Y)
    raw = bytearray(ct.to_bytes())
    raw[position] ^= flip
    try:
        tampered = PolymorphicPseudonym.from_bytes(bytes(raw))
    except InvalidPseudonym:
        return  # rejected: no longer a canonical, non-identity ristretto255 encoding
    if position >= 64:
        assert tampered.y != _Y  # a changed key is always visible (the transcryptor then raises WrongKey)
    else:
        assert decrypt(tampered, _Y_SECRET) != _message(number)


def test_identity_elements_are_rejected_everywhere() -> None:
    ct = make_polymorphic(bsn("123456782"), _Y).to_bytes()
    for position in (0, 32, 64):
        raw = bytearray(ct)
        raw[position:position + 32] = bytes(32)
        with pytest.raises(InvalidPseudonym, match="identity"):
            ElGamal.from_bytes(bytes(raw))
    with pytest.raises(InvalidPseudonym, match="identity"):
        Point(bytes(32))


@pytest.mark.parametrize("raw", [
    b"\xff" * 32,                                 # not canonical (>= p)
    bytes([1]) + bytes(31),                       # odd: not a canonical ristretto encoding
    b"\x00" * 31 + b"\x80",                       # high bit set
])
def test_invalid_encodings_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidPseudonym):
        Point(raw)


@FAST
@given(number=valid_bsns)
def test_high_bit_variant_of_a_valid_point_is_rejected(number: str) -> None:
    # libsodium 1.0.18 accepts these; RFC 9496 (and we) do not: one element, one encoding.
    raw = bytearray(bytes(_message(number)))
    raw[31] |= 0x80
    with pytest.raises(InvalidPseudonym, match="canonical"):
        Point(bytes(raw))


@pytest.mark.parametrize("text", [
    "",
    "A" * 127,
    "A" * 129,
    "A" * 126 + "==",
    "+" * 128,                                    # standard, not url-safe, alphabet
    "A" * 127 + "B",                              # canonical length but non-zero trailing bits? (then invalid point)
])
def test_malformed_polymorphic_text_is_rejected(text: str) -> None:
    with pytest.raises(InvalidPseudonym):
        PolymorphicPseudonym.decode(text)


def test_non_canonical_base64_is_rejected() -> None:
    point = _message("123456782")
    text = point.encode()
    assert len(text) == 43
    # The last character carries 2 unused bits; setting them gives the same bytes under lax decoding.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sloppy = text[:-1] + alphabet[alphabet.index(text[-1]) | 1]
    if sloppy != text:
        assert base64.urlsafe_b64decode(sloppy + "=") == bytes(point)
        with pytest.raises(InvalidPseudonym, match="canonical"):
            Point.decode(sloppy)


@pytest.mark.parametrize("text", [
    "bsn.v1", "bsn.v0.AAAA", "passport.v1.AAAA", "BSN.v1.AAAA", "bsn.v1.AAAA", "bsn.1." + "A" * 43, "x" * 300,
])
def test_malformed_pseudonym_text_is_rejected(text: str) -> None:
    with pytest.raises(InvalidPseudonym):
        Pseudonym.decode(text)


def test_scalars_are_validated_and_never_printed() -> None:
    secret = Scalar.from_wide(b"\x07" * 64)
    assert "07" not in repr(secret)
    assert "secret" in repr(secret)
    assert Scalar(bytes(secret)) == secret
    with pytest.raises(InvalidPseudonym, match="zero"):
        Scalar(bytes(32))
    with pytest.raises(InvalidPseudonym, match="reduced"):
        Scalar(b"\xff" * 32)
    with pytest.raises(InvalidPseudonym):
        Scalar(b"short")
    assert (secret / secret) * secret == secret


def test_recipient_key_opens_only_its_own_ciphertexts() -> None:
    k = Scalar.from_wide(b"\x01" * 64)
    s = Scalar.from_wide(b"\x02" * 64)
    key = RecipientKey(k * _Y_SECRET, version=1)
    other = RecipientKey(Scalar.from_wide(b"\x03" * 64) * _Y_SECRET, version=1)
    ct = rsk(make_polymorphic(bsn("123456782"), _Y), s, k)
    encrypted = EncryptedPseudonym(bsn("123456782").type, 1, ct)
    opened = key.decrypt(EncryptedPseudonym.decode(encrypted.encode()))
    assert opened.point == s.times(_message("123456782"))
    with pytest.raises(WrongKey):
        other.decrypt(encrypted)
    with pytest.raises(WrongKey):  # right key, wrong version label
        RecipientKey(k * _Y_SECRET, version=2).decrypt(encrypted)
    restored = RecipientKey.decode(key.encode())
    assert restored.decrypt(encrypted) == opened
    assert key.encode().startswith("rk.v1.")
    assert key.encode().split(".")[-1] not in repr(key)


@FAST
@given(number=valid_bsns, s=scalars, r=scalars)
def test_decrypt_reshuffled_equals_reshuffle_after_decryption(number: str, s: Scalar, r: Scalar) -> None:
    ct = encrypt(_message(number), _Y, r)
    assert decrypt_reshuffled(ct, s, s * _Y_SECRET) == s.times(_message(number)) == decrypt(reshuffle(ct, s),
                                                                                            _Y_SECRET)


@FAST
@given(number=valid_bsns, x=scalars, r=scalars)
def test_encrypt_with_secret_is_encrypt_under_the_public_key(number: str, x: Scalar, r: Scalar) -> None:
    m = _message(number)
    fast = encrypt_with_secret(m, x, r=r)
    assert fast == encrypt(m, x.times_base(), r)  # (r·x)·G is r·(x·G): the same ciphertext, deterministic
    assert encrypt_with_secret(m, x, x.times_base(), r) == fast
    assert decrypt(encrypt_with_secret(m, x), x) == m
    assert encrypt_with_secret(m, x).b != encrypt_with_secret(m, x).b  # fresh randomness when r is not given


def test_an_encryption_of_the_identity_yields_no_pseudonym() -> None:
    # (r·G, r·Y) is a valid ciphertext of the identity: every pseudonym of it would be the identity.
    r, s = Scalar.from_wide(b"\x05" * 64), Scalar.from_wide(b"\x06" * 64)
    ct = ElGamal(r.times_base(), r.times(_Y), _Y)
    with pytest.raises(InvalidPseudonym, match="identity"):
        decrypt_reshuffled(ct, s, s * _Y_SECRET)
    with pytest.raises(InvalidPseudonym, match="identity"):
        decrypt(ct, _Y_SECRET)


def test_public_keys_are_validated_before_they_are_remembered() -> None:
    ct = make_polymorphic(bsn("123456782"), _Y).to_bytes()
    assert ElGamal.from_bytes(ct).y == _Y
    assert ElGamal.from_bytes(bytearray(ct)).y == _Y  # from the remembered key, and from a bytearray
    high_bit = bytearray(ct)
    high_bit[95] |= 0x80  # the same key with the top bit set: libsodium 1.0.18 alone would accept it
    for _ in range(2):  # refused the first time, and not remembered for the second
        with pytest.raises(InvalidPseudonym, match="canonical"):
            ElGamal.from_bytes(bytes(high_bit))
    invalid = bytearray(ct)
    invalid[64:] = b"\xff" * 32
    with pytest.raises(InvalidPseudonym):
        ElGamal.from_bytes(bytes(invalid))

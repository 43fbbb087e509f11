"""CLK encoding: tokenisers, keyed double hashing (checked against an independent transcription), wire forms."""

from __future__ import annotations

import decimal
import hashlib
import math

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.matching.encoding import (
    CLKEncoder,
    EncodedDataset,
    clk_key_id,
    dataset_from_wire,
    dataset_to_wire,
    filters_from_b64,
    filters_to_b64,
    normalise,
    records_from_columns,
    tokenize,
)
from gateway.matching.errors import EncodingError
from gateway.matching.schema import FieldSpec, Normaliser, TokenizerKind, schema_from_mapping, shipped_schema
from gateway.matching.similarity import popcounts

SECRET = b"0123456789abcdef0123456789abcdef"


def _spec(kind: str, **kw: object) -> FieldSpec:
    return FieldSpec(name="f", tokenizer=TokenizerKind(kind), k=1, **kw)  # type: ignore[arg-type]


def test_normalisers() -> None:
    assert normalise(Normaliser.TEXT, "  Émile-Zoë  O'Neill ") == "emile zoe o neill"
    assert normalise(Normaliser.DIGITS, "1915-11-11") == "19151111"
    assert normalise(Normaliser.DIGITS, 4223.0) == "4223"  # floats from spreadsheets/pandas
    assert normalise(Normaliser.NONE, " AbC ") == "AbC"
    for missing in (None, float("nan"), "", "   ", "--"):
        assert normalise(Normaliser.TEXT, missing) is None


def test_tokenisers() -> None:
    assert tokenize(_spec("ngram", n=2), "anna") == [" a", "an", "nn", "na", "a "]
    assert tokenize(_spec("ngram", n=1, positional=True), "1915") == ["0 1", "1 9", "2 1", "3 5"]
    assert tokenize(_spec("ngram", n=3, positional=True), "ab") == ["0 ab"]
    assert tokenize(_spec("exact"), "nsw") == ["nsw"]
    near = set(tokenize(_spec("numeric", threshold=2.0, resolution=2), "1980"))
    close = set(tokenize(_spec("numeric", threshold=2.0, resolution=2), "1981"))
    far = set(tokenize(_spec("numeric", threshold=2.0, resolution=2), "1990"))
    assert len(near) == 3
    assert near & close
    assert not near & far
    assert tokenize(_spec("numeric"), "not a number") == []


def _independent_key(secret: bytes, schema_id: str, version: int, field: str) -> bytes:
    info = schema_id.encode() + b"\x00" + version.to_bytes(4, "big") + b"\x00" + field.encode()
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=b"wgs-gateway/clk/v2", info=info).derive(secret)


def _independent_filter(secret: bytes, schema_id: str, version: int, field: str, tokens: list[str], k: int,
                        bits: int = 1024) -> int:
    """The encoding rules of the module docstring, transcribed without using the module."""
    key = _independent_key(secret, schema_id, version, field)
    value = 0
    for token in tokens:
        digest = hashlib.blake2b(token.encode(), key=key, digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:16], "little") | 1
        for i in range(k):
            value |= 1 << ((h1 + i * h2) % bits)
    return value


def test_encoding_matches_an_independent_transcription() -> None:
    schema = schema_from_mapping({"id": "t", "version": 3, "fields": [
        {"name": "name", "tokenizer": "ngram", "n": 2, "k": 7},
        {"name": "dob", "tokenizer": "ngram", "n": 1, "positional": True, "normalise": "digits", "k": 4},
    ]})
    encoder = CLKEncoder(schema, SECRET)
    filt = encoder.encode_one({"name": "Jo", "dob": "2001-02-03"})
    expected = (_independent_filter(SECRET, "t", 3, "name", [" j", "jo", "o "], 7)
                | _independent_filter(SECRET, "t", 3, "dob", [f"{i} {d}" for i, d in enumerate("20010203")], 4))
    assert int.from_bytes(filt.astype("<u8").tobytes(), "little") == expected
    assert expected != _independent_filter(SECRET, "t", 4, "name", [" j", "jo", "o "], 7)  # version is keyed


def test_block_keys_match_an_independent_transcription() -> None:
    schema = schema_from_mapping({"id": "t", "version": 2, "fields": [
        {"name": "name", "tokenizer": "ngram", "k": 7},
        {"name": "city", "tokenizer": "exact", "k": 0},  # only blocks
    ], "blocking": [["name"], ["name[:2]", "city"]]})
    key = _independent_key(SECRET, "t", 2, "\x00blocking")

    def expected(message: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(message, key=key, digest_size=8).digest(), "little") or 1

    keys = CLKEncoder(schema, SECRET).block_keys([{"name": "Jo Ann", "city": "Zoë"}, {"name": "jo"}])
    assert keys.tolist() == [[expected(b"\x00jo ann"), expected(b"\x01jo\x1fzoe")], [expected(b"\x00jo"), 0]]


def test_encoding_is_keyed_deterministic_and_ignores_missing() -> None:
    schema = shipped_schema("person")
    record = {"given_name": "michaela", "surname": "neumann", "date_of_birth": "19151111", "postcode": "4223"}
    a = CLKEncoder(schema, SECRET).encode([record, record])
    assert np.array_equal(a[0], a[1])
    assert np.array_equal(CLKEncoder(schema, SECRET).encode_one(record), a[0])
    other = CLKEncoder(schema, b"another secret of 32 bytes......").encode_one(record)
    assert not np.array_equal(other, a[0])
    with_missing = CLKEncoder(schema, SECRET).encode_one({**record, "suburb": None, "state": float("nan")})
    assert np.array_equal(with_missing, a[0])
    empty = CLKEncoder(schema, SECRET).encode([{}, {"unknown": "x"}])
    assert not empty.any()
    assert a.dtype == np.uint64
    assert a.shape == (2, 16)


def test_values_that_are_not_strings() -> None:
    schema = schema_from_mapping({"id": "t", "version": 1, "fields": [
        {"name": "a", "tokenizer": "ngram", "n": 1, "positional": True, "normalise": "digits", "k": 9},
        {"name": "b", "tokenizer": "exact", "k": 9}]})
    encoder = CLKEncoder(schema, SECRET)
    filters = encoder.encode([{"a": 4223.0}, {"a": "4223"}, {"a": 4223}, {"b": True}, {"b": 1}, {"b": "True"},
                              {"a": float("nan"), "b": None}, {"a": "  "}])
    assert np.array_equal(filters[0], filters[1])
    assert np.array_equal(filters[0], filters[2])
    assert not np.array_equal(filters[3], filters[4])  # True == 1 in Python, but not as text
    assert np.array_equal(filters[3], filters[5])
    assert not filters[6:].any()
    for unhashable in ([1], {"x": 1}):
        with pytest.raises(EncodingError, match="unhashable"):
            encoder.encode([{"a": "1"}, {"b": unhashable}])
    with pytest.raises(EncodingError, match="record 1"):
        encoder.encode([{"a": "1"}, ["a"]])  # type: ignore[list-item]


def test_every_entry_point_encodes_alike() -> None:
    schema = shipped_schema("person")
    records = [{"given_name": f"name{i % 7}", "surname": f"s{i % 3}", "postcode": str(1000 + i)} for i in range(30)]
    dataset = CLKEncoder(schema, SECRET).encode_dataset(iter(records))  # any iterable, read once
    assert dataset.block_keys is not None
    assert np.array_equal(dataset.filters, CLKEncoder(schema, SECRET).encode(records))
    assert np.array_equal(dataset.block_keys, CLKEncoder(schema, SECRET).block_keys(records))
    warm = CLKEncoder(schema, SECRET)
    warm.encode(records[::-1])  # caches filled in another order
    assert np.array_equal(warm.encode(records), dataset.filters)
    assert CLKEncoder(schema, SECRET).block_keys([]).shape == (0, len(schema.signatures))
    no_blocking = schema_from_mapping({"id": "t", "version": 1, "fields": [{"name": "a", "tokenizer": "exact",
                                                                             "k": 3}]})
    assert CLKEncoder(no_blocking, SECRET).encode_dataset([{"a": "x"}]).block_keys is None
    assert CLKEncoder(no_blocking, SECRET).block_keys([{"a": "x"}]).shape == (1, 0)


def test_weights_set_about_k_bits_per_token() -> None:
    light = schema_from_mapping({"id": "t", "version": 1, "fields": [{"name": "a", "tokenizer": "exact", "k": 5}]})
    heavy = schema_from_mapping({"id": "t", "version": 1, "fields": [{"name": "a", "tokenizer": "exact", "k": 50}]})
    assert popcounts(CLKEncoder(light, SECRET).encode([{"a": "x"}]))[0] == 5  # h2 odd: k distinct positions
    assert popcounts(CLKEncoder(heavy, SECRET).encode([{"a": "x"}]))[0] == 50


def test_secret_must_be_long_enough_and_is_not_printed() -> None:
    with pytest.raises(EncodingError):
        CLKEncoder(shipped_schema("person"), b"short")
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    assert SECRET.decode() not in repr(encoder)


def test_the_key_id_names_the_secret_without_holding_it() -> None:
    """The key id every enrolment and discovery carries: one per secret (a rotated or mistyped one differs),
    32 hex digits, never the secret nor a part of it, and none of the field keys (its own HKDF salt)."""
    other = SECRET[:-1] + b"g"  # one character mistyped
    key_id = clk_key_id(SECRET)
    assert len(key_id) == 32
    assert int(key_id, 16) >= 0
    assert key_id == clk_key_id(SECRET) == CLKEncoder(shipped_schema("person"), SECRET).key_id
    assert CLKEncoder(shipped_schema("company"), SECRET).key_id == key_id  # the secret's, whatever the schema
    assert clk_key_id(other) != key_id
    assert clk_key_id(b"\x00" * 16) != clk_key_id(b"\x00" * 17)
    for secret in (SECRET, other, bytes(range(16))):
        made = clk_key_id(secret)
        assert made.encode() != secret
        assert secret.hex()[:16] not in made  # nor the secret in hex, nor a piece of it
        assert bytes.fromhex(made) not in secret
        assert secret.decode("latin-1")[:8] not in made
    field_key = HKDF(algorithm=hashes.SHA512(), length=32, salt=b"wgs-gateway/clk/v2",
                     info=b"person\x00" + shipped_schema("person").version.to_bytes(4, "big") + b"\x00surname")
    assert field_key.derive(SECRET).hex()[:32] != key_id
    with pytest.raises(EncodingError):
        clk_key_id(b"short")


def test_many_records_are_encoded_in_chunks_consistently() -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    records = [{"given_name": f"name{i % 97}", "surname": f"s{i}"} for i in range(5000)]
    bulk = encoder.encode(records)
    assert bulk.shape == (5000, 16)
    assert np.array_equal(bulk[4321], CLKEncoder(shipped_schema("person"), SECRET).encode_one(records[4321]))
    assert encoder.encode([]).shape == (0, 16)


def test_block_keys() -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    records = [
        {"soc_sec_id": "1234567", "given_name": "Anna", "surname": "Smith", "postcode": "4223"},
        {"soc_sec_id": "1234567", "given_name": "anna", "surname": "smith"},
        {"given_name": "Bob"},
    ]
    keys = encoder.block_keys(records)
    assert keys.shape == (3, len(encoder.schema.signatures))
    assert keys.dtype == np.uint64
    assert keys[0, 0] == keys[1, 0] != 0  # soc_sec_id
    assert keys[0, 2] == keys[1, 2] != 0  # given_name + surname (normalised)
    assert keys[1, 3] == 0  # surname + postcode: postcode missing
    assert not keys[2].any()
    assert len(set(keys[0][keys[0] != 0].tolist())) == int((keys[0] != 0).sum())  # signatures never collide
    other = CLKEncoder(shipped_schema("person"), b"another secret of 32 bytes......").block_keys(records[:1])
    assert not (set(other[0].tolist()) & set(keys[0].tolist())) - {0}


def test_wire_forms_round_trip_and_are_strict() -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    dataset = encoder.encode_dataset([{"given_name": "anna", "soc_sec_id": "1"}, {"surname": "x"}])
    wire = dataset_to_wire(dataset)
    assert len(wire[0]["clk"]) == math.ceil(128 * 4 / 3)
    back = dataset_from_wire(wire)
    assert np.array_equal(back.filters, dataset.filters)
    assert back.block_keys is not None
    assert dataset.block_keys is not None
    assert np.array_equal(back.block_keys, dataset.block_keys)
    assert np.array_equal(filters_from_b64(filters_to_b64(dataset.filters)), dataset.filters)
    for bad in (["A" * 10], ["*" * 171], [wire[0]["clk"] + "A"], [123]):
        with pytest.raises(EncodingError):
            filters_from_b64(bad)  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        dataset_from_wire([{**wire[0], "blocks": ["XYZ"] * len(wire[0]["blocks"])}])
    with pytest.raises(EncodingError):
        dataset_from_wire([wire[0], {**wire[1], "blocks": []}])
    assert len(dataset_from_wire([])) == 0
    plain = EncodedDataset(dataset.filters)
    assert dataset_to_wire(plain)[0]["blocks"] == []
    with pytest.raises(EncodingError):
        EncodedDataset(dataset.filters, np.zeros((5, 2), dtype=np.uint64))


def test_records_from_columns() -> None:
    assert records_from_columns({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    with pytest.raises(EncodingError):
        records_from_columns({"a": [1], "b": []})


@settings(max_examples=40, deadline=None)
@given(name=st.text(alphabet="abcdefghij", min_size=3, max_size=12), position=st.integers(0, 11))
def test_a_typo_keeps_records_similar(name: str, position: int) -> None:
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    position %= len(name)
    typo = name[:position] + ("z" if name[position] != "z" else "y") + name[position + 1:]
    record = {"given_name": name, "surname": "jansen", "date_of_birth": "19800101", "suburb": "utrecht"}
    filters = encoder.encode([record, {**record, "given_name": typo}])
    counts = popcounts(filters)
    inter = int(np.bitwise_count(filters[0] & filters[1]).sum())
    assert 2 * inter / counts.sum() > 0.8


@pytest.mark.parametrize(("written", "normalised"), [
    ("Łukasz", "lukasz"), ("Søren", "soren"), ("Straße", "strasse"), ("Y\u0131lmaz", "yilmaz"), ("Ærø", "aero"),
    ("Алексей Иванов", "алексеи иванов"),  # other scripts keep their letters (й decomposes to и + breve)
])
def test_letters_of_any_script_are_kept_not_dropped(written: str, normalised: str) -> None:
    """Letters outside a-z used to become spaces: 'Straße' no longer matched 'Strasse', and two people
    with Cyrillic names and one birthday got identical encodings."""
    assert normalise(Normaliser.TEXT, written) == normalised
    assert normalise(Normaliser.TEXT, "Strasse") == normalise(Normaliser.TEXT, "Straße")


def test_two_people_with_cyrillic_names_are_encoded_apart() -> None:
    encoder = CLKEncoder(shipped_schema("person"), b"x" * 32)
    first = encoder.encode([{"given_name": "Алексей", "surname": "Иванов", "date_of_birth": "19800101"}])
    second = encoder.encode([{"given_name": "Мария", "surname": "Петрова", "date_of_birth": "19800101"}])
    assert not np.array_equal(first, second)


def test_a_huge_number_over_a_small_step_has_no_bucket_instead_of_overflowing() -> None:
    spec = schema_from_mapping({"id": "t", "version": 1, "fields": [
        {"name": "amount", "tokenizer": "numeric", "normalise": "digits", "threshold": 1, "resolution": 2,
         "k": 5}]}).fields[0]
    assert tokenize(spec, "9" * 308) == []
    assert tokenize(spec, "10") == ["20", "21", "22"]


@pytest.mark.parametrize("blocks", [5, True, {"key": "value"}, [1, 2]])
def test_malformed_blocks_on_the_wire_are_an_encoding_error(blocks: object) -> None:
    encoder = CLKEncoder(shipped_schema("person"), b"x" * 32)
    clk = filters_to_b64(encoder.encode([{"given_name": "jan"}]))[0]
    with pytest.raises(EncodingError):
        dataset_from_wire([{"clk": clk, "blocks": blocks}])


class _LikePandasNA:
    """pandas' ``NA`` as the encoder meets it: any comparison is NA again, and NA has no truth value."""

    def __eq__(self, other: object) -> _LikePandasNA:  # type: ignore[override]
        return self

    def __ne__(self, other: object) -> _LikePandasNA:  # type: ignore[override]
        return self

    def __bool__(self) -> bool:
        raise TypeError("boolean value of NA is ambiguous")

    def __hash__(self) -> int:
        return 0

    def __str__(self) -> str:
        return "<NA>"


def _pandas_missing() -> list[object]:
    """pandas' own missing values. pandas is a test dependency (not one of the gateway, whose partners may hand
    its columns to the encoder), so these cases always run rather than only where pandas happens to be."""
    import pandas as pd  # type: ignore[import-untyped,unused-ignore]

    return [pd.NA, pd.NaT]


@pytest.mark.parametrize("missing", [
    _LikePandasNA(), np.float32("nan"), np.datetime64("NaT"), decimal.Decimal("NaN"), *_pandas_missing(),
])
def test_missing_values_of_pandas_and_numpy_are_missing_not_text(missing: object) -> None:
    """Found by a review: the 'missing' of a pandas column of strings (``pd.NA``, what
    ``DataFrame.to_dict("list")`` gives for ``records_from_columns``), ``NaT`` and a NumPy float32 NaN were
    encoded as the text 'na', 'nat' or 'nan': every record with a missing surname shared those tokens and,
    with its postcode, a blocking key — records of different people looked alike for lacking the same field."""
    schema = shipped_schema("person")
    encoder = CLKEncoder(schema, SECRET)
    assert normalise(Normaliser.TEXT, missing) is None
    assert normalise(Normaliser.DIGITS, missing) is None
    record = {"given_name": "jan", "postcode": "1012ab"}
    with_missing = encoder.encode_dataset([record | {"surname": missing, "date_of_birth": missing}])
    without = encoder.encode_dataset([record])
    assert np.array_equal(with_missing.filters, without.filters)
    assert with_missing.block_keys is not None
    assert without.block_keys is not None
    assert np.array_equal(with_missing.block_keys, without.block_keys)
    assert not encoder.encode([{"surname": missing}]).any()


@pytest.mark.parametrize("invisible", ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"],
                         ids=["soft-hyphen", "zero-width-space", "zwnj", "zwj", "word-joiner", "bom"])
def test_invisible_format_characters_do_not_split_a_name(invisible: str) -> None:
    """Found by a review: a soft hyphen or zero-width character (pasted from a document or a web form; it is
    invisible on screen) became a space, so 'Jan\\u00adsen' was 'jan sen' and no longer matched 'Jansen'."""
    assert normalise(Normaliser.TEXT, f"Jan{invisible}sen") == "jansen"
    assert normalise(Normaliser.TEXT, f"{invisible}van der Berg{invisible}") == "van der berg"
    assert normalise(Normaliser.TEXT, f"Zoë{invisible}") == "zoe"
    assert normalise(Normaliser.TEXT, invisible) is None
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    pasted = encoder.encode([{"surname": f"Jan{invisible}sen"}, {"surname": "Jansen"}])
    assert np.array_equal(pasted[0], pasted[1])


def _in_digits_of(zero: int, text: str) -> str:
    """``text`` with 0-9 written in the script whose digit zero is code point ``zero``."""
    return "".join(chr(zero + int(ch)) if ch.isdigit() else ch for ch in text)


@pytest.mark.parametrize(("written", "digits"), [
    (_in_digits_of(0xFF10, "1990-01-31"), "19900131"),  # full-width digits (an East Asian input method)
    (_in_digits_of(0x0660, "1990/01/31"), "19900131"),  # Arabic-Indic digits
    (_in_digits_of(0x06F0, "19900131"), "19900131"),  # Persian digits
    ("31.01.1990", "31011990"),
])
def test_digits_of_any_script_are_digits_not_dropped(written: str, digits: str) -> None:
    """Found by a review: the digits normaliser kept only 0-9, so a date of birth in full-width or
    Arabic-Indic digits became *missing* (nothing encoded for it, no blocking key) instead of its number."""
    assert normalise(Normaliser.DIGITS, written) == digits


@pytest.mark.parametrize("written", [
    "\U0001d409\U0001d41a\U0001d427\U0001d42c\U0001d41e\U0001d427",  # mathematical bold ("fancy text" fonts)
    "\U0001d471\U0001d482\U0001d48f\U0001d494\U0001d486\U0001d48f",  # mathematical bold italic
    "\U0001d50d\U0001d51e\U0001d52b\U0001d530\U0001d522\U0001d52b",  # fraktur
    "\U0001d409\U0001d400\U0001d40d\U0001d412\U0001d404\U0001d40d",  # mathematical bold capitals
])
def test_compatibility_letters_fold_to_lower_case(written: str) -> None:
    """Found by a review: text was case-folded before its compatibility decomposition, so a capital that only
    NFKD turns into a Latin letter (the styled letters of 'fancy text', pasted from a social-media profile)
    stayed a capital: a bold 'Jansen' was 'Jansen', and no longer matched 'jansen' on its first bigrams."""
    assert normalise(Normaliser.TEXT, written) == "jansen"
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    styled = encoder.encode([{"surname": written}, {"surname": "Jansen"}])
    assert np.array_equal(styled[0], styled[1])


@pytest.mark.parametrize("written", ["Pa\u0140la", "PA\u013fLA", "Pal\u00b7la", "PAL\u00b7LA"])
def test_catalan_l_with_middle_dot_is_an_l(written: str) -> None:
    """Found by a review: the table of letters written as Dutch registers spell them mapped 'ŀ' to 'l', but was
    applied after NFKD, which had already split 'ŀ' into 'l' and a middle dot (punctuation, so a space): 'Paŀla'
    and 'Pal·la' were 'pal la', two words, instead of 'palla'."""
    assert normalise(Normaliser.TEXT, written) == "palla"
    assert normalise(Normaliser.TEXT, "Caf\u00e9\u00b7bar") == "cafe bar"  # a middle dot elsewhere still parts words

"""Identifiers: normalisation, the eleven-test (against Faker's nl_NL BSNs), redaction of values."""

from __future__ import annotations

import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pseudonyms.errors import InvalidIdentifier
from gateway.pseudonyms.identifiers import (
    Identifier,
    IdentifierType,
    bsn,
    eleven_test,
    kvk_number,
    parse_identifier,
    rsin,
)
from tests.unit.pseudonyms._strategies import valid_bsns

_FAKER = Faker("nl_NL")


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_faker_nl_bsns_pass_the_eleven_test(seed: int) -> None:
    _FAKER.seed_instance(seed)
    number = _FAKER.ssn()
    assert eleven_test(number)
    assert bsn(number).value == number


@settings(max_examples=200)
@given(number=valid_bsns, position=st.integers(0, 8), delta=st.integers(1, 9))
def test_every_one_digit_change_is_rejected(number: str, position: int, delta: int) -> None:
    assert eleven_test(number)
    digits = list(number)
    digits[position] = str((int(digits[position]) + delta) % 10)
    changed = "".join(digits)
    assert not eleven_test(changed)
    with pytest.raises(InvalidIdentifier):
        bsn(changed)


def test_known_values() -> None:
    assert eleven_test("111222333")
    assert eleven_test("123456782")
    assert not eleven_test("123456789")
    assert not eleven_test("000000000")  # passes the arithmetic, but is no number
    assert not eleven_test("12345678")
    assert not eleven_test("12345678x")


@pytest.mark.parametrize("raw", ["123456782", " 1234.56.782 ", "1234 56 782", "123\t456\n782"])
def test_bsn_normalisation(raw: str) -> None:
    assert bsn(raw).value == "123456782"
    assert bsn(raw).hash_input() == b"bsn:123456782"


def test_eight_digit_bsn_is_left_padded() -> None:
    # 012345672: 9*0+8*1+7*2+6*3+5*4+4*5+3*6+2*7-1*2 = 110 ≡ 0 (mod 11)
    assert bsn("12345672").value == "012345672"
    assert rsin("12345672").value == "012345672"


def test_kvk_number_needs_exactly_eight_digits() -> None:
    assert kvk_number("6959 6666").value == "69596666"
    assert kvk_number("69596666").hash_input() == b"kvk:69596666"
    for raw in ("6959666", "695966661"):
        with pytest.raises(InvalidIdentifier, match="8 digits"):
            kvk_number(raw)


@pytest.mark.parametrize("raw", ["00000000", "0000 0000", "0000.0000"])
def test_an_all_zero_kvk_number_is_refused(raw: str) -> None:
    """The placeholder a register writes for an unknown KvK number is no number: pseudonymised, it would make every
    such record of every partner one and the same subject (as an all-zero BSN would, which the eleven-test refuses)."""
    with pytest.raises(InvalidIdentifier, match="zeros"):
        kvk_number(raw)
    assert kvk_number("01234567").value == "01234567"  # a leading zero is a number's


def test_types_are_kept_apart() -> None:
    assert bsn("123456782").hash_input() != rsin("123456782").hash_input()
    assert parse_identifier("rsin", "123456782").type is IdentifierType.RSIN


@pytest.mark.parametrize(("kind", "raw", "reason"), [
    ("bsn", "", "empty"),
    ("bsn", "12345678A", "only digits"),
    ("bsn", "１２３４５６７８２", "only digits"),  # noqa: RUF001 - full-width digits are not ASCII digits
    ("bsn", "1234567", "9 digits"),
    ("bsn", "123456789", "eleven-test"),
    ("rsin", "123456789", "eleven-test"),
    ("passport", "123456782", "unknown identifier type"),
])
def test_errors_say_why_without_echoing_the_value(kind: str, raw: str, reason: str) -> None:
    with pytest.raises(InvalidIdentifier, match=reason) as caught:
        parse_identifier(kind, raw)
    digits = "".join(ch for ch in raw if ch.isdigit())
    if len(digits) >= 4:
        assert digits not in str(caught.value)
        assert digits[-4:] not in str(caught.value)


def test_identifier_repr_and_str_are_redacted() -> None:
    identifier = bsn("123456782")
    for text in (repr(identifier), str(identifier), f"{identifier}", repr([identifier])):
        assert "123456782" not in text
        assert "redacted" in text


def test_identifier_cannot_be_built_unnormalised() -> None:
    with pytest.raises(InvalidIdentifier):
        Identifier(IdentifierType.BSN, "1234.56.782")
    with pytest.raises(InvalidIdentifier):
        Identifier(IdentifierType.BSN, "123456789")


def test_non_text_input_is_rejected() -> None:
    with pytest.raises(InvalidIdentifier, match="text"):
        bsn(123456782)  # type: ignore[arg-type]


def _eleven_reference(digits: str) -> bool:
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    return sum(w * int(d) for w, d in zip(weights, digits, strict=True)) % 11 == 0 and digits != "000000000"


@settings(max_examples=300)
@given(digits=st.text(alphabet="0123456789", min_size=9, max_size=9))
def test_eleven_test_matches_the_definition(digits: str) -> None:
    # eleven_test sums over ASCII codes in C; it must agree with the textbook formula on every 9-digit string.
    assert eleven_test(digits) == _eleven_reference(digits)


@settings(max_examples=100)
@given(number=valid_bsns, noise=st.sampled_from(["", " ", ".", "\t", " . "]))
def test_parsed_identifiers_are_the_ones_the_constructor_accepts(number: str, noise: str) -> None:
    # parse_identifier skips the constructor's re-validation; what it builds must equal a validated instance.
    raw = noise + number[:4] + noise + number[4:] + noise
    parsed = bsn(raw)
    assert parsed == Identifier(IdentifierType.BSN, number)
    assert parsed.hash_input() == f"bsn:{number}".encode()


@pytest.mark.parametrize("invisible", ["\ufeff", "\u200b", "\u00ad", "\u2060", "\u200e"],
                         ids=["bom", "zero-width-space", "soft-hyphen", "word-joiner", "left-to-right-mark"])
def test_invisible_format_characters_are_stripped_like_spaces(invisible: str) -> None:
    """Found by a review: a byte-order mark (the first cell of a CSV file saved as 'UTF-8 with BOM'), a
    zero-width space or a direction mark pasted from a web page is invisible, and made a correct number fail with
    'may contain only digits, spaces and dots' — which the person looking at '123456782' cannot see. Such
    characters carry no digit and are stripped as spaces and dots are (matching's text normaliser drops them
    too); anything visible that is no digit is still refused."""
    assert bsn(f"{invisible}123456782") == bsn("123456782")
    assert bsn(f"1234{invisible}56782{invisible}") == bsn("123456782")
    assert kvk_number(f"{invisible}12345678") == kvk_number("12345678")
    with pytest.raises(InvalidIdentifier, match="empty"):
        bsn(invisible)
    with pytest.raises(InvalidIdentifier, match="only digits"):
        bsn(f"{invisible}12345678A")

"""Typed, normalised identifiers: BSN, KvK number and RSIN.

Pure and dependency-free, so the partner-side SDK (``gateway.client``) can use it before it makes a
polymorphic pseudonym. The gateway itself never receives an identifier.

Rules
-----
* Normalisation strips whitespace, dots and invisible format characters (``"1234.56.782"``, ``"1234 56 782"``;
  a byte-order mark or zero-width space that came with a pasted or exported number). A BSN or RSIN written
  with 8 digits (a leading zero lost in a spreadsheet) is left-padded to 9 digits; a KvK number must have
  exactly 8 digits.
* BSN and RSIN must pass the *elfproef* (eleven-test)::

      9*d1 + 8*d2 + 7*d3 + 6*d4 + 5*d5 + 4*d6 + 3*d7 + 2*d8 - 1*d9  ≡ 0 (mod 11)

  and may not be all zeros (which passes the arithmetic but is no number). A KvK number has no check digit,
  but may not be all zeros either: that is the placeholder a register writes for "unknown", and pseudonymised
  it would make every such record of every partner one and the same subject.
* The string hashed to the group is ``"<type>:<normalised digits>"`` (``"bsn:123456782"``), see
  :meth:`Identifier.hash_input`.

Errors (:class:`~gateway.pseudonyms.errors.InvalidIdentifier`) say what is wrong (length, characters,
check digit) and never repeat the value; ``repr`` and ``str`` of an :class:`Identifier` redact it.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.pseudonyms.errors import InvalidIdentifier

__all__ = [
    "Identifier",
    "IdentifierType",
    "bsn",
    "eleven_test",
    "kvk_number",
    "parse_identifier",
    "rsin",
]

_STRIP = re.compile(r"[\s.]+")
_DIGITS = re.compile(r"[0-9]+")
_ELEVEN_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)
_ELEVEN_ASCII_OFFSET = ord("0") * sum(_ELEVEN_WEIGHTS)
_KVK_ZEROS = "00000000"


class IdentifierType(StrEnum):
    """Kinds of identifier that can be pseudonymised; the value is the prefix used in hashing and encodings."""

    BSN = "bsn"
    KVK = "kvk"
    RSIN = "rsin"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {IdentifierType.BSN: "BSN", IdentifierType.KVK: "KvK number", IdentifierType.RSIN: "RSIN"}


def eleven_test(digits: str) -> bool:
    """True when a 9-digit string passes the BSN/RSIN eleven-test (and is not all zeros)."""
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    # Weighted sum over the ASCII codes (digit + 48) in C (map/operator.mul): partners pseudonymise identifiers
    # in bulk, and a generator over int(digit) was a tenth of a polymorphic pseudonym's Python time.
    total = sum(map(operator.mul, _ELEVEN_WEIGHTS, digits.encode("ascii"))) - _ELEVEN_ASCII_OFFSET
    return total % 11 == 0 and digits != "000000000"


@dataclass(frozen=True, slots=True)
class Identifier:
    """A validated, normalised identifier. Construct with :func:`parse_identifier` (or the helpers)."""

    type: IdentifierType
    value: str = field(repr=False)

    def __post_init__(self) -> None:
        # Re-validate so that an Identifier can only exist in normalised, checked form.
        if _normalise(self.type, self.value) != self.value:
            raise InvalidIdentifier(f"{self.type.label} is not in normalised form")

    def hash_input(self) -> bytes:
        """The bytes hashed to the group: ``b"<type>:<digits>"``."""
        return f"{self.type.value}:{self.value}".encode("ascii")

    def __repr__(self) -> str:
        return f"Identifier(type={self.type.value!r}, value=<redacted>)"

    __str__ = __repr__


def _normalise(kind: IdentifierType, raw: str) -> str:
    if not isinstance(raw, str):
        raise InvalidIdentifier(f"{kind.label} must be given as text")
    # Plain digits (the common case from a partner's database) need no stripping: skip the regex.
    text = raw if raw.isascii() and raw.isdigit() else _STRIP.sub("", raw if raw.isascii() else _visible(raw))
    if not text:
        raise InvalidIdentifier(f"{kind.label} is empty")
    if not (text.isascii() and _DIGITS.fullmatch(text)):
        raise InvalidIdentifier(f"{kind.label} may contain only digits, spaces and dots")
    if kind is IdentifierType.KVK:
        if len(text) != 8:
            raise InvalidIdentifier(f"{kind.label} must have 8 digits (got {len(text)})")
        if text == _KVK_ZEROS:  # a register's placeholder for "unknown": every such record would be one subject
            raise InvalidIdentifier(f"{kind.label} may not be all zeros")
        return text
    if len(text) == 8:
        text = "0" + text
    if len(text) != 9:
        raise InvalidIdentifier(f"{kind.label} must have 9 digits (got {len(text)})")
    if not eleven_test(text):
        raise InvalidIdentifier(f"{kind.label} fails the eleven-test")
    return text


def _visible(raw: str) -> str:
    """``raw`` without invisible format characters (Unicode category Cf: a byte-order mark, a zero-width space, a
    soft hyphen, a direction mark). They carry no digit, and a number refused for one looks correct to whoever
    reads the error."""
    return "".join(ch for ch in raw if unicodedata.category(ch) != "Cf")


def parse_identifier(kind: IdentifierType | str, raw: str) -> Identifier:
    """Normalise and validate ``raw`` as an identifier of ``kind`` (``"bsn"``, ``"kvk"``, ``"rsin"``)."""
    try:
        identifier_type = IdentifierType(kind)
    except ValueError:
        raise InvalidIdentifier("unknown identifier type; expected one of bsn, kvk, rsin") from None
    return _checked(identifier_type, _normalise(identifier_type, raw))


def _checked(kind: IdentifierType, value: str) -> Identifier:
    """An :class:`Identifier` from a value :func:`_normalise` has just returned, without normalising it twice.

    The public constructor re-validates (so that no unchecked Identifier can be built); here that would
    repeat the regexes and the eleven-test on every identifier a partner pseudonymises.
    """
    identifier = object.__new__(Identifier)
    object.__setattr__(identifier, "type", kind)
    object.__setattr__(identifier, "value", value)
    return identifier


def bsn(raw: str) -> Identifier:
    """A BSN (burgerservicenummer): 9 digits (8 are left-padded), eleven-test."""
    return parse_identifier(IdentifierType.BSN, raw)


def kvk_number(raw: str) -> Identifier:
    """A KvK number (Chamber of Commerce registration): exactly 8 digits."""
    return parse_identifier(IdentifierType.KVK, raw)


def rsin(raw: str) -> Identifier:
    """An RSIN (legal entities' tax/registration number): 9 digits (8 are left-padded), eleven-test."""
    return parse_identifier(IdentifierType.RSIN, raw)

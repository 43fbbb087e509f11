"""The log scrubber masks identifier-shaped values however they are written: grouped by spaces, dots or dashes,
in fullwidth or another script's digits, with a fullwidth at sign; and leaves ordinary references alone.

Why: it is the last line of defence for everything a log line or a problem document echoes. A BSN typed as
``123-456-782`` or pasted in fullwidth digits is the same number, and was written to the log as it came.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.logging import scrub_personal_data, scrub_text

BSN = "123456782"  # passes the eleven-test; the scrubber masks the shape, checksum or not


@pytest.mark.parametrize("written", [
    pytest.param(BSN, id="plain"),
    pytest.param("123-456-782", id="dashes 3-3-3"),
    pytest.param("123.456.782", id="dots 3-3-3"),
    pytest.param("123 456 782", id="spaces 3-3-3"),
    pytest.param("1234.56.782", id="dots 4-2-3"),
    pytest.param("1234-56-782", id="dashes 4-2-3"),
    pytest.param("1234 56 782", id="spaces 4-2-3"),
    pytest.param("123\u2013456\u2013782", id="en dashes"),
    pytest.param("123\u00a0456\u00a0782", id="no-break spaces"),
    pytest.param("\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff12", id="fullwidth digits"),
    pytest.param("\uff11\uff12\uff13\uff14\uff0e\uff15\uff16\uff0e\uff17\uff18\uff12", id="fullwidth digits and dots"),
    pytest.param("\u0661\u0662\u0663-\u0664\u0665\u0666-\u0667\u0668\u0662", id="arabic-indic digits, dashes"),
    pytest.param("NL91 ABNA 0417 1643 00", id="iban in groups"),
    pytest.param("\uff2e\uff2c\uff19\uff11\uff21\uff22\uff2e\uff21\uff10\uff14\uff11\uff17\uff11\uff16\uff14\uff13"
                 "\uff10\uff10", id="fullwidth iban"),
    pytest.param("jan\uff20example.nl", id="fullwidth at sign"),
])
def test_identifiers_in_any_written_form_are_masked(written: str) -> None:
    masked = scrub_text(f"no record for {written} today")
    assert masked == "no record for [redacted] today"
    line = scrub_personal_data(None, "warning", {"event": "lookup_failed", "detail": [f"for {written}"]})
    assert line == {"event": "lookup_failed", "detail": ["for [redacted]"]}


@pytest.mark.parametrize("ordinary", [
    "RIEC-2026-0042",
    "case RIEC-2026-0042-17 opened",
    "2026-12-05T06:18:25.123456Z",
    "3f2a1b9c-1234-5678-9abc-def012345678",
    "policy 2026.11.1, register 7",
    "took 12.5 ms for 1024 rows",
])
def test_references_dates_and_ids_are_left_alone(ordinary: str) -> None:
    assert scrub_text(ordinary) == ordinary


@pytest.mark.parametrize(("value", "masked"), [
    pytest.param("1-" * 15_000, "1-" * 15_000, id="digits and dashes"),
    pytest.param("1 " * 15_000, "1 " * 15_000, id="digits and spaces"),
    pytest.param("\uff11." * 15_000, "1." * 15_000, id="fullwidth digits and dots"),
    pytest.param("a" * 30_000, "a" * 30_000, id="a run without an at sign"),
    pytest.param("NL91 " * 6_000, "NL91 " * 6_000, id="iban starts"),
    pytest.param("a-" * 14_990 + " 123-456-782", "a-" * 14_990 + " [redacted]", id="a bsn at the end"),
])
def test_a_30000_character_value_is_scrubbed(value: str, masked: str) -> None:
    """The patterns are fixed-width, or start only where a run starts (the e-mail one), and normalising is one
    pass: a 30,000-character value (a request path the access log echoes) is answered (a quadratic pattern here
    held the event loop for seconds)."""
    assert scrub_text(value) == masked


@pytest.mark.parametrize(("written", "masked"), [
    ("company_123456782", "company_[redacted]"),
    ("dossier_123456782_x", "dossier_[redacted]_x"),
    ("ref_123-456-782", "ref_[redacted]"),
    ("x_NL91ABNA0417164300", "x_[redacted]"),
])
def test_an_identifier_joined_by_an_underscore_is_masked(written: str, masked: str) -> None:
    """``_`` is a word character, so ``\\b`` found no boundary before the digits: a code of the categories'
    pattern carrying a BSN went unmasked, which the audit log's guard refuses as a BSN. A letter or digit next to
    the number still keeps it (``x123456782`` is no BSN to the guard either)."""
    assert scrub_text(written) == masked
    assert scrub_text("x123456782") == "x123456782"


_SEPARATOR = r"[ .\-\u2010-\u2015\u2212]"
_AS_DEFINED = [  # each identifier's start and end as the audit guard defines them: not next to a letter or digit
    re.compile(r"(?<![^\W_])\d{8,9}(?![^\W_])(?!-[0-9a-fA-F]{4}-)"),
    re.compile(rf"(?<![^\W_])(?:\d{{4}}{_SEPARATOR}?\d{{2}}|\d{{3}}{_SEPARATOR}?\d{{3}}){_SEPARATOR}?\d{{3}}(?![^\W_])"),
    re.compile(r"(?<![^\W_])[A-Z]{2}\d{2} ?[A-Z]{4}(?: ?\d{4}){2} ?\d{2}(?![^\W_])"),
    re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+\.[\w.-]+"),
]


_PIECES = st.one_of(  # runs of digits around an identifier's lengths, and what may stand next to them
    st.integers(0, 10**10).map(str),
    st.sampled_from([" ", ".", "-", "_", "\u2013", "x", "NL", "AB", "é", "\u0663", "@"]))


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=8).map("".join))
def test_the_scrubbers_fast_patterns_mask_what_the_boundaries_as_defined_do(value: str) -> None:
    """The scrubber checks an identifier's start after its first character has matched (faster than a lookbehind
    tried at every position); it must mask exactly what the boundary as the audit guard defines it masks."""
    expected = value if value.isascii() else unicodedata.normalize("NFKC", value)
    for pattern in _AS_DEFINED:
        expected = pattern.sub("[redacted]", expected)
    assert scrub_text(value) == expected

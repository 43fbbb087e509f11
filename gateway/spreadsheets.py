"""CSV for people: every CSV the gateway writes is opened in a spreadsheet (the steering group's agenda,
the accountability figures), so no cell may be taken for a formula.

Free text in those files comes from partner organisations (a legal gap's title, a note): a cell starting
with ``=``, ``+``, ``-`` or ``@`` — or with a tab or carriage return, which spreadsheets skip before looking
for one — would be evaluated on opening (``=HYPERLINK(...)`` leaking the sheet, ``=cmd|...`` running a
program). Such a cell gets a leading single quote, which spreadsheets show as text and do not display; the
value stays readable. Numbers are written as they are (a negative count is no formula).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Protocol

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class _Writable(Protocol):
    def write(self, text: str, /) -> object: ...


def safe_cell(value: object) -> object:
    """``value``, quoted with a leading ``'`` when a spreadsheet would read it as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SpreadsheetWriter:
    """``csv.writer`` whose every text cell is made safe (:func:`safe_cell`); the only CSV writer to use."""

    def __init__(self, stream: _Writable, *, lineterminator: str = "\n") -> None:
        self._writer = csv.writer(stream, lineterminator=lineterminator)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)

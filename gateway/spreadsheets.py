"""CSV for people: every CSV the gateway writes is opened in a spreadsheet (the steering group's agenda,
the accountability figures), so no cell may be taken for a formula.

Free text in those files comes from partner organisations (a legal gap's title, a note): a cell starting
with ``=``, ``+``, ``-`` or ``@`` — or with a tab or carriage return, which spreadsheets skip before looking
for one — would be evaluated on opening (``=HYPERLINK(...)`` leaking the sheet, ``=cmd|...`` running a
program). Such a cell gets a leading single quote, which spreadsheets show as text and do not display; the
value stays readable. Numbers are written as they are (a negative count is no formula).

The cell's start is not the only one. The steering group's spreadsheets are Dutch: a Dutch (German, French)
spreadsheet opens a ``.csv`` with ``;`` as its separator, so the file's commas and quotes mean nothing to it
and every ``;`` or line break inside a cell starts a new cell of its own — ``Wet Bibob;=cmd|' /C calc'!A0``
is two cells there, the second a formula, although the csv module wrote one cell. A tab is such a place too:
LibreOffice's text import splits on tabs as well (one of its default separators), and the csv module does not
quote a cell for a tab in it. So a formula start after a ``;``, a tab or a line break (blanks and double
quotes in between are skipped, as a spreadsheet does) gets the single quote too.

So does a formula start after blanks at the very start of a cell: ``  =1+1``, or ``=`` after a no-break space.
Whether a reader skips such blanks differs between programs, versions and import settings, and some do:
LibreOffice's text import with "Trim spaces" ticked trims the cell before it evaluates it, and an import that
trims the way JavaScript's ``trim()`` does drops no-break and other Unicode spaces and the byte-order mark as
well. The guard cannot know which reader opens the file, so it assumes one that skips them. The quote goes
before the blanks, which stay: the text reads as it was (``  Wet Bibob``, blanks and no formula, is left alone).

And the file's encoding: Excel (what Dutch officials open these files with) reads a CSV without a byte-order
mark in the machine's ANSI code page, so "België" shows as "BelgiÃ«". A download meant for a spreadsheet
therefore starts with the UTF-8 BOM and says ``charset=utf-8`` (:func:`csv_download`). The mark comes before
the header, never in a cell, so it changes nothing of the formula guard. A command that prints such a file
(``wgs-gateway escalations gaps``, redirected to a file for the steering group's agenda) prints the same bytes
(:func:`spreadsheet_bytes`): an operator's copy opens as the download does. (Python's ``csv`` module and
``encoding="utf-8-sig"`` read past the mark; a script that splits lines itself must strip it.)

Lines end in CRLF (:data:`LINE_END`), RFC 4180's line break and what Excel writes, in every such file: the
statistics download had it, the legal gaps' download and command ended lines in LF.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Protocol

from fastapi import Response

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
UTF8_BOM = "\ufeff"
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
LINE_END = "\r\n"
"""The end of every line of a CSV for a spreadsheet (RFC 4180)."""


class _Writable(Protocol):
    def write(self, text: str, /) -> object: ...


_BLANKS = r"[\s\ufeff\"]*"
"""What a reader may skip before it looks for a formula start: whitespace as ``str.isspace`` (and JavaScript's
``trim()``) knows it — no-break and other Unicode spaces too —, the byte-order mark, and double quotes."""
_CELL_STARTS_WITHIN = re.compile(rf"(;|\t|\r\n?|\n)(?={_BLANKS}[=+\-@])")
"""A ``;``, tab or line break (where a semicolon- or tab-separated reading starts a new cell) before a formula
start."""
_FORMULA_AFTER_BLANKS = re.compile(rf"{_BLANKS}[=+\-@]")
"""A formula start after blanks at the start of a cell (``  =1+1``, a no-break space before ``=``)."""


def safe_cell(value: object) -> object:
    """``value``, with a ``'`` before a formula start wherever a spreadsheet would begin a cell: at the
    start, and after a ``;``, tab or line break inside it (see the module's docstring)."""
    if not isinstance(value, str):
        return value
    value = _CELL_STARTS_WITHIN.sub(r"\1'", value)
    return "'" + value if value.startswith(FORMULA_STARTS) or _FORMULA_AFTER_BLANKS.match(value) else value


class SpreadsheetWriter:
    """``csv.writer`` whose every text cell is made safe (:func:`safe_cell`); the only CSV writer to use."""

    def __init__(self, stream: _Writable, *, lineterminator: str = LINE_END) -> None:
        self._writer = csv.writer(stream, lineterminator=lineterminator)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def spreadsheet_bytes(text: str) -> bytes:
    """``text`` (written with :class:`SpreadsheetWriter`) as the bytes of a CSV file a spreadsheet opens as
    UTF-8: the byte-order mark first (see the module's docstring). Downloads and the CLI's output alike."""
    return (UTF8_BOM + text).encode("utf-8")


def csv_download(text: str, filename: str) -> Response:
    """``text`` (written with :class:`SpreadsheetWriter`) as a CSV attachment a spreadsheet opens as UTF-8:
    :func:`spreadsheet_bytes`, and the charset said."""
    return Response(spreadsheet_bytes(text), media_type=CSV_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})

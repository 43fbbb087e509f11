"""The register of legal gaps as CSV, for the steering group's agenda.

One export, written here for both ``GET /v1/legal-gaps/export`` and ``wgs-gateway escalations gaps``: the
two were separate writers and had drifted apart (the command lacked the dates, the flagging organisation
and the note). Each row carries the gap's whole history of status changes and notes in its last cell.
The readers differ only in which gaps and linked cases they may see; the file does not.
Titles, descriptions and notes are partners' free text, so every cell goes through
:class:`~gateway.spreadsheets.SpreadsheetWriter` (no cell a spreadsheet would run as a formula).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TextIO

from escalation.legal_gaps import LegalGap
from gateway.clock import as_utc
from gateway.escalations.models import GapChangeView, LegalGapView
from gateway.spreadsheets import SpreadsheetWriter

GAP_COLUMNS = ("id", "partnership", "status", "title", "description", "cases", "created_at", "updated_at",
               "created_by_org", "note", "history")


def gap_view(gap: LegalGap) -> LegalGapView:
    """A stored gap as the API shows it (times in UTC); the caller has already narrowed ``case_ids`` to what
    the reader may see."""
    return LegalGapView(id=gap.id, partnership=gap.partnership, title=gap.title, description=gap.description,
                        status=gap.status.value, version=gap.version, created_at=as_utc(gap.created_at),
                        updated_at=as_utc(gap.updated_at), created_by_org=gap.created_by_org, note=gap.note,
                        case_ids=gap.case_ids,
                        history=[GapChangeView(at=as_utc(c.at), status_before=c.status_before.value if c.status_before
                                               else None, status=c.status.value, note=c.note, actor_org=c.actor_org,
                                               actor_user=c.actor_user) for c in gap.history])


def _history_cell(changes: Iterable[GapChangeView]) -> str:
    """Every status change of a gap in one cell, a line each, oldest first: when, which organisation, from
    which status to which, and its note. The organisation, not the person: the file goes round the steering
    group, and the person is in the register for those who need it."""
    lines = []
    for change in changes:
        move = f"{change.status_before} → {change.status}" if change.status_before else change.status
        line = f"{change.at.isoformat()} {change.actor_org or '?'}: {move}"
        lines.append(f"{line}: {change.note}" if change.note else line)
    return "\n".join(lines)


def write_gaps_csv(stream: TextIO, gaps: Iterable[LegalGapView]) -> None:
    """The header (:data:`GAP_COLUMNS`) and one row per gap, linked cases space-separated."""
    writer = SpreadsheetWriter(stream)
    writer.writerow(GAP_COLUMNS)
    for gap in gaps:
        writer.writerow([gap.id, gap.partnership, gap.status, gap.title, gap.description, " ".join(gap.case_ids),
                         gap.created_at.isoformat(), gap.updated_at.isoformat(), gap.created_by_org,
                         gap.note or "", _history_cell(gap.history)])


def gaps_csv(gaps: Iterable[LegalGapView]) -> str:
    """:func:`write_gaps_csv` as text (the API's export, which counts the gaps itself for its audit entry)."""
    out = io.StringIO()
    write_gaps_csv(out, gaps)
    return out.getvalue()

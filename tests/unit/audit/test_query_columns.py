"""The fast verification's reader of query columns (audit/query_columns.py), on entries built as the log builds
them: it agrees only with the values the entry holds, wherever else in the entry the same keys appear, and
declines (leaving the entry to the exact comparison) what it cannot read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from audit.canonical import canonical_event, entry_canonical, format_timestamp
from audit.events import AuditEvent
from audit.query_columns import ColumnReader
from audit.store import query_column_values
from tests.audit_support import make_event

MOMENT = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
STAMP = "2026-11-25 10:00:00.123456"  # recorded_at as SQLite keeps it (and PostgreSQL is asked for it)


def _row(event: AuditEvent, index: int = 7, **changes: Any) -> tuple[Any, ...]:
    """(index, canonical, leaf hash, recorded_at, *query columns) as a fast verification reads a row."""
    canonical = entry_canonical(index, UUID(int=index), MOMENT, canonical_event(event)[1])
    columns = dict(zip(("recorded_at", "event_type", "partnership", "purpose", "requester_org", "holder_org",
                        "decision", "subject_pseudonym", "subject_key"),
                       (STAMP, *query_column_values(event)), strict=True))
    columns.update(changes)
    return (index, canonical, b"", *columns.values())


def _agrees(row: tuple[Any, ...]) -> bool:
    reader = ColumnReader()
    canonical = row[1]
    reader.read_tail(canonical[canonical.rindex(b',"recorded_at":"'):])
    return reader.agree(canonical, row)


EVENTS = {
    "usual": make_event(3),
    "no subject, requester, activity or holder": make_event(4, data_subject=None, requester=None,
                                                            processing_activity=None, holder=None, decision=None),
    "keys nested in extra and obligations": make_event(
        5, holder=None, extra={"hits": [{"holder": "kvk"}], "requester": {"org": "gemeente-9"},
                               "processing_activity": {"partnership": "p", "purpose": "q"},
                               "data_subject": {"pseudonym": "decoy"}, "event_type": "disclosure"},
        obligations={"holder": "fiod", "requester": {"org": "gemeente-8"}}),
    "quotes and backslashes in values": make_event(6, holder='kvk "noord" \\ zuid',
                                                   extra={"note": '"holder":"x","obligations":'}),
}


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_the_columns_the_log_writes_agree(event: AuditEvent) -> None:
    assert _agrees(_row(event))


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
@pytest.mark.parametrize(("column", "value"), [
    ("event_type", "disclosure.x"), ("partnership", "elsewhere"), ("purpose", "other"), ("requester_org", "gemeente-9"),
    ("holder_org", "kvk"), ("holder_org", "fiod"), ("decision", "allow.x"), ("subject_pseudonym", "decoy"),
    ("subject_key", 1), ("recorded_at", "2026-11-25 10:00:00.123457"), ("recorded_at", "2026-11-25T10:00:00.123456"),
])
def test_any_other_value_does_not(event: AuditEvent, column: str, value: Any) -> None:
    assert not _agrees(_row(event, **{column: value}))


@pytest.mark.parametrize(("column", "value"), [
    ("holder_org", b"belastingdienst"), ("requester_org", 5), ("subject_key", "123"), ("recorded_at", b"x"),
    ("subject_pseudonym", "\ud800"),
])
def test_values_no_column_of_the_log_holds_are_left_to_the_exact_comparison(column: str, value: Any) -> None:
    """A BLOB where text belongs (SQLite keeps anything): a search by the text would not find it."""
    event = make_event(3)
    if column == "holder_org":
        assert query_column_values(event)[4] == value.decode()  # the same characters, another type
    assert not _agrees(_row(event, **{column: value}))


def test_a_time_in_no_usual_form_is_left_to_the_exact_comparison() -> None:
    row = _row(make_event(3))
    reader = ColumnReader()
    reader.read_tail(None)
    assert not reader.agree(row[1], row)
    reader.read_tail(b',"recorded_at":"' + format_timestamp(MOMENT).encode()[:-1] + b'","v":1}')  # no Z
    assert not reader.agree(row[1], row)

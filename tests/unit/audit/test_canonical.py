"""Entry bytes: RFC 8785 form, the spliced envelope, parsing back, and the event model's strictness."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import RFC_4122, UUID

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from audit.canonical import (
    MAX_EVENT_BYTES,
    canonical_json,
    entry_canonical,
    envelope_index,
    event_canonical,
    format_timestamp,
    parse_entry,
    parse_timestamp,
)
from audit.errors import InvalidEvent, VerificationError
from audit.events import AuditEvent, EventType
from audit.log import uuid7s
from tests.audit_support import make_event, span_id, trace_id

ENTRY_ID = UUID("01937b6e-0000-7000-8000-000000000001")
MOMENT = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)

ascii_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ascii_keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 2**53 - 1), extra=st.dictionaries(ascii_keys, json_values, max_size=4),
       micros=st.integers(0, 10**12))
def test_spliced_envelope_equals_rfc8785_of_the_whole_document(index: int, extra: dict[str, object],
                                                               micros: int) -> None:
    event = make_event(index % 50, extra=extra)
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    spliced = entry_canonical(index, ENTRY_ID, moment, event_canonical(event))
    document: dict[str, Any] = {"entry_id": str(ENTRY_ID), "event": event.to_document(), "index": index,
                                "recorded_at": format_timestamp(moment), "v": 1}
    assert spliced == rfc8785.dumps(document)
    assert envelope_index(spliced) == index
    parsed = parse_entry(spliced)
    assert (parsed.index, parsed.entry_id, parsed.recorded_at, parsed.event) == (index, ENTRY_ID, moment, event)


def test_envelope_index_reads_only_the_top_level_index() -> None:
    event = make_event(1, extra={"index": 999, "nested": {"index": 7}})
    canonical = entry_canonical(3, ENTRY_ID, MOMENT, event_canonical(event))
    assert envelope_index(canonical) == 3
    with pytest.raises(VerificationError):
        envelope_index(canonical[:-1])


def test_timestamps_are_utc_with_microseconds_and_round_trip() -> None:
    amsterdam = MOMENT.astimezone(timezone(timedelta(hours=1)))
    assert format_timestamp(amsterdam) == "2026-11-25T10:00:00.123456Z"
    assert parse_timestamp(format_timestamp(amsterdam)) == MOMENT
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(datetime(2026, 1, 1))


@pytest.mark.parametrize(("mangle", "message"), [
    pytest.param(lambda b: b.replace(b'"v":1', b'"v":2'), "version", id="version"),
    pytest.param(lambda b: b.replace(b'"v":1', b'"v":true'), "version", id="version true"),
    pytest.param(lambda b: b.replace(b'{"entry_id"', b'{ "entry_id"'), "canonical form", id="whitespace"),
    pytest.param(lambda b: b[:-1], "UTF-8 JSON", id="truncated"),
    pytest.param(lambda b: b.replace(b'"event_type":"', b'"event_type":"x'), "invalid", id="bad event"),
    pytest.param(lambda b: b.replace(b',"v":1}', b',"v":1,"w":0}'), "keys", id="extra key"),
    pytest.param(lambda b: b.replace(b'"n":0', b'"n":1' + b"0" * 5000), "number", id="number too long to read"),
])
def test_parse_entry_rejects_anything_but_a_valid_canonical_v1_entry(mangle: object, message: str) -> None:
    canonical = entry_canonical(0, ENTRY_ID, MOMENT, event_canonical(make_event()))
    with pytest.raises(VerificationError, match=message):
        parse_entry(mangle(canonical))  # type: ignore[operator]


def test_a_wrong_version_is_reported_without_its_value() -> None:
    """A verification failure names the check, never entry content: it ends up in reports and log files."""
    canonical = entry_canonical(0, ENTRY_ID, MOMENT, event_canonical(make_event()))
    with pytest.raises(VerificationError, match="version") as caught:
        parse_entry(canonical.replace(b'"v":1', b'"v":"123456782"'))
    assert "123456782" not in str(caught.value)


def test_canonical_json_refuses_what_jcs_cannot_represent() -> None:
    with pytest.raises(InvalidEvent):
        canonical_json({"n": 2**60})
    with pytest.raises(InvalidEvent):
        canonical_json({"x": float("nan")})
    assert json.loads(canonical_json({"b": 1, "a": [True, None, "é"]})) == {"a": [True, None, "é"], "b": 1}


@pytest.mark.parametrize("extra", [
    pytest.param({"score": 0.5}, id="float"),
    pytest.param({"n": 2**53}, id="integer beyond 2**53 - 1"),
    pytest.param({"naïve": 1}, id="non-ASCII key"),
    pytest.param({"nested": [{"": 1}]}, id="empty nested key"),
])
def test_free_form_members_must_be_plain_json(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        make_event(extra=extra)
    with pytest.raises(ValidationError):
        make_event(obligations=extra)


def test_oversized_events_are_refused() -> None:
    with pytest.raises(InvalidEvent, match="limit"):
        event_canonical(make_event(extra={"padding": "x" * MAX_EVENT_BYTES}))


def test_event_model_is_strict_and_frozen() -> None:
    event = make_event()
    with pytest.raises(ValidationError):
        event.holder = "someone-else"
    with pytest.raises(ValidationError):
        AuditEvent(event_type=EventType.DISCLOSURE, trace_id=trace_id(1), span_id=span_id(1), unknown="x")
    for bad in ("0" * 32, "ABCDEF" + "0" * 26, "abc"):
        with pytest.raises(ValidationError):
            AuditEvent(event_type=EventType.DISCLOSURE, trace_id=bad, span_id=span_id(1))
    with pytest.raises(ValidationError):
        make_event(data_subject={"pseudonym": "Jan Jansen"})
    with pytest.raises(ValidationError):
        make_event(reasons=("line\nbreak",))


def test_every_event_type_has_a_stable_dotted_name() -> None:
    assert {t.value for t in EventType} == {
        "exchange.requested", "policy.decided", "disclosure", "holder.refused", "holder.unavailable",
        "discovery.queried", "escalation.step", "console.action", "register.changed", "auth.rejected",
        "anomaly.flagged", "request.failed", "index.enrolment", "index.rekeyed", "index.retired",
    }


def test_entry_ids_are_rfc9562_uuid7_with_the_time_in_front() -> None:
    ids = uuid7s(1000, MOMENT)
    assert len(set(ids)) == 1000
    for entry_id in ids:
        assert entry_id.version == 7
        assert entry_id.variant == RFC_4122
        assert entry_id.int >> 80 == int(MOMENT.timestamp() * 1000)

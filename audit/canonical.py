"""Canonical bytes for log entries: RFC 8785 (JSON Canonicalization Scheme).

A Merkle leaf commits to bytes, so every entry must have exactly one byte representation that anyone
can recompute from the JSON value: RFC 8785 gives that (sorted keys, no whitespace, fixed number and
string formatting). We use the ``rfc8785`` package for the event and build the small envelope around
it ourselves::

    {"entry_id":"<uuid>","event":{...},"index":<n>,"recorded_at":"<UTC, microseconds, Z>","v":1}

The envelope puts the log index *inside* the hashed bytes. The tree already fixes an entry's position,
but with the index inside, a moved, swapped, inserted or deleted entry is caught at the exact index by
a reader that only looks at entries, even before any checkpoint is checked.

Why splice the envelope instead of canonicalising the whole document: the event is canonicalised
before the writer takes the log's lock (the pure-Python RFC 8785 encoder costs tens of microseconds),
the index is only known under the lock, and the envelope's keys and values are plain ASCII whose
RFC 8785 form is trivial. A test checks the splice against ``rfc8785`` for random entries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import rfc8785
from pydantic import JsonValue, ValidationError

from audit.errors import InvalidEvent, VerificationError
from audit.events import AuditEvent, DataSubject, ProcessingActivity, Requester

ENTRY_FORMAT_VERSION = 1
MAX_EVENT_BYTES = 32 * 1024
"""An event is a record of a decision, not a data carrier; anything larger is a bug upstream."""

_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ENVELOPE_TAIL = re.compile(rb',"index":(0|[1-9][0-9]{0,18}),"recorded_at":"([0-9T:.\-]{1,40}Z)","v":1}\Z')
_TAIL_WINDOW = 128  # longer than any possible match of _ENVELOPE_TAIL


def canonical_json(value: JsonValue) -> bytes:
    """RFC 8785 bytes of a JSON value; refuses what JCS cannot represent (NaN, huge integers)."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidEvent(f"value cannot be canonicalised as RFC 8785 JSON: {type(exc).__name__}") from exc


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode = _ENCODER.encode
_string = json.encoder.encode_basestring  # the C string encoder json.dumps uses with ensure_ascii=False

# The fields the direct encoder below writes, in RFC 8785 (sorted) order. If the models ever gain or lose
# a field, the direct encoder switches itself off and the generic path (model_dump + json) is used.
_EVENT_FIELDS = ("categories", "data_subject", "decision", "event_type", "exchange_id", "extra", "holder",
                 "obligations", "parent_span_id", "payload_sha256", "policy_version", "processing_activity",
                 "reasons", "register_version", "requester", "span_id", "status", "trace_id")
_DIRECT = (tuple(sorted(AuditEvent.model_fields)) == _EVENT_FIELDS
           and tuple(sorted(DataSubject.model_fields)) == ("pseudonym",)
           and tuple(sorted(ProcessingActivity.model_fields)) == ("partnership", "purpose")
           and tuple(sorted(Requester.model_fields)) == ("org", "system", "user"))


def _plain(value: JsonValue) -> str:
    """RFC 8785 text of plain JSON (see :func:`audit.events._plain_json`): what ``_encode`` writes for it.

    Small objects are the common case, where building the C encoder for each call costs more than this.
    Anything but plain JSON (a float, a non-string key) raises ``TypeError``: the caller falls back.
    """
    if isinstance(value, str):
        return _string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is dict and _SCALARS.issuperset(map(type, value.values())):
        # The usual free-form object: flat, string keys (join raises TypeError otherwise, as _string would),
        # scalar values. The C encoder writes exactly what the loop below writes for it.
        "".join(value)
        return "".join(_flat_object(value, 0))
    if isinstance(value, dict):  # _string raises TypeError for a key that is not a string
        return "{" + ",".join([_string(key) + ":" + _plain(value[key]) for key in sorted(value)]) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join([_plain(item) for item in value]) + "]"
    raise TypeError(f"not plain JSON: {type(value).__name__}")


_SCALARS = frozenset((str, int, bool, type(None)))
# The C encoder behind ``_encode``, with its settings, built once (``json.JSONEncoder.encode`` builds one per
# call, which costs more than encoding a small object). Only given flat objects of exact scalar types.
_flat_object = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
    None, _ENCODER.default, _string, None, ":", ",", True, False, False)


def _optional(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _strings(values: tuple[str, ...]) -> str:
    return "[" + ",".join(map(_string, values)) + "]" if values else "[]"


def _direct_event_text(event: AuditEvent) -> str:
    """RFC 8785 text of an event written field by field: what model_dump + json.dumps give, 3x faster.

    Only for validated events (strings, enums, tuples of strings, the three small models and two
    plain-JSON objects); a test compares it with the generic path and with ``rfc8785``.
    """
    subject, activity, requester = event.data_subject, event.processing_activity, event.requester
    decision, obligations = event.decision, event.obligations
    return "".join((
        '{"categories":', _strings(event.categories),
        ',"data_subject":', "null" if subject is None else '{"pseudonym":' + _string(subject.pseudonym) + "}",
        ',"decision":', "null" if decision is None else _string(decision),
        ',"event_type":', _string(event.event_type),
        ',"exchange_id":', _optional(event.exchange_id),
        ',"extra":', _plain(event.extra),
        ',"holder":', _optional(event.holder),
        ',"obligations":', "null" if obligations is None else _plain(obligations),
        ',"parent_span_id":', _optional(event.parent_span_id),
        ',"payload_sha256":', _optional(event.payload_sha256),
        ',"policy_version":', _optional(event.policy_version),
        ',"processing_activity":', "null" if activity is None else
        '{"partnership":' + _string(activity.partnership) + ',"purpose":' + _string(activity.purpose) + "}",
        ',"reasons":', _strings(event.reasons),
        ',"register_version":', _optional(event.register_version),
        ',"requester":', "null" if requester is None else
        '{"org":' + _string(requester.org) + ',"system":' + _optional(requester.system)
        + ',"user":' + _optional(requester.user) + "}",
        ',"span_id":', _string(event.span_id),
        ',"status":', _string(event.status),
        ',"trace_id":', _string(event.trace_id),
        "}",
    ))


def _generic_event_text(event: AuditEvent) -> str:
    return _encode(event.to_document())


def canonical_event(event: AuditEvent) -> tuple[str, bytes]:
    r"""The canonical bytes of an event (the ``event`` member of the entry envelope).

    An :class:`AuditEvent` only ever holds strings, safe integers, booleans, nulls, arrays and objects
    with ASCII keys (the model enforces it). For such values RFC 8785 is exactly what the standard
    library's encoder writes with sorted keys, no whitespace and no ASCII escaping: the same string
    escapes (``\b \t \n \f \r``, other controls as lowercase ``\u00xx``), integers in plain decimal,
    and code-point key order, which equals RFC 8785's UTF-16 order for ASCII keys. That encoder is C and
    about ten times faster than the ``rfc8785`` package; a property test checks that they agree, and the
    verifier re-checks stored entries with ``rfc8785`` itself. The known event shape is written field by
    field with the same string encoder (:func:`_direct_event_text`), which skips pydantic's
    ``model_dump`` and the key sorting; anything unexpected falls back to the generic path.

    Returns the text as well as its UTF-8 bytes: the append path splices the text into the envelope
    (:func:`entry_texts`), since the database stores text, and the guard screens the bytes.
    """
    try:
        try:
            text = _direct_event_text(event) if _DIRECT else _generic_event_text(event)
        except (AttributeError, TypeError):  # not a fully validated event: let the generic path judge it
            text = _generic_event_text(event)
        data = text.encode("utf-8")
    except (UnicodeEncodeError, ValueError) as exc:
        raise InvalidEvent(f"event cannot be canonicalised ({type(exc).__name__})") from exc
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"audit event is {len(data)} bytes canonicalised; the limit is {MAX_EVENT_BYTES}")
    return text, data


def event_canonical(event: AuditEvent) -> bytes:
    """The canonical bytes of an event (see :func:`canonical_event`)."""
    return canonical_event(event)[1]


def format_timestamp(moment: datetime) -> str:
    """UTC with fixed microsecond precision, so that timestamps sort as text and round-trip exactly."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp`."""
    return datetime.strptime(text, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def entry_canonical(index: int, entry_id: UUID, recorded_at: datetime | str, event_bytes: bytes) -> bytes:
    """The canonical envelope around already-canonical event bytes (see the module docstring).

    ``recorded_at`` may be given already formatted by :func:`format_timestamp` (one batch, one time).
    """
    if index < 0:
        raise ValueError("log indices start at 0")
    stamp = recorded_at if isinstance(recorded_at, str) else format_timestamp(recorded_at)
    return b"".join((
        b'{"entry_id":"', str(entry_id).encode("ascii"),
        b'","event":', event_bytes,
        b',"index":', str(index).encode("ascii"),
        b',"recorded_at":"', stamp.encode("ascii"),
        b'","v":', str(ENTRY_FORMAT_VERSION).encode("ascii"), b"}",
    ))


def entry_canonicals(start: int, entry_ids: Sequence[UUID], recorded_at: str,
                     event_bytes: Sequence[bytes]) -> list[bytes]:
    """:func:`entry_canonical` for consecutive indices from ``start`` sharing one formatted time (a batch)."""
    texts = entry_texts(start, [entry_id.hex for entry_id in entry_ids], recorded_at,
                        [event.decode("utf-8") for event in event_bytes])
    return [text.encode("utf-8") for text in texts]


def entry_texts(start: int, entry_hexes: Sequence[str], recorded_at: str, event_texts: Sequence[str]) -> list[str]:
    """The envelopes of a batch as text, from the entry ids' 32 hex digits (``UUID.hex``) and event texts.

    The append path's form of :func:`entry_canonicals`: one ``%`` format per entry, with the id's dashes
    put in by slicing (``str(UUID)`` costs more than the rest of the envelope). The database stores
    text; the leaf hash is over its UTF-8 bytes.
    """
    if start < 0:
        raise ValueError("log indices start at 0")
    template = _envelope_template(recorded_at)
    return [template % (h[:8], h[8:12], h[12:16], h[16:20], h[20:], event, index)
            for index, h, event in zip(range(start, start + len(event_texts)), entry_hexes, event_texts,
                                       strict=True)]


def _envelope_template(recorded_at: str) -> str:
    recorded_at.encode("ascii")  # refused as in entry_canonical
    return ('{"entry_id":"%s-%s-%s-%s-%s","event":%s,"index":%d,"recorded_at":"'
            + recorded_at.replace("%", "%%") + f'","v":{ENTRY_FORMAT_VERSION}}}')


_STAMP_LENGTH = len("2026-01-01T00:00:00.000000Z")
_END = b'","v":1}'
_TIME_BYTES = b"0123456789T:.-"


def claims_index(canonical: bytes, index: int) -> bool:
    """Whether :func:`envelope_index` would return ``index`` for these bytes, without a regular expression.

    A shortcut for the verifier's hot loop. It accepts exactly what the pattern accepts for the usual,
    fixed-width timestamp; ``False`` only means "ask :func:`envelope_index`" (which then gives the answer
    or the error).
    """
    stamp_start = len(canonical) - len(_END) - _STAMP_LENGTH
    prefix = b',"index":%d,"recorded_at":"' % index
    stamp = canonical[stamp_start:-len(_END)]
    return (stamp_start - len(prefix) >= 0
            and canonical.endswith(_END)
            and canonical.startswith(prefix, stamp_start - len(prefix))
            and stamp[-1:] == b"Z"
            and not stamp[:-1].translate(None, _TIME_BYTES))


def envelope_index(canonical: bytes) -> int:
    """The index an entry claims, read from the envelope's tail without parsing the whole document.

    Used by the fast verification path. The pattern is anchored at the end of the document, where only
    the envelope's own keys can be (nested objects in the event close before ``,"index":``).
    """
    match = _ENVELOPE_TAIL.search(canonical, max(0, len(canonical) - _TAIL_WINDOW))
    if match is None:
        raise VerificationError("entry is not a version-1 audit envelope")
    return int(match.group(1))


@dataclass(frozen=True)
class LogEntry:
    """An entry as stored: its position, identity, time, the event, and the exact canonical bytes."""

    index: int
    entry_id: UUID
    recorded_at: datetime
    event: AuditEvent
    canonical: bytes


def parse_entry(canonical: bytes) -> LogEntry:
    """Parse and fully check an entry: valid JSON, in RFC 8785 form, version 1, a valid event.

    Raises :class:`VerificationError` when any of that fails; the message names the check, not content.
    """
    try:
        document = json.loads(canonical)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VerificationError("entry is not valid UTF-8 JSON") from exc
    except ValueError:  # valid JSON, but an integer of more digits than Python converts (int_max_str_digits)
        raise VerificationError("entry holds a number too long to read") from None
    except RecursionError:  # no ValueError: without this, a forged entry would crash the verifier
        raise VerificationError("entry is JSON nested too deeply") from None
    if not isinstance(document, dict) or set(document) != {"entry_id", "event", "index", "recorded_at", "v"}:
        raise VerificationError("entry does not have the envelope's keys")
    # ``true == 1`` in Python, and RFC 8785 keeps ``true``: only the integer is version 1. The value stays out of
    # the message, as any entry content does (it could be anything, of any length).
    if type(document["v"]) is not int or document["v"] != ENTRY_FORMAT_VERSION:
        raise VerificationError("unknown entry format version")
    try:
        again = canonical_json(document)
    except InvalidEvent as exc:
        raise VerificationError("entry cannot be canonicalised") from exc
    if again != canonical:
        raise VerificationError("entry is not in RFC 8785 canonical form")
    try:
        index = document["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError("index")
        return LogEntry(
            index=index,
            entry_id=UUID(document["entry_id"]),
            recorded_at=parse_timestamp(document["recorded_at"]),
            event=AuditEvent.model_validate(document["event"]),
            canonical=canonical,
        )
    except (ValueError, TypeError, AttributeError, ValidationError) as exc:
        raise VerificationError(f"entry envelope or event is invalid ({type(exc).__name__})") from exc

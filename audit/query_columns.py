"""An entry's query columns read from its canonical text without parsing it: the fast verification's check.

``audit_entries`` keeps copies of some of an entry's fields beside its canonical text (:mod:`audit.tables`),
and the review queries search those copies. The tree commits to the text alone, so a copy changed behind the
log's back (its triggers dropped) would make a privacy officer's search miss an entry, or show it under
another organisation, while every hash still verifies. A verification therefore checks the copies against the
text: a deep one parses every entry; a fast one, which does not parse, reads the copies' values where the
gateway's text holds them (:class:`ColumnReader`), for a fraction of what hashing the entry costs anyway.

Where a field is found without parsing. RFC 8785 sorts keys and the gateway writes every field of an event,
so the event's fields come in one order; inside a JSON string every quote is escaped, so ``"name":`` with
bare quotes is always a key — the only question is at which depth:

* ``data_subject``, ``decision``, ``event_type`` (consecutive): the first ``],"data_subject":`` is the
  event's, as before it there are only the envelope's entry id and ``categories``, an array of strings;
* ``processing_activity`` and ``requester``: the last ``,"processing_activity":`` and ``,"requester":`` are
  the event's, as after them come only strings (reasons, register version, the requester's system and user,
  span, status, trace) and the envelope's index and time;
* ``holder`` lies between ``extra`` and ``obligations``, free-form objects that may hold a ``holder`` key
  of their own (a discovery's ``extra.hits`` do): where ``"holder":`` occurs once, it is the event's; else
  ``extra`` (whose key is the first ``,"extra":``, as for the fields before it) is skipped with the JSON
  scanner and the holder read right after it;
* ``recorded_at``: the envelope's tail, which the index check reads already (:meth:`ColumnReader.read_tail`),
  compared as text: on SQLite the stored text itself, so another form of the same time (``T`` for the space,
  more fractional digits, an offset) is no match, and the deep comparison then names it
  (:func:`audit.store.stored_stamp`) — at no cost to the rows stored as the writer stores them.

Each value is compared as the gateway writes it (the same string encoder, :mod:`audit.canonical`) together
with the keys around it, so a match is the field's whole value. This takes the text's form on trust, as a
fast verification takes the entries' other contents: a checkpoint's signature covers what the gateway wrote.
What the reader cannot find this way is not a verdict: the verifier then compares that entry as a deep
verification does (:func:`audit.verify.verify_database`), so the reader only has to be right when it agrees.
"""

from __future__ import annotations

import json
from typing import Any

from audit.store import subject_key

_SUBJECT = b'],"data_subject":'
_HOLDER = b'"holder":'
_ACTIVITY = b',"processing_activity":'
_REQUESTER = b',"requester":'
_EXTRA = ',"extra":'
_FIRST_FIELD = len('{"entry_id":"01937b6e-0000-7000-8000-000000000001","event":{"categories":')
"""Where an entry's categories start: nothing of the event's comes before (the entry id has a fixed length)."""
_TIME = len(b',"recorded_at":"')
_END = len(b'","v":1}')
_STAMP_LENGTH = len("2026-01-01T00:00:00.000000Z")
_MEMO_LIMIT = 65_536
"""Distinct column values remembered per reader (a chunk's worth of entries, usually far fewer)."""

_string = json.encoder.encode_basestring
"""A JSON string as the gateway writes it (:mod:`audit.canonical` uses the same C encoder); any valid encoding
would do for soundness, this one also matches."""
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[attr-defined]  # untyped, but public

STAMP_COLUMN = 3
"""Where a row read for the check holds ``recorded_at`` as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (how SQLite
stores it; PostgreSQL is asked for it so: :func:`audit.store.query_columns_sql`); the query columns follow it,
in :data:`audit.store.QUERY_COLUMNS` order, after ``(index, canonical bytes, leaf hash)``."""


def _json(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _event_fragments(values: tuple[Any, ...]) -> tuple[bytes, bytes, bytes, bytes] | None:
    """What the text holds around the event's fields for these column values (event type, partnership,
    purpose, requester, holder, decision): from the decision to the exchange id's key, from the requester's
    key, from the processing activity's key, and from the comma before the holder's key; None for values no
    column of the gateway's holds."""
    if not all(value is None or type(value) is str for value in values):
        return None
    event_type, partnership, purpose, requester, holder, decision = values
    activity = ("null" if partnership is None and purpose is None
                else f'{{"partnership":{_json(partnership)},"purpose":{_json(purpose)}}}')
    who = "null,\"span_id\":" if requester is None else f'{{"org":{_json(requester)},"system":'
    try:
        return (f',"decision":{_json(decision)},"event_type":{_json(event_type)},"exchange_id":'.encode(),
                f',"requester":{who}'.encode(),
                f',"processing_activity":{activity},"reasons":['.encode(),
                f',"holder":{_json(holder)},"obligations":'.encode())
    except UnicodeEncodeError:  # a lone surrogate: no text holds it
        return None


def _subject_fragment(pseudonym: Any) -> tuple[bytes, int | None] | None:
    """The text's ``data_subject`` (from the first ``],"data_subject":``) and the ``subject_key`` for a
    ``subject_pseudonym`` column value; None for a value no column of the gateway's holds."""
    if pseudonym is None:
        return _SUBJECT + b"null", None
    if type(pseudonym) is not str:
        return None
    try:
        return _SUBJECT + f'{{"pseudonym":{_string(pseudonym)}}}'.encode(), subject_key(pseudonym)
    except UnicodeEncodeError:
        return None


def _holder_after_extra(canonical: bytes, fragment: bytes) -> bool:
    """Whether the event's ``holder`` (with the keys around it, ``fragment``) directly follows its ``extra``."""
    try:
        text = canonical.decode("utf-8")
        start = text.find(_EXTRA)
        if start < 0:
            return False
        _, end = _scan(text, start + len(_EXTRA))
        return text.startswith(fragment.decode("utf-8"), end)
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return False


class ColumnReader:
    """Checks the time and query columns of rows read for a fast verification against their entries' text.

    :meth:`read_tail` with each new envelope tail, then :meth:`agree` per row: ``True`` when the row's columns
    hold exactly what the text says; ``False`` when they do not, or when the text does not show it where the
    gateway writes it (the caller then compares the entry exactly). Remembers what it built per distinct value:
    a log has few event types, organisations and purposes, and a subject's key is hashed once.
    """

    __slots__ = ("_events", "_stamp", "_subjects")

    def __init__(self) -> None:
        self._events: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, bytes] | None] = {}
        self._subjects: dict[Any, tuple[bytes, int | None] | None] = {}
        self._stamp: str | None = None

    def read_tail(self, tail: bytes | None) -> None:
        """The envelope's tail after the index (``,"recorded_at":"<time>","v":1}``) of the rows to come, or
        None when it is not in the usual form: what their ``recorded_at`` column must hold."""
        stamp = tail[_TIME:-_END] if tail else b""
        if len(stamp) == _STAMP_LENGTH and stamp[10:11] == b"T" and stamp.endswith(b"Z"):
            self._stamp = (stamp[:10] + b" " + stamp[11:-1]).decode("ascii")
        else:
            self._stamp = None

    def agree(self, canonical: bytes, row: tuple[Any, ...]) -> bool:
        """Whether ``row`` (see :data:`STAMP_COLUMN`) holds the time of the last tail read and the values its
        canonical text gives the query columns. Each search starts where the field must be, to stop early
        (the searches are most of the cost: a scan of JSON text for a JSON key moves about a byte at a time)."""
        stamp = self._stamp
        if stamp is None or row[STAMP_COLUMN] != stamp:
            return False
        values = row[4:10]
        event = self._events.get(values)
        if event is None:
            if len(self._events) >= _MEMO_LIMIT:
                self._events.clear()
            event = self._events[values] = _event_fragments(values)
        pseudonym = row[10]
        subject = self._subjects.get(pseudonym)
        if subject is None:
            if len(self._subjects) >= _MEMO_LIMIT:
                self._subjects.clear()
            subject = self._subjects[pseudonym] = _subject_fragment(pseudonym)
        if event is None or subject is None or subject[1] != row[11]:
            return False
        first, requester, activity, holder = event
        # data_subject, decision, event_type: at the first ],"data_subject": (after the entry id, at least)
        head = subject[0] + first
        at = canonical.find(_SUBJECT, _FIRST_FIELD)
        if not canonical.startswith(head, at):
            return False
        at += len(head)
        # requester, then processing_activity: the last of each
        end = canonical.rfind(_REQUESTER, at)
        if not canonical.startswith(requester, end):
            return False
        end = canonical.rfind(_ACTIVITY, at, end)
        if not canonical.startswith(activity, end):
            return False
        # holder: the only "holder": between them, else right after extra
        if canonical.count(_HOLDER, at, end) == 1:
            return canonical.find(holder, at, end) >= 0
        return _holder_after_extra(canonical, holder)

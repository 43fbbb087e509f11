"""Bounded query parameters (and POSTed form fields and JSON members) for filters on register ids, shared by
every list and export route.

Why: a filter on a partnership, purpose or organisation that takes any string of any length reaches the
database as a query on it, and an unbounded value is a cheap way to load the gateway or to probe how its
errors repeat input. Every such filter takes the register's own slug pattern and length instead, so an
over-long or malformed value is a 422 problem+json (which never repeats it), the same on every route."""

from __future__ import annotations

from typing import Any

from fastapi import Form, Query
from pydantic import Field

from gateway.client.models import SLUG_PATTERN

MAX_ID = 64
"""The longest partnership, purpose or organisation id (:data:`SLUG_PATTERN` allows no longer)."""
WORD_PATTERN = r"^[a-z][a-z._-]{1,63}$"
"""What an event type (``policy.decided``) or a decision (``allow``) looks like. Why a pattern and not the
enums: an unknown value finds nothing, as before, and a newer gateway's value stays askable."""


CURSOR_PATTERN = r"^[0-9A-Za-z-]{1,64}$"
"""A page cursor as the lists give it (``next_cursor``: a case id, a UUID). Why a pattern: a cursor is compared
with ids in the database, and a NUL in it was a 200 on SQLite (which compares it) and a 422 on PostgreSQL
(whose text holds none) — now a 422 on both, before any query."""


def cursor_query(description: str) -> Any:
    """An optional page cursor (:data:`CURSOR_PATTERN`)."""
    return Query(None, max_length=MAX_ID, pattern=CURSOR_PATTERN, description=description)


def form_cursor_query() -> Any:
    """:func:`cursor_query` for a console link, whose empty value means "the first page"."""
    return Query(None, max_length=MAX_ID, pattern=_or_empty(CURSOR_PATTERN))


def id_query(description: str) -> Any:
    """An optional filter on an id of the register (``description`` for the OpenAPI document)."""
    return Query(None, max_length=MAX_ID, pattern=SLUG_PATTERN, description=description)


def word_query(description: str) -> Any:
    """An optional filter on a value of one of the log's vocabularies (:data:`WORD_PATTERN`)."""
    return Query(None, max_length=MAX_ID, pattern=WORD_PATTERN, description=description)


def _or_empty(pattern: str) -> str:
    """``pattern`` (anchored) or the empty string: a form's empty choice is "all", not a malformed value."""
    return rf"^(?:{pattern.removeprefix('^').removesuffix('$')})?$"


def form_id_query() -> Any:
    """:func:`id_query` for a console form, whose empty choice means "all": an over-long or malformed value
    is the console's 422 page with the API's kind of words, and is never shown back."""
    return Query(None, max_length=MAX_ID, pattern=_or_empty(SLUG_PATTERN))


def form_word_query() -> Any:
    """:func:`word_query` for a console form (empty: "all")."""
    return Query(None, max_length=MAX_ID, pattern=_or_empty(WORD_PATTERN))


def form_id_field() -> Any:
    """:func:`form_id_query` for a form that is POSTed (the audit explorer's, which carries the data-subject
    filter): the same bounds, read from the body."""
    return Form(None, max_length=MAX_ID, pattern=_or_empty(SLUG_PATTERN))


def form_word_field() -> Any:
    """:func:`form_word_query` for a POSTed form."""
    return Form(None, max_length=MAX_ID, pattern=_or_empty(WORD_PATTERN))


def id_member(description: str) -> Any:
    """:func:`id_query` as a member of a JSON body (``POST /v1/audit/entries/search``, which carries the
    data-subject filter): the same bounds, so a body and an address filter alike."""
    return Field(None, max_length=MAX_ID, pattern=SLUG_PATTERN, description=description)


def word_member(description: str) -> Any:
    """:func:`word_query` as a member of a JSON body."""
    return Field(None, max_length=MAX_ID, pattern=WORD_PATTERN, description=description)

"""The typed shape of a fuzzy discovery's question (everything :func:`gateway.client.fuzzy_requests.fuzzy_request`
takes besides the subjects and the CLK secret), so that a test can keep its one question in a constant, spread it
into ``fuzzy_request(**QUESTION)`` and change a field (``QUESTION | changes``) with mypy still checking every
keyword's type — a plain dict literal is typed ``dict[str, object]`` and hides a misspelt or mistyped field."""

from __future__ import annotations

from typing import TypedDict

from gateway.client.fuzzy import RecordType
from gateway.client.models import Signal


class FuzzyQuestion(TypedDict):
    """A whole question: the keywords ``fuzzy_request`` requires apart from ``secret`` and ``subjects``."""

    partnership: str
    purpose: str
    legal_basis: str
    case_reference: str
    signal: Signal
    categories: list[str]
    record_type: RecordType


class FuzzyQuestionChanges(TypedDict, total=False):
    """Some fields of a :class:`FuzzyQuestion`, to replace with ``question | changes`` (mypy checks the keys)."""

    partnership: str
    purpose: str
    legal_basis: str
    case_reference: str
    signal: Signal
    categories: list[str]
    record_type: RecordType

"""The review's subject filter (:func:`audit.review.list_entries`) with every form a subject takes in the log
(one pseudonym per key version): each form finds its entries, and no form finds none — never every subject's."""

from __future__ import annotations

import hashlib

from sqlalchemy import Engine

from audit.log import AuditLog
from audit.review import EntryFilter, EntryScope, list_entries
from tests.integration.audit.test_tamper import live_log  # noqa: F401

EVERYONE = EntryScope(partnerships=frozenset({"riec-noord-holland"}))


def _pseudonym(n: int) -> str:
    return hashlib.sha256(f"subject {n}".encode()).hexdigest()  # as tests.audit_support.make_event names them


def test_each_form_finds_its_entries_and_no_form_finds_none(live_log: tuple[Engine, AuditLog]) -> None:  # noqa: F811
    engine, _ = live_log
    everything = list_entries(engine, EVERYONE, EntryFilter(), limit=1000).entries
    assert everything
    one = list_entries(engine, EVERYONE, EntryFilter(subject=(_pseudonym(0),)), limit=1000).entries
    two = list_entries(engine, EVERYONE, EntryFilter(subject=(_pseudonym(0), _pseudonym(1))), limit=1000).entries
    assert one
    assert len(two) > len(one)
    assert list_entries(engine, EVERYONE, EntryFilter(subject=()), limit=1000).entries == []

"""Companion rows inserted straight through the driver (audit/direct_insert.py) store exactly what SQLAlchemy's
``connection.execute(table.insert(), rows)`` stores, fail with SQLAlchemy's exception types, and skip its
execution machinery (the point of the module: the writer thread's CPU per request); ``first_row`` does the same
for a fixed statement with a result (rule 6's count)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    event,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from audit.direct_insert import first_row, insert_rows
from tests.audit_support import engine_with_tables

_metadata = MetaData()
rows_table = Table("direct_insert_test_rows", _metadata, Column("id", String(16), primary_key=True),
                   Column("at", DateTime(timezone=True), nullable=False), Column("doc", JSON, nullable=True),
                   Column("blob", LargeBinary, nullable=True), Column("note", String(32), nullable=True))
defaulted = Table("direct_insert_test_defaulted", _metadata, Column("id", Integer, primary_key=True),
                  Column("label", String(16), nullable=False, default="made-by-default"))
counts = Table("direct_insert_test_counts", _metadata, Column("name", String(16), primary_key=True),
               Column("day", String(10), primary_key=True), Column("n", Integer, nullable=False))
_COUNT_UP = update(counts).where(and_(counts.c.name == bindparam("the_name"), counts.c.day == bindparam("the_day"))
                                 ).values(n=counts.c.n + 1).returning(counts.c.n, counts.c.day)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    with engine_with_tables(db_url, _metadata) as engine:
        yield engine


def _row(name: str, **changes: Any) -> dict[str, Any]:
    return {"id": name, "at": datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
            "doc": {"targets": [{"holder": "kvk", "outcome": "allowed", "reasons": ["ok", "é"]}], "n": 1.5},
            "blob": b"\x00\x01sealed", "note": None} | changes


def _stored(engine: Engine) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as connection:
        return {row.id: tuple(row[1:]) for row in connection.execute(select(rows_table))}


def test_rows_are_stored_as_sqlalchemy_stores_them(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(rows_table.insert(), [_row("a1"), _row("a2", doc=None, blob=None, note="x")])
        insert_rows(connection, rows_table, [_row("b1")])
        insert_rows(connection, rows_table, [_row("b2", doc=None, blob=None, note="x"), _row("b3", doc=[1, "two"])])
    stored = _stored(engine)
    assert stored["b1"] == stored["a1"]
    assert stored["b2"] == stored["a2"]  # None in a JSON column is JSON null, as SQLAlchemy binds it
    assert stored["b3"][1] == [1, "two"]
    with engine.connect() as connection:  # on the database too, not only as read back
        nulls = connection.execute(select(rows_table.c.id).where(rows_table.c.doc.is_(None))).scalars().all()
    assert sorted(nulls) == []


def test_the_insert_goes_to_the_driver_not_through_sqlalchemy_execute(engine: Engine) -> None:
    executed: list[object] = []
    event.listen(engine, "before_execute", lambda *args: executed.append(args[1]))
    with engine.begin() as connection:
        insert_rows(connection, rows_table, [_row("c1"), _row("c2")])
    assert executed == []
    assert sorted(_stored(engine)) == ["c1", "c2"]


def test_a_clash_is_sqlalchemys_integrity_error_and_nothing_of_the_transaction_stays(engine: Engine) -> None:
    """Callers tell a unique key taken (another attempt answered: 409) from a fault (503) by this type."""
    with engine.begin() as connection:
        insert_rows(connection, rows_table, [_row("taken")])

    def fresh_then_taken() -> None:
        with engine.begin() as connection:
            insert_rows(connection, rows_table, [_row("fresh")])
            insert_rows(connection, rows_table, [_row("taken")])

    with pytest.raises(IntegrityError):
        fresh_then_taken()
    assert sorted(_stored(engine)) == ["taken"]


def test_omitted_columns_and_rows_it_cannot_bind_as_sqlalchemy_would(engine: Engine) -> None:
    at = _row("x")["at"]
    with engine.begin() as connection:
        connection.execute(rows_table.insert(), [{"id": "e1", "at": at}])
        insert_rows(connection, rows_table, [{"id": "e2", "at": at}])  # the other columns omitted: NULL
        insert_rows(connection, defaulted, [{"id": 1}])  # a Python-side default: through SQLAlchemy
    stored = _stored(engine)
    assert stored["e2"] == stored["e1"]
    assert stored["e2"][1:] == (None, None, None)
    with engine.connect() as connection:
        assert connection.execute(select(defaulted.c.label)).scalar_one() == "made-by-default"
        nulls = connection.execute(select(rows_table.c.id).where(rows_table.c.doc.is_(None))).scalars().all()
    assert sorted(nulls) == ["e1", "e2"]


def test_first_row_returns_what_sqlalchemy_returns_through_the_driver(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(counts.insert(), [{"name": "a", "day": "2026-12-05", "n": 3},
                                             {"name": "a", "day": "2026-12-06", "n": 7}])
    executed: list[object] = []
    event.listen(engine, "before_execute", lambda *args: executed.append(args[1]))
    with engine.begin() as connection:
        fast = first_row(connection, _COUNT_UP, {"the_name": "a", "the_day": "2026-12-05"})
        missing = first_row(connection, _COUNT_UP, {"the_name": "b", "the_day": "2026-12-05"})
    assert executed == []  # straight to the driver: no SQLAlchemy execution
    with engine.begin() as connection:
        slow = connection.execute(_COUNT_UP, {"the_name": "a", "the_day": "2026-12-05"}).first()
    assert fast == (4, "2026-12-05")  # the statement's own literal (+ 1) bound, the other day's row untouched
    assert missing is None
    assert slow is not None
    assert tuple(slow) == (5, "2026-12-05")
    with engine.connect() as connection:
        assert dict(connection.execute(select(counts.c.day, counts.c.n)).all()) == {"2026-12-05": 5, "2026-12-06": 7}


def test_first_row_fails_with_sqlalchemys_exception_and_leaves_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(counts.insert(), [{"name": "a", "day": "2026-12-05", "n": 1}])
    clash = counts.insert().values(name=bindparam("the_name"), day="2026-12-05", n=1).returning(counts.c.n)

    def count_then_clash() -> None:
        with engine.begin() as connection:
            first_row(connection, _COUNT_UP, {"the_name": "a", "the_day": "2026-12-05"})
            first_row(connection, clash, {"the_name": "a"})

    with pytest.raises(IntegrityError):
        count_then_clash()
    with engine.connect() as connection:
        assert connection.execute(select(counts.c.n)).scalar_one() == 1  # the count in the same transaction went too

"""A replacement of a holder's match filters sent in several batches is swapped in by one transaction, on SQLite
and PostgreSQL (``gateway.enrolment.replacement``): a fuzzy discovery reading the index while the batches are
kept aside, or while the last one is half-way through its swap, reads the earlier set whole — and the next read
after the swap commits is the new set whole, in every process (cold or with a kept copy). Never part of each."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from gateway.db.engine import make_engine
from gateway.enrolment.filters import FilterBatch
from gateway.enrolment.tables import match_filter_staged
from tests.integration.test_fuzzy_index_updates import PERSON, RIEC, START, Holders, _cold, _service, assert_same

OLD = [f"old/{n:03d}" for n in range(6)]
NEW = [f"new/{n:03d}" for n in range(5)]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = make_engine(db_url)
    yield made
    made.dispose()


def _batch(holders: Holders, refs: list[str], total: int | None) -> FilterBatch:
    rows = sorted((holders.row("politie", ref) for ref in refs), key=lambda row: row["local_ref"])
    return FilterBatch(RIEC, "politie", "test", PERSON.id, PERSON.version, True, rows, [],
                       replacement="replacement-0001", total=total, expires_at=START + timedelta(hours=1))


def _apply(engine: Engine, batch: FilterBatch) -> None:
    """As the audit writer's transaction does: counted first, then written (the counts must agree)."""
    with engine.connect() as connection, connection.begin():
        with Session(bind=connection) as session:
            expected = batch.expect(session)
        assert batch.apply(connection) == expected


class _PauseBefore:
    """Holds the writer's transaction just before its first statement that starts with ``prefix`` (on the
    writer's thread only) until :meth:`release`; :attr:`paused` is set while it waits."""

    def __init__(self, engine: Engine, prefix: str) -> None:
        self.engine, self.prefix = engine, prefix
        self.paused, self.released = threading.Event(), threading.Event()
        self.writer: int | None = None

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == self.writer and statement.lstrip().startswith(self.prefix) \
                and not self.paused.is_set():
            self.paused.set()
            assert self.released.wait(30), "the test never released the writer"

    def __enter__(self) -> _PauseBefore:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *_: object) -> None:
        self.released.set()
        event.remove(self.engine, "before_cursor_execute", self)


def test_readers_see_the_earlier_set_until_the_swap_commits_and_then_the_new_one(engine: Engine) -> None:
    holders = Holders(engine, seed=31)
    holders.write("politie", [holders.row("politie", ref) for ref in OLD])
    service = _service(engine)
    assert service.held(RIEC, PERSON, ["politie"])["politie"].refs == OLD  # a kept copy, from now on

    _apply(engine, _batch(holders, NEW[:3], None))  # kept aside: the index is as it was
    assert service.held(RIEC, PERSON, ["politie"])["politie"].refs == OLD
    assert _cold(engine, ["politie"])["politie"].refs == OLD

    last = _batch(holders, NEW[3:], len(NEW))
    failure: list[BaseException] = []

    def complete() -> None:
        try:
            _apply(engine, last)
        except BaseException as exc:  # reported by the test's thread
            failure.append(exc)

    with _PauseBefore(engine, "INSERT INTO match_filters") as pause:
        writer = threading.Thread(target=complete)
        writer.start()
        pause.writer = writer.ident
        # the earlier rows are deleted in the open transaction, the new ones not yet inserted
        assert pause.paused.wait(30)
        assert service.held(RIEC, PERSON, ["politie"])["politie"].refs == OLD
        assert _cold(engine, ["politie"])["politie"].refs == OLD
        pause.released.set()
        writer.join(30)
    assert not writer.is_alive()
    assert failure == []
    kept = service.held(RIEC, PERSON, ["politie"])["politie"]
    assert kept.refs == NEW
    assert_same(kept, _cold(engine, ["politie"])["politie"])
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(match_filter_staged)).scalar_one() == 0

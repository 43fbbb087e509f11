"""A replacement of a holder's match filters sent in several batches is swapped in by one transaction, on SQLite
and PostgreSQL (``gateway.enrolment.replacement``): a fuzzy discovery reading the index while the batches are
kept aside, or while the last one is half-way through its swap, reads the earlier set whole — and the next read
after the swap commits is the new set whole, in every process (cold or with a kept copy). Never part of each."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session

from audit import AuditLog
from gateway.app import create_app
from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.db.engine import make_engine, make_session_factory
from gateway.enrolment.filters import FilterBatch
from gateway.enrolment.retired import remove_retired
from gateway.enrolment.tables import match_filter_staged
from gateway.settings import Settings
from tests.audit_support import log_signer
from tests.integration.test_fuzzy_index_updates import PERSON, RIEC, START, Holders, _cold, _service, assert_same
from tests.integration.test_retired_participations import retiring

OLD = [f"old/{n:03d}" for n in range(6)]
NEW = [f"new/{n:03d}" for n in range(5)]


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
        self.writer: threading.Thread | None = None
        """The thread to hold: set before it starts (its first statement may run before ``start`` returns)."""

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread() is self.writer and statement.lstrip().startswith(self.prefix) \
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
        pause.writer = writer
        writer.start()
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


def _staged(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        return sorted((row.organisation, row.local_ref) for row in connection.execute(
            select(match_filter_staged.c.organisation, match_filter_staged.c.local_ref)))


def test_an_abandoned_replacement_is_removed_once_its_time_has_passed(engine: Engine) -> None:
    holders = Holders(engine, seed=32)
    _apply(engine, _batch(holders, NEW[:3], None))  # kept until START + 1 h unless another batch comes
    assert _service(engine).remove_abandoned() == 0
    assert _staged(engine) == [("politie", ref) for ref in NEW[:3]]
    later = _service(engine)
    later.clock = FixedClock(START + timedelta(hours=1, seconds=1))
    assert later.remove_abandoned() == 3
    assert _staged(engine) == []


def test_a_retired_participation_leaves_no_kept_replacement_behind(engine: Engine, tmp_path: Path) -> None:
    """A participant retired half-way through a replacement: nothing of it is kept (its kept records are never
    answered from, and are removed with its index rows) — found even when it has no index rows at all."""
    holders = Holders(engine, seed=33)
    for organisation in ("kvk", "politie"):
        rows = [holders.row(organisation, ref) for ref in NEW[:2]]
        _apply(engine, FilterBatch(RIEC, organisation, "test", PERSON.id, PERSON.version, True, rows, [],
                                   replacement="replacement-0001", expires_at=START + timedelta(hours=1)))
    register, _ = retiring(tmp_path)  # the KvK retired in the RIEC
    remove_retired(make_session_factory(engine), register, AuditLog(engine, log_signer()), channel="cli")
    assert _staged(engine) == [("politie", ref) for ref in NEW[:2]]


def test_a_start_removes_the_replacements_abandoned_before_it(sqlite_db_url: str, tmp_path: Path) -> None:
    """A participant that never sends another batch would otherwise leave its kept records for good."""
    engine = make_engine(sqlite_db_url)
    try:
        _apply(engine, _batch(Holders(engine, seed=34), NEW[:2], None))  # kept until START + 1 h
        container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url),
                                    FixedClock(START + timedelta(hours=2)))
        with TestClient(create_app(container=container)):
            pass
        container.close()
        assert _staged(engine) == []
    finally:
        engine.dispose()

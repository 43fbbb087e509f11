"""Case lists are paged in commit order (``seq``), on SQLite and PostgreSQL: a case that commits after a page
was read is on a later page even when its id (a UUIDv7, made when its request began) sorts before that page's
last — paging by id skipped it for good."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from escalation.cases import new_case_id, open_case
from escalation.queries import CaseFilter, CaseScope, list_cases
from gateway.db.engine import make_engine, make_session_factory, transaction

DEADLINES = {1: 5, 2: 10, 3: 20}
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
EVERYTHING = CaseScope(everything=True)


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _open(session: Session, exchange: str, case_id: str | None = None) -> str:
    return open_case(session, partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                     requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused",
                     register_version="2026.11.1", policy_reasons=["refused-by-holder"], deadlines=DEADLINES,
                     now=NOW, timezone="Europe/Amsterdam", exchange_id=exchange, case_id=case_id).id


def _every_page(sessions: sessionmaker[Session], after: str | None, limit: int = 2) -> list[str]:
    listed: list[str] = []
    while True:
        with transaction(sessions) as session:
            page = list_cases(session, EVERYTHING, CaseFilter(), limit=limit, after=after)
        listed += [case.id for case in page]
        if len(page) < limit:
            return listed
        after = page[-1].id


def test_a_case_committed_after_a_page_was_read_is_on_the_next_page(sessions: sessionmaker[Session]) -> None:
    late = new_case_id()  # its request began first ...
    with transaction(sessions) as session:
        early = [_open(session, f"ex-{n}") for n in range(2)]
    assert all(late < case_id for case_id in early)
    with transaction(sessions) as session:
        first_page = list_cases(session, EVERYTHING, CaseFilter(), limit=2)
    assert [case.id for case in first_page] == early
    with transaction(sessions) as session:  # ... and committed after the first page was read
        _open(session, "ex-late", case_id=late)
    assert _every_page(sessions, first_page[-1].id) == [late]


def test_the_first_pages_are_the_same_as_before_for_cases_opened_one_after_another(
        sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        opened = [_open(session, f"ex-{n}") for n in range(5)]
    assert _every_page(sessions, None) == opened  # oldest first, each once, the cursor still a case id


@pytest.mark.parametrize("empty_db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_on_postgresql_openings_wait_for_each_other_so_seq_follows_commit_order(
        sessions: sessionmaker[Session]) -> None:
    """Two openings at once: the second waits for the first to commit (the lock of ``_next_seq``) and gets the
    next ``seq``; without the lock both computed the same ``max + 1`` and the second failed on the unique
    index. (PostgreSQL only: SQLite has one writer at a time anyway.)"""
    first = sessions()
    first_id = _open(first, "ex-first")  # holds the lock, not committed
    second: list[str] = []
    failed: list[BaseException] = []

    def open_second() -> None:
        try:
            with transaction(sessions) as session:
                second.append(_open(session, "ex-second"))
        except BaseException as exc:  # reported below
            failed.append(exc)

    thread = threading.Thread(target=open_second)
    thread.start()
    deadline = time.monotonic() + 10
    with transaction(sessions) as watcher:  # bounded poll: the second is waiting for the advisory lock
        while not watcher.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND NOT granted")).scalar():
            assert time.monotonic() < deadline, "the second opening did not wait for the first"
            time.sleep(0.02)
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert not failed, failed
    assert _every_page(sessions, None) == [first_id, *second]

"""The migration that gives escalation cases their listing order (``seq``), on a database that holds cases
already: they are numbered in id order (the order they were listed in before), a case opened afterwards comes
after them, and down drops the column and keeps the cases."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, select, text

from escalation.cases import open_case
from escalation.queries import CaseFilter, CaseScope, list_cases
from escalation.tables import escalation_cases
from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from tests.migration_rows import column_names

BEFORE = "0040_checkpoint_keys"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _insert(connection: Connection, n: int) -> str:
    """A case row as the code before the migration writes it (no ``seq``)."""
    case_id = str(uuid.UUID(int=n))
    connection.execute(escalation_cases.insert().values(
        id=case_id, partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
        requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused", state="closed", tier=1,
        version=3, deadline=date(2026, 12, 2), opened_at=NOW, updated_at=NOW, register_version="2026.11.1",
        policy_reasons=[], decision=None, legal_gap=False, requested_categories=[], votes=[]))
    return case_id


def test_existing_cases_are_numbered_in_id_order_and_new_ones_come_after(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            existing = [_insert(connection, n) for n in (3, 1, 2)]  # written out of id order
        command.upgrade(config, "head")
        with engine.connect() as connection:
            numbered = connection.execute(select(escalation_cases.c.id, escalation_cases.c.seq)
                                          .order_by(escalation_cases.c.seq)).all()
        assert [(row.id, row.seq) for row in numbered] == [(case_id, n) for n, case_id in
                                                           enumerate(sorted(existing), start=1)]
        sessions = make_session_factory(engine)
        with transaction(sessions) as session:
            new = open_case(session, partnership="riec-amsterdam-amstelland", purpose="bibob-integrity-check",
                            requester_org="gemeente-amsterdam", holder_org="politie", trigger="holder-refused",
                            register_version="2026.11.1", policy_reasons=[], deadlines={1: 5, 2: 10, 3: 20},
                            now=NOW, timezone="Europe/Amsterdam", exchange_id="ex-new").id
        with transaction(sessions) as session:
            listed = list_cases(session, CaseScope(everything=True), CaseFilter(), limit=2, after=sorted(existing)[1])
        assert [case.id for case in listed] == [sorted(existing)[2], new]

        command.downgrade(config, BEFORE)
        assert "seq" not in column_names(engine, "escalation_cases")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM escalation_cases")).scalar() == 4
        command.upgrade(config, "head")  # and up again
    finally:
        engine.dispose()


def test_many_cases_written_in_random_order_are_numbered_in_id_order(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    numbers = list(range(1, 501))
    random.Random(41).shuffle(numbers)
    try:
        with engine.begin() as connection:
            existing = [_insert(connection, n) for n in numbers]
        command.upgrade(config, "head")
        with engine.connect() as connection:
            numbered = connection.execute(select(escalation_cases.c.id, escalation_cases.c.seq)).all()
        assert sorted((row.seq, row.id) for row in numbered) == list(enumerate(sorted(existing), start=1))
    finally:
        engine.dispose()


def _upgrade_work(engine: Engine, db_url: str) -> int:
    """How much work SQLite does for the upgrade to head: its virtual machine's instructions, in thousands
    (counted by a progress handler; no clock), on a connection of the test's own that Alembic is given."""
    config = alembic_config(db_url)
    thousands = 0

    def count() -> int:
        nonlocal thousands
        thousands += 1
        return 0  # go on

    with engine.begin() as connection:
        sqlite = connection.connection.driver_connection
        assert sqlite is not None
        sqlite.set_progress_handler(count, 1000)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        sqlite.set_progress_handler(None, 0)
    return thousands


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)  # SQLite counts its own instructions
def test_numbering_the_existing_cases_is_not_quadratic(empty_db_url: str) -> None:
    """Four times the cases, about four times the work (and the numbering did happen). Measured: 87 and 349
    thousand instructions; with a correlated count of the earlier cases for every case, 319 and 4 158."""
    command.upgrade(alembic_config(empty_db_url), BEFORE)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            for n in range(1, 401):
                _insert(connection, n)
        small = _upgrade_work(engine, empty_db_url)
        command.downgrade(alembic_config(empty_db_url), BEFORE)
        with engine.begin() as connection:
            for n in range(401, 1601):
                _insert(connection, n)
        large = _upgrade_work(engine, empty_db_url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT max(seq) FROM escalation_cases")).scalar() == 1600
        assert large < 6 * small, (small, large)
    finally:
        engine.dispose()

"""The migration that stores the participant's own pseudonym with each enrolment (0042), on a database that holds
enrolments already: they are kept, with no own pseudonym (null: found by their partnership pseudonym, as
before); down drops the column and its index and keeps the rows."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text

from gateway.db.engine import alembic_config, make_engine
from tests.migration_rows import column_names, insert_row

BEFORE = "0041_case_listing_order"
INDEX = "ix_enrolments_own_tag"
ROW = {"partnership": "riec-amsterdam-amstelland", "organisation": "kvk", "pseudonym": "kvk.v1.shared",
       "key_version": 1, "record_types": '["trade-name"]', "categories": '["company_registration"]',
       "updated_at": datetime(2026, 12, 5, 12, 0, tzinfo=UTC), "confidential": False, "minor": False}


def test_existing_enrolments_are_kept_without_an_own_pseudonym_and_down_drops_the_column(
        empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            insert_row(connection, "enrolments", ROW)
        command.upgrade(config, "head")
        assert INDEX in {index["name"] for index in inspect(engine).get_indexes("enrolments")}
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT pseudonym, key_version, own_tag FROM enrolments")).all()
        assert [tuple(row) for row in rows] == [("kvk.v1.shared", 1, None)]

        command.downgrade(config, BEFORE)
        assert "own_tag" not in column_names(engine, "enrolments")
        assert INDEX not in {index["name"] for index in inspect(engine).get_indexes("enrolments")}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT pseudonym FROM enrolments")).scalars().all() == ["kvk.v1.shared"]
        command.upgrade(config, "head")  # and up again
    finally:
        engine.dispose()

"""Migration 0022_match_filters: up creates the fuzzy discovery index with its key and index, down removes it
and leaves the revision before it intact."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from gateway.db.engine import alembic_config, make_engine


def test_match_filters_upgrade_and_downgrade(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0022_match_filters")
    engine = make_engine(empty_db_url)
    try:
        found = inspect(engine)
        assert "match_filters" in found.get_table_names()
        assert found.get_pk_constraint("match_filters")["constrained_columns"] == [
            "partnership", "organisation", "record_type", "local_ref"]
        assert "ix_match_filters_partnership_record_type" in {i["name"] for i in found.get_indexes("match_filters")}

        command.downgrade(config, "0021_pseudonyms_made")
        found = inspect(engine)
        assert "match_filters" not in found.get_table_names()
        assert "pseudonyms_made" in found.get_table_names()

        command.upgrade(config, "head")
        assert "match_filters" in inspect(engine).get_table_names()
    finally:
        engine.dispose()

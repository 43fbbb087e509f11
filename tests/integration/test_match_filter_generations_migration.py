"""Migration 0029_match_filter_generations: up creates the counters keyed by (partnership, participant, record
type), down removes them and leaves the revision before it intact."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from gateway.db.engine import alembic_config, make_engine


def test_match_filter_generations_upgrade_and_downgrade(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0029_match_filter_generations")
    engine = make_engine(empty_db_url)
    try:
        found = inspect(engine)
        assert found.get_pk_constraint("match_filter_generations")["constrained_columns"] == [
            "partnership", "organisation", "record_type"]

        command.downgrade(config, "0028_audit_on_demand")
        found = inspect(engine)
        assert "match_filter_generations" not in found.get_table_names()
        assert "audit_on_demand" in found.get_table_names()

        command.upgrade(config, "head")
        assert "match_filter_generations" in inspect(engine).get_table_names()
    finally:
        engine.dispose()

"""Migration 0030_match_filter_changes on a database that holds match filters already: the rows read as written
by generation 0, each counter as complete from its current generation on (no removal before the upgrade is
recorded), and a process that reads them after the upgrade updates its copy from the next batch alone. Down
keeps the rows and the counters of 0029."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import inspect, text

from gateway.clock import FixedClock
from gateway.db.engine import alembic_config, make_engine, make_session_factory
from gateway.enrolment.filters import FilterBatch, FilterService
from gateway.matching.schema import shipped_schema
from gateway.register.loader import load_register
from gateway.settings import SHIPPED_REGISTER

RIEC = "riec-amsterdam-amstelland"
PERSON = shipped_schema("person")
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _row(ref: str, n: int) -> dict[str, object]:
    return {"partnership": RIEC, "organisation": "politie", "record_type": PERSON.id, "local_ref": ref,
            "schema_version": PERSON.version, "clk": bytes([n % 251 + 1]) * (PERSON.filter_bits // 8),
            "blocks": b"", "categories": ["police_incidents"], "confidential": False, "confidential_reason": None,
            "minor": False, "updated_at": NOW}


def test_upgrade_keeps_the_filters_and_makes_them_updatable(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0029_match_filter_generations")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:  # as 0029's code left them: rows, and a counter bumped 3 times
            for n in range(5):
                connection.execute(text(
                    "INSERT INTO match_filters (partnership, organisation, record_type, local_ref, schema_version, "
                    "clk, blocks, categories, confidential, confidential_reason, minor, updated_at) VALUES "
                    "(:partnership, :organisation, :record_type, :local_ref, :schema_version, :clk, :blocks, "
                    "'[\"police_incidents\"]', :confidential, :confidential_reason, :minor, :updated_at)"),
                    {**_row(f"ref/{n}", n), "categories": None})
            connection.execute(text("INSERT INTO match_filter_generations VALUES (:p, 'politie', 'person', 3)"),
                               {"p": RIEC})

        command.upgrade(config, "head")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT DISTINCT generation FROM match_filters")).scalars().all() == [0]
            assert connection.execute(text(
                "SELECT generation, stamped, history_from FROM match_filter_generations")).one() == (3, 3, 3)
        register, _ = load_register(SHIPPED_REGISTER)
        service = FilterService(sessions=make_session_factory(engine), clock=FixedClock(NOW), register=register)
        assert service.held(RIEC, PERSON, ["politie"])["politie"].refs == [f"ref/{n}" for n in range(5)]
        with engine.begin() as connection:
            FilterBatch(RIEC, "politie", "test", PERSON.id, PERSON.version, False, [_row("ref/9", 9)],
                        ["ref/0"]).apply(connection)
        assert service.held(RIEC, PERSON, ["politie"])["politie"].refs == ["ref/1", "ref/2", "ref/3", "ref/4",
                                                                           "ref/9"]
        assert (service.full_reads, service.updates, service.rows_read) == (1, 1, 6)

        command.downgrade(config, "0029_match_filter_generations")
        found = inspect(engine)
        assert "match_filter_removals" not in found.get_table_names()
        assert "generation" not in {column["name"] for column in found.get_columns("match_filters")}
        assert {column["name"] for column in found.get_columns("match_filter_generations")} == {
            "partnership", "organisation", "record_type", "generation"}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM match_filters")).scalar_one() == 5
            assert connection.execute(text("SELECT generation FROM match_filter_generations")).scalar_one() == 4

        command.upgrade(config, "head")
        assert "match_filter_removals" in inspect(engine).get_table_names()
    finally:
        engine.dispose()

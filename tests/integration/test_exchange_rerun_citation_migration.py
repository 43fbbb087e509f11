"""Migration 0031_exchange_rerun_citation on a database that holds exchange rows already: they stay, read with
neither the plain request fingerprint nor a cited decision (the escalation desk then recognises a re-run's row
as before), and rows written after the upgrade carry both. Down drops the two columns and keeps the rows."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, Engine, text

from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from gateway.exchange import repository
from tests.migration_rows import column_names, insert_row

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
NEW_COLUMNS = {"request_fingerprint", "escalation_decision"}


def _insert(connection: Connection, exchange_id: str, **new_columns: str) -> None:
    """An exchange row as the code of the revision at hand writes it (``new_columns``: those of 0031)."""
    values = {"id": exchange_id, "kind": "exchange", "created_at": NOW, "requester_org": "gemeente-amsterdam",
              "requester_system": "gemeente-amsterdam-vth", "partnership": "riec-amsterdam-amstelland",
              "purpose": "bibob-integrity-check", "case_reference": "RIEC-AA-2026-501",
              "register_version": "2026.11.1", "policy_version": "test", "request_sha256": "a" * 64,
              "outcome": "{}"} | new_columns
    insert_row(connection, "exchanges", values)


def _columns(engine: Engine) -> set[str]:
    return column_names(engine, "exchanges")


def _read(engine: Engine, exchange_id: str) -> repository.StoredExchange:
    with transaction(make_session_factory(engine)) as session:
        stored = repository.get(session, exchange_id)
    assert stored is not None
    return stored


def test_upgrade_keeps_old_rows_without_a_citation_and_down_keeps_the_rows(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0030_match_filter_changes")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            _insert(connection, "before-0031")
        command.upgrade(config, "0031_exchange_rerun_citation")
        assert _columns(engine) >= NEW_COLUMNS
        with engine.begin() as connection:
            _insert(connection, "after-0031", request_fingerprint="b" * 64, escalation_decision="d" * 36)
        old, new = _read(engine, "before-0031"), _read(engine, "after-0031")
        assert (old.request_sha256, old.request_fingerprint, old.escalation_decision) == ("a" * 64, None, None)
        assert (new.request_fingerprint, new.escalation_decision) == ("b" * 64, "d" * 36)

        command.downgrade(config, "0030_match_filter_changes")
        assert not NEW_COLUMNS & _columns(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM exchanges ORDER BY id")).scalars().all() == [
                "after-0031", "before-0031"]

        command.upgrade(config, "head")  # and up again: every row reads as one from before the upgrade
        again = _read(engine, "after-0031")
        assert (again.request_fingerprint, again.escalation_decision) == (None, None)
    finally:
        engine.dispose()

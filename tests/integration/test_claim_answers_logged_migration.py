"""The migration that marks Idempotency-Key claims whose attempt logged its holders' answers, on a database that
holds claims already: they stay and read as unmarked (taken over and removed as abandoned as before). Down
drops the column and keeps the claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from sqlalchemy import Connection, text

from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from gateway.exchange import repository
from tests.migration_rows import column_names, insert_row

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
BEFORE = "0038_clk_key_id"


def _insert(connection: Connection, key: str) -> None:
    """A claim row as the code of 0038 writes it."""
    insert_row(connection, "exchange_claims", {
        "requester_system": "gemeente-amsterdam-vth", "idempotency_key": key, "exchange_id": f"attempt-{key}",
        "request_sha256": "f" * 64, "claimed_at": NOW})


def test_upgrade_leaves_existing_claims_unmarked_and_down_keeps_them(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            _insert(connection, "key-0001")
            _insert(connection, "key-0002")
        command.upgrade(config, "head")
        assert "answers_logged" in column_names(engine, "exchange_claims")
        with transaction(make_session_factory(engine)) as session:
            old = repository.find_claim(session, "gemeente-amsterdam-vth", "key-0001")
        assert old is not None
        assert old.answers_logged is False
        assert repository.remove_abandoned_claims(engine, NOW + timedelta(minutes=3)) == 2  # as before the mark

        with engine.begin() as connection:
            _insert(connection, "key-0003")
        command.downgrade(config, BEFORE)
        assert "answers_logged" not in column_names(engine, "exchange_claims")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT idempotency_key FROM exchange_claims")).scalars().all() == [
                "key-0003"]
        command.upgrade(config, "head")  # and up again
    finally:
        engine.dispose()

"""Migration 0032_client_certificate_bound on a database that holds clients already: they stay, and are not
certificate-bound (their tokens keep working as before); a client bound after the upgrade reads as bound. Down
drops the column and keeps the clients."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, Engine, text

from gateway.auth import repository
from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from tests.migration_rows import column_names, insert_row

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _insert(connection: Connection, client_id: str) -> None:
    """A client row as the code of 0031 writes it."""
    values = {"client_id": client_id, "organisation": "politie", "auth_method": "private_key_jwt",
              "jwks": '{"keys": []}', "scopes": '["register:read"]', "active": True, "created_at": NOW,
              "key_generation": 2}
    insert_row(connection, "oauth_clients", values)


def _columns(engine: Engine) -> set[str]:
    return column_names(engine, "oauth_clients")


def _read(engine: Engine, client_id: str) -> repository.ClientRecord:
    with transaction(make_session_factory(engine)) as session:
        stored = repository.get_client(session, client_id)
    assert stored is not None
    return stored


def test_upgrade_leaves_existing_clients_unbound_and_down_keeps_them(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "0031_exchange_rerun_citation")
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            _insert(connection, "politie-bvh")
        command.upgrade(config, "0032_client_certificate_bound")
        assert "certificate_bound" in _columns(engine)
        command.upgrade(config, "head")  # the code reads the columns of later revisions too
        old = _read(engine, "politie-bvh")
        assert (old.certificate_bound, old.key_generation, old.scopes) == (False, 2, ["register:read"])
        with transaction(make_session_factory(engine)) as session:
            assert repository.set_client_certificate_bound(session, "politie-bvh", True)
        bound = _read(engine, "politie-bvh")
        assert (bound.certificate_bound, bound.key_generation) == (True, 3)

        command.downgrade(config, "0031_exchange_rerun_citation")
        assert "certificate_bound" not in _columns(engine)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT client_id FROM oauth_clients")).scalars().all() == ["politie-bvh"]

        command.upgrade(config, "head")  # and up again: the client reads as one from before the upgrade
        assert not _read(engine, "politie-bvh").certificate_bound
    finally:
        engine.dispose()

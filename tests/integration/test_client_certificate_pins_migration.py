"""The migration that adds certificate pins (``oauth_clients.certificate_pins``) on a database that holds clients
already: a bound client stays bound and unpinned (any certificate its proxy verified, as before), an unbound one
unbound; a client pinned after the upgrade reads as pinned. Down drops the column and keeps the clients, bound
as they were. Run from 0032 to head and back, so that the revision's own id is named nowhere here."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import Connection, Engine, text

from gateway.auth import repository
from gateway.db.engine import alembic_config, make_engine, make_session_factory, transaction
from tests.migration_rows import column_names, insert_row

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
BEFORE = "0032_client_certificate_bound"
PIN = "Qxdm2fxI5xfHqtrEdQYTAz1qX8S6dgenXxh37KohYyA"


def _insert(connection: Connection, client_id: str, bound: bool) -> None:
    """A client row as the code of 0032 writes it."""
    values = {"client_id": client_id, "organisation": "politie", "auth_method": "private_key_jwt",
              "jwks": '{"keys": []}', "scopes": '["register:read"]', "active": True, "created_at": NOW,
              "key_generation": 2, "certificate_bound": bound}
    insert_row(connection, "oauth_clients", values)


def _read(engine: Engine, client_id: str) -> repository.ClientRecord:
    with transaction(make_session_factory(engine)) as session:
        stored = repository.get_client(session, client_id)
    assert stored is not None
    return stored


def test_upgrade_leaves_bound_clients_unpinned_and_down_keeps_them_bound(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as connection:
            _insert(connection, "politie-bvh", bound=True)
            _insert(connection, "kvk-handelsregister", bound=False)
        command.upgrade(config, "head")
        assert "certificate_pins" in column_names(engine, "oauth_clients")
        bound, unbound = _read(engine, "politie-bvh"), _read(engine, "kvk-handelsregister")
        assert (bound.certificate_bound, bound.certificate_pins, bound.key_generation) == (True, (), 2)
        assert (unbound.certificate_bound, unbound.certificate_pins) == (False, ())
        with transaction(make_session_factory(engine)) as session:
            assert repository.set_client_certificate_bound(session, "politie-bvh", True, [PIN], generation=2)
        pinned = _read(engine, "politie-bvh")
        assert (pinned.certificate_pins, pinned.key_generation) == ((PIN,), 3)

        command.downgrade(config, BEFORE)
        assert "certificate_pins" not in column_names(engine, "oauth_clients")
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT client_id, certificate_bound FROM oauth_clients "
                                           "ORDER BY client_id")).all()
        assert [(client_id, bool(bound)) for client_id, bound in rows] == [
            ("kvk-handelsregister", False), ("politie-bvh", True)]

        command.upgrade(config, "head")  # and up again: the pins are gone with the column
        assert _read(engine, "politie-bvh").certificate_pins == ()
    finally:
        engine.dispose()

"""Alembic owns the schema: up and down on SQLite and PostgreSQL, and the app refuses an old schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from gateway.app import create_app
from gateway.container import build_container
from gateway.db.all_tables import ALL_METADATA
from gateway.db.engine import alembic_config, current_heads, expected_heads, make_engine
from gateway.errors import DatabaseNotMigrated
from gateway.settings import Settings


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_removes_them(empty_db_url: str) -> None:
    config = alembic_config(empty_db_url)
    command.upgrade(config, "head")
    declared = {table.name for metadata in ALL_METADATA for table in metadata.tables.values()}
    assert declared <= _tables(empty_db_url)
    engine = make_engine(empty_db_url)
    assert current_heads(engine) == expected_heads()
    engine.dispose()

    command.downgrade(config, "base")
    assert _tables(empty_db_url) - {"alembic_version"} == set()

    command.upgrade(config, "head")  # and up again: downgrades leave nothing behind that blocks it
    assert declared <= _tables(empty_db_url)


def test_app_refuses_to_start_on_unmigrated_database(empty_db_url: str, tmp_path: object) -> None:
    settings = Settings(database_url=empty_db_url)
    container = build_container(settings)
    app = create_app(container=container)
    with pytest.raises(DatabaseNotMigrated, match="wgs-gateway db upgrade"), TestClient(app):
        pass
    container.close()


def test_app_starts_and_is_ready_on_migrated_database(db_url: str) -> None:
    container = build_container(Settings(database_url=db_url))
    with TestClient(create_app(container=container)) as client:
        response = client.get("/health/ready")
    container.close()
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


def test_a_schema_changed_under_a_running_gateway_makes_it_not_ready(db_url: str, tmp_path: Path) -> None:
    """The probe reads the database's revision on every call: a schema downgraded (or migrated by another
    version) after the start makes the gateway not ready, with the revisions and the remedy but no part of
    the database URL; back at the code's head it is ready again, without a restart."""
    config = alembic_config(db_url)
    container = build_container(Settings(data_dir=tmp_path, database_url=db_url))
    try:
        with TestClient(create_app(container=container)) as client:
            at_head = client.get("/health/ready")
            command.downgrade(config, "-1")
            behind = client.get("/health/ready")
            command.upgrade(config, "head")
            again = client.get("/health/ready")
    finally:
        container.close()
    assert at_head.status_code == 200
    assert at_head.json()["checks"]["schema"] == "ok"
    assert behind.status_code == 503
    assert behind.json()["status"] == "unavailable"
    reason = behind.json()["checks"]["schema"]
    assert reason.startswith("failed: not migrated: database at revision ")
    assert all(head in reason for head in expected_heads())
    assert "wgs-gateway db upgrade" in reason
    url = make_url(db_url)
    for part in (url.password, url.host, url.database):
        assert not part or str(part) not in behind.text
    assert again.status_code == 200
    assert again.json()["checks"]["schema"] == "ok"


def test_models_and_migrations_agree(db_url: str) -> None:
    """Alembic autogenerate finds nothing to do: every table module is registered and matches its migration."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = [diff for metadata in ALL_METADATA for diff in compare_metadata(context, metadata)
                       if diff[0] in {"add_table", "remove_table", "add_column", "remove_column"}]
    engine.dispose()
    tables_in_some_metadata = {t.name for m in ALL_METADATA for t in m.tables.values()}
    # compare_metadata per MetaData reports the other packages' tables as "remove_table": ignore those.
    real = [d for d in differences if not (d[0] == "remove_table" and d[1].name in tables_in_some_metadata)]
    assert real == []

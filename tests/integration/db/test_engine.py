"""The engine's connection arguments: PostgreSQL gets the connect timeout of the settings (psycopg would
otherwise wait 130 s for a server that never answers), unless the URL names its own; SQLite is unaffected.
The timeout itself is exercised against a silent listener in tests/integration/test_cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from gateway.db.engine import alembic_config_for, connect_args, engine_for, make_engine
from gateway.settings import Settings

PG = "postgresql+psycopg://wgs:S3cr%40tPW@db.example:5432/wgs"


class _Stop(Exception):
    pass


def test_postgres_gets_the_settings_connect_timeout(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=PG, db_connect_timeout_seconds=7)
    assert alembic_config_for(settings).attributes["connect_args"] == {"connect_timeout": 7}  # `db upgrade`
    engine = engine_for(settings)
    seen: list[dict[str, Any]] = []

    def capture(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        seen.append(dict(params))
        raise _Stop  # what psycopg would be called with; no connection is attempted

    event.listen(engine, "do_connect", capture)
    try:
        with pytest.raises(_Stop), engine.connect():
            pass
    finally:
        engine.dispose()
    assert seen[0]["connect_timeout"] == 7


def test_a_connect_timeout_in_the_url_is_the_operators_choice() -> None:
    assert connect_args(f"{PG}?connect_timeout=20", 5) == {}


@pytest.mark.parametrize("url", ["sqlite:///var/gateway.sqlite", "sqlite://"])
def test_sqlite_keeps_its_own_arguments(url: str) -> None:
    assert connect_args(url, 5) == {"check_same_thread": False, "timeout": 30}


def test_a_sqlite_file_pool_hands_back_the_connection_returned_last(sqlite_db_url: str) -> None:
    """SQLite drops a connection's whole page cache when another connection wrote meanwhile: handed out in
    turn, every audit commit ran on a connection whose cache the previous commit had invalidated. Once the pool
    holds several connections (requests used them at once), consecutive writers get the one that just wrote."""
    engine = make_engine(sqlite_db_url)
    try:
        held = [engine.connect() for _ in range(3)]
        for connection in held:
            connection.close()
        used = []
        for _ in range(3):
            with engine.connect() as connection:
                connection.exec_driver_sql("UPDATE audit_on_demand SET signed_at = 0 WHERE id = 1")
                connection.commit()
                used.append(connection.connection.dbapi_connection)
        assert used[0] is used[1] is used[2]
    finally:
        engine.dispose()


def test_an_in_memory_sqlite_engine_still_connects() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()

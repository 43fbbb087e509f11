"""A PostgreSQL database that is not in UTF-8 is refused at start-up and by ``db upgrade``, in one line.

On such a database (``createdb -E SQL_ASCII``, a cluster initialised under a C locale, or ``PGCLIENTENCODING``
set to another encoding) the driver encodes statements in that encoding, and every audit write with a
character outside it failed with a bare ``UnicodeEncodeError``: every request denied, nothing saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from gateway.app import start_services
from gateway.cli import app
from gateway.container import build_container
from gateway.errors import ServiceUnavailable
from gateway.settings import Settings
from gateway.startup import start_problems
from tests.logging_state import kept_logging
from tests.pg_server import create_database

pytestmark = pytest.mark.postgres

runner = CliRunner()


def _sql_ascii_database(admin_url: str) -> str:
    """``createdb -E SQL_ASCII -T template0``, as SQL."""
    name = f"wgs_ascii_{datetime.now(UTC):%H%M%S%f}"
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' TEMPLATE template0")
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def _tables(url: str) -> int:
    """How many tables the database has (psycopg's own connection: SQLAlchemy cannot connect to SQL_ASCII)."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        row = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PGCLIENTENCODING", raising=False)
    return monkeypatch


def test_a_sql_ascii_database_is_refused_by_upgrade_and_start(postgres_admin_url: str,
                                                              environment: pytest.MonkeyPatch) -> None:
    url = _sql_ascii_database(postgres_admin_url)
    environment.setenv("WGS_DATABASE_URL", url)
    with kept_logging():
        result = runner.invoke(app, ["db", "upgrade"])
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, (result.output, result.exception)
    assert "server encoding SQL_ASCII" in lines[0]
    assert "UTF8" in lines[0]
    assert "Traceback" not in result.output
    assert "@" not in lines[0], "never the URL"
    assert _tables(url) == 0, "nothing created in a database the gateway cannot use"
    assert start_problems() == [lines[0]]


def test_a_client_encoding_other_than_utf8_is_refused(postgres_admin_url: str,
                                                      environment: pytest.MonkeyPatch) -> None:
    url = create_database(postgres_admin_url, f"wgs_latin1_{datetime.now(UTC):%H%M%S%f}")
    environment.setenv("WGS_DATABASE_URL", url)
    with kept_logging():
        assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0, "a UTF-8 database is migrated"
    environment.setenv("PGCLIENTENCODING", "LATIN1")  # read by libpq at each connection
    problems = start_problems()
    assert len(problems) == 1
    assert "client encoding LATIN1" in problems[0]
    assert "server encoding" not in problems[0]
    container = build_container(Settings())
    try:  # the app's own start (its lifespan) refuses as well
        with pytest.raises(ServiceUnavailable, match="client encoding LATIN1"):
            start_services(container)
    finally:
        container.close()

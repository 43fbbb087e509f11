"""Shared fixtures: a migrated database on SQLite and on PostgreSQL, settings, container and app.

Database-backed fixtures are parametrised over both engines: every test that uses ``db_url`` runs twice.
Tests build the schema with the real Alembic migrations, never ``create_all``: run once per session into a
template that each test gets a copy of (``tests.migrated``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.auth import passwords
from gateway.clock import FixedClock
from gateway.container import Container, build_container
from gateway.db.engine import make_engine, sqlite_file
from gateway.settings import Settings
from tests.migrated import migrate_postgres_in_place, migrated_sqlite, migrated_sqlite_file
from tests.pg_server import create_database, running_postgres

_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind (not migrated)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.sqlite'}"
    admin: str = request.getfixturevalue("postgres_admin_url")
    return create_database(admin, f"wgs_test_{next(_counter)}_{datetime.now(UTC):%H%M%S%f}")


@pytest.fixture
def db_url(request: pytest.FixtureRequest, empty_db_url: str) -> str:
    """A database of each kind, migrated to head with Alembic (a copy of the session's migrated template)."""
    path = sqlite_file(empty_db_url)
    if path is not None:
        migrated_sqlite_file(path)
    else:
        migrate_postgres_in_place(request.getfixturevalue("postgres_admin_url"), empty_db_url)
    return empty_db_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on ``db_url`` (both kinds), disposed of after the test. A file's own ``engine`` fixture (one
    that also fills the log, or makes tables of its own) takes its place there."""
    made = make_engine(db_url)
    try:
        yield made
    finally:
        made.dispose()


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    """A migrated SQLite database only, for tests that don't concern the database engine."""
    return migrated_sqlite(tmp_path)


@pytest.fixture
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords and client secrets stored during the test are argon2id hashes at the lowest cost argon2
    allows, not the production cost (64 MiB, three passes: 0.25-0.5 s of CPU per hash and per check here,
    and a sign-in is one of each). The code paths are the real ones and a check verifies for real: the
    encoded hash carries its parameters. The check of an unknown username keeps the production-cost dummy
    hash. For tests whose subject is not the hashing; tests of the hashing (what is stored, floods of
    checks, their cost) keep the production parameters by not using this."""
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=64, parallelism=1))


@pytest.fixture
def clock() -> FixedClock:
    # A Wednesday within office hours (Europe/Amsterdam), so policy rule 7 does not escalate by default.
    return FixedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))


@pytest.fixture
def settings(tmp_path: Path, sqlite_db_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=sqlite_db_url, log_json=True)


@pytest.fixture
def container(settings: Settings, clock: FixedClock) -> Iterator[Container]:
    the_container = build_container(settings, clock)
    yield the_container
    the_container.close()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container=container)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client

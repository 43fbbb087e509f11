"""Engine and session factory, plus the guard that refuses to run on an un-migrated database."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import DatabaseNotMigrated
from gateway.resources import resource_dir

if TYPE_CHECKING:
    from gateway.settings import Settings

MIGRATIONS_DIR = resource_dir("migrations")


def make_engine(url: str, *, echo: bool = False, connect_timeout: int | None = None) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout so concurrent writers wait.

    ``connect_timeout`` (seconds, PostgreSQL): how long opening a connection may take, see
    :func:`connect_args`. Processes pass their setting through :func:`engine_for`.
    """
    # hide_parameters: error texts must not carry statement parameters (audit entries, records).
    kwargs: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True,
                              "connect_args": connect_args(url, connect_timeout)}
    if url.startswith("sqlite"):
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds what partners exchanged
            # A file database's pool hands out the connection returned last. SQLite keeps a page cache per
            # connection and drops all of it when another connection wrote meanwhile; handed out in turn
            # (the pool's default), the audit writer's next commit ran on a connection whose cache the
            # previous one had invalidated and read its B-tree pages again (measured: 10-30 page reads a
            # request against ~3, at one client). Handed back the connection that just wrote, it finds them.
            kwargs["pool_use_lifo"] = True
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=10)
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "do_connect", lambda *_: private_sqlite_file(url))
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def private_sqlite_file(url: str) -> None:
    """Make the SQLite file ``url`` names, empty and readable by its owner only, unless it is there (nothing
    for any other database). Called just before a connection is opened, which would make the file anyway:
    making an engine still creates nothing (:func:`require_database`).

    Why: SQLite creates a missing database file with the process's umask (0644 under the usual 022), and the file
    holds accounts' password hashes, the match filters partners enrolled and what they exchanged; a data
    directory made beforehand (the image's, a plain ``mkdir``) does not keep other users out. SQLite gives the
    ``-wal`` and ``-shm`` files the database file's mode."""
    path = sqlite_file(url)
    if path is None:
        return
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def engine_for(settings: Settings) -> Engine:
    """The engine of ``settings``' database, with its connect timeout: what every command and the app use."""
    return make_engine(settings.effective_database_url, connect_timeout=settings.db_connect_timeout_seconds)


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite ``url`` names (its query, e.g. ``?timeout=``, is no part of it); ``None`` for an
    in-memory database or any other kind of database."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def missing_database_file(url: str) -> Path | None:
    """The file an SQLite ``url`` names, when there is none; ``None`` for an existing file, an in-memory
    database or any other kind of database."""
    path = sqlite_file(url)
    return None if path is None or path.is_file() else path


def require_database(settings: Settings) -> None:
    """Raise :class:`DatabaseNotMigrated` when ``settings`` name an SQLite file that does not exist.

    For the commands that use a database made by ``db upgrade``. An SQLite database is a file that the
    engine (its directory) and the first connection (the file) create when it is missing: a command run
    before ``db upgrade``, or in another directory than the one holding the relative default data
    directory, would leave an empty database file behind, which the next command takes for the database.
    """
    missing = missing_database_file(settings.effective_database_url)
    if missing is not None:
        raise DatabaseNotMigrated(f"no database file at {missing}. Run `wgs-gateway db upgrade` first.")


def existing_engine_for(settings: Settings) -> Engine:
    """:func:`engine_for` after :func:`require_database`: what the commands that only use the database
    open, so that none of them creates an empty one."""
    require_database(settings)
    return engine_for(settings)


def connect_args(url: str, connect_timeout: int | None) -> dict[str, Any]:
    """The driver's connection arguments for ``url``.

    PostgreSQL: ``connect_timeout``, so a server that is unreachable without a refusal (a dropped packet, a
    firewall, a host that accepts but never answers) fails the connection attempt in that time instead of
    psycopg's default of 130 s, per attempt, which held CLI commands, the start-up and every request (the
    pool's pre-ping reconnects) that long. A ``connect_timeout`` already in the URL's query is the
    operator's explicit choice and is kept. SQLite: wait for a writer's lock up to 30 s, from any thread.
    """
    if url.startswith("sqlite"):
        return {"check_same_thread": False, "timeout": 30}
    parsed = make_url(url)
    if connect_timeout is None or parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return {}
    return {"connect_timeout": connect_timeout}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")  # first, so the WAL switch below waits instead of failing
    if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, future=True)


@contextmanager
def transaction(factory: sessionmaker[Session], *, immediate: bool = False) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error.

    ``immediate``: on SQLite, begin with ``BEGIN IMMEDIATE``, which takes the database's write lock before
    the first statement, waiting for another writer in SQLite's busy timeout (30 s, :func:`make_engine`). For
    a unit that writes after it reads: a deferred transaction takes the lock only at its first write, and
    one whose read snapshot another process's commit has made stale by then cannot take it at all — SQLite
    answers that at once (``database is locked``, SQLITE_BUSY_SNAPSHOT), busy timeout or not. Other
    databases begin as usual (PostgreSQL's row locks and ``ON CONFLICT`` do the waiting there).
    """
    session = factory()
    try:
        if immediate:
            connection = session.connection()
            if connection.dialect.name == "sqlite":
                # Sent to the driver as is: SQLAlchemy's pysqlite transactions emit no BEGIN of their own, and
                # the driver begins none before a statement while this one is open; commit and rollback below
                # end it (the driver's, on the connection's open transaction).
                connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str, *, connect_timeout: int | None = None) -> Config:
    """Alembic configuration built in code, so the CLI works from any working directory.

    ``migrations/env.py`` opens its own engine with :func:`connect_args` (the ``connect_args`` attribute).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connect_args"] = connect_args(url, connect_timeout)
    return config


def alembic_config_for(settings: Settings) -> Config:
    """Alembic's configuration for ``settings``' database, with its connect timeout (``wgs-gateway db ...``)."""
    return alembic_config(settings.effective_database_url, connect_timeout=settings.db_connect_timeout_seconds)


def expected_heads() -> set[str]:
    """The migration heads this code ships. Parses every script in migrations/versions (50-100 ms), once per
    process: the scripts are part of the installed code and do not change under it, and every start of the
    app asks (tests start one per test). The readiness probe keeps the heads read at start-up."""
    return set(_shipped_heads(str(MIGRATIONS_DIR)))


@cache
def _shipped_heads(script_location: str) -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", script_location)
    return frozenset(ScriptDirectory.from_config(config).get_heads())


def current_heads(engine: Engine) -> set[str]:
    """The revisions recorded in the database's ``alembic_version`` table (empty: not migrated at all)."""
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())


def migration_gap(current: set[str], expected: set[str]) -> str | None:
    """``database at revision X, the code expects Y``, or None when the database is at the code's head.

    Names revisions only, never the database URL, so it may go to an operator's terminal and to the
    unauthenticated readiness probe alike."""
    if current == expected:
        return None
    return (f"database at revision {', '.join(sorted(current)) or 'none'}, "
            f"the code expects {', '.join(sorted(expected))}")


_UTF8 = frozenset({"UTF8", "UNICODE"})  # PostgreSQL's name for UTF-8, and the alias it accepts for it


def encoding_refusal(engine: Engine, connect_timeout: int | None = None) -> str | None:
    """Why ``engine``'s PostgreSQL database cannot hold the gateway's text, as one line, or None (SQLite, whose
    text is always UTF-8, is never asked).

    Why: on a database created in another encoding (``SQL_ASCII``, ``LATIN1``: a cluster initialised under a C
    locale makes those by default), or with ``PGCLIENTENCODING`` set to one, the driver encodes every statement
    in it, and every audit write with a character outside it failed with a bare ``UnicodeEncodeError`` (and every
    request with it). Both the server's and the session's encoding must be UTF8; a start and ``db upgrade`` refuse
    otherwise, naming the encodings found and never the URL.

    Asked on a connection of the driver's own (``connect_timeout`` as :func:`connect_args`), not the engine's:
    SQLAlchemy's first connection reads the server version, which on ``SQL_ASCII`` comes back as bytes and fails
    in a ``TypeError``. A driver error is raised as SQLAlchemy's (:class:`~sqlalchemy.exc.DBAPIError`), like any
    other database that cannot be reached."""
    if engine.dialect.name != "postgresql":
        return None
    dialect, dbapi_error = engine.dialect, engine.dialect.loaded_dbapi.Error
    cargs, cparams = dialect.create_connect_args(engine.url)
    cparams.update(connect_args(engine.url.render_as_string(hide_password=False), connect_timeout))
    found: dict[str, str] = {}
    try:
        connection = dialect.connect(*cargs, **cparams)
        try:
            cursor = connection.cursor()
            for side in ("server", "client"):
                cursor.execute(f"SHOW {side}_encoding")
                row = cursor.fetchone()
                value = row[0] if row else ""
                found[side] = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        finally:
            connection.close()
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
    wrong = [f"{side} encoding {value}" for side, value in found.items() if value.upper() not in _UTF8]
    if not wrong:
        return None
    return (f"database refused: its {' and '.join(wrong)}, not UTF8, cannot hold the audit log's text; create the "
            "database with `createdb -E UTF8 -T template0` (and leave PGCLIENTENCODING unset)")


def assert_migrated(engine: Engine, expected: set[str] | None = None) -> None:
    """Refuse to start unless the database is at the code's migration head (``expected``, computed here if
    not given)."""
    url = engine.url.render_as_string(hide_password=True)
    gap = migration_gap(current_heads(engine), expected_heads() if expected is None else expected)
    if gap:
        raise DatabaseNotMigrated(f"{gap} (database {url}). Run `wgs-gateway db upgrade` first.")

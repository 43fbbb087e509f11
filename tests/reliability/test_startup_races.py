"""Gateway processes starting at the same time (uvicorn workers, containers on one volume and one database)
on an installation that is new, or has a new register version: every one of them starts, and they share one
key of each kind and one record of the register version.

Found by these tests: the record-sealing, console-session and checkpoint keys were created in place, so a
process starting meanwhile read an empty or half-written file (a worker failed to start on an empty sealing
key; one read an empty console-session secret and signed cookies with it, which anyone can forge), and the
second process to record a new register version failed to start on the unique version."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import tempfile
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
import yaml
from alembic import command
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from audit.tables import audit_entries
from gateway.auditing.setup import install_audit, load_or_create_checkpoint_key
from gateway.auth.keys import SigningKeyStore
from gateway.clock import SystemClock
from gateway.console.sessions import load_or_create_secret
from gateway.container import build_container
from gateway.db.engine import alembic_config
from gateway.exchange.sealing import RecordSealer
from gateway.register import setup as register_setup
from gateway.register.setup import install_register
from gateway.register.tables import register_versions
from gateway.settings import SHIPPED_REGISTER, Settings

PROCESSES = 4
ROUNDS = 25


def _seal_key(directory: Path) -> bytes:
    sealer = RecordSealer(directory)
    opened = sealer.open("probe", sealer.seal("probe", "x"))
    assert isinstance(opened, str)
    return opened.encode() + (directory / "exchange-seal.key").read_bytes()


def _console_secret(directory: Path) -> bytes:
    secret = load_or_create_secret(directory)
    if not secret:
        raise ValueError("an empty console-session secret")
    return secret.encode()


def _checkpoint_key(directory: Path) -> bytes:
    return load_or_create_checkpoint_key(directory).public_key().public_bytes_raw()


def _signing_key(directory: Path) -> bytes:
    store = SigningKeyStore(directory, SystemClock(), timedelta(minutes=10))
    store.load_or_create()
    return json.dumps(store.current().as_dict(private=False), sort_keys=True).encode()


MAKERS: dict[str, Callable[[Path], bytes]] = {"sealing": _seal_key, "console": _console_secret,
                                              "checkpoint": _checkpoint_key, "signing": _signing_key}


def _at_once(barrier: Barrier, results: Any, work: Callable[[], object]) -> None:
    """In a child process: wait for the others, do ``work``, report what came of it (or the error's type)."""
    barrier.wait(timeout=60)
    try:
        results.put(("ok", work()))
    except Exception as exc:
        results.put(("error", type(exc).__name__ + ": " + str(exc)[:300]))


def _run_at_once(work: Callable[[], object]) -> list[tuple[str, object]]:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_at_once, args=(barrier, results, work)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcome = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    return outcome


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_key_made_by_processes_at_once_is_whole_and_the_same_for_all(kind: str) -> None:
    for _ in range(ROUNDS):
        directory = Path(tempfile.mkdtemp(prefix="wgs-keys-"))
        outcome = _run_at_once(lambda: MAKERS[kind](directory))  # noqa: B023 - run before the next round
        assert [status for status, _ in outcome] == ["ok"] * PROCESSES, outcome
        assert len({value for _, value in outcome}) == 1  # one key, used by every process
        left = [p.name for p in directory.iterdir() if not p.name.endswith(".lock")]  # a lock file may stay
        assert len(left) == 1, left  # no draft left over


def test_processes_starting_at_once_record_a_new_register_version_once(tmp_path: Path, empty_db_url: str) -> None:
    command.upgrade(alembic_config(empty_db_url), "head")
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    for round_ in range(3):
        register = tmp_path / f"register-{round_}.yaml"
        register.write_text(yaml.safe_dump(document | {"version": f"2026.12.{round_}"}))

        def start(file: Path = register) -> bool:
            container = build_container(Settings(data_dir=tmp_path, database_url=empty_db_url, register_file=file))
            try:
                newly = install_register(container).newly_recorded
                install_audit(container)  # logs the change when this process recorded it
                return newly
            finally:
                container.close()

        outcome = _run_at_once(start)
        assert sorted(outcome) == [("ok", False)] * (PROCESSES - 1) + [("ok", True)], outcome
    container = build_container(Settings(data_dir=tmp_path, database_url=empty_db_url))
    with container.engine.connect() as connection:
        logged = list(connection.execute(select(audit_entries.c.event_type)).scalars())
    container.close()
    assert logged == ["register.changed"] * 3  # one entry per version, whoever recorded it


class _LockedAtOnce:
    """Answers the first ``times`` inserts of a register version with the database driver's own
    ``OperationalError`` (as SQLite raises a lock it does not wait out, or psycopg a server gone), then lets
    them through."""

    def __init__(self, error: type[Exception], times: int) -> None:
        self.error, self.times, self.inserts = error, times, 0

    def __call__(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().startswith("INSERT INTO register_versions"):
            self.inserts += 1
            if self.inserts <= self.times:
                raise self.error("database is locked")


def _recorded_versions(tmp_path: Path, url: str) -> int:
    container = build_container(Settings(data_dir=tmp_path, database_url=url))
    try:
        with container.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(register_versions)).scalar_one())
    finally:
        container.close()


def _started_with_errors(tmp_path: Path, url: str, times: int) -> tuple[_LockedAtOnce, Any]:
    """``install_register`` meeting ``times`` driver errors: the injector, and the service or the error."""
    container = build_container(Settings(data_dir=tmp_path, database_url=url))
    locked = _LockedAtOnce(container.engine.dialect.loaded_dbapi.OperationalError, times=times)
    event.listen(container.engine, "before_cursor_execute", locked)
    try:
        return locked, install_register(container)
    except OperationalError as exc:
        assert "register" not in container.services
        return locked, exc
    finally:
        container.close()


def test_a_lock_met_while_recording_the_register_version_is_tried_again(
        tmp_path: Path, sqlite_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that meets SQLite's immediate lock error (processes opening and closing the file at once)
    records the version on a later attempt instead of failing; the version is recorded once."""
    monkeypatch.setattr(register_setup, "RETRY_PAUSE_SECONDS", 0.001)
    locked, started = _started_with_errors(tmp_path, sqlite_db_url, times=2)
    assert started.newly_recorded is True
    assert locked.inserts == 3
    assert _recorded_versions(tmp_path, sqlite_db_url) == 1


def test_an_error_that_does_not_pass_stops_the_start_with_nothing_recorded(
        tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: after RECORD_ATTEMPTS attempts; PostgreSQL (the server gone): after the first. The start fails
    with the database's error, and no version is recorded."""
    monkeypatch.setattr(register_setup, "RETRY_PAUSE_SECONDS", 0.001)
    attempts = register_setup.RECORD_ATTEMPTS if db_url.startswith("sqlite") else 1
    locked, started = _started_with_errors(tmp_path, db_url, times=attempts)
    assert isinstance(started, OperationalError)
    assert "database is locked" in str(started)
    assert locked.inserts == attempts
    assert _recorded_versions(tmp_path, db_url) == 0


def test_the_register_version_is_recorded_under_sqlites_write_lock_from_the_start(
        tmp_path: Path, sqlite_db_url: str) -> None:
    """The start's transaction takes SQLite's write lock before its first statement (``BEGIN IMMEDIATE``), so it
    waits for another process's lock in the busy timeout instead of meeting it later in the transaction, and
    no other writer gets in between. Probed just before the insert: another connection that will not wait
    finds the database locked. (With SQLite's default deferred BEGIN, issued by the driver with the insert,
    the probe took the lock.)"""
    database = sqlite_db_url.removeprefix("sqlite:///")
    probes: list[str] = []

    def probe(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().startswith("INSERT INTO register_versions"):
            other = sqlite3.connect(database, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                probes.append("lock taken by another connection")
            except sqlite3.OperationalError as exc:
                probes.append(str(exc))
            finally:
                other.close()

    container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url))
    event.listen(container.engine, "before_cursor_execute", probe)
    try:
        assert install_register(container).newly_recorded is True
    finally:
        container.close()
    assert probes == ["database is locked"]
    assert _recorded_versions(tmp_path, sqlite_db_url) == 1

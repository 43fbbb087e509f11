"""A fast verification checks the columns searches use against the entries, as a deep one does.

The attacker has the database owner's rights but cannot forge the hashed text: they change one copy of a field
(``requester_org``, ``holder_org``, ...) so that a privacy officer's search misses an entry or shows it under
another organisation. Every hash still verifies; only the comparison of the columns with the text can tell.
A fast verification — entry by entry, in chunks, with worker processes — must report it exactly as a deep one
does (same kind, index and reason), on SQLite and PostgreSQL; and must not take the keys of the same names
nested inside an entry's ``extra`` or ``obligations`` for the event's own.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from audit import verify
from audit.log import AuditLog, CheckpointPolicy
from audit.tables import audit_entries
from audit.verify import FailureKind, VerifyResult, verify_database
from gateway.db.engine import make_engine
from tests.audit_support import log_signer, make_event, triggers_disabled
from tests.integration.audit.test_tamper import TARGET, _restore, _snapshot, live_log  # noqa: F401

COLUMNS = ("requester_org", "holder_org", "partnership", "purpose", "event_type", "decision", "subject_pseudonym",
           "subject_key", "recorded_at")
PATHS = ("entry by entry", "in chunks", "worker processes")


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as executor:
        yield executor


def _fast(engine: Engine, log: AuditLog, path: str, pool: ProcessPoolExecutor,
          monkeypatch: pytest.MonkeyPatch) -> VerifyResult:
    """A fast verification along one of the three paths (tiny chunks, so that the log spans several)."""
    if path == "entry by entry":
        return verify_database(engine, log.verifier, deep=False)
    with monkeypatch.context() as patch:
        patch.setattr(verify, "_PARALLEL_CHUNK", 4)
        patch.setattr(verify, "_CHUNKED_MIN_ENTRIES", 0)
        patch.setattr(verify, "_PARALLEL_MIN_ENTRIES", 0)
        return verify_database(engine, log.verifier, deep=False, pool=pool if path == "worker processes" else None)


def _changed(column: str, value: Any) -> Any:
    """Another value of the kind the column holds: what a search would then find (or not)."""
    if column == "subject_key":
        return value + 1
    if column == "recorded_at":
        return value + timedelta(seconds=1)
    return f"{value}-changed"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("column", COLUMNS)
def test_a_changed_column_is_caught_by_a_fast_verification_as_by_a_deep_one(
        live_log: tuple[Engine, AuditLog], column: str, path: str, pool: ProcessPoolExecutor,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    engine, log = live_log
    assert _fast(engine, log, path, pool, monkeypatch).ok
    row = audit_entries.c.log_index == TARGET
    with triggers_disabled(engine) as connection:
        value = connection.execute(select(audit_entries.c[column]).where(row)).scalar_one()
        connection.execute(update(audit_entries).where(row).values({column: _changed(column, value)}))
    deep = verify_database(engine, log.verifier).failure
    assert deep is not None
    assert (deep.kind, deep.index) == (FailureKind.COLUMNS, TARGET)
    assert column in deep.reason
    assert _fast(engine, log, path, pool, monkeypatch).failure == deep


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("column", ["requester_org", "holder_org", "partnership", "purpose", "decision",
                                    "subject_pseudonym"])
def test_a_column_emptied_is_caught_too(live_log: tuple[Engine, AuditLog], column: str, path: str,  # noqa: F811
                                        pool: ProcessPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """NULL: the entry drops out of every search on that column."""
    engine, log = live_log
    with triggers_disabled(engine) as connection:
        connection.execute(update(audit_entries).where(audit_entries.c.log_index == TARGET).values({column: None}))
    failure = _fast(engine, log, path, pool, monkeypatch).failure
    assert failure is not None
    assert (failure.kind, failure.index) == (FailureKind.COLUMNS, TARGET)
    assert failure == verify_database(engine, log.verifier).failure


# -- keys of the same names inside extra and obligations ---------------------------------------------------------

NESTED = 5
"""The entry whose extra and obligations name other holders, requesters, activities and subjects."""


def _nested_event(n: int) -> Any:
    """An entry like a discovery's hit (holder empty, the holders in ``extra.hits``), with every key the
    reader looks for also nested inside ``extra`` and ``obligations``, under other values."""
    if n != NESTED:
        return make_event(n)
    decoy = {"holder": "kvk", "requester": {"org": "gemeente-9", "system": None},
             "processing_activity": {"partnership": "elsewhere", "purpose": "other"},
             "data_subject": {"pseudonym": "decoy"}, "decision": "allow", "event_type": "disclosure"}
    return make_event(n, holder=None, extra={"hits": [{"holder": "kvk", "categories": ["tax.debts"]}], **decoy},
                      obligations={"holder": "fiod", "requester": "gemeente-8", "retain_until": "2027-11-25"})


def _log_of(url: str, event: Callable[[int], Any]) -> Iterator[tuple[Engine, AuditLog]]:
    """A log of 24 entries ``event(0)``..``event(23)`` with checkpoints at 8, 16 and 24 (a fixture's body)."""
    engine = make_engine(url)
    log = AuditLog(engine, log_signer(), policy=CheckpointPolicy(every_entries=8, every_seconds=None))
    for batch in range(3):
        log.append([event(batch * 8 + i) for i in range(8)])
    yield engine, log
    engine.dispose()


@pytest.fixture
def nested_log(db_url: str) -> Iterator[tuple[Engine, AuditLog]]:
    yield from _log_of(db_url, _nested_event)


@pytest.mark.parametrize("path", PATHS)
def test_nested_keys_are_not_the_events_own(nested_log: tuple[Engine, AuditLog], path: str,
                                            pool: ProcessPoolExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, log = nested_log
    compared: list[int] = []
    real = verify._stored_failure

    def counted(source: Engine, index: int) -> Any:
        compared.append(index)
        return real(source, index)

    monkeypatch.setattr(verify, "_stored_failure", counted)  # in this process: entry by entry, in chunks
    assert _fast(engine, log, path, pool, monkeypatch).ok
    assert compared == [], "an entry written by the gateway is read without parsing it"
    snapshot = _snapshot(engine)
    for column, decoy in (("holder_org", "kvk"), ("requester_org", "gemeente-9"), ("partnership", "elsewhere"),
                          ("purpose", "other"), ("decision", "allow"), ("event_type", "disclosure")):
        with triggers_disabled(engine) as connection:
            connection.execute(update(audit_entries).where(audit_entries.c.log_index == NESTED)
                               .values({column: decoy}))
        failure = _fast(engine, log, path, pool, monkeypatch).failure
        assert failure is not None, f"{column} set to the value nested in the entry went unnoticed"
        assert (failure.kind, failure.index) == (FailureKind.COLUMNS, NESTED)
        assert column in failure.reason
        _restore(engine, snapshot)


# -- recorded_at in another text form (SQLite) --------------------------------------------------------------------


@pytest.fixture
def sqlite_log(sqlite_db_url: str) -> Iterator[tuple[Engine, AuditLog]]:
    """SQLite only: PostgreSQL stores a time, not text, so there is no other form of it to store."""
    yield from _log_of(sqlite_db_url, make_event)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", ["T for the space", "a seventh fractional digit", "an offset", "a Z"])
def test_recorded_at_stored_in_another_form_of_the_same_time_is_caught(
        sqlite_log: tuple[Engine, AuditLog], variant: str, path: str, pool: ProcessPoolExecutor,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite keeps the time as text and reads these variants back as the same time, so comparing times let
    them pass; yet a time-window search compares the text, and ``2026-11-25T10:00`` sorts after every
    ``2026-11-25 23:59``: the entry drops out of the window it belongs to, or into one it does not."""
    engine, log = sqlite_log
    assert _fast(engine, log, path, pool, monkeypatch).ok
    assert verify_database(engine, log.verifier).ok
    with engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT recorded_at FROM audit_entries WHERE log_index = ?",
                                            (TARGET,)).scalar_one()
    changed = {"T for the space": stored.replace(" ", "T"), "a seventh fractional digit": stored + "0",
               "an offset": stored + "+00:00", "a Z": stored + "Z"}[variant]
    with triggers_disabled(engine) as connection:
        connection.exec_driver_sql("UPDATE audit_entries SET recorded_at = ? WHERE log_index = ?", (changed, TARGET))
    deep = verify_database(engine, log.verifier).failure
    assert deep is not None
    assert (deep.kind, deep.index) == (FailureKind.COLUMNS, TARGET)
    assert "recorded_at" in deep.reason
    assert _fast(engine, log, path, pool, monkeypatch).failure == deep

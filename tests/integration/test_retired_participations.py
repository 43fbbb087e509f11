"""A retired participation's rows leave both discovery indexes, each batch with its audit entry.

Found by a review: retiring a participant (or a whole partnership) in the register left everything it had
enrolled — its pseudonym index rows and its match filters — in the gateway for good, although the gateway no
longer processes anything for it. Now every start, and ``wgs-gateway pseudonyms remove-retired``, removes them
(:mod:`gateway.enrolment.retired`) in batches, each committed with one ``index.retired`` entry (partnership,
participant, reason and count; never a pseudonym or reference). Nothing of an active participant is touched,
and a second run finds nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy import event as sqlalchemy_event
from typer.testing import CliRunner

from audit import AuditLog, Receipt
from audit.log import PreparedEvent
from audit.tables import audit_entries
from gateway.app import create_app
from gateway.cli import app as cli
from gateway.clock import FixedClock
from gateway.container import build_container
from gateway.db.engine import make_engine, make_session_factory
from gateway.enrolment.filters import FilterService
from gateway.enrolment.retired import remove_retired
from gateway.enrolment.tables import enrolments, match_filters
from gateway.matching.schema import shipped_schema
from gateway.register.loader import parse_register
from gateway.register.model import Register
from gateway.settings import SHIPPED_REGISTER, Settings
from tests.audit_support import log_signer

RIEC, FEC, NSOC = "riec-amsterdam-amstelland", "fec", "nsoc"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def retiring(tmp: Path, partnership: str = RIEC, organisation: str = "kvk") -> tuple[Register, Path]:
    """The shipped register with ``organisation`` retired in ``partnership`` (a new version), and its file."""
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-retired-{organisation}"
    for participant in document["partnerships"][partnership]["participants"]:
        if participant["organisation"] == organisation:
            participant["status"] = "retired"
    path = tmp / "register.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return parse_register(path.read_text(), str(path)), path


def _pseudonym_row(partnership: str, organisation: str, key: str) -> dict[str, Any]:
    return {"partnership": partnership, "organisation": organisation, "pseudonym": key, "key_version": 1,
            "record_types": ["trade-name"], "categories": ["company_registration"], "updated_at": NOW,
            "confidential": False, "confidential_reason": None, "minor": False}


def _filter_row(partnership: str, organisation: str, record_type: str, ref: str) -> dict[str, Any]:
    return {"partnership": partnership, "organisation": organisation, "record_type": record_type, "local_ref": ref,
            "schema_version": 1, "clk": b"\x01" * 128, "blocks": b"", "categories": ["police_incidents"],
            "confidential": False, "confidential_reason": None, "minor": False, "updated_at": NOW}


PARTICIPATIONS = [(RIEC, "kvk"), (RIEC, "politie"), (FEC, "politie"), (NSOC, "politie"), (NSOC, "fiod"),
                  (NSOC, "kvk"), ("no-such-partnership", "kvk"), (RIEC, "no-such-organisation")]
"""Retired: the KvK in the RIEC (by ``retiring``), and the NSOC as a whole — with the KvK's rows there too,
though the NSOC does not list it (nothing of a retired partnership is kept)."""


def fill(engine: Engine, rows: int = 7) -> None:
    """``rows`` pseudonym rows and as many filters (over two record types) per participation above."""
    with engine.begin() as connection:
        for partnership, organisation in PARTICIPATIONS:
            connection.execute(enrolments.insert(), [_pseudonym_row(partnership, organisation, f"p-{n:04d}")
                                                    for n in range(rows)])
            connection.execute(match_filters.insert(), [
                _filter_row(partnership, organisation, "person" if n % 2 else "company", f"ref/{n:04d}")
                for n in range(rows)])


def held(engine: Engine) -> dict[tuple[str, str], tuple[int, int]]:
    """Pseudonym rows and filters per participation."""
    found: dict[tuple[str, str], list[int]] = {}
    with engine.connect() as connection:
        for position, table in enumerate((enrolments, match_filters)):
            for row in connection.execute(select(table.c.partnership, table.c.organisation)):
                found.setdefault((row.partnership, row.organisation), [0, 0])[position] += 1
    return {key: (counts[0], counts[1]) for key, counts in found.items()}


def entries(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as connection:
        texts = connection.execute(select(audit_entries.c.canonical).where(
            audit_entries.c.event_type == "index.retired").order_by(audit_entries.c.log_index)).scalars().all()
    return [(text, json.loads(text)["event"]) for text in texts]


def removed_per(found: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str, str], int]:
    totals: dict[tuple[str, str, str], int] = {}
    for _, event in found:
        key = (event["processing_activity"]["partnership"], event["holder"], event["extra"]["index"])
        totals[key] = totals.get(key, 0) + event["extra"]["removed"]
    return totals


@pytest.fixture
def log(engine: Engine, tmp_path: Path) -> AuditLog:
    return AuditLog(engine, log_signer())


KEPT = {(RIEC, "politie"): (7, 7), (FEC, "politie"): (7, 7), ("no-such-partnership", "kvk"): (7, 7),
        (RIEC, "no-such-organisation"): (7, 7)}


def test_a_retired_participant_and_a_retired_partnership_leave_both_indexes_in_audited_batches(
        engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    register, _ = retiring(tmp_path)
    fill(engine)
    result = remove_retired(make_session_factory(engine), register, log, channel="cli", batch=3)

    # Only what the register retires is gone: the retired participant of an active partnership (kvk in the
    # RIEC), everything of the retired NSOC. Active participants — politie in the RIEC, in the FEC, the
    # same organisation that lost its NSOC rows — and participations the register does not name are kept.
    assert held(engine) == KEPT
    assert result.removed == 8 * 7
    found = entries(engine)
    assert removed_per(found) == {(partnership, organisation, index): 7
                                  for partnership, organisation in [(RIEC, "kvk"), (NSOC, "fiod"), (NSOC, "kvk"),
                                                                    (NSOC, "politie")]
                                  for index in ("pseudonyms", "filters")}
    assert len(found) == 4 * 2 * 3  # 7 rows in batches of 3: three batches per participation and index
    for text, event in found:
        assert event["extra"]["participant"] == event["holder"]
        assert event["extra"]["channel"] == "cli"
        assert event["extra"]["reason"] == ("partnership-retired" if event["processing_activity"]["partnership"]
                                            == NSOC else "participant-retired")
        assert event["register_version"] == register.version
        assert event["data_subject"] is None
        assert event["requester"] is None
        assert "p-0" not in text  # never a pseudonym
        assert "ref/" not in text  # never a reference
    filters = [event["extra"] for _, event in found if event["extra"]["index"] == "filters"]
    assert {kind for extra in filters for kind in extra["record_types"]} == {"company", "person"}


def test_a_process_that_kept_the_filters_in_memory_sees_them_removed(
        engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    """A gateway process keeps the decoded match filters between fuzzy discoveries (``gateway.enrolment.
    filter_cache``); the removal, run by another process (start-up, the CLI), must make it read them again."""
    register, _ = retiring(tmp_path)
    fill(engine)
    sessions = make_session_factory(engine)
    filters = FilterService(sessions=sessions, clock=FixedClock(NOW), register=register)
    person = shipped_schema("person")
    assert len(filters.held(RIEC, person, ["kvk", "politie"])["kvk"].refs) == 3
    hits = filters.cache.hits
    assert set(filters.held(RIEC, person, ["kvk", "politie"])) == {"kvk", "politie"}
    assert filters.cache.hits == hits + 2  # kept: nothing changed

    remove_retired(sessions, register, log, channel="cli", batch=2)
    assert set(filters.held(RIEC, person, ["kvk", "politie"])) == {"politie"}  # the retired participant's are gone


def test_a_second_run_removes_nothing_and_writes_no_entry(engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    register, _ = retiring(tmp_path)
    fill(engine)
    sessions = make_session_factory(engine)
    remove_retired(sessions, register, log, channel="cli")
    after, logged = held(engine), len(entries(engine))
    again = remove_retired(sessions, register, log, channel="cli")
    assert again.removed == 0
    assert again.removals == []
    assert held(engine) == after
    assert len(entries(engine)) == logged


def test_with_nothing_retired_no_row_is_touched(engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    """The negative: a register retiring no participant (the NSOC's rows left out) removes nothing, though the
    index holds rows of participations it does not name."""
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    register = Register.model_validate(document)
    fill(engine)
    with engine.begin() as connection:
        for table in (enrolments, match_filters):
            connection.execute(delete(table).where(table.c.partnership == NSOC))
    before = held(engine)
    assert remove_retired(make_session_factory(engine), register, log, channel="cli").removed == 0
    assert held(engine) == before
    assert entries(engine) == []


class _Failing:
    """The audit log, failing the transaction after the batch's deletion ran in it."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def append_prepared(self, prepared: Sequence[PreparedEvent],
                        within: Callable[[Connection, list[Receipt]], None] | None = None) -> list[Receipt]:
        def failing(connection: Connection, receipts: list[Receipt]) -> None:
            assert within is not None
            within(connection, receipts)
            raise RuntimeError("the log's transaction failed")

        return self.log.append_prepared(prepared, failing)


def test_a_batch_whose_entry_is_not_written_is_not_removed(engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    register, _ = retiring(tmp_path)
    fill(engine)
    before = held(engine)
    with pytest.raises(RuntimeError):
        remove_retired(make_session_factory(engine), register, _Failing(log), channel="cli")
    assert held(engine) == before
    assert entries(engine) == []


class _Racing:
    """The audit log, with another process removing one row of the first batch just before it is written."""

    def __init__(self, log: AuditLog, engine: Engine) -> None:
        self.log, self.engine, self.raced = log, engine, False

    def append_prepared(self, prepared: Sequence[PreparedEvent],
                        within: Callable[[Connection, list[Receipt]], None] | None = None) -> list[Receipt]:
        if not self.raced:
            self.raced = True
            with self.engine.begin() as connection:
                first = connection.execute(select(enrolments.c.pseudonym).where(
                    enrolments.c.partnership == RIEC, enrolments.c.organisation == "kvk")
                    .order_by(enrolments.c.pseudonym).limit(1)).scalar_one()
                connection.execute(delete(enrolments).where(enrolments.c.pseudonym == first,
                                                            enrolments.c.partnership == RIEC,
                                                            enrolments.c.organisation == "kvk"))
        return self.log.append_prepared(prepared, within)


def test_rows_removed_meanwhile_are_not_counted_in_an_entry(engine: Engine, log: AuditLog, tmp_path: Path) -> None:
    """Another process removing a row of a batch before it is written: the batch is read again, so the entries
    count exactly what this run removed."""
    register, _ = retiring(tmp_path)
    fill(engine)
    result = remove_retired(make_session_factory(engine), register, _Racing(log, engine), channel="cli", batch=3)
    assert held(engine) == KEPT
    assert removed_per(entries(engine))[RIEC, "kvk", "pseudonyms"] == 6
    assert result.removed == 8 * 7 - 1


def test_a_gateway_start_removes_what_the_register_in_force_retires(
        sqlite_db_url: str, tmp_path: Path, clock: FixedClock) -> None:
    register, path = retiring(tmp_path)
    engine = make_engine(sqlite_db_url)
    try:
        fill(engine)
        settings = Settings(data_dir=tmp_path, database_url=sqlite_db_url, register_file=path)
        container = build_container(settings, clock)
        with TestClient(create_app(container=container)):
            pass
        container.close()
        assert held(engine) == KEPT
        found = entries(engine)
        assert {event["extra"]["channel"] for _, event in found} == {"start-up"}
        assert removed_per(found)[RIEC, "kvk", "filters"] == 7
        logged = len(found)
        container = build_container(settings, clock)  # started again: nothing left to remove, no entry
        with TestClient(create_app(container=container)):
            pass
        container.close()
        assert len(entries(engine)) == logged
        assert held(engine) == KEPT
        assert register.version in {event["register_version"] for _, event in found}
    finally:
        engine.dispose()


def _retiring_nothing(tmp: Path) -> Path:
    """The shipped register with its retired partnership (the NSOC) active again: nothing retired at all."""
    document = yaml.safe_load(SHIPPED_REGISTER.read_text())
    document["version"] = f"{document['version']}-nothing-retired"
    for partnership in document["partnerships"].values():
        partnership["status"] = "active"
        partnership.pop("retired", None)
        assert all(participant.get("status", "active") == "active" for participant in partnership["participants"])
    path = tmp / "register.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.mark.parametrize("retires", ["nothing", "a participant"])
def test_a_start_reads_the_indexes_only_when_the_register_retires_something(
        retires: str, sqlite_db_url: str, tmp_path: Path, clock: FixedClock) -> None:
    """Every start runs the removal: a register that retires nothing decides it from the register alone, with no
    statement on either index, while one that retires a participant still reads and removes its rows."""
    path = _retiring_nothing(tmp_path) if retires == "nothing" else retiring(tmp_path)[1]
    engine = make_engine(sqlite_db_url)
    try:
        fill(engine)
        before = held(engine)
        container = build_container(Settings(data_dir=tmp_path, database_url=sqlite_db_url, register_file=path),
                                    clock)
        on_indexes: list[str] = []

        def count(_connection: Connection, _cursor: object, statement: str, *_: object) -> None:
            if any(table.name in statement for table in (enrolments, match_filters)):
                on_indexes.append(statement)

        sqlalchemy_event.listen(container.engine, "before_cursor_execute", count)
        with TestClient(create_app(container=container)):
            pass
        container.close()
        if retires == "nothing":
            assert on_indexes == []
            assert held(engine) == before
            assert entries(engine) == []
        else:
            assert any(statement.lstrip().upper().startswith("SELECT") for statement in on_indexes)
            assert held(engine) == KEPT
    finally:
        engine.dispose()


def test_the_cli_removes_them_and_says_how_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = retiring(tmp_path)
    monkeypatch.setenv("WGS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("WGS_REGISTER_FILE", str(path))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("WGS_DATABASE_URL", raising=False)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert runner.invoke(cli, ["keys", "init"]).exit_code == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'gateway.sqlite'}")
    try:
        fill(engine)
        done = runner.invoke(cli, ["pseudonyms", "remove-retired"])
        assert done.exit_code == 0, done.output
        assert f"kvk in {RIEC} (participant-retired): 7 pseudonyms index rows removed" in done.output
        assert "56 index rows of retired participations removed" in done.output
        assert held(engine) == KEPT
        again = runner.invoke(cli, ["pseudonyms", "remove-retired"])
        assert again.exit_code == 0, again.output
        assert "0 index rows of retired participations removed" in again.output
    finally:
        engine.dispose()
